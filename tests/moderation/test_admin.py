"""The moderators' admin: read-only everywhere, every change an action calling a service,
previews for staff only, the review queue, the block list, the `moderators` group."""
import io
import re

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.template.defaultfilters import filesizeformat
from django.test import Client
from PIL import Image

from media_app.models import AccessToken, Blob, Media, MediaEvent, MediaStatus
from media_app.moderation.models import BlockedServer, ModerationRequest, RequestStatus
from tests.conftest import download_url, png_bytes, upload

IMAGE = png_bytes(64, 48, color=(200, 30, 30))
ADMINS = {
    "media_app": ["media", "blob", "mediaevent", "accesstoken"],
    "moderation": ["moderationrequest", "blockedserver", "quarantinedcontent"],
}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def action(client, app_model, name, pks, reason=""):
    return client.post(f"/admin/{app_model}/", {
        "action": name, "_selected_action": [str(pk) for pk in pks], "index": "0", "reason": reason,
    }, follow=True)


@pytest.fixture
def media(alice_client):
    return Media.objects.get(media_id=upload(alice_client, IMAGE, filename="cat.png").split("/")[1])


@pytest.mark.django_db
def test_the_moderators_group_has_exactly_these_permissions():
    """As the migration creates it, and as the services recreate it when it is missing."""
    from media_app.moderation.services import moderators_group

    expected = [
        "media_app.view_blob", "media_app.view_media", "media_app.view_mediaevent",
        "moderation.moderate", "moderation.view_blockedserver", "moderation.view_moderationrequest",
        "moderation.view_quarantinedcontent",
        "retention.view_purge",
    ]
    for group in (Group.objects.get(name="moderators"), None):
        if group is None:
            Group.objects.filter(name="moderators").delete()
            group = moderators_group()
        assert sorted(f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()) == expected


@pytest.mark.django_db
def test_admin_offers_no_add_delete_or_status_edit(media, mod1, make_user):
    superuser = make_user("root")
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    request = ModerationRequest.objects.create(action="delete_media", targets=[media.content_uri])
    rows = {"media": media, "blob": media.blob, "mediaevent": MediaEvent.objects.first(),
            "accesstoken": AccessToken.objects.first(), "moderationrequest": request}
    for user in (mod1, superuser):  # not even a superuser gets a form that writes around services
        client = signed_in(user)
        for app, models in ADMINS.items():
            for model in models:
                listing = client.get(f"/admin/{app}/{model}/")
                if user is mod1 and model == "accesstoken":
                    assert listing.status_code == 403
                    continue
                assert listing.status_code == 200, (app, model)
                assert b"delete_selected" not in listing.content
                add = client.get(f"/admin/{app}/{model}/add/")
                # The block list's "add" files a block request through the service (below).
                assert add.status_code == (200 if model == "blockedserver" else 403), (app, model)
                row = rows.get(model)
                if row is None:
                    continue
                page = client.get(f"/admin/{app}/{model}/{row.pk}/change/")
                assert page.status_code == 200
                assert not re.search(rb'<(input|select|textarea)[^>]*name="(status|quarantined|protected|blob)"',
                                     page.content), (app, model)
                assert b'value="Save' not in page.content
                assert client.post(f"/admin/{app}/{model}/{row.pk}/change/", {"status": "deleted"}).status_code == 403
                assert client.get(f"/admin/{app}/{model}/{row.pk}/delete/").status_code == 403
    media.refresh_from_db()
    assert media.status == MediaStatus.STORED
    assert django_admin.site.is_registered(Media)


@pytest.mark.django_db
def test_non_staff_get_nothing_from_the_admin(media, make_user):
    client = signed_in(make_user("eve"))
    for url in ["/admin/", "/admin/media_app/media/", f"/admin/media_app/media/{media.pk}/preview/",
                "/admin/moderation/moderationrequest/", "/admin/moderation/blockedserver/add/"]:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    response = action(client, "media_app/media", "quarantine_now", [media.pk])
    media.refresh_from_db()
    assert media.status == MediaStatus.STORED


