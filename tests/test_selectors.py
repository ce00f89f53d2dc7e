"""The hand-written lookups return the same instances the ORM would build, on whichever
database the suite runs (SQLite converts datetimes and booleans; encrypted names decrypt)."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from media_app import selectors
from media_app.models import Blob, Media, MediaStatus, Thumbnail
from media_app.services import tokens


def fields_of(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.fixture
def rows(db, alice):
    created = timezone.now() - timedelta(days=3, microseconds=7)
    blob = Blob.objects.create(sha256="a" * 64, size=12, storage="fs", key="aa/aa/" + "a" * 64,
                               quarantined=True, created_ts=created, verified_ts=created)
    rendition = Blob.objects.create(sha256="b" * 64, size=3, storage="s3", key="bb/bb/" + "b" * 64)
    media = Media.objects.create(
        server_name="test.local", media_id="stored", blob=blob, media_type="image/png", media_length=12,
        upload_name="naïve name.png", uploader=alice, created_ts=created, last_access_ts=created,
        status=MediaStatus.STORED, protected=True, unused_expires_at=None,
    )
    pending = Media.objects.create(server_name="test.local", media_id="pending", uploader=alice,
                                   unused_expires_at=created + timedelta(days=9))
    thumb = Thumbnail.objects.create(source=blob, width=32, height=32, method="crop", media_type="image/png",
                                     animated=True, blob=rendition, rendered_width=32, rendered_height=30)
    return media, pending, thumb


def test_media_with_blob_equals_the_orm(rows, django_assert_num_queries):
    media, pending, _ = rows
    with django_assert_num_queries(1):
        found = selectors.media_with_blob(server_name="test.local", media_id="stored")
        assert found.blob is not None  # attached, not fetched on access
    orm = Media.objects.select_related("blob").get(pk=media.pk)
    assert fields_of(found) == fields_of(orm)
    assert fields_of(found.blob) == fields_of(orm.blob)
    assert found.upload_name == "naïve name.png" and found.protected is True and found.blob.quarantined is True
    assert found.created_ts.tzinfo is not None
    waiting = selectors.media_with_blob(server_name="test.local", media_id="pending")
    assert waiting.blob is None and fields_of(waiting) == fields_of(Media.objects.get(pk=pending.pk))
    assert selectors.media_with_blob(server_name="other.example", media_id="stored") is None


def test_thumbnail_cached_equals_the_orm(rows, django_assert_num_queries):
    _, _, thumb = rows
    args = {"source_id": thumb.source_id, "width": 32, "height": 32, "method": "crop"}
    with django_assert_num_queries(1):
        found = selectors.thumbnail_cached(**args, animated=True)
        assert found.blob.storage == "s3"
    orm = Thumbnail.objects.select_related("blob").get(pk=thumb.pk)
    assert fields_of(found) == fields_of(orm) and fields_of(found.blob) == fields_of(orm.blob)
    assert found.animated is True
    assert selectors.thumbnail_cached(**args, animated=False) is None
    assert selectors.thumbnail_cached(**{**args, "method": "scale"}, animated=True) is None


def test_token_user_loads_the_fields_authentication_reads(db, make_user, django_assert_num_queries):
    staff = make_user("staffer", admin=True)  # a moderator: staff, not a superuser
    _, token = tokens.token_create(user=staff)
    tokens.token_user(token=token)  # the first use is recorded (tests/api/test_tokens.py)
    with django_assert_num_queries(1):
        user = tokens.token_user(token=token)
        assert (user.pk, user.username, user.is_active, user.is_staff, user.is_superuser) == (
            staff.pk, "staffer", True, True, False)
    assert tokens.token_user(token=token + "x") is None
    get_user_model().objects.filter(pk=staff.pk).update(is_active=False)
    assert tokens.token_user(token=token) is None
    assert selectors.user_for_token_hash(token_hash=tokens.hash_token(token)).is_active is False
