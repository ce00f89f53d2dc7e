"""WSGI entry point for gunicorn."""
import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (configured by get_wsgi_application)

# Debug pages print settings and request data (tokens, file names): a server never runs with them.
if settings.DEBUG:
    raise ImproperlyConfigured("DEBUG is on: Mediasite does not serve with DEBUG")
