"""Typed quarantine reasons leave the media.quarantined events' plain JSON.

Before 0006 the reason a moderator typed for "quarantine now" was written into the event's
payload, readable in any dump of the database. Each such reason moves to its content's
QuarantinedContent row (encrypted by its field, unless the row has one already) and the event
keeps only the reason code; a reason written by a signed-off report ("report #N") becomes the
code and the request's ID.
"""
import re

from django.db import migrations

_SYSTEM = "content is quarantined"
_REPORT = re.compile(r"report #(\d+)")


def forwards(apps, schema_editor):
    MediaEvent = apps.get_model("media_app", "MediaEvent")
    QuarantinedContent = apps.get_model("moderation", "QuarantinedContent")
    events = MediaEvent.objects.filter(event_type="media.quarantined").only("pk", "payload")
    for event in events.iterator(chunk_size=500):
        payload = dict(event.payload or {})
        reason = payload.get("reason")
        if reason in (_SYSTEM, "moderator", "report") or not isinstance(reason, str):
            continue
        report = _REPORT.fullmatch(reason)
        if report:
            payload.update(reason="report", request_id=int(report.group(1)))
        else:
            payload.update(reason="moderator", request_id=None)
            row = QuarantinedContent.objects.filter(sha256=payload.get("sha256", "")).first()
            if reason and row is not None and not row.reason:  # (an encrypted field: compared here, not in SQL)
                QuarantinedContent.objects.filter(pk=row.pk).update(reason=reason)
        # Events are append-only for the application; this rewrite is the one exception.
        MediaEvent.objects.filter(pk=event.pk).update(payload=payload)


class Migration(migrations.Migration):

    dependencies = [
        ("moderation", "0006_quarantined_content_reason"),
        ("media_app", "0008_blob_quarantined_size"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
