"""Production settings: `make run`, gunicorn, workers. Secrets live in the data directory."""
import secrets

from .base import *  # noqa: F401,F403
from django.core.exceptions import ImproperlyConfigured

from .base import DATA_DIR, SECRET_KEY, env

DATA_DIR.mkdir(parents=True, exist_ok=True)
(DATA_DIR / "broker" / "control").mkdir(parents=True, exist_ok=True)  # embedded Celery broker


def _secret_from_file(name: str) -> str:
    """Create a secret once, on first start, and reuse it: every worker must agree on it."""
    path = DATA_DIR / name
    if not path.exists():
        try:
            with open(path, "x") as fh:  # "x": the first process to start wins the race
                fh.write(secrets.token_urlsafe(48))
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text().strip()


if not SECRET_KEY:
    SECRET_KEY = _secret_from_file("secret_key")

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
