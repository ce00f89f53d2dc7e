"""Production settings: `make run`, gunicorn, workers. Secrets live in the data directory."""
import secrets

from .base import *  # noqa: F401,F403
from django.core.exceptions import ImproperlyConfigured

from ..secret_files import read_or_create
from .base import DATA_DIR, SECRET_KEY, env

DATA_DIR.mkdir(parents=True, exist_ok=True)
(DATA_DIR / "broker" / "control").mkdir(parents=True, exist_ok=True)  # embedded Celery broker

if not SECRET_KEY:  # created on first start, and the same for every process from then on
    _secret, _created = read_or_create(DATA_DIR / "secret_key", lambda: secrets.token_urlsafe(48).encode())
    SECRET_KEY = _secret.decode().strip()

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env.bool("MEDIASITE_HTTPS", default=False):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Debug pages print settings, SQL and request data (tokens, file names): never in production,
# whatever a settings module layered on this one says (mediasite/wsgi.py checks again once
# settings are final).
DEBUG = False
if env.bool("DJANGO_DEBUG", default=False):
    raise ImproperlyConfigured("DJANGO_DEBUG is set: the production settings never run with DEBUG")
