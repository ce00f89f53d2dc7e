"""The `moderators` group and exactly the permissions a moderator needs: see the media, blobs,
events, requests and block list, and act through the services (`moderation.moderate`). No add,
change or delete permission: every change goes through the moderation services."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "moderators"
PERMISSIONS = [
    ("media_app", "view_media"),
    ("media_app", "view_blob"),
    ("media_app", "view_mediaevent"),
    ("moderation", "view_moderationrequest"),
    ("moderation", "view_blockedserver"),
    ("moderation", "view_quarantinedcontent"),
    ("moderation", "moderate"),
    # The retention page: its preview (running a purge from it is for superusers).
    ("retention", "view_purge"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created after migrate finishes; the group needs them now.
    for label in ("media_app", "moderation", "retention"):
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.set(
        [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in PERMISSIONS]
    )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("media_app", "0003_blob_storage_state"),
        ("moderation", "0002_quarantined_content"),
        ("retention", "0002_purge_page"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
