"""Start a real Synapse (matrix-synapse from PyPI, in a virtualenv of its own) for interop tests.

`start_synapse(workdir, port=..., extra_config=...)` generates a config in `workdir` (SQLite,
one HTTP listener on 127.0.0.1:port serving client and federation), starts the homeserver,
registers a user and logs it in. The virtualenv is `.venv-synapse/` at the repository root (or
MEDIASITE_SYNAPSE_VENV), created and installed on first use.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SYNAPSE_VERSION = "1.163.2"
USER, PASSWORD = "interop", "interop-password"


def synapse_python() -> Path:
    venv = Path(os.environ.get("MEDIASITE_SYNAPSE_VENV", ROOT / ".venv-synapse"))
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import synapse, sys; sys.exit(synapse.__version__ != {SYNAPSE_VERSION!r})"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"matrix-synapse=={SYNAPSE_VERSION}"], check=True)
    return python


@dataclass
class Synapse:
    url: str
    token: str
    server_name: str
    process: subprocess.Popen
    workdir: Path

    def log(self) -> str:
        path = self.workdir / "homeserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def start_synapse(workdir: Path, *, port: int, extra_config: str = "", server_name: str = "synapse.test") -> Synapse:
    python = synapse_python()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "homeserver.yaml"
    subprocess.run([str(python), "-m", "synapse.app.homeserver", "--server-name", server_name,
                    "--config-path", str(config), "--data-directory", str(workdir),
                    "--generate-config", "--report-stats=no"],
                   cwd=workdir, check=True, capture_output=True)
    text = config.read_text().replace("port: 8008", f"port: {port}")
    text = "\n".join(line for line in text.splitlines() if line.strip() != "- ::1")
    # Generated logging config writes next to the config; keep it there.
    text += f"""
enable_authenticated_media: true
max_upload_size: 100M
trusted_key_servers: []
suppress_key_server_warning: true
rc_message: {{per_second: 10000, burst_count: 10000}}
rc_login:
  address: {{per_second: 10000, burst_count: 10000}}
  account: {{per_second: 10000, burst_count: 10000}}
  failed_attempts: {{per_second: 10000, burst_count: 10000}}
rc_media_create: {{per_second: 10000, burst_count: 10000}}
{extra_config}
"""
    config.write_text(text)
    log = open(workdir / "synapse.out", "wb")
    process = subprocess.Popen([str(python), "-m", "synapse.app.homeserver", "-c", str(config)],
                               cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Synapse did not start:\n" + (workdir / "synapse.out").read_text()[-5000:])
            time.sleep(0.5)
    subprocess.run([str(python.parent / "register_new_matrix_user"), "-c", str(config), "-u", USER, "-p", PASSWORD,
                    "--no-admin", url], check=True, capture_output=True)
    login = _post_json(url + "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": USER}, "password": PASSWORD})
    return Synapse(url, login["access_token"], server_name, process, workdir)
