"""Fixtures for the storage tests: a real S3 server (moto's server mode) on loopback, over HTTP.

The session server is started here, whatever `.ci/run` exports, because some tests stop and
restart servers (those use a private one each). In CI a server that cannot start fails the
tests (tests.conftest.require_service); on a developer's machine it skips them.
"""
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from django.conf import settings

from mediasite.settings.storages import s3_options
from tests.conftest import ROOT, _free_port, require_service, start_server, stop_server

BUCKET = "mediasite-test"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


class MotoServer:
    """One `moto.server` process. Its state lives in memory: a restart empties it, so start()
    always (re)creates the bucket."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or _free_port()
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto did not start:\n" + self.log_path.read_text(errors="replace"))
                time.sleep(0.05)
        self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
        # Wait until the port refuses connections, so "stopped" really means unreachable.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["access_key"], aws_secret_access_key=CREDENTIALS["secret_key"],
        )

    def keys(self, bucket: str = BUCKET) -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {entry["Key"] for page in pages for entry in page.get("Contents", ())}

    def read(self, key: str, bucket: str = BUCKET) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def env(self) -> dict:
        """The environment that configures the `s3` backend of a server process."""
        return {
            "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": CREDENTIALS["access_key"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret_key"],
        }


def start_moto(log_dir: Path) -> MotoServer:
    server = MotoServer(log_dir)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure means "no S3 server here"
        server.stop()
        require_service("moto S3 server", False, str(exc)[:300])
    return server


def storages_with_s3(endpoint: str, bucket: str = BUCKET, **options) -> dict:
    return {
        **settings.STORAGES,
        "s3": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": s3_options(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **CREDENTIALS, **options),
        },
    }


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def private_moto(tmp_path):
    """A server of this test's own, to stop and restart."""
    server = start_moto(tmp_path)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _own_media_dir(request, settings, tmp_path):
    """Each test gets an empty `fs` directory, so files left by one test cannot satisfy (or
    break) another's assertions. Not for tests against a server process, which reads the
    session's data directory."""
    if "live_s3" in request.fixturenames or "shared_media_dir" in request.fixturenames:
        return
    settings.STORAGES = {
        **settings.STORAGES,
        "fs": {**settings.STORAGES["fs"], "OPTIONS": {**settings.STORAGES["fs"]["OPTIONS"],
                                                      "location": str(tmp_path / "media")}},
    }


@pytest.fixture
def shared_media_dir():
    """Requested by tests whose subprocesses must see the same `fs` directory as the test."""


class S3Target:
    def __init__(self, server: MotoServer, bucket: str):
        self.server, self.bucket = server, bucket

    def keys(self) -> set[str]:
        return self.server.keys(self.bucket)

    def read(self, key: str) -> bytes:
        return self.server.read(key, self.bucket)

    def put(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.server.client().delete_object(Bucket=self.bucket, Key=key)


@pytest.fixture
def s3(moto_server, settings, _own_media_dir):
    """The `s3` backend configured against the session server, on a bucket of this test's own."""
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    moto_server.client().create_bucket(Bucket=bucket)
    settings.STORAGES = storages_with_s3(moto_server.endpoint, bucket)
    return S3Target(moto_server, bucket)


def use_backend(settings, alias: str) -> None:
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": alias, "THUMBNAIL_STORAGE": alias}


@pytest.fixture(params=["fs", "s3"])
def backend(request, settings):
    """Runs a test once with new blobs on the filesystem and once on S3."""
    if request.param == "s3":
        request.getfixturevalue("s3")
    use_backend(settings, request.param)
    return request.param


@pytest.fixture(scope="module")
def live_s3(django_db_setup, django_db_blocker, moto_server, tmp_path_factory):
    """gunicorn (production settings, two workers) with both `fs` and `s3` configured."""
    server = start_server(tmp_path_factory.mktemp("server"), **moto_server.env(), MEDIASITE_STORAGE="fs")
    yield server
    stop_server(server)
