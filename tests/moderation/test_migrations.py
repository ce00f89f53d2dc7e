"""Data migrations of the moderation app, run backwards and forwards on the test database."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("moderation", "0003_moderators_group"), ("media_app", "0008_blob_quarantined_size")]
AFTER = [("moderation", "0004_quarantined_content_size")]


@pytest.mark.django_db(transaction=True)
def test_quarantined_content_recorded_before_sizes_gets_its_blobs_size():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        apps = executor.loader.project_state(BEFORE).apps
        Blob = apps.get_model("media_app", "Blob")
        QuarantinedContent = apps.get_model("moderation", "QuarantinedContent")
        Blob.objects.create(sha256="a" * 64, size=1234, storage="local", key="aa/aa/" + "a" * 64, quarantined=True)
        QuarantinedContent.objects.create(sha256="a" * 64)
        QuarantinedContent.objects.create(sha256="b" * 64)  # its bytes are gone: no size to be had
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    sizes = dict(apps.get_model("moderation", "QuarantinedContent").objects.values_list("sha256", "size"))
    assert sizes == {"a" * 64: 1234, "b" * 64: None}
