from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('media_app', '0006_accesstoken_last_used_ts'),
    ]

    operations = [
        migrations.AddField(
            model_name='thumbnail',
            name='last_access_ts',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='thumbnail',
            index=models.Index(fields=['last_access_ts'], name='thumbnail_last_access'),
        ),
    ]
