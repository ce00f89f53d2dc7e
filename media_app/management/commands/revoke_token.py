from django.core.management.base import BaseCommand, CommandError

from media_app import errors
from media_app.services.tokens import token_revoke


class Command(BaseCommand):
    help = "Revoke the access token with this ID (see list_tokens); it stops working at once on every node."

    def add_arguments(self, parser):
        parser.add_argument("token_id", type=int)

    def handle(self, *args, token_id, **options):
        try:
            token_revoke(token_id=token_id)
        except errors.TokenNotFound:
            raise CommandError(f"No token with ID {token_id}") from None
        self.stdout.write(f"Token {token_id} revoked")