@pytest.mark.django_db
def test_staff_outside_moderators_cannot_act(media, make_user):
    staff = make_user("helpdesk")
    staff.is_staff = True
    staff.save()
    client = signed_in(staff)
    assert client.get("/admin/media_app/media/").status_code == 403
    assert client.get(f"/admin/media_app/media/{media.pk}/preview/").status_code == 403
    action(client, "media_app/media", "quarantine_now", [media.pk])
    media.refresh_from_db()
    assert media.status == MediaStatus.STORED


@pytest.mark.django_db
def test_media_list_previews_blur_quarantined_media_and_search_by_hash(media, mod1, alice_client):
    client = signed_in(mod1)
    page = client.get("/admin/media_app/media/").content.decode()
    preview = f"/admin/media_app/media/{media.pk}/preview/"
    assert preview in page and "mod-blurred" not in page
    image = client.get(preview)
    assert image.status_code == 200 and image["Content-Type"].startswith("image/")
    assert "no-store" in image["Cache-Control"]
    assert max(Image.open(io.BytesIO(b"".join(image.streaming_content))).size) <= 96

    action(client, "media_app/media", "quarantine_now", [media.pk], reason="gore")
    media.refresh_from_db()
    assert media.status == MediaStatus.QUARANTINED
    assert alice_client.get(download_url(media.content_uri.removeprefix("mxc://"))).status_code == 404
    page = client.get("/admin/media_app/media/").content.decode()
    assert "mod-blurred" in page and "blur(12px)" in page
    assert client.get(preview).status_code == 200  # moderators still see it, blurred by the page

    other = upload(alice_client, b"not this one")
    found = client.get("/admin/media_app/media/", {"q": media.blob.sha256}).content.decode()
    assert media.media_id in found and other.split("/")[1] not in found
    assert media.media_id in client.get("/admin/media_app/media/", {"q": media.media_id}).content.decode()
    listing = client.get("/admin/media_app/media/").content.decode()
    assert filesizeformat(media.media_length) in listing  # "139 bytes", a size a person reads
    for query in ({"status__exact": "quarantined"}, {"origin__exact": "local"}, {"type": "image"},
                  {"size": "lt100k"}, {"server": "test.local"}, {"protected__exact": "0"}):
        assert media.media_id in client.get("/admin/media_app/media/", query).content.decode(), query
    assert media.media_id not in client.get("/admin/media_app/media/", {"type": "video"}).content.decode()


@pytest.mark.django_db
def test_review_queue_four_eyes_through_the_admin(media, mod1, mod2):
    first = signed_in(mod1)
    action(first, "media_app/media", "request_deletion", [media.pk], reason="spam wave")
    request = ModerationRequest.objects.get()
    queue = first.get("/admin/moderation/moderationrequest/").content.decode()
    assert "spam wave" in queue and media.media_id in queue

    refused = action(first, "moderation/moderationrequest", "approve", [request.pk])
    assert b"someone other than its requester" in refused.content
    assert Media.objects.get(pk=media.pk).status == MediaStatus.STORED

    action(signed_in(mod2), "moderation/moderationrequest", "approve", [request.pk], reason="confirmed spam")
    request.refresh_from_db()
    assert request.status == RequestStatus.EXECUTED and request.decided_by == mod2
    assert request.decision_reason == "confirmed spam"  # the approver's reason is kept, not dropped
    assert Media.objects.get(pk=media.pk).status == MediaStatus.DELETED
    assert not Blob.objects.exists()
    # Decided requests leave the queue (it opens on pending ones).
    assert media.media_id not in signed_in(mod2).get("/admin/moderation/moderationrequest/").content.decode()


@pytest.mark.django_db
def test_reject_from_the_queue_with_a_reason(media, mod1, mod2):
    action(signed_in(mod1), "media_app/media", "request_deletion", [media.pk])
    request = ModerationRequest.objects.get()
    second = signed_in(mod2)
    action(second, "moderation/moderationrequest", "reject", [request.pk])  # no reason: refused
    assert ModerationRequest.objects.get().status == RequestStatus.PENDING
    action(second, "moderation/moderationrequest", "reject", [request.pk], reason="it is satire")
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED and request.decision_reason == "it is satire"


