"""Typed quarantine reasons leave the media.quarantined events' plain JSON for the events' own
encrypted `note` (media_app 0009).

Before, the reason a moderator typed for "quarantine now" was written into the event's payload,
readable in any dump of the database. Each such text moves, whole, to the same event's note,
and the payload keeps the reason's code: `report` with the request's ID for the "report #N"
a signed-off report wrote, `moderator` for anything else typed. Nothing is lost, and going
back puts each text where it was.
"""
import re

from django.db import migrations

CODES = ["content is quarantined", "moderator", "report"]
_REPORT = re.compile(r"report #(\d+)")
BATCH = 500


def forwards(apps, schema_editor):
    MediaEvent = apps.get_model("media_app", "MediaEvent")
    # Events already converted (or written since) are left out by the database, not read.
    pending = (MediaEvent.objects.filter(event_type="media.quarantined").exclude(payload__reason__in=CODES)
               .order_by("pk").only("pk", "payload", "note"))
    last = 0
    while batch := list(pending.filter(pk__gt=last)[:BATCH]):
        last = batch[-1].pk
        changed = []
        for event in batch:
            payload = dict(event.payload or {})
            reason = payload.get("reason")
            if not isinstance(reason, str):
                continue
            report = _REPORT.fullmatch(reason)
            if report:
                payload.update(reason="report", request_id=int(report.group(1)))
            else:
                payload.update(reason="moderator", request_id=None)
            event.payload, event.note = payload, reason
            changed.append(event)
        # Events are append-only for the application; this move is the one rewrite.
        MediaEvent.objects.bulk_update(changed, ["payload", "note"])


def backwards(apps, schema_editor):
    MediaEvent = apps.get_model("media_app", "MediaEvent")
    converted = (MediaEvent.objects.filter(event_type="media.quarantined", payload__reason__in=["moderator", "report"])
                 .order_by("pk").only("pk", "payload", "note"))
    last = 0
    while batch := list(converted.filter(pk__gt=last)[:BATCH]):
        last = batch[-1].pk
        for event in batch:
            payload = dict(event.payload)
            if event.note:
                payload["reason"] = event.note
            elif payload.get("reason") == "report" and payload.get("request_id") is not None:
                payload["reason"] = f"report #{payload['request_id']}"
            else:
                payload["reason"] = ""
            payload.pop("request_id", None)
            event.payload, event.note = payload, ""
        MediaEvent.objects.bulk_update(batch, ["payload", "note"])


class Migration(migrations.Migration):

    dependencies = [
        ("moderation", "0005_moderationrequest_retention"),
        ("media_app", "0009_mediaevent_note"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
