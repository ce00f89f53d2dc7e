import io
import logging
import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from PIL import Image

from media_app.models import Blob, Media, MediaEvent, MediaStatus, Thumbnail
from media_app.services.thumbnails import choose_size
from tests.conftest import body_of, jpeg_bytes, png_bytes, upload


def thumb_url(mxc, **params):
    query = "&".join(f"{k}={v}" for k, v in {"width": 320, "height": 240, **params}.items())
    return f"/_matrix/client/v1/media/thumbnail/{mxc}?{query}"


def photo(width=1200, height=900, exif=None):
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def _image(response):
    return Image.open(io.BytesIO(body_of(response)))


@pytest.mark.parametrize(
    "asked,expected",
    [
        ((1, 1, "crop"), (32, 32, "crop")),
        ((32, 32, "crop"), (32, 32, "crop")),
        ((33, 33, "crop"), (96, 96, "crop")),
        ((500, 500, "crop"), (96, 96, "crop")),  # none big enough: the largest crop
        ((100, 100, "scale"), (320, 240, "scale")),
        ((320, 240, "scale"), (320, 240, "scale")),
        ((321, 240, "scale"), (640, 480, "scale")),
        ((4000, 4000, "scale"), (800, 600, "scale")),
    ],
)
def test_configured_size_selection(asked, expected):
    assert choose_size(*asked) == expected


def test_dynamic_sizes_are_exact_but_capped():
    with override_settings(MEDIASITE={**settings.MEDIASITE, "DYNAMIC_THUMBNAILS": True}):
        assert choose_size(123, 45, "crop") == (123, 45, "crop")
        assert choose_size(5000, 45, "scale") == (1600, 45, "scale")


@pytest.mark.django_db
def test_scale_thumbnail_of_a_photo(alice_client):
    mxc = upload(alice_client, photo())
    response = alice_client.get(thumb_url(mxc, method="scale"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Disposition"] == "inline; filename=thumbnail.jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"].startswith("sandbox")
    assert _image(response).size == (320, 240)
    thumb = Thumbnail.objects.get()
    assert (thumb.width, thumb.height, thumb.method, thumb.rendered_width) == (320, 240, "scale", 320)
    event = MediaEvent.objects.get(event_type="media.thumbnail_generated")
    assert event.payload == {"media_id": mxc.split("/")[1], "width": 320, "height": 240, "mode": "scale"}


@pytest.mark.django_db
def test_crop_gives_the_exact_size(alice_client):
    mxc = upload(alice_client, photo())
    response = alice_client.get(thumb_url(mxc, width=96, height=96, method="crop"))
    assert _image(response).size == (96, 96)


@pytest.mark.django_db
def test_never_upscaled(alice_client):
    mxc = upload(alice_client, png_bytes(50, 40))
    response = alice_client.get(thumb_url(mxc, width=800, height=600))
    assert response.status_code == 200
    assert _image(response).size == (50, 40)


@pytest.mark.django_db
def test_second_request_is_served_from_cache(alice_client, django_assert_max_num_queries):
    mxc = upload(alice_client, photo())
    first = alice_client.get(thumb_url(mxc))
    with django_assert_max_num_queries(3):  # token, media, cached thumbnail
        second = alice_client.get(thumb_url(mxc))
    assert body_of(first) == body_of(second)
    assert Thumbnail.objects.count() == 1
    assert MediaEvent.objects.filter(event_type="media.thumbnail_generated").count() == 1


@pytest.mark.django_db
def test_deduplicated_media_share_thumbnails(alice_client):
    data = photo()
    a, b = upload(alice_client, data), upload(alice_client, data)
    alice_client.get(thumb_url(a))
    response = alice_client.get(thumb_url(b))
    assert response.status_code == 200
    assert Thumbnail.objects.count() == 1


@pytest.mark.django_db
def test_gps_and_other_metadata_are_stripped(alice_client):
    exif = Image.Exif()
    exif[0x010E] = "secret-description-marker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPSLatitude
    mxc = upload(alice_client, photo(exif=exif.tobytes()))
    for method in ("scale", "crop"):
        response = alice_client.get(thumb_url(mxc, method=method, width=96, height=96))
        data = body_of(response)
        assert b"secret-description-marker" not in data
        assert not Image.open(io.BytesIO(data)).getexif()


@pytest.mark.django_db
def test_transparency_is_kept(alice_client):
    buf = io.BytesIO()
    Image.new("RGBA", (400, 400), (255, 0, 0, 0)).save(buf, "PNG")
    mxc = upload(alice_client, buf.getvalue())
    response = alice_client.get(thumb_url(mxc, width=96, height=96, method="crop"))
    assert response["Content-Type"] == "image/png"
    assert _image(response).convert("RGBA").getpixel((0, 0))[3] == 0


@pytest.mark.django_db
def test_animated_gif_gives_animated_webp_only_when_asked(alice_client):
    frames = [Image.new("RGB", (200, 200), (i * 60, 0, 255 - i * 60)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400], loop=0)
    mxc = upload(alice_client, buf.getvalue())
    animated = alice_client.get(thumb_url(mxc, width=96, height=96, method="crop", animated="true"))
    assert animated["Content-Type"] == "image/webp"
    im = _image(animated)
    assert im.n_frames == 4
    durations = []
    for index in range(im.n_frames):
        im.seek(index)
        im.load()  # WebP frame info is filled in when the frame is decoded
        durations.append(im.info["duration"])
    assert durations == [100, 200, 300, 400]
    still = alice_client.get(thumb_url(mxc, width=96, height=96, method="crop", animated="false"))
    assert getattr(_image(still), "n_frames", 1) == 1
    assert Thumbnail.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [{"width": "abc"}, {"width": 0}, {"height": -5}, {"method": "stretch"}, {"animated": "maybe"}, {"width": 10**9}],
)
def test_bad_parameters_are_400(alice_client, params):
    mxc = upload(alice_client, photo(64, 64))
    response = alice_client.get(thumb_url(mxc, **params))
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_PARAM"


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["height=32", "width=32", "width=&height=32", ""])
def test_missing_width_or_height_is_a_400_that_says_they_are_required(alice_client, query):
    mxc = upload(alice_client, photo(64, 64))
    response = alice_client.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "width and height are required"