@pytest.mark.django_db
def test_release_request_from_the_media_list(media, mod1, mod2):
    client = signed_in(mod1)
    action(client, "media_app/media", "quarantine_now", [media.pk])
    action(client, "media_app/media", "request_release", [media.pk], reason="mistake")
    request = ModerationRequest.objects.get()
    assert request.action == "release_media"
    action(signed_in(mod2), "moderation/moderationrequest", "approve", [request.pk])
    media.refresh_from_db()
    assert media.status == MediaStatus.STORED and not media.blob.quarantined


@pytest.mark.django_db
def test_block_list_entries_are_pending_until_approved(mod1, mod2):
    client = signed_in(mod1)
    response = client.post("/admin/moderation/blockedserver/add/", {"server_name": "Spam.Example", "reason": "spam"})
    assert response.status_code == 302
    entry = BlockedServer.objects.get()
    assert entry.server_name == "spam.example" and not entry.active
    listing = client.get("/admin/moderation/blockedserver/").content.decode()
    assert "spam.example" in listing and "pending" in listing
    bad = client.post("/admin/moderation/blockedserver/add/", {"server_name": "not a server!"})
    assert bad.status_code == 200 and BlockedServer.objects.count() == 1
    action(signed_in(mod2), "moderation/moderationrequest", "approve", [entry.request_id])
    entry.refresh_from_db()
    assert entry.active


