"""Access tracking is batched: downloads do no database write; a flush is one UPDATE + one INSERT."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from media_app.events import media_event
from media_app.models import Media, MediaEvent
from media_app.services.access import access_batch
from tests.conftest import body_of, download_url, upload


def _writes(queries):
    return [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith(("SELECT", "SAVEPOINT", "RELEASE"))]


@pytest.mark.django_db
def test_download_path_does_no_database_write(alice_client):
    mxc = upload(alice_client, b"read me")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert body_of(alice_client.get(download_url(mxc))) == b"read me"
    assert _writes(queries.captured_queries) == []
    assert len(queries.captured_queries) == 10  # token + media lookup per request
    assert access_batch.pending() == 5


@pytest.mark.django_db
def test_flush_writes_one_batch_in_two_statements(alice_client, make_user, client_for):
    mxcs = [upload(alice_client, f"file {i}".encode()) for i in range(3)]
    bob = client_for(make_user("bob"))
    for mxc in mxcs:
        for client in (alice_client, bob):
            client.get(download_url(mxc))
    assert not Media.objects.filter(last_access_ts__isnull=False).exists()
    assert not MediaEvent.objects.filter(event_type="media.retrieved").exists()
    with CaptureQueriesContext(connection) as queries:
        assert access_batch.flush() == 6
    writes = _writes(queries.captured_queries)
    assert len(writes) == 2, writes
    assert writes[0].upper().startswith("UPDATE") and writes[1].upper().startswith("INSERT")
    assert Media.objects.filter(last_access_ts__isnull=False).count() == 3
    events = MediaEvent.objects.filter(event_type="media.retrieved")
    assert events.count() == 6
    assert {e.payload["downloader_id"] for e in events} == {"alice", "bob"}
    assert {e.payload["media_id"] for e in events} == {m.split("/")[1] for m in mxcs}
    with CaptureQueriesContext(connection) as queries:
        assert access_batch.flush() == 0
    assert queries.captured_queries == []


@pytest.mark.django_db
def test_retrieved_signal_is_sent_at_once(alice_client):
    mxc = upload(alice_client, b"signal")
    seen = []

    def receiver(sender, event_type, payload, **kwargs):
        seen.append((event_type, payload))

    media_event.connect(receiver)
    try:
        alice_client.get(download_url(mxc))
    finally:
        media_event.disconnect(receiver)
    assert seen == [("media.retrieved", {"media_id": mxc.split("/")[1], "downloader_id": "alice"})]


@pytest.mark.django_db
def test_failed_flush_keeps_the_batch(alice_client, monkeypatch):
    mxc = upload(alice_client, b"retry")
    alice_client.get(download_url(mxc))

    def broken(*args, **kwargs):
        raise RuntimeError("database down")

    monkeypatch.setattr(MediaEvent.objects, "bulk_create", broken)
    assert access_batch.flush() == 0
    assert access_batch.pending() == 1
    monkeypatch.undo()
    assert access_batch.flush() == 1


@pytest.mark.django_db
def test_vanished_media_and_users_do_not_poison_the_batch(alice_client, make_user, client_for):
    bob = make_user("bob")
    bob_client = client_for(bob)
    gone = upload(alice_client, b"soon gone")
    kept = upload(alice_client, b"kept")
    bob_client.get(download_url(gone))
    alice_client.get(download_url(kept))
    Media.objects.filter(media_id=gone.split("/")[1]).delete()
    bob.delete()
    assert access_batch.flush() == 2
    assert access_batch.pending() == 0
    assert Media.objects.get(media_id=kept.split("/")[1]).last_access_ts is not None