@pytest.mark.django_db
def test_non_images_and_broken_images_are_clear_400s(alice_client):
    pdf = upload(alice_client, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF")
    response = alice_client.get(thumb_url(pdf))
    assert response.status_code == 400 and response.json()["code"] == "MEDIA_NOT_THUMBNAILABLE"
    broken = upload(alice_client, jpeg_bytes(400, 400)[:300])
    response = alice_client.get(thumb_url(broken))
    assert response.status_code == 400
    assert response.json()["code"] in ("MEDIA_IMAGE_BROKEN", "MEDIA_NOT_THUMBNAILABLE")


@pytest.mark.django_db
def test_tiff_disguised_as_png_never_reaches_its_decoder(alice_client):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "TIFF")
    mxc = upload(alice_client, buf.getvalue(), content_type="image/png")
    media = Media.objects.get(media_id=mxc.split("/")[1])
    assert media.media_type == "image/tiff"
    response = alice_client.get(thumb_url(mxc))
    assert response.status_code == 400 and response.json()["code"] == "MEDIA_NOT_THUMBNAILABLE"
    # Even a row that claims image/png (as an older upload might) is refused by the decoder allowlist.
    Media.objects.filter(pk=media.pk).update(media_type="image/png")
    response = alice_client.get(thumb_url(mxc))
    assert response.status_code == 400 and response.json()["code"] == "MEDIA_NOT_THUMBNAILABLE"


