"""Media IDs and server names: generated here, validated before any database or file access."""
import re
import secrets
import string

from .. import errors
from ..conf import media_settings

_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
# Matrix server name grammar: DNS name, IPv4 or [IPv6], optional port.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SERVER_NAME = re.compile(rf"(?:\[[0-9A-Fa-f:.]{{2,45}}\]|{_LABEL}(?:\.{_LABEL})*)(?::[0-9]{{1,5}})?")
_ALPHABET = string.ascii_letters + string.digits


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


def validate(server_name: str, media_id: str) -> None:
    if len(server_name or "") > 255 or not _SERVER_NAME.fullmatch(server_name or ""):
        raise errors.InvalidParam("Invalid server name")
    if not _MEDIA_ID.fullmatch(media_id or ""):
        raise errors.InvalidParam("Invalid media ID")


def split_content_uri(uri: str) -> tuple[str, str]:
    """(server name, media ID) of an `mxc://server/id` URI, as moderation requests name media."""
    server_name, _, media_id = uri.removeprefix("mxc://").partition("/")
    return server_name, media_id


def is_local(server_name: str) -> bool:
    return server_name == media_settings.SERVER_NAME


def clean_upload_name(name: str | None) -> str | None:
    """Keep a client's file name displayable: no control characters, bounded length."""
    if not name:
        return None
    # Not printable also covers format characters (bidi overrides that make "gnp.exe" show as
    # "exe.png"). Stripped after the cut too, so a cut name never ends in a space.
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()
    limit = media_settings.MAX_UPLOAD_NAME_CHARS
    if len(cleaned) > limit:
        # Cut from the middle of the stem: the extension is what a client saving the file
        # (and a person reading its name) needs most.
        stem, dot, extension = cleaned.rpartition(".")
        if dot and stem and 0 < len(extension) <= 16:
            cleaned = stem[: limit - len(extension) - 1].rstrip() + "." + extension
        else:
            cleaned = cleaned[:limit]
    return cleaned.strip() or None