@pytest.mark.django_db
def test_event_log_is_read_only(media, mod1):
    client = signed_in(mod1)
    event = MediaEvent.objects.first()
    assert client.get("/admin/media_app/mediaevent/").status_code == 200
    assert client.post(f"/admin/media_app/mediaevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert MediaEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
def test_create_moderator_makes_a_staff_non_superuser_who_can_sign_in(monkeypatch, client):
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    call_command("create_moderator", "marta", "--password-stdin")
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="marta")
    assert user.is_staff and not user.is_superuser and user.groups.filter(name="moderators").exists()
    response = client.post("/admin/login/?next=/admin/", {"username": "marta", "password": "correct horse battery staple"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/media_app/media/").status_code == 200

    monkeypatch.setenv("MEDIASITE_MODERATOR_PASSWORD", "another long passphrase 42")
    call_command("create_moderator", "nils")
    assert get_user_model().objects.get(username="nils").check_password("another long passphrase 42")

    # --password-stdin wins over the environment variable.
    monkeypatch.setattr("sys.stdin", io.StringIO("from standard input 1234\n"))
    call_command("create_moderator", "olga", "--password-stdin")
    assert get_user_model().objects.get(username="olga").check_password("from standard input 1234")


@pytest.mark.django_db
def test_create_moderator_refuses_weak_passwords(monkeypatch):
    from django.core.management.base import CommandError

    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    with pytest.raises(CommandError):
        call_command("create_moderator", "weak", "--password-stdin")


@pytest.mark.django_db
def test_admin_sign_in_locks_out_after_repeated_failures(client, make_moderator):
    from django.conf import settings

    make_moderator("target")
    password = "pw-target-Long-enough-1"
    for attempt in range(1, settings.AXES_FAILURE_LIMIT + 1):
        failed = client.post("/admin/login/?next=/admin/", {"username": "target", "password": "guess"})
        # The form again until the limit; the failure that reaches it locks the account out.
        assert failed.status_code == (429 if attempt == settings.AXES_FAILURE_LIMIT else 200)
    locked = client.post("/admin/login/?next=/admin/", {"username": "target", "password": password})
    assert locked.status_code == 429  # even the right password is refused while locked out
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not affected.
    make_moderator("other")
    ok = client.post("/admin/login/?next=/admin/", {"username": "other", "password": "pw-other-Long-enough-1"})
    assert ok.status_code == 302


@pytest.mark.parametrize("query", ["q=%00", "status=%00stored", "server_name__exact=a%00b"])
def test_a_nul_in_an_admin_search_or_filter_is_a_400_not_a_database_error(media, mod1, query):
    response = signed_in(mod1).get(f"/admin/media_app/media/?{query}")
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_PARAM"
    assert signed_in(mod1).get("/admin/media_app/media/?q=cat").status_code == 200


@pytest.mark.django_db
def test_create_moderator_on_a_terminal_asks_the_password_twice_and_refuses_a_mismatch(monkeypatch):
    import getpass

    from django.contrib.auth import get_user_model
    from django.core.management.base import CommandError

    monkeypatch.delenv("MEDIASITE_MODERATOR_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    prompts, answers = [], iter(["a long terminal passphrase", "a long terminal passphrase",
                                 "a long terminal passphrase", "not the same one at all"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    call_command("create_moderator", "tove")
    assert prompts == ["Password: ", "Password (again): "]
    assert get_user_model().objects.get(username="tove").check_password("a long terminal passphrase")
    with pytest.raises(CommandError, match="do not match"):
        call_command("create_moderator", "ulla")
    assert not get_user_model().objects.filter(username="ulla").exists()


@pytest.mark.django_db
def test_approving_from_a_stale_page_says_the_request_was_already_decided(media, mod1, mod2, make_moderator):
    action(signed_in(mod1), "media_app/media", "request_deletion", [media.pk])
    request = ModerationRequest.objects.get()
    action(signed_in(mod2), "moderation/moderationrequest", "approve", [request.pk])
    # A third moderator's page still showed it pending.
    late = action(signed_in(make_moderator("mod3")), "moderation/moderationrequest", "approve", [request.pk])
    assert f"Request #{request.pk}: This moderation request has already been decided" in late.content.decode()


@pytest.mark.django_db
def test_quarantined_media_cannot_be_protected(media, mod1):
    client = signed_in(mod1)
    action(client, "media_app/media", "quarantine_now", [media.pk])
    page = action(client, "media_app/media", "protect", [media.pk]).content.decode()
    assert "Quarantined media cannot be protected; release it first" in page
    media.refresh_from_db()
    assert media.is_quarantined and not media.protected


@pytest.mark.django_db
def test_the_media_page_shows_the_quarantine_reason_and_links_to_no_user_page(media, mod1):
    client = signed_in(mod1)
    action(client, "media_app/media", "quarantine_now", [media.pk], reason="gore, reported twice")
    page = client.get(f"/admin/media_app/media/{media.pk}/change/").content.decode()
    assert "gore, reported twice" in page
    assert "/admin/auth/user/" not in page and "alice" in page
    assert "Mediasite moderation" in page and "Django administration" not in page


@pytest.mark.django_db
def test_a_block_added_in_the_admin_is_announced_as_requested_not_done(mod1):
    page = signed_in(mod1).post("/admin/moderation/blockedserver/add/", {"server_name": "spam.example"},
                                follow=True).content.decode()
    assert "Block of spam.example requested; another moderator must approve it" in page
    assert "added successfully" not in page


@pytest.mark.django_db
def test_the_queue_page_reads_its_targets_in_one_query_not_one_per_target(alice_client, mod1,
                                                                            django_assert_max_num_queries):
    client = signed_in(mod1)
    for _ in range(2):  # the page, warm
        client.get("/admin/moderation/moderationrequest/")
    uris = [upload(alice_client, png_bytes(4 + i, 4)) for i in range(12)]
    for i in range(4):
        media = list(Media.objects.filter(media_id__in=[u.split("/")[1] for u in uris[3 * i:3 * i + 3]]))
        action(client, "media_app/media", "request_deletion", [m.pk for m in media])
    assert ModerationRequest.objects.count() == 4
    with django_assert_max_num_queries(12):  # session, user, counts, the rows, their targets
        page = client.get("/admin/moderation/moderationrequest/").content.decode()
    assert all(uri.split("/")[1] in page for uri in uris)
