"""The default beat schedule (media_app.retention.schedule) in django-celery-beat's tables."""
from django.db import migrations


def install(apps, schema_editor):
    from media_app.retention.schedule import install_default_entries

    install_default_entries(apps.get_model("django_celery_beat", "PeriodicTask"),
                            apps.get_model("django_celery_beat", "IntervalSchedule"))


def uninstall(apps, schema_editor):
    from media_app.retention.schedule import default_entries

    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in default_entries()]).delete()


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
