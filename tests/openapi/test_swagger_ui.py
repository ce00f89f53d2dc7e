"""Swagger UI in a real browser (Debian's Chromium, driven by Playwright): authorize with a
token, then "Try it out" an upload and a download of what was uploaded."""
import json
import os
import shutil

import pytest

from media_app.models import Media
from media_app.services.tokens import token_create, user_get_or_create
from tests.conftest import png_bytes, require_service, start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
LIVE_STATUS = ".live-responses-table tbody tr.response .response-col_status"


@pytest.fixture
def server(transactional_db, tmp_path):
    # Test settings: static files (Swagger UI's scripts) come from the finders, as no
    # collectstatic has run in a checkout; `make run` collects them.
    live = start_server(tmp_path, DJANGO_SETTINGS_MODULE="mediasite.settings.test")
    yield live
    stop_server(live)


def test_authorize_upload_and_download_from_swagger_ui(server, tmp_path):
    require_service("chromium", os.access(CHROMIUM, os.X_OK), CHROMIUM)
    from playwright.sync_api import expect, sync_playwright

    _, token = token_create(user=user_get_or_create(username="swagger"), name="browser")
    photo = tmp_path / "upload.png"
    photo.write_bytes(png_bytes(20, 10))

    # Playwright's sync API runs an event loop in this thread: no ORM calls inside the block.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        try:
            page.goto(server.url + "/api/docs/")
            page.locator("button.authorize").first.click()
            dialog = page.locator(".modal-ux")
            bearer = dialog.locator(".auth-container", has=page.locator("h4", has_text="bearerAuth"))
            bearer.locator("input[aria-label='auth-bearer-value']").fill(token)
            bearer.locator("button.authorize").click()
            expect(bearer.locator("h6")).to_have_text("Authorized")
            dialog.locator("button.btn-done").first.click()

            upload = page.locator("#operations-Native_media_API-api_v1_media_create")
            upload.locator(".opblock-summary").click()
            upload.locator("button.try-out__btn").click()
            # The multipart form, as `curl -F file=@upload.png` sends it: the file keeps its name.
            upload.locator(".body-param-content-type select").select_option("multipart/form-data")
            upload.locator("input[type=file]").first.set_input_files(str(photo))
            upload.locator("button.execute").click()
            expect(upload.locator(LIVE_STATUS)).to_have_text("201", timeout=15000)
            answer = upload.locator(".live-responses-table .response-col_description .microlight").first
            expect(answer).to_contain_text('"media_type": "image/png"')
            media_id = json.loads(answer.inner_text())["media_id"]

            download = page.locator("#operations-Native_media_API-api_v1_media_content_retrieve")
            download.locator(".opblock-summary").click()
            download.locator("button.try-out__btn").click()
            download.locator("tr[data-param-name='server_name'] input").fill("test.local")
            download.locator("tr[data-param-name='media_id'] input").fill(media_id)
            download.locator("button.execute").click()
            expect(download.locator(LIVE_STATUS)).to_have_text("200", timeout=15000)
            expect(download.locator(".live-responses-table")).to_contain_text("content-type: image/png")
            page.screenshot(path=str(tmp_path / "swagger.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "swagger-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    media = Media.objects.get(media_id=media_id)
    assert media.upload_name == "upload.png" and media.media_length == len(png_bytes(20, 10))
