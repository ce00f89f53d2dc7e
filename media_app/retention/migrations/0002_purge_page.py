from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('media_app', '0001_initial'),
        ('retention', '0001_default_schedule'),
    ]

    operations = [
        migrations.CreateModel(
            name='Purge',
            fields=[
            ],
            options={
                'verbose_name': 'purge',
                'verbose_name_plural': 'purge (preview and run)',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('media_app.media',),
        ),
    ]
