"""Interop with a real Synapse over federation, behind an nginx TLS proxy on loopback:
Synapse fetches this project's media, and this project fetches Synapse's."""
import io
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from tests.conftest import _database_url, _free_port, noisy_png, png_bytes, start_server, stop_server, stored_media
from tests.interop.synapse import SYNAPSE_FEDERATION_ON_LOOPBACK, start_synapse
from tests.interop.tlsproxy import TlsProxy

pytestmark = pytest.mark.server

# A name of its own per run: a Synapse started afresh has a new signing key, and the verify keys
# an earlier run cached (in a Redis that outlives the run) under a shared name would stand for
# up to a minute before an unknown key ID may be fetched again.
SYNAPSE_NAME = f"synapse-{secrets.token_hex(4)}.test"


def http(method, url, *, body=None, headers=None, timeout=90):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop")
    ms_port, ms_tls, syn_port, syn_tls = (_free_port() for _ in range(4))
    proxy = TlsProxy(tmp / "nginx", {ms_tls: ms_port, syn_tls: syn_port})
    synapse = server = None
    try:
        synapse = start_synapse(tmp / "synapse", port=syn_port, extra_config=SYNAPSE_FEDERATION_ON_LOOPBACK,
                                server_name=SYNAPSE_NAME)
        (tmp / "mediasite").mkdir()
        server = start_server(
            tmp / "mediasite", port=ms_port,
            MEDIASITE_SERVER_NAME=f"127.0.0.1:{ms_tls}", MEDIASITE_DATA_DIR=str(tmp / "mediasite"),
            DATABASE_URL=_database_url(), REDIS_URL=os.environ.get("REDIS_URL", ""),
            MEDIASITE_EMBEDDED_WORKER="true" if not os.environ.get("REDIS_URL") else "false",
            MEDIASITE_OUTBOUND_ALLOWLIST="127.0.0.0/8",
            MEDIASITE_FEDERATION_SERVER_MAP=json.dumps({SYNAPSE_NAME: f"https://127.0.0.1:{syn_tls}"}),
            MEDIASITE_FEDERATION_TLS_CA_FILE=str(proxy.cert),
        )
        worker = None
        if os.environ.get("REDIS_URL"):
            import subprocess
            import sys

            from tests.conftest import ROOT

            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
                   "DATABASE_URL": _database_url(), "MEDIASITE_DATA_DIR": str(tmp / "mediasite"),
                   "MEDIASITE_SERVER_NAME": f"127.0.0.1:{ms_tls}", "MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
                   "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({SYNAPSE_NAME: f"https://127.0.0.1:{syn_tls}"}),
                   "MEDIASITE_FEDERATION_TLS_CA_FILE": str(proxy.cert)}
            log = open(tmp / "worker.log", "wb")
            worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mediasite", "worker", "-l", "info",
                                       "--pool", "solo", "--without-heartbeat", "--without-mingle", "--without-gossip"],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        yield {"synapse": synapse, "server": server, "server_name": f"127.0.0.1:{ms_tls}", "proxy": proxy,
               "synapse_tls_url": f"https://127.0.0.1:{syn_tls}"}
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
    finally:
        if server:
            stop_server(server)
        if synapse:
            synapse.stop()
        proxy.stop()


@pytest.fixture
def live_world(world, transactional_db):
    return world


def test_synapse_fetches_our_media_over_federation(live_world, make_user, make_token):
    synapse, server = live_world["synapse"], live_world["server"]
    token = make_token(make_user("alice"))
    data = png_bytes(40, 30, color=(200, 10, 10))
    status, _, body = http("POST", server.url + "/_matrix/media/v3/upload?filename=ours.png", body=data,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"})
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    assert mxc.startswith(live_world["server_name"] + "/")

    status, headers, body = http("GET", f"{synapse.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {synapse.token}"})
    assert status == 200, (body, synapse.log()[-4000:], server.log()[-3000:])
    assert body == data
    media_id = mxc.split("/")[1]
    # Synapse asked over federation, through the TLS proxy, and passed our signature checks.
    assert f"/_matrix/federation/v1/media/download/{media_id}" in live_world["proxy"].access_log()
    assert "/_matrix/key/v2/server" in server.log() or "/_matrix/key/v2/server" in live_world["proxy"].access_log()


