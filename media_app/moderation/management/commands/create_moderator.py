"""`manage.py create_moderator USERNAME`: a staff member of `moderators` (not a superuser) who
can sign in to the admin. The password is asked for twice on a terminal; scripts pass it on
standard input (--password-stdin) or in MEDIASITE_MODERATOR_PASSWORD, never as an argument
(arguments are visible to every user of the machine)."""
import getpass
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from media_app.moderation.services import moderator_create

ENV_VAR = "MEDIASITE_MODERATOR_PASSWORD"


class Command(BaseCommand):
    help = "Create (or update) a moderator who can sign in to the admin."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")

    def handle(self, *args, username, password_stdin, **options):
        password = self._password(password_stdin)
        try:
            user = moderator_create(username=username, password=password)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"{user.get_username()} is a moderator and can sign in at /admin/.")

    def _password(self, from_stdin: bool) -> str:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif os.environ.get(ENV_VAR):
            password = os.environ[ENV_VAR]
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords do not match")
        else:
            raise CommandError(f"No password: use a terminal, --password-stdin or {ENV_VAR}")
        if not password:
            raise CommandError("The password must not be empty")
        return password
