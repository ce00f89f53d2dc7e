"""The four-eyes workflow as moderators live it: a real browser (Debian's chromium, headless,
driven by Playwright) against a real gunicorn.

Moderator 1 signs in, quarantines media from the list (its preview turns blurred), requests its
deletion; moderator 2 signs in, approves it in the review queue; the media is gone and its file
is removed from disk. Screenshots of the list and the queue are saved under the test's tmp_path.
"""
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import override_settings

from media_app import storage
from media_app.models import Blob, Media, MediaStatus
from media_app.moderation.models import ModerationRequest, RequestStatus
from media_app.moderation.services import moderator_create
from tests.conftest import download_url, png_bytes, require_service, start_server, stop_server, upload

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PASSWORDS = {"mod1": "first moderator passphrase", "mod2": "second moderator passphrase"}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def admin_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """A gunicorn of its own: the admin's stylesheets are collected before it starts, since the
    production settings serve static files only from the collected directory."""
    if not (Path(settings.STATIC_ROOT) / "admin" / "css" / "base.css").exists():
        call_command("collectstatic", "--noinput", verbosity=0)
    server = start_server(tmp_path_factory.mktemp("admin-server"))
    yield server
    stop_server(server)


@pytest.fixture
def browser(monkeypatch):
    require_service("chromium", os.path.exists(CHROMIUM) and shutil.which(CHROMIUM) is not None)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls are
    # still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def sign_in(browser, base_url: str, username: str):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    with page.expect_navigation(url=f"{base_url}/admin/"):
        page.click("input[type=submit]")
    return page


def run_action(page, pk: int, action: str, reason: str = "") -> str:
    page.check(f"input[name=_selected_action][value='{pk}']")
    page.select_option("select[name=action]", action)
    if reason:
        page.fill("input[name=reason]", reason)
    with page.expect_navigation():
        page.click("button[name=index]")
    return page.inner_text("ul.messagelist")


def test_two_moderators_quarantine_and_delete_in_the_browser(admin_server, transactional_db, alice_client,
                                                             browser, tmp_path):
    # Hashed as the server (production settings) checks them, not with the tests' fast hasher.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        for name, password in PASSWORDS.items():
            moderator_create(username=name, password=password)
    mxc = upload(alice_client, png_bytes(120, 90, color=(220, 40, 40)), filename="offending.png")
    media = Media.objects.select_related("blob").get(media_id=mxc.split("/")[1])
    blob = media.blob
    on_disk = storage.backend(blob.storage).local_path(blob.key)
    assert on_disk and os.path.exists(on_disk)
    base = admin_server.url

    first = sign_in(browser, base, "mod1")
    first.goto(f"{base}/admin/media_app/media/")
    preview = first.locator(f"img[src='/admin/media_app/media/{media.pk}/preview/']")
    assert preview.evaluate("img => img.naturalWidth") > 0  # the preview loaded
    assert "blur" not in (preview.get_attribute("style") or "")

    message = run_action(first, media.pk, "quarantine_now", reason="reported as abusive")
    assert "1 media quarantined" in message
    assert Media.objects.get(pk=media.pk).status == MediaStatus.QUARANTINED
    assert alice_client.get(download_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"
    preview = first.locator(f"img[src='/admin/media_app/media/{media.pk}/preview/']")
    assert preview.evaluate("img => getComputedStyle(img).filter") == "blur(12px)"
    first.screenshot(path=str(tmp_path / "media-list-quarantined.png"), full_page=True)
    preview.click()  # a moderator may look on purpose
    assert preview.evaluate("img => getComputedStyle(img).filter") == "none"

    message = run_action(first, media.pk, "request_deletion", reason="confirmed abuse")
    assert "another moderator must approve" in message
    request = ModerationRequest.objects.get()
    first.goto(f"{base}/admin/moderation/moderationrequest/")
    assert "someone other than its requester" in run_action(first, request.pk, "approve")
    assert Media.objects.get(pk=media.pk).status == MediaStatus.QUARANTINED

    second = sign_in(browser, base, "mod2")
    second.goto(f"{base}/admin/moderation/moderationrequest/")
    assert "confirmed abuse" in second.inner_text("#result_list")
    second.screenshot(path=str(tmp_path / "review-queue.png"), full_page=True)
    assert "approved and executed" in run_action(second, request.pk, "approve")

    request.refresh_from_db()
    assert request.status == RequestStatus.EXECUTED and request.decided_by.username == "mod2"
    assert Media.objects.get(pk=media.pk).status == MediaStatus.DELETED
    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert not os.path.exists(on_disk)  # the bytes are reclaimed
    assert alice_client.get(download_url(mxc)).json()["code"] == "MEDIA_NOT_FOUND"
    print(f"screenshots: {tmp_path}")
    # The ORM calls above ran in the context Playwright's sync API leaves the test body in, on
    # connections no fixture's teardown can reach: left open, they keep the test database from
    # being dropped at the end of the run.
    connections.close_all()
