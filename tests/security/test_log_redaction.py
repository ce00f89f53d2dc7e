"""The redaction filter on every handler: tokens, file names, query strings and reasons never
reach a log line (the live-server and Celery proofs are in test_attack.py)."""
import logging

import pytest

from mediasite.log_redaction import MARK, RedactingFilter, redact

TOKEN = "mst_CanaryTokenAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
NAME = "canary secret file.png"


@pytest.mark.parametrize("line", [
    f"GET /_matrix/client/v1/media/download/s.example/abcDEF/{NAME}",
    f"GET /_matrix/media/v3/download/s.example/abcDEF/{NAME} HTTP/1.1",
    f"Not Found: /_matrix/client/v1/media/download/s/x/{NAME}",
    "POST /_matrix/media/v3/upload?filename=canary%20secret%20file.png",
    f"Authorization: Bearer {TOKEN}",
    f"https://remote.example/_matrix/media?access_token={TOKEN}&x=1",
    f"token {TOKEN} was used",
    "kwargs={'reason': 'canary secret file.png is abusive', 'media_pk': 3}",
    f'{{"upload_name": "{NAME}"}}',
    "https://bucket.s3.example/ab/cd/ef?X-Amz-Signature=canarysecretfile&X-Amz-Credential=x",
])
def test_redact_removes_tokens_names_queries_and_reasons(line):
    out = redact(line)
    assert "canary" not in out.lower() and "Canary" not in out
    assert MARK in out


def test_redact_keeps_harmless_text():
    assert redact("Blob abc on fs is missing") == "Blob abc on fs is missing"
    assert redact("GET /_matrix/client/v1/media/config") == "GET /_matrix/client/v1/media/config"


def _format(record: logging.LogRecord) -> str:
    RedactingFilter().filter(record)
    return logging.Formatter("%(message)s").format(record)


def test_filter_rewrites_arguments_and_tracebacks():
    try:
        raise ValueError(f"bad upload_name={NAME!r} token {TOKEN}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "upload %s by %s", (f"filename={NAME}", TOKEN),
                                   sys.exc_info())
    text = _format(record)
    assert "canary" not in text.lower(), text
    assert "Traceback" in text  # the traceback is kept, redacted


def test_gunicorn_access_atoms_lose_the_path_file_name_even_with_spaces():
    atoms = {"h": "127.0.0.1", "m": "GET", "U": f"/_matrix/client/v1/media/download/s/m1/{NAME}", "H": "HTTP/1.1",
             "s": "200", "B": "5", "M": "1", "p": "<1>", "q": f"access_token={TOKEN}",
             "{authorization}i": f"Bearer {TOKEN}", "r": f"GET /_matrix/client/v1/media/download/s/m1/{NAME} HTTP/1.1"}
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1,
                               '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(q)s %({authorization}i)s %(r)s', (), None)
    record.args = atoms  # gunicorn passes its atoms dict as the record's args
    text = _format(record)
    assert "canary" not in text.lower(), text
    assert '"GET /_matrix/client/v1/media/download/s/m1/[REDACTED] HTTP/1.1" 200' in text


def test_every_django_handler_carries_the_filter():
    from django.conf import settings

    assert settings.LOGGING["handlers"]
    for name, handler in settings.LOGGING["handlers"].items():
        assert "redact" in handler.get("filters", []), name
    ours = [h for h in logging.getLogger().handlers if not type(h).__module__.startswith("_pytest")]
    assert ours
    for handler in ours:
        assert any(isinstance(f, RedactingFilter) for f in handler.filters), handler


def test_production_settings_refuse_debug(monkeypatch):
    import importlib
    import sys

    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("DJANGO_DEBUG", "true")
    sys.modules.pop("mediasite.settings.production", None)
    with pytest.raises(ImproperlyConfigured):
        importlib.import_module("mediasite.settings.production")
    sys.modules.pop("mediasite.settings.production", None)


def test_the_wsgi_entry_point_refuses_settings_that_turn_debug_on(tmp_path):
    """Whatever settings module an operator layers on top, gunicorn's application never loads
    with DEBUG on."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    (tmp_path / "debug_settings.py").write_text("from mediasite.settings.test import *  # noqa\nDEBUG = True\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "debug_settings",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", "import mediasite.wsgi"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ImproperlyConfigured: DEBUG is on: Mediasite does not serve with DEBUG" in out.stderr
    env["DJANGO_SETTINGS_MODULE"] = "mediasite.settings.test"  # the same import, DEBUG off: it loads
    assert subprocess.run([sys.executable, "-c", "import mediasite.wsgi"], cwd=ROOT, env=env,
                          capture_output=True, timeout=120).returncode == 0


def test_celery_prints_task_arguments_with_every_string_replaced():
    from mediasite.celery import _redact_task_arguments

    headers = {"argsrepr": "(12, 'Canary name.png')", "kwargsrepr": "{'reason': 'Canary'}"}
    body = ((12, "Canary name.png", None), {"reason": "Canary typed reason", "media_pk": 7}, {})
    _redact_task_arguments(body=body, headers=headers)
    assert headers == {"argsrepr": "(12, '[REDACTED]', None)",
                       "kwargsrepr": "{'reason': '[REDACTED]', 'media_pk': 7}"}
    assert body[0][1] == "Canary name.png"  # the task itself still gets its arguments