@pytest.mark.django_db
def test_gif_with_thousands_of_frames_is_refused(alice_client):
    with override_settings(MEDIASITE={**settings.MEDIASITE, "MAX_THUMBNAIL_FRAME_PIXELS": 64 * 64 * 1000}):
        frames = [Image.new("RGB", (64, 64), (i % 256, i // 256, 0)) for i in range(2000)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=20)
        mxc = upload(alice_client, buf.getvalue())
        response = alice_client.get(thumb_url(mxc, width=32, height=32, method="crop", animated="true"))
        assert response.status_code == 400
        assert response.json()["code"] == "MEDIA_TOO_MANY_PIXELS"


@pytest.mark.django_db
def test_quarantined_source_is_404(alice_client):
    mxc = upload(alice_client, photo(100, 100))
    Media.objects.update(status=MediaStatus.QUARANTINED)
    assert alice_client.get(thumb_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"
    Media.objects.update(status=MediaStatus.STORED)
    Blob.objects.update(quarantined=True)
    assert alice_client.get(thumb_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"


@pytest.mark.django_db
def test_native_and_legacy_thumbnail_endpoints(alice_client, client):
    mxc = upload(alice_client, photo())
    response = alice_client.get(f"/api/v1/media/{mxc}/thumbnail?width=96&height=96&method=crop")
    assert response.status_code == 200 and _image(response).size == (96, 96)
    assert client.get(f"/_matrix/media/v3/thumbnail/{mxc}?width=96&height=96").status_code == 404
    with override_settings(MEDIASITE={**settings.MEDIASITE, "LEGACY_MEDIA": True}):
        assert client.get(f"/_matrix/media/v3/thumbnail/{mxc}?width=96&height=96").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_in_threads_render_once(client_for, make_user):
    client = client_for(make_user("alice"))
    mxc = upload(client, photo(2000, 1500))
    barrier = threading.Barrier(8)
    statuses = []

    def fetch():
        barrier.wait()
        try:
            statuses.append(client.get(thumb_url(mxc)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert Thumbnail.objects.count() == 1
    assert MediaEvent.objects.filter(event_type="media.thumbnail_generated").count() == 1


@pytest.mark.django_db(transaction=True)
def test_upload_enqueues_pregeneration_of_every_configured_size(client_for, make_user):
    """Tasks run inline in tests (eager Celery); tests/tasks/ hands them to real workers."""
    client = client_for(make_user("alice"))
    with override_settings(MEDIASITE={**settings.MEDIASITE, "THUMBNAIL_PREGENERATE": True}):
        upload(client, photo(1000, 800))
    assert sorted(Thumbnail.objects.values_list("width", "height", "method")) == sorted(
        [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale")]
    )
    assert MediaEvent.objects.filter(event_type="media.thumbnail_generated").count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_broken_broker_does_not_fail_the_upload(client_for, make_user, monkeypatch, caplog):
    from media_app.tasks.thumbnails import pregenerate_thumbnails

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(pregenerate_thumbnails, "delay", broker_down)
    client = client_for(make_user("alice"))
    with override_settings(MEDIASITE={**settings.MEDIASITE, "THUMBNAIL_PREGENERATE": True}), \
            caplog.at_level(logging.WARNING, logger="media_app.background"):
        mxc = upload(client, photo(200, 100))
    assert Media.objects.get(media_id=mxc.split("/")[1]).status == MediaStatus.STORED
    # Said in one line, not a traceback per upload.
    [record] = [r for r in caplog.records if r.name == "media_app.background"]
    assert "broker unreachable" in record.getMessage() and record.exc_info is None
    assert client.get(thumb_url(mxc, width=32, height=32, method="crop")).status_code == 200


def _flight_key_for(mxc, width=320, height=240, method="scale"):
    from media_app.services.thumbnails import thumbnail_flight_key

    source = Media.objects.select_related("blob").get(media_id=mxc.split("/")[1]).blob
    return thumbnail_flight_key(source, *choose_size(width, height, method), False)


@pytest.mark.django_db(transaction=True)
def test_a_request_waits_for_another_renderer_no_longer_than_its_deadline(client_for, make_user, monkeypatch):
    from media_app import singleflight
    from media_app.services import thumbnails

    client = client_for(make_user("alice"))
    mxc = upload(client, photo(640, 480))
    flight = singleflight.claim(_flight_key_for(mxc))  # another renderer, busy
    monkeypatch.setattr(thumbnails, "RENDER_WAIT_SECONDS", 0.3)
    try:
        response = client.get(thumb_url(mxc))
        assert response.status_code == 503 and response.json()["code"] == "RESULT_NOT_READY"
        assert response["Retry-After"] == "5"
        assert Thumbnail.objects.count() == 0
    finally:
        singleflight.abandon(flight)
    assert client.get(thumb_url(mxc)).status_code == 200


def _claim_and_hang(key, ready):
    from media_app import singleflight

    ready.send(singleflight.claim(key, lease=0.5) is not None)
    import time

    time.sleep(600)


@pytest.mark.django_db(transaction=True)
def test_a_request_takes_over_from_a_renderer_that_died(client_for, make_user, caplog):
    import multiprocessing
    import os
    import signal

    client = client_for(make_user("alice"))
    mxc = upload(client, photo(700, 500))
    key = _flight_key_for(mxc)
    parent_end, child_end = multiprocessing.Pipe()
    connection.close()  # the forked child must not share this process's database connection
    child = multiprocessing.get_context("fork").Process(target=_claim_and_hang, args=(key, child_end))
    child.start()
    try:
        assert parent_end.recv() is True
        os.kill(child.pid, signal.SIGKILL)  # dies mid-"render", without publishing anything
        child.join(10)
        with caplog.at_level("INFO", logger="media_app.services.thumbnails"):
            response = client.get(thumb_url(mxc))
        assert response.status_code == 200 and _image(response).size == (320, 229)
        assert len([r for r in caplog.records if r.getMessage().startswith("Rendered thumbnail")]) == 1
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)


@pytest.mark.django_db(transaction=True)
def test_pregeneration_leaves_out_a_size_a_request_is_rendering(client_for, make_user):
    from media_app import singleflight
    from media_app.services.thumbnails import thumbnails_pregenerate

    client = client_for(make_user("alice"))
    mxc = upload(client, photo(1000, 800))
    flight = singleflight.claim(_flight_key_for(mxc, 320, 240, "scale"))  # a request, rendering
    try:
        media = Media.objects.select_related("blob").get(media_id=mxc.split("/")[1])
        assert thumbnails_pregenerate(media=media) == 4
        assert (320, 240, "scale") not in set(Thumbnail.objects.values_list("width", "height", "method"))
        assert Thumbnail.objects.count() == 4
    finally:
        singleflight.abandon(flight)


@pytest.mark.django_db
def test_a_rendition_whose_file_is_lost_is_rendered_again_and_its_file_put_back(alice_client):
    """A thumbnail row is only a cache of what its original yields: a lost file is rendered
    again (and the blob's file restored), not a 500 on every request."""
    from media_app import storage
    from media_app.models import BlobIntegrity

    mxc = upload(alice_client, photo())
    first = alice_client.get(thumb_url(mxc, width=96, height=96, method="scale"))
    assert first.status_code == 200
    thumb = Thumbnail.objects.select_related("blob").get()
    backend = storage.backend(thumb.blob.storage)  # local files or S3, as this pass configures
    data = body_of(first)
    assert backend.exists(thumb.blob.key)
    backend.delete(thumb.blob.key)

    again = alice_client.get(thumb_url(mxc, width=96, height=96, method="scale"))
    assert again.status_code == 200, again.content
    assert body_of(again) == data
    assert backend.exists(thumb.blob.key)  # the same blob, its file put back
    blob = Blob.objects.get(pk=thumb.blob_id)
    assert blob.integrity == BlobIntegrity.UNCHECKED  # first in line for the next scrub
    assert Thumbnail.objects.count() == 1


@pytest.mark.django_db
def test_thumbnails_are_rendered_and_served_while_redis_is_unreachable(alice_client, settings):
    """FEDERATION.md: while Redis cannot be reached, local media is served as usual; its
    thumbnails too, rendered without the single flight meanwhile."""
    mxc = upload(alice_client, photo())
    settings.REDIS_URL = "redis://127.0.0.1:6390/0"  # nothing listens there
    first = alice_client.get(thumb_url(mxc, width=64, height=64, method="scale"))
    again = alice_client.get(thumb_url(mxc, width=64, height=64, method="scale"))
    assert (first.status_code, again.status_code) == (200, 200), first.content
    assert body_of(first) == body_of(again) and Thumbnail.objects.count() == 1  # the second from the cache
