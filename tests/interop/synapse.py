"""A real Synapse (from PyPI) on loopback for interoperability tests.

    synapse = start_synapse(workdir, port=port)      # .url .token .server_name .user_id
    ...
    synapse.stop()

Synapse is installed once into a virtualenv of its own (MEDIASITE_SYNAPSE_VENV, default
~/.cache/mediasite-synapse/venv), pinned, so reruns start in seconds; concurrent first runs
wait on a file lock instead of installing twice. Each call generates a fresh homeserver (SQLite,
its own signing key) in `workdir`, registers one user and logs it in. `extra_config` is YAML
appended to the generated configuration (federation tests use it to trust loopback peers).
"""
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SYNAPSE_VERSION = "1.163.2"
SERVER_NAME = "interop.test"
USER, PASSWORD = "interop", "interop-password"

_GENEROUS_LIMITS = """
trusted_key_servers: []
report_stats: false
enable_authenticated_media: true
max_upload_size: 100M
suppress_key_server_warning: true
rc_message: {per_second: 10000, burst_count: 10000}
rc_login:
  address: {per_second: 10000, burst_count: 10000}
  account: {per_second: 10000, burst_count: 10000}
  failed_attempts: {per_second: 10000, burst_count: 10000}
rc_media_create: {per_second: 10000, burst_count: 10000}
# Guests register without credentials: the delegated-auth tests check they are refused here.
allow_guest_access: true
"""

# Synapse refuses private addresses and self-signed peers by default; both are needed on loopback.
SYNAPSE_FEDERATION_ON_LOOPBACK = """
federation_verify_certificates: false
ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.0/8']
"""


def synapse_venv() -> Path:
    """The virtualenv holding the pinned Synapse, created on first use."""
    venv = Path(os.environ.get("MEDIASITE_SYNAPSE_VENV", Path.home() / ".cache" / "mediasite-synapse" / "venv"))
    venv.parent.mkdir(parents=True, exist_ok=True)
    marker = venv / f".installed-{SYNAPSE_VERSION}"
    if marker.exists():
        return venv
    with open(venv.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            if not (venv / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            f"matrix-synapse=={SYNAPSE_VERSION}"], check=True)
            marker.touch()
    return venv


@dataclass
class Synapse:
    url: str
    token: str
    server_name: str
    user_id: str
    process: subprocess.Popen
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """Synapse's own log file, then what the process printed."""
        paths = (self.workdir / "homeserver.log", self.workdir / "synapse.out")
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def login(self) -> str:
        """A new access token (a new device) for the test user."""
        return self.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": USER}, "password": PASSWORD,
        })["access_token"]


def start_synapse(workdir: Path, *, port: int, extra_config: str = "", server_name: str = SERVER_NAME) -> Synapse:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    python = str(synapse_venv() / "bin" / "python")
    config = workdir / "homeserver.yaml"
    if not config.exists():
        subprocess.run([python, "-m", "synapse.app.homeserver", "--server-name", server_name,
                        "--config-path", str(config), "--data-directory", str(workdir),
                        "--generate-config", "--report-stats=no"],
                       cwd=workdir, check=True, capture_output=True)
        text = config.read_text().replace("port: 8008", f"port: {port}").replace("- ::1\n", "")
        text = "\n".join(line for line in text.splitlines() if line.strip() != "- '::1'")
        config.write_text(text + "\n" + _GENEROUS_LIMITS + extra_config + "\n")
    out = open(workdir / "synapse.out", "wb")
    process = subprocess.Popen([python, "-m", "synapse.app.homeserver", "-c", str(config)], cwd=workdir,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Synapse did not start:\n" + (workdir / "synapse.out").read_text(errors="replace")[-4000:])
            time.sleep(0.3)
    registered = subprocess.run(
        [str(synapse_venv() / "bin" / "register_new_matrix_user"), "-c", str(config), "-u", USER, "-p", PASSWORD,
         "--no-admin", url], capture_output=True, text=True,
    )
    synapse = Synapse(url=url, token="", server_name=server_name, user_id=f"@{USER}:{server_name}",
                      process=process, workdir=workdir)
    try:
        synapse.token = synapse.login()
    except urllib.error.URLError as exc:
        synapse.stop()
        raise RuntimeError(f"Could not log in to Synapse ({registered.stderr.strip()}): {exc}") from exc
    return synapse
