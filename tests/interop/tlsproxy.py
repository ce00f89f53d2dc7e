"""An nginx TLS proxy with a self-signed certificate made by the test (Synapse speaks https to
its peers only)."""
import shutil
import subprocess
import time
from pathlib import Path

from tests.tls import self_signed_cert


class TlsProxy:
    """nginx terminating TLS on each `listen_port` and passing the request line unchanged (the
    X-Matrix signature covers it) to `upstream_port`. With tls=False, a plain HTTP relay (the
    federation benchmark's floor for any relay)."""

    def __init__(self, directory: Path, routes: dict[int, int], *, tls: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        if tls:
            self.cert, key = self_signed_cert(self.directory)
            listen_tls = f"ssl;\n    ssl_certificate {self.cert};\n    ssl_certificate_key {key};"
        else:
            self.cert, listen_tls = None, ";"
        servers = "".join(f"""
  server {{
    listen 127.0.0.1:{listen} {listen_tls}
    client_max_body_size 0;
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}""" for listen, upstream in routes.items())
        (d / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
daemon off;
events {{ worker_connections 512; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
{servers}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen([nginx, "-c", str(d / "nginx.conf"), "-p", str(d)],
                                        stdout=subprocess.DEVNULL, stderr=open(d / "nginx.out", "wb"))
        import socket

        deadline = time.monotonic() + 20
        for port in routes:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("nginx did not start: " + (d / "nginx.out").read_text())
                    time.sleep(0.1)

    def access_log(self) -> str:
        path = self.directory / "access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
