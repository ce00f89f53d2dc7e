"""Factories for the retention tests: remote and local media with stored bytes, thumbnails, and
the bytes the backends actually hold."""
import io
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import storages
from django.utils import timezone
from PIL import Image

from media_app.models import Media, MediaOrigin, MediaStatus, Thumbnail
from media_app.services.blobs import blob_store_and_record, received_from_bytes
from media_app.services.thumbnails import thumbnail_get_or_render
from media_app.state import Actor, create

# Only the storage tests' conftest gives each test its own media directory; these tests
# measure bytes on disk, so they need one too.
from tests.storage.conftest import _own_media_dir, backend, moto_server, s3, shared_media_dir  # noqa: F401

NOW = timezone.now().replace(microsecond=0)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def png(seed: int, size=(64, 48)) -> bytes:
    """A distinct small PNG per seed (distinct content, so no accidental deduplication)."""
    buf = io.BytesIO()
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 7))
    image.putpixel((0, 0), (1, 2, seed % 251))
    image.save(buf, "PNG")
    return buf.getvalue()


def _stored(data: bytes, make):
    received = received_from_bytes(data)
    try:
        return blob_store_and_record(received=received, record=lambda blob, created: make(blob))
    finally:
        received.discard()


def remote_media(data: bytes, *, created=None, last_access=None, server="remote.example", **fields) -> Media:
    """A remote media row as the federation fetch would cache it: stored bytes, origin remote."""
    def make(blob):
        return create(to=MediaStatus.STORED, actor=Actor.SYSTEM, origin=MediaOrigin.REMOTE,
                      server_name=server, media_id=uuid.uuid4().hex[:24], blob=blob,
                      media_type="image/png", media_length=len(data), **fields)

    media = _stored(data, make)
    _set_times(media, created, last_access)
    return media


def local_media(data: bytes, *, created=None, last_access=None, uploader=None, **fields) -> Media:
    def make(blob):
        return create(to=MediaStatus.STORED, actor=Actor.UPLOADER, origin=MediaOrigin.LOCAL,
                      server_name=settings.MEDIASITE["SERVER_NAME"], media_id=uuid.uuid4().hex[:24],
                      blob=blob, media_type="image/png", media_length=len(data), uploader=uploader, **fields)

    media = _stored(data, make)
    _set_times(media, created, last_access)
    return media


def _set_times(media, created, last_access):
    changes = {}
    if created is not None:
        changes["created_ts"] = created
    if last_access is not None:
        changes["last_access_ts"] = last_access
    if changes:
        Media.objects.filter(pk=media.pk).update(**changes)
        for name, value in changes.items():
            setattr(media, name, value)


def thumbnail(media: Media, width=32, height=32, method="crop", *, created=None, last_access=None) -> Thumbnail:
    thumb = thumbnail_get_or_render(media=Media.objects.select_related("blob").get(pk=media.pk),
                                    width=width, height=height, method=method, animated=False)
    changes = {"created_ts": created or thumb.created_ts}
    if last_access is not None:
        changes["last_access_ts"] = last_access
    Thumbnail.objects.filter(pk=thumb.pk).update(**changes)
    return Thumbnail.objects.get(pk=thumb.pk)


def stored_bytes() -> int:
    """Bytes every configured blob backend holds now, measured on disk and in the bucket."""
    total = 0
    for alias in settings.STORAGES:
        if alias in ("default", "staticfiles"):
            continue
        store = storages[alias]
        if hasattr(store, "bucket_name"):
            client = store.connection.meta.client
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket_name):
                total += sum(entry["Size"] for entry in page.get("Contents", ()))
        else:
            root = Path(store.location)
            for directory, _dirs, files in os.walk(root):
                total += sum((Path(directory) / name).stat().st_size for name in files)
    return total


@pytest.fixture
def lifetimes(settings):
    """Set the retention lifetimes (days; None = off) for one test."""
    def set_(**days):
        settings.MEDIASITE = {**settings.MEDIASITE, **{f"{k.upper()}_DAYS": v for k, v in days.items()}}
    return set_
