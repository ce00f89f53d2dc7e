"""Property tests (hypothesis) of the two functions that turn a client's file name into
something stored and something sent back in a header."""
import re
from urllib.parse import unquote

from django.http import HttpResponse
from hypothesis import example, given, settings as hsettings, strategies as st

from media_app.api.serving import INLINE_TYPES, content_disposition
from media_app.services.identifiers import clean_upload_name

MAX = 255
names = st.text(st.characters(codec="utf-8"), max_size=600) | st.none()
media_types = st.sampled_from(sorted(INLINE_TYPES) + ["text/html", "image/svg+xml", "application/octet-stream",
                                                       "application/javascript", "text/html; charset=utf-8", ""])


@hsettings(max_examples=500, deadline=None)
@given(names)
@example("a" * 254 + " tail")  # cut right after a space
@example("\u202eexe.png")  # right-to-left override: makes "gnp.exe" look like a PNG
def test_clean_upload_name_keeps_only_printable_bounded_text(name):
    cleaned = clean_upload_name(name)
    if cleaned is None:
        return
    assert 0 < len(cleaned) <= MAX
    assert all(ch.isprintable() for ch in cleaned)
    assert not any(ch in cleaned for ch in "\r\n\x00\t\x1b\u2028\u2029")
    assert cleaned == cleaned.strip()  # no invisible padding, even where the name was cut
    assert clean_upload_name(cleaned) == cleaned


def test_a_name_cut_to_length_keeps_its_extension():
    assert clean_upload_name("b" * 3000 + ".txt") == "b" * (MAX - 4) + ".txt"
    assert clean_upload_name("ü" * 300) == "ü" * MAX  # no extension to keep
    assert clean_upload_name("c" * 300 + "." + "d" * 40) == ("c" * 300 + "." + "d" * 40)[:MAX]  # no extension either


@hsettings(max_examples=500, deadline=None)
@given(media_types, names)
def test_content_disposition_is_a_safe_header_that_round_trips_the_name(media_type, name):
    cleaned = clean_upload_name(name)
    header = content_disposition(media_type, cleaned)
    assert header.isascii() and "\r" not in header and "\n" not in header
    response = HttpResponse()
    response["Content-Disposition"] = header  # Django refuses header injection: must not raise
    disposition, _, params = header.partition(";")
    base_type = media_type.split(";", 1)[0].strip().lower()
    assert disposition == ("inline" if base_type in INLINE_TYPES else "attachment")
    if not cleaned:
        assert params == ""
        return
    match = re.fullmatch(r" filename=([A-Za-z0-9!#$%&'*+.^_`|~-]+)| filename\*=utf-8''([A-Za-z0-9%._~-]*)", params)
    assert match, header
    assert (match.group(1) or unquote(match.group(2), errors="strict")) == cleaned
