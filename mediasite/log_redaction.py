"""One redaction filter for every log record this project writes: gunicorn's access and error
logs, Django, Celery (worker, tasks, the task arguments it prints) and the root logger.

What it removes: access tokens (the Authorization header, `access_token`, any `mst_` token),
file names (the `filename` query parameter and the file-name segment of
`/download/{server}/{id}/{fileName}`), query strings of URLs (remote and presigned URLs carry
signatures and names there) and free text typed by people (reasons, upload names).

It is installed on handlers, not loggers: a logger's filters see only records logged to that
very logger, a handler's filters see every record that reaches it, whichever child logged it.
Over-redaction is the accepted failure mode: a log line that loses a harmless word is better
than one that keeps a file name.

This module imports nothing from Django, so gunicorn's configuration can use it before Django
is set up.
"""
import logging
import re

MARK = "[REDACTED]"

# Keys whose values are a secret or a person's words wherever they appear: `key=value`,
# `key: value`, `'key': 'value'`, `"key": "value"` (log arguments, reprs of kwargs, JSON).
_SECRET_KEYS = r"access_token|authorization|token|password|secret"
# Free text: unquoted, it runs to the end of the line (or the next query parameter), since
# names and reasons hold spaces.
_TEXT_KEYS = r"filename|file_name|upload_name|reason|decision_reason|comment|note"
_QUOTED = r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"'
_KEY_VALUE = re.compile(
    rf"""(?P<key>["']?\b(?:{_SECRET_KEYS})\b["']?\s*[:=]\s*)(?P<value>{_QUOTED}|[^\s&,;)}}\]]+)"""
    rf"""|(?P<tkey>["']?\b(?:{_TEXT_KEYS})\b["']?\s*[:=]\s*)(?P<tvalue>{_QUOTED}|[^&\r\n]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic|X-Matrix)\s+[^\s\"',]+(?:,\s*\w+=[^\s\"',]+)*", re.IGNORECASE)
# Tokens minted here; caught even with no key in front of them.
_MST_TOKEN = re.compile(r"\bmst_[A-Za-z0-9_\-]+")
# Matrix access tokens of Synapse (syt_) and of other homeservers (mct_ for MAS) are secrets too.
_OTHER_TOKENS = re.compile(r"\b(?:syt|mct|mat)_[A-Za-z0-9_\-]{8,}")
# /download/{server}/{id}/{anything...}: everything after the media ID is the file name, which
# may hold spaces once percent-decoded, so it runs to the end of the line or a query string.
_DOWNLOAD_NAME = re.compile(r"(/download/[^/\s?]+/[^/\s?]+)/(?!\[REDACTED\])[^?\r\n]+")
# A query string attached to a path or URL (not a lone question mark in prose).
_QUERY = re.compile(r"(?<=[^\s?])\?[^\s\"'<>]+")


_OTHER_TOKEN_PREFIXES = ("syt_", "mct_", "mat_")
_SCHEMES = ("bearer", "basic", "x-matrix")
# Every key of _SECRET_KEYS and _TEXT_KEYS contains one of these.
_KEY_WORDS = ("token", "authorization", "password", "secret", "name", "reason", "comment", "note")


def redact(text: str) -> str:
    """The text with every secret and personal string replaced by MARK."""
    if not text:
        return text
    # Each pattern runs only when a word it needs is present: an access-log line is redacted
    # on every request, and most lines need none of them.
    lower = text.lower()
    if "mst_" in text:
        text = _MST_TOKEN.sub("mst_" + MARK, text)
    if any(prefix in text for prefix in _OTHER_TOKEN_PREFIXES):
        text = _OTHER_TOKENS.sub(MARK, text)
    if any(scheme in lower for scheme in _SCHEMES):
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MARK}", text)
    if any(key in lower for key in _KEY_WORDS):
        text = _KEY_VALUE.sub(lambda m: (m.group("key") or m.group("tkey")) + MARK, text)
    if "/download/" in text:
        text = _DOWNLOAD_NAME.sub(lambda m: f"{m.group(1)}/{MARK}", text)
    if "?" in text:
        text = _QUERY.sub("?" + MARK, text)
    return text


def _redact_path(path: str) -> str:
    """A request path (gunicorn's %(U)s): the whole remainder after a media ID goes."""
    return _DOWNLOAD_NAME.sub(lambda m: f"{m.group(1)}/{MARK}", path)


# gunicorn access-log atoms whose whole value is sensitive: headers that carry credentials,
# and the raw query string.
_SECRET_ATOMS = {"q", "{authorization}i", "{cookie}i", "{x-forwarded-for}i"}


# Atoms gunicorn computes itself (address, method, status, sizes, times, pid): nothing to redact.
_PLAIN_ATOMS = {"h", "l", "u", "t", "m", "H", "s", "B", "b", "T", "D", "M", "L", "p"}
_ATOM_REF = re.compile(r"%\(([^)]+)\)")


def _redact_atoms(fmt: str, atoms: dict) -> dict:
    # gunicorn's atoms hold every request header and environ entry; only the ones the format
    # prints are kept (and redacted), the rest never reach the line anyway.
    cleaned = {}
    for key in _ATOM_REF.findall(fmt):
        try:
            value = atoms[key]  # gunicorn's SafeAtoms: header names any case, "-" when absent
        except KeyError:
            value = "-"
        if not isinstance(value, str) or key in _PLAIN_ATOMS:
            cleaned[key] = value
        elif key in _SECRET_ATOMS or "authorization" in key or "cookie" in key or "token" in key:
            cleaned[key] = MARK if value and value != "-" else value
        elif key == "U":
            cleaned[key] = redact(_redact_path(value))
        else:
            cleaned[key] = redact(value)
    return cleaned


class RedactingFilter(logging.Filter):
    """Rewrites each record into its redacted, fully formatted message (args consumed), and
    redacts the traceback text too. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.args, dict) and "U" in record.args and "s" in record.args:
                # A gunicorn access-log line: the operator's format around redacted atoms.
                message = str(record.msg) % _redact_atoms(str(record.msg), record.args)
            else:
                message = redact(record.getMessage())
        except Exception:  # a broken format string must not lose the record
            message = redact(f"{record.msg!r} {record.args!r}")
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        # Celery's structured extras (task arguments) are printed by some formatters.
        for attr in ("data", "argsrepr", "kwargsrepr"):
            value = getattr(record, attr, None)
            if isinstance(value, str):
                setattr(record, attr, redact(value))
            elif isinstance(value, dict):
                setattr(record, attr, {k: redact(v) if isinstance(v, str) else v for k, v in value.items()})
        return True


_FILTER = RedactingFilter()


def install(*loggers: logging.Logger) -> None:
    """Add the filter to every handler of these loggers (the root logger when none is given)."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(_FILTER)
