"""Events (listed in docs/ARCHITECTURE.md, "Events"): an append-only MediaEvent row and a
Django signal for each.

Receivers connect to `media_event` and get `event_type` and `payload`. The signal is sent once
the row's transaction commits, so no receiver ever sees an event that was rolled back.
"""
from django.db import transaction
from django.dispatch import Signal

from .models import MediaEvent

media_event = Signal()  # kwargs: event_type, payload

UPLOADED = "media.uploaded"
DEDUPLICATED = "media.deduplicated"
RETRIEVED = "media.retrieved"
REMOTE_CACHED = "media.remote_cached"
THUMBNAIL_GENERATED = "media.thumbnail_generated"
PURGED = "media.purged"
QUARANTINED = "media.quarantined"
RELEASED = "media.released"
SIGNOFF_REQUESTED = "moderation.requested"
SIGNED_OFF = "media.signed_off"
SIGNOFF_REJECTED = "moderation.rejected"
PROTECTED = "media.protected"
UNPROTECTED = "media.unprotected"
REPORTED = "media.reported"
SERVER_BLOCKED = "server.blocked"


def send_signal(event_type: str, payload: dict) -> None:
    media_event.send(sender=MediaEvent, event_type=event_type, payload=payload)


def emit(event_type: str, payload: dict, *, server_name: str = "", actor=None, note: str = "") -> MediaEvent:
    """Record an event inside the caller's transaction; signal it after commit. `note`: text a
    person typed, stored encrypted beside the payload (and not signalled)."""
    event = MediaEvent.objects.create(
        event_type=event_type,
        server_name=server_name,
        media_id=str(payload.get("media_id", "")),
        payload=payload,
        actor=actor,
        note=note,
    )
    transaction.on_commit(lambda: send_signal(event_type, payload))
    return event


def emit_many(event_type: str, items: list[tuple[str, dict]]) -> None:
    """Record one event per (server_name, payload) in one INSERT, inside the caller's
    transaction (the batch jobs); each is signalled after commit."""
    MediaEvent.objects.bulk_create([
        MediaEvent(event_type=event_type, server_name=server_name, media_id=str(payload.get("media_id", "")),
                   payload=payload)
        for server_name, payload in items
    ])
    payloads = [payload for _server_name, payload in items]
    transaction.on_commit(lambda: [send_signal(event_type, payload) for payload in payloads])
