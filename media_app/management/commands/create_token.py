from django.core.management.base import BaseCommand

from media_app.services.tokens import token_create, user_get_or_create


class Command(BaseCommand):
    help = "Create USERNAME if needed and print a new access token (last line of output)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--admin", action="store_true", help="make the user a moderator: staff and in the moderators group, not a superuser")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args, username, admin, name, **options):
        user = user_get_or_create(username=username, admin=admin)
        _, token = token_create(user=user, name=name)
        self.stdout.write(f"Token for {user.username}{' (admin)' if user.is_staff else ''}; it is shown only once:")
        self.stdout.write(token)
