"""Data migrations of the moderation app, run backwards and forwards on the test database."""
import contextlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@contextlib.contextmanager
def migrated_from(before, after):
    """Yields the apps at `before` for rows to be made, then migrates to `after` and leaves the
    database at the latest migrations again (the tests after this one need every column)."""
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        result = {}
        yield executor.loader.project_state(before).apps, result
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
        result["apps"] = executor.loader.project_state(after).apps
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_quarantined_content_recorded_before_sizes_gets_its_blobs_size():
    with migrated_from([("moderation", "0003_moderators_group"), ("media_app", "0008_blob_quarantined_size")],
                       [("moderation", "0004_quarantined_content_size")]) as (apps, result):
        Blob = apps.get_model("media_app", "Blob")
        QuarantinedContent = apps.get_model("moderation", "QuarantinedContent")
        Blob.objects.create(sha256="a" * 64, size=1234, storage="local", key="aa/aa/" + "a" * 64, quarantined=True)
        QuarantinedContent.objects.create(sha256="a" * 64)
        QuarantinedContent.objects.create(sha256="b" * 64)  # its bytes are gone: no size to be had
    sizes = dict(result["apps"].get_model("moderation", "QuarantinedContent").objects.values_list("sha256", "size"))
    assert sizes == {"a" * 64: 1234, "b" * 64: None}


@pytest.mark.django_db(transaction=True)
def test_deletions_the_system_asked_for_before_are_marked_as_retention_proposals(django_user_model):
    moderator = django_user_model.objects.create(username="mod")
    with migrated_from([("moderation", "0004_quarantined_content_size")],
                       [("moderation", "0005_moderationrequest_retention")]) as (apps, result):
        ModerationRequest = apps.get_model("moderation", "ModerationRequest")
        ModerationRequest.objects.create(action="delete_media", targets=["mxc://a/1"], requested_by=None)
        ModerationRequest.objects.create(action="delete_media", targets=["mxc://a/2"], requested_by_id=moderator.pk)
        ModerationRequest.objects.create(action="block_server", targets=["b.example"], requested_by=None)
    rows = result["apps"].get_model("moderation", "ModerationRequest").objects.values_list("targets", "retention")
    assert sorted((targets[0], retention) for targets, retention in rows) == [
        ("b.example", False), ("mxc://a/1", True), ("mxc://a/2", False)]


@pytest.mark.django_db(transaction=True)
def test_typed_quarantine_reasons_move_out_of_the_events_json_into_their_encrypted_note():
    events = [("m1", {"sha256": "a" * 64, "reason": "nsfw, typed"}),  # content since released: no row
              ("m2", {"sha256": "b" * 64, "reason": "report #7"}),
              ("m3", {"sha256": "c" * 64, "reason": "content is quarantined"}),
              ("m4", {"reason": "no hash in this one"})]
    with migrated_from([("moderation", "0005_moderationrequest_retention"), ("media_app", "0008_blob_quarantined_size")],
                       [("moderation", "0006_quarantine_reasons_out_of_events")]) as (apps, result):
        MediaEvent = apps.get_model("media_app", "MediaEvent")
        for media_id, payload in events:
            MediaEvent.objects.create(event_type="media.quarantined", media_id=media_id,
                                      payload={"media_id": media_id, "by_content_of": None, **payload})
    from media_app.models import MediaEvent

    moved = {e.media_id: (e.payload["reason"], e.payload.get("request_id"), e.note)
             for e in MediaEvent.objects.filter(event_type="media.quarantined")}  # the note read through its field
    assert moved == {"m1": ("moderator", None, "nsfw, typed"), "m2": ("report", 7, "report #7"),
                     "m3": ("content is quarantined", None, ""), "m4": ("moderator", None, "no hash in this one")}
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload, note FROM media_app_mediaevent")
        stored = " ".join(f"{payload} {note}" for payload, note in cursor.fetchall())
    assert "nsfw" not in stored and "no hash" not in stored

    # And back: each text where it was.
    executor = MigrationExecutor(connection)
    executor.migrate([("moderation", "0005_moderationrequest_retention")])
    try:
        back = executor.loader.project_state([("moderation", "0005_moderationrequest_retention")]).apps
        reasons = {e.media_id: e.payload["reason"]
                   for e in back.get_model("media_app", "MediaEvent").objects.filter(event_type="media.quarantined")}
        assert reasons == {"m1": "nsfw, typed", "m2": "report #7", "m3": "content is quarantined",
                           "m4": "no hash in this one"}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
