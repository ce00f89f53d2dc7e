from django.db import migrations, models


def mark_retention_proposals(apps, schema_editor):
    # Before this field, every deletion the system asked for was a retention proposal.
    ModerationRequest = apps.get_model("moderation", "ModerationRequest")
    ModerationRequest.objects.filter(action="delete_media", requested_by__isnull=True).update(retention=True)


class Migration(migrations.Migration):

    dependencies = [
        ("moderation", "0004_quarantined_content_size"),
    ]

    operations = [
        migrations.AddField(
            model_name="moderationrequest",
            name="retention",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(mark_retention_proposals, migrations.RunPython.noop),
    ]
