"""Secrets the server makes for itself in its data directory, and the settings read around
them, in a fresh process with the production settings and nothing configured."""
import errno
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time

import pytest

from mediasite.secret_files import STALE_TEMP_SECONDS, read_or_create
from tests.conftest import ROOT
from tests.security.secret_race import race

_SNIPPET = """
import json, django
django.setup()
from django.conf import settings
from media_app import crypto
from media_app.conf import media_settings
from media_app.federation import keys
print(json.dumps({
    "secret_key": settings.SECRET_KEY,
    "secure_cookies": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE],
    "round_trip": crypto.decrypt(crypto.encrypt("a reason")),
    "key_id": keys.key_id(),
    "remote_days": media_settings.REMOTE_MEDIA_LIFETIME_DAYS,
    "thumbnail_days": media_settings.THUMBNAIL_LIFETIME_DAYS,
    "local_days": media_settings.LOCAL_MEDIA_LIFETIME_DAYS,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "lockout_hours": settings.AXES_COOLOFF_TIME,
    "forwarded_allow_ips": media_settings.FORWARDED_ALLOW_IPS,
    "scrub_sample": media_settings.SCRUB_SAMPLE_BLOBS,
    "server_name": media_settings.SERVER_NAME,
}))
"""


def _fresh_process(data_dir, **env) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in ("DJANGO_SECRET_KEY", "MEDIASITE_ENCRYPTION_KEYS") and not k.startswith("MEDIASITE_")}
    base.update({"DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "MEDIASITE_DATA_DIR": str(data_dir),
                 "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}", **env})
    out = subprocess.run([sys.executable, "-c", _SNIPPET], cwd=ROOT, env=base, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_secrets_are_made_once_owner_only_and_the_settings_read_as_documented(tmp_path):
    first = _fresh_process(tmp_path, MEDIASITE_HTTPS="true", MEDIASITE_REMOTE_MEDIA_LIFETIME="45",
                           MEDIASITE_THUMBNAIL_LIFETIME="30d", MEDIASITE_ALLOWED_HOSTS="media.example.org,m.example.org",
                           MEDIASITE_ADMIN_LOGIN_COOLOFF_HOURS="3")
    assert len(first["secret_key"]) >= 48 and first["round_trip"] == "a reason"
    assert first["secure_cookies"] == [True, True]
    assert (first["remote_days"], first["thumbnail_days"], first["local_days"]) == (45, 30, None)
    assert first["allowed_hosts"] == ["media.example.org", "m.example.org"] and first["lockout_hours"] == 3
    for name in ("secret_key", "encryption_key", "signing.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    second = _fresh_process(tmp_path)  # a restart, or another worker: the same secrets
    assert (second["secret_key"], second["key_id"]) == (first["secret_key"], first["key_id"])
    assert second["secure_cookies"] == [False, False]
    assert (second["remote_days"], second["thumbnail_days"]) == (90, 90)
    assert second["allowed_hosts"] == ["*"] and second["lockout_hours"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    third = _fresh_process(tmp_path, MEDIASITE_REMOTE_MEDIA_LIFETIME="off", MEDIASITE_THUMBNAIL_LIFETIME="never",
                           MEDIASITE_FORWARDED_ALLOW_IPS="10.0.0.0/8,192.0.2.1", MEDIASITE_SCRUB_SAMPLE_BLOBS="25")
    assert (third["remote_days"], third["thumbnail_days"]) == (None, None)
    assert third["forwarded_allow_ips"] == ["10.0.0.0/8", "192.0.2.1"] and third["scrub_sample"] == 25
    assert (second["forwarded_allow_ips"], second["scrub_sample"]) == (["127.0.0.1"], 1000)


def test_the_server_name_defaults_to_localhost_and_the_port(tmp_path, monkeypatch):
    """README: MEDIASITE_SERVER_NAME defaults to localhost:$PORT (PORT's own default 8000)."""
    monkeypatch.delenv("PORT", raising=False)
    assert _fresh_process(tmp_path)["server_name"] == "localhost:8000"
    assert _fresh_process(tmp_path, PORT="8123")["server_name"] == "localhost:8123"
    assert _fresh_process(tmp_path, PORT="8123", MEDIASITE_SERVER_NAME="media.example.org")["server_name"] == \
        "media.example.org"


def test_django_secret_key_in_the_environment_overrides_the_generated_one(tmp_path):
    """README: DJANGO_SECRET_KEY, when set, is the secret; none is generated in the data dir."""
    key = "an-operator-chosen-secret-key-" + "x" * 30
    assert _fresh_process(tmp_path, DJANGO_SECRET_KEY=key)["secret_key"] == key
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_processes_starting_together_agree_on_one_secret_and_never_read_it_unwritten(tmp_path, hard_links):
    context = multiprocessing.get_context("spawn")  # not fork: pytest's process has threads
    for round_, slow in enumerate([True, False, False]):
        path = tmp_path / f"secret-{round_}"
        barrier, results = context.Barrier(6), context.Queue()
        procs = [context.Process(target=race, args=(path, barrier, results, slow and i == 0, slow and i > 0,
                                                    hard_links))
                 for i in range(6)]
        for proc in procs:
            proc.start()
        seen = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        assert len({data for data, _, _ in seen}) == 1 and len(seen[0][0]) == 32, seen
        assert sum(created for _, created, _ in seen) == 1
        assert {mode for _, _, mode in seen} == {0o600}
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{path.name}-")]  # no temp file left


@pytest.mark.parametrize("exists", [False, True], ids=["creating", "reading"])
def test_a_temp_file_left_by_a_killed_writer_is_removed_later(tmp_path, exists):
    # A writer killed between writing its temp file and publishing it leaves a 0600 file with
    # an unused secret in it; one still being written (recent) is left alone.
    if exists:
        (tmp_path / "secret").write_bytes(b"fresh")
    stale, recent = tmp_path / ".secret-k1lled__", tmp_path / ".secret-writing_"
    for leftover in (stale, recent):
        leftover.write_bytes(b"never used")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    data, created = read_or_create(tmp_path / "secret", lambda: b"fresh")
    assert (data, created) == (b"fresh", not exists)
    assert not stale.exists() and recent.exists()


def test_a_read_only_data_dir_with_a_stale_temp_file_still_reads_its_secret(tmp_path, monkeypatch):
    (tmp_path / "secret").write_bytes(b"provisioned")
    stale = tmp_path / ".secret-k1lled__"
    stale.write_bytes(b"never used")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))

    def read_only(path, *args, **kwargs):  # what a read-only mount answers (the tests run as root)
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(os, "unlink", read_only)
    assert read_or_create(tmp_path / "secret", lambda: b"never") == (b"provisioned", False)
    assert stale.exists()


@pytest.mark.parametrize("value", ["12h", "-5", "ninety"])
def test_a_lifetime_that_is_not_a_number_of_days_stops_the_start_naming_the_variable(tmp_path, value):
    """README's retention rows take `90d`, `90` or `off`: anything else (a negative number would
    purge everything at once) is refused with the variable's name, not a traceback about int()."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASITE_")}
    env.update({"DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "MEDIASITE_DATA_DIR": str(tmp_path),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MEDIASITE_THUMBNAIL_LIFETIME": value})
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert f"MEDIASITE_THUMBNAIL_LIFETIME={value!r}: a number of days" in out.stderr
    assert "invalid literal" not in out.stderr
