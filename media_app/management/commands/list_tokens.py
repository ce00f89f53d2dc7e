from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from media_app.services.tokens import token_list


def _when(ts) -> str:
    return ts.isoformat(timespec="seconds") if ts else "never"


class Command(BaseCommand):
    help = "List USERNAME's access tokens (id, name, created, last used); never the secrets."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}")
        rows = list(token_list(user=user))
        self.stdout.write(f"{'ID':>6}  {'CREATED':<25}  {'LAST USED':<25}  NAME")
        for row in rows:
            self.stdout.write(f"{row.pk:>6}  {_when(row.created_ts):<25}  {_when(row.last_used_ts):<25}  {row.name}")
        self.stdout.write(f"{len(rows)} token(s)")
