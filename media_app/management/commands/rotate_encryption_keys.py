from django.core.management.base import BaseCommand

from media_app.services.encryption import encrypted_fields_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field with the first key of MEDIASITE_ENCRYPTION_KEYS. "
        "Rotate by prepending a new key, running this, then removing the old key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size, **options):
        count = encrypted_fields_rotate(batch_size=batch_size)
        self.stdout.write(f"Re-encrypted {count} values with the current key")