def test_we_fetch_synapse_media_over_signed_federation(live_world, make_user, make_token):
    synapse, server = live_world["synapse"], live_world["server"]
    data = png_bytes(50, 50, color=(10, 10, 200))
    status, _, body = http("POST", f"{synapse.url}/_matrix/media/v3/upload?filename=theirs.png", body=data,
                           headers={"Authorization": f"Bearer {synapse.token}", "Content-Type": "image/png"})
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    assert mxc.startswith(SYNAPSE_NAME + "/")

    token = make_token(make_user("bob"))
    status, headers, body = http("GET", f"{server.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {token}"})
    assert status == 200, (body, server.log()[-4000:], synapse.log()[-4000:])
    assert body == data
    media = stored_media(SYNAPSE_NAME, mxc.split("/")[1])
    assert media.origin == "remote" and media.upload_name == "theirs.png"
    # Synapse accepted our X-Matrix signature: the federation endpoint answered, no fallback.
    assert f"/_matrix/federation/v1/media/download/{media.media_id}" in live_world["proxy"].access_log()
    assert f"/_matrix/media/v3/download/{SYNAPSE_NAME}/{media.media_id}" not in live_world["proxy"].access_log()

    status, _, body = http("GET", f"{server.url}/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop",
                           headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (32, 32)


SMALL_CAP = 4096


@pytest.fixture(scope="module")
def small(world, tmp_path_factory):
    """A second Mediasite (its own SQLite database and data dir) whose upload cap, SMALL_CAP, is
    under the size of Synapse's media: it cannot cache the originals, so its thumbnails come
    from Synapse's own federation thumbnail endpoint."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    tmp = tmp_path_factory.mktemp("small")
    port, tls = _free_port(), _free_port()
    proxy = TlsProxy(tmp / "nginx", {tls: port})
    env = {"DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
           "MEDIASITE_DATA_DIR": str(tmp), "REDIS_URL": "", "MEDIASITE_SERVER_NAME": f"127.0.0.1:{tls}",
           "MEDIASITE_MAX_UPLOAD_SIZE": str(SMALL_CAP), "MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
           "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({SYNAPSE_NAME: world["synapse_tls_url"]}),
           "MEDIASITE_FEDERATION_TLS_CA_FILE": str(world["proxy"].cert)}
    server = None
    try:
        for args in (["migrate", "--noinput", "-v", "0"], ["create_token", "carol"]):
            done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env},
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
        token = done.stdout.strip().splitlines()[-1]
        server = start_server(tmp, port=port, MEDIASITE_EMBEDDED_WORKER="false", **env)
        yield {"server": server, "token": token, "proxy": proxy}
    finally:
        if server:
            stop_server(server)
        proxy.stop()


def test_over_our_size_cap_we_take_synapse_own_thumbnail(live_world, small):
    synapse = live_world["synapse"]
    data = noisy_png(120, 90)  # far over a few KiB whatever its encoder
    assert len(data) > SMALL_CAP
    status, _, body = http("POST", f"{synapse.url}/_matrix/media/v3/upload?filename=big.png", body=data,
                           headers={"Authorization": f"Bearer {synapse.token}", "Content-Type": "image/png"})
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    auth = {"Authorization": f"Bearer {small['token']}"}
    base = small["server"].url

    # The original is over the cap: refused, and not cached.
    status, _, body = http("GET", f"{base}/_matrix/client/v1/media/download/{mxc}", headers=auth)
    assert status == 413 and json.loads(body)["errcode"] == "M_TOO_LARGE", (status, body)

    status, headers, body = http("GET", f"{base}/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop",
                                 headers=auth)
    assert status == 200, (body, small["server"].log()[-4000:], synapse.log()[-3000:])
    assert headers["Content-Type"] in ("image/png", "image/jpeg", "image/webp")
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (32, 32)  # Synapse's 32x32 crop
    media_id = mxc.split("/")[1]
    # Synapse answered its federation thumbnail endpoint to our signed request.
    assert f"/_matrix/federation/v1/media/thumbnail/{media_id}" in live_world["proxy"].access_log()


def test_media_unknown_to_synapse_is_a_404_here(live_world, make_user, make_token):
    token = make_token(make_user("dave"))
    status, _, body = http("GET", f"{live_world['server'].url}/_matrix/client/v1/media/download/{SYNAPSE_NAME}/NoSuchMedia",
                           headers={"Authorization": f"Bearer {token}"})
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND", (status, body)


def test_media_unknown_here_is_a_404_at_synapse(live_world):
    synapse = live_world["synapse"]
    status, _, body = http("GET", f"{synapse.url}/_matrix/client/v1/media/download/{live_world['server_name']}/NoSuchMedia",
                           headers={"Authorization": f"Bearer {synapse.token}"}, timeout=20)
    assert status == 404, (status, body, synapse.log()[-3000:])
    assert "/_matrix/federation/v1/media/download/NoSuchMedia" in live_world["proxy"].access_log()


def test_our_quarantined_media_is_a_404_at_synapse(live_world, make_user, make_token):
    from media_app.moderation.services import media_quarantine, moderators_group

    synapse, server = live_world["synapse"], live_world["server"]
    token = make_token(make_user("erin"))
    status, _, body = http("POST", server.url + "/_matrix/media/v3/upload?filename=bad.png", body=png_bytes(12, 12),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"})
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    moderator = make_user("mod", admin=True)
    moderator.groups.add(moderators_group())
    media_quarantine(server_name=live_world["server_name"], media_id=mxc.split("/")[1], moderator=moderator,
                     reason="interop")

    status, _, body = http("GET", f"{synapse.url}/_matrix/client/v1/media/download/{mxc}",
                           headers={"Authorization": f"Bearer {synapse.token}"}, timeout=20)
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND", (status, body)


NAME = "café ☕ 1.png"


def _upload(url: str, token: str, data: bytes, name: str) -> str:
    status, _, body = http("POST", f"{url}/_matrix/media/v3/upload?filename={urllib.parse.quote(name)}", body=data,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
    assert status == 200, body
    return json.loads(body)["content_uri"].removeprefix("mxc://")


def _disposition_name(headers: dict) -> str:
    from email.message import Message

    message = Message()
    message["Content-Disposition"] = headers["Content-Disposition"]
    return message.get_filename()


def test_big_media_with_a_unicode_name_crosses_both_ways(live_world, make_user, make_token):
    synapse, server = live_world["synapse"], live_world["server"]
    token = make_token(make_user("frank"))
    ours, theirs = os.urandom(5 << 20), os.urandom(5 << 20)

    mxc = _upload(server.url, token, ours, NAME)
    status, headers, body = http("GET", f"{synapse.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {synapse.token}"})
    assert status == 200 and body == ours, (status, body[:300])
    assert _disposition_name(headers) == NAME

    mxc = _upload(synapse.url, synapse.token, theirs, NAME)
    status, headers, body = http("GET", f"{server.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and body == theirs, (status, body[:300])
    assert _disposition_name(headers) == NAME
    assert stored_media(SYNAPSE_NAME, mxc.split("/")[1]).upload_name == NAME


def test_a_large_video_from_synapse_is_answered_as_it_arrives(live_world, make_user, make_token):
    """Synapse declares its multipart answer's total length, not the part's: the part's length
    is inferred from the framing, which Synapse writes as this server does."""
    synapse, server = live_world["synapse"], live_world["server"]
    video = bytes.fromhex("00000018") + b"ftypisom" + bytes.fromhex("00000200") + b"isomiso2"
    video += os.urandom((2 << 20) - len(video))
    mxc = _upload(synapse.url, synapse.token, video, "clip.mp4")
    status, headers, body = http("GET", f"{server.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {make_token(make_user('hana'))}"})
    assert status == 200 and body == video, (status, body[:300])
    assert headers["Content-Type"] == "video/mp4" and "ETag" not in headers  # streamed: no hash yet
    media = stored_media(SYNAPSE_NAME, mxc.split("/")[1])
    assert media.status == "stored" and media.media_length == len(video)


def test_synapse_waits_for_media_created_here_and_uploaded_later(live_world, make_user, make_token):
    import threading

    synapse, server = live_world["synapse"], live_world["server"]
    auth = {"Authorization": f"Bearer {make_token(make_user('grace'))}"}
    status, _, body = http("POST", server.url + "/_matrix/media/v1/create", headers=auth)
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    answer = {}

    def ask():  # Synapse asks with its own timeout_ms (20 s): our federation endpoint waits
        answer["result"] = http("GET", f"{synapse.url}/_matrix/client/v1/media/download/{mxc}",
                                headers={"Authorization": f"Bearer {synapse.token}"}, timeout=60)

    asking = threading.Thread(target=ask)
    asking.start()
    # Time for Synapse's request to reach us and wait. That it did is checked below: it took at
    # least a second of these three (Synapse sends it within milliseconds; a wait that was
    # broken would answer at once, and Synapse would ask again).
    time.sleep(3)
    data = png_bytes(9, 9, color=(1, 2, 3))
    status, _, body = http("PUT", f"{server.url}/_matrix/media/v3/upload/{mxc}?filename=later.png", body=data,
                           headers={**auth, "Content-Type": "image/png"})
    assert status == 200, body
    asking.join(60)
    status, _, body = answer["result"]
    assert status == 200 and body == data, (status, body[:300], synapse.log()[-3000:])
    # Synapse asked once, and our answer took most of the time before the upload: it waited for
    # the bytes (Synapse retries a 504, so a server that did not wait would show several asks).
    asked = [line for line in server.log().splitlines()
             if f'"GET /_matrix/federation/v1/media/download/{mxc.split("/")[1]} ' in line]
    assert len(asked) == 1 and " 200 " in asked[0], asked
    assert int(re.search(r" (\d+)ms ", asked[0]).group(1)) >= 1000, asked
