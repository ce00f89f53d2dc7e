#!/usr/bin/env python3
"""Per-request cost of the hot read paths, in process, without a network or a server.

Times requests handed straight to Django's WSGI handler (production settings, the embedded
SQLite default in a fresh temp data directory unless DATABASE_URL is set): an authenticated
small download (token lookup + media/blob lookup + serving), a cached thumbnail, and the
config endpoint (token lookup only); then the three lookups alone, through their services.
Prints, in microseconds per call, the least CPU time of this process over --repeats rounds of
--n calls each: CPU time rather than wall time, and the least round rather than the mean, so
that other work on a shared machine disturbs the figures as little as possible. The access
batch's flush thread is off (its writes would be counted against whichever round they fall in).

Usage: .venv/bin/python bench/request_cost.py [--n 2000] [--repeats 5]
"""
import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: str) -> None:
    os.environ["MEDIASITE_DATA_DIR"] = data_dir
    os.environ.setdefault("MEDIASITE_SERVER_NAME", "bench.local")
    os.environ["MEDIASITE_THUMBNAIL_PREGENERATE"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")
    import django

    django.setup()
    from django.conf import settings

    settings.MEDIASITE["ACCESS_FLUSH_THREAD"] = False
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def jpeg(width=640, height=480) -> bytes:
    from PIL import Image

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    # Unique content per run: a database kept from an earlier run must not dedupe it onto a
    # blob whose file was in that run's (deleted) data directory.
    image.putpixel((0, 0), tuple(os.urandom(3)))
    image.putpixel((1, 0), tuple(os.urandom(3)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def per_call_us(fn, n: int, repeats: int) -> float:
    rounds = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - started) / n * 1e6)
    return round(min(rounds), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    setup_django(tempfile.mkdtemp(prefix="request-cost-"))

    from django.core.handlers.wsgi import WSGIHandler
    from django.test import Client
    from django.test.client import FakePayload, RequestFactory

    from media_app.models import Media
    from media_app.services import download, thumbnails, tokens

    user = tokens.user_get_or_create(username=f"bench{os.getpid()}")
    _, token = tokens.token_create(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    client = Client(**auth)
    response = client.post("/_matrix/media/v3/upload", data=jpeg(), content_type="image/jpeg")
    assert response.status_code == 200, response.content
    server, media_id = response.json()["content_uri"].removeprefix("mxc://").split("/")
    thumb_path = f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
    assert client.get(thumb_path, {"width": 320, "height": 240}).status_code == 200  # renders once

    handler = WSGIHandler()
    factory = RequestFactory()

    def wsgi_get(path: str, query: str = ""):
        environ = factory._base_environ(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET",
                                        **{"wsgi.input": FakePayload(b"")}, **auth)

        def call():
            statuses = []
            body = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
            for _ in body:
                pass
            body.close()
            assert statuses[0].startswith("200"), statuses

        return call

    media = Media.objects.select_related("blob").get(media_id=media_id)
    results = {
        "download_us": per_call_us(wsgi_get(f"/_matrix/client/v1/media/download/{server}/{media_id}"), args.n, args.repeats),
        "thumbnail_cached_us": per_call_us(wsgi_get(thumb_path, "width=320&height=240"), args.n, args.repeats),
        "config_us": per_call_us(wsgi_get("/_matrix/client/v1/media/config"), args.n, args.repeats),
        "lookup_media_us": per_call_us(
            lambda: download.media_get_servable(server_name=server, media_id=media_id), args.n, args.repeats),
        "lookup_thumbnail_us": per_call_us(
            lambda: thumbnails.thumbnail_get_or_render(media=media, width=320, height=240, method="scale",
                                                       animated=False), args.n, args.repeats),
        "lookup_token_us": per_call_us(lambda: tokens.token_user(token=token), args.n, args.repeats),
    }
    from django.db import connection

    results["database"] = connection.vendor
    print(json.dumps(results))


if __name__ == "__main__":
    main()
