"""Quotas (403 QUOTA_EXCEEDED) and upload rate limits (429 M_LIMIT_EXCEEDED + Retry-After)."""
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import Client, override_settings

from media_app import ratelimit
from media_app.models import Media, UserQuota
from tests.conftest import require_service


def _mediasite(**overrides):
    return override_settings(MEDIASITE={**settings.MEDIASITE, **overrides})


@pytest.fixture(autouse=True)
def _fresh_counters():
    ratelimit._limiter.cache_clear()
    ratelimit.reset()
    yield
    ratelimit.reset()


def _upload(client, data: bytes, **extra):
    return client.post("/_matrix/media/v3/upload", data=data, content_type="application/octet-stream", **extra)


@pytest.mark.django_db
def test_byte_quota_refuses_the_upload_that_would_exceed_it_and_stores_nothing(alice, alice_client):
    UserQuota.objects.create(user=alice, max_bytes=100)
    assert _upload(alice_client, b"a" * 60).status_code == 200
    response = _upload(alice_client, b"b" * 60)
    assert response.status_code == 403
    assert response.json()["code"] == "QUOTA_EXCEEDED" and response.json()["errcode"] == "M_FORBIDDEN"
    assert Media.objects.filter(uploader=alice).count() == 1
    assert _upload(alice_client, b"c" * 40).status_code == 200  # exactly up to the quota is fine


@pytest.mark.django_db
def test_file_quota_counts_reservations_and_comes_from_the_default(alice, alice_client, make_user, client_for):
    with _mediasite(DEFAULT_QUOTA_FILES=2):
        assert alice_client.post("/_matrix/media/v1/create").status_code == 200
        assert _upload(alice_client, b"one").status_code == 200
        refused = _upload(alice_client, b"two")
        assert refused.status_code == 403 and refused.json()["code"] == "QUOTA_EXCEEDED"
        assert alice_client.post("/_matrix/media/v1/create").json()["code"] == "QUOTA_EXCEEDED"
        # A per-user row overrides the default (0 = unlimited).
        UserQuota.objects.create(user=alice, max_files=0)
        assert _upload(alice_client, b"two").status_code == 200
        assert _upload(client_for(make_user("bob")), b"bob's").status_code == 200


@pytest.mark.django_db
def test_byte_quota_comes_from_the_default_unless_the_user_has_their_own(alice, alice_client, make_user, client_for):
    with _mediasite(DEFAULT_QUOTA_BYTES=100):
        assert _upload(alice_client, b"a" * 60).status_code == 200
        refused = _upload(alice_client, b"b" * 60)
        assert refused.status_code == 403 and refused.json()["code"] == "QUOTA_EXCEEDED"
        assert _upload(client_for(make_user("bob")), b"c" * 60).status_code == 200  # each user's own 100
        UserQuota.objects.create(user=alice, max_bytes=1000)  # the admin's row wins over the default
        assert _upload(alice_client, b"b" * 60).status_code == 200


@pytest.mark.django_db
def test_usage_endpoint_reports_usage_and_limits(alice, alice_client):
    UserQuota.objects.create(user=alice, max_bytes=1000, max_files=5)
    _upload(alice_client, b"x" * 10)
    _upload(alice_client, b"y" * 20)
    alice_client.post("/_matrix/media/v1/create")
    usage = alice_client.get("/api/v1/me/usage").json()
    assert usage == {"bytes_used": 30, "files_used": 3, "pending_uploads": 1, "max_bytes": 1000, "max_files": 5,
                     "max_pending_uploads": settings.MEDIASITE["MAX_PENDING_UPLOADS_PER_USER"]}
    assert Client().get("/api/v1/me/usage").status_code == 401


@pytest.mark.django_db
def test_upload_rate_per_user_answers_429_with_retry_after(alice_client, make_user, client_for):
    with _mediasite(UPLOAD_RATE_PER_USER="3/minute"):
        for i in range(3):
            assert _upload(alice_client, b"%d" % i).status_code == 200
        response = _upload(alice_client, b"4")
        assert response.status_code == 429
        body = response.json()
        assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] >= 1000
        assert 1 <= int(response["Retry-After"]) <= 60
        # Reservations count as uploads; other users are not affected.
        assert alice_client.post("/_matrix/media/v1/create").status_code == 429
        assert _upload(client_for(make_user("bob")), b"bob").status_code == 200


@pytest.mark.django_db
def test_a_rule_of_several_rates_applies_each_of_them(alice_client):
    """README: a rate limit may be several `limits` rates (`10/second;500/hour`); the second one
    refuses too, with a Retry-After of its own window."""
    with _mediasite(UPLOAD_RATE_PER_USER="100/second;3/hour"):
        for i in range(3):
            assert _upload(alice_client, b"%d" % i).status_code == 200
        response = _upload(alice_client, b"4")
        assert response.status_code == 429
        assert int(response["Retry-After"]) > 60  # the hour's window, not the second's


@pytest.mark.django_db
def test_upload_rate_per_ip_covers_every_account_from_that_address(make_user, client_for):
    with _mediasite(UPLOAD_RATE_PER_IP="2/minute"):
        users = [client_for(make_user(f"u{i}")) for i in range(3)]
        assert _upload(users[0], b"a", REMOTE_ADDR="198.51.100.7").status_code == 200
        assert _upload(users[1], b"b", REMOTE_ADDR="198.51.100.7").status_code == 200
        assert _upload(users[2], b"c", REMOTE_ADDR="198.51.100.7").status_code == 429
        assert _upload(users[2], b"c", REMOTE_ADDR="198.51.100.8").status_code == 200


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_client_has_its_own_address_limit(make_user, client_for):
    with _mediasite(UPLOAD_RATE_PER_IP="1/minute", FORWARDED_ALLOW_IPS=["10.0.0.5"]):
        users = [client_for(make_user(f"p{i}")) for i in range(3)]
        proxy = {"REMOTE_ADDR": "10.0.0.5"}
        assert _upload(users[0], b"a", HTTP_X_FORWARDED_FOR="203.0.113.1", **proxy).status_code == 200
        assert _upload(users[1], b"b", HTTP_X_FORWARDED_FOR="203.0.113.2", **proxy).status_code == 200
        # A client naming another address in front of its own is still counted as itself.
        spoofed = _upload(users[2], b"c", HTTP_X_FORWARDED_FOR="198.51.100.99, 203.0.113.1", **proxy)
        assert spoofed.status_code == 429


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    ("198.51.100.7", None, ["127.0.0.1"], "198.51.100.7"),
    # Only a trusted proxy's header counts; anyone else's is the client's own claim.
    ("198.51.100.7", "203.0.113.9", ["127.0.0.1"], "198.51.100.7"),
    ("127.0.0.1", "203.0.113.9", ["127.0.0.1"], "203.0.113.9"),
    # The nearest untrusted entry, read from the right, past a chain of trusted proxies.
    ("10.0.0.5", "1.2.3.4, 203.0.113.9, 10.1.2.3", ["10.0.0.0/8"], "203.0.113.9"),
    ("10.0.0.5", "10.1.2.3, 10.2.3.4", ["10.0.0.0/8"], "10.1.2.3"),
    ("2001:db8::1", "203.0.113.9", ["2001:db8::/32"], "203.0.113.9"),
    # Ports some proxies add, brackets, spaces, and an address spelled otherwise.
    ("10.0.0.5", "203.0.113.9:5555", ["10.0.0.5"], "203.0.113.9"),
    ("10.0.0.5", "[2001:DB8::9]:443", [" 10.0.0.5 "], "2001:db8::9"),
    ("10.0.0.5", "2001:db8::9 ,", ["10.0.0.5"], "10.0.0.5"),
    ("10.0.0.5", " 2001:db8::9", ["10.0.0.5"], "2001:db8::9"),
    # Garbage ends the chain: the last address a trusted proxy wrote before it is the client.
    ("10.0.0.5", "203.0.113.9, unknown", ["10.0.0.5"], "10.0.0.5"),
    # "*": the peer is the proxy, and only what it wrote is believed, not the client's own entries.
    ("10.0.0.5", "1.2.3.4, 203.0.113.9", ["*"], "203.0.113.9"),
    ("10.0.0.5", "1.2.3.4, 203.0.113.9", ["10.0.0.0/8", " *"], "203.0.113.9"),
])
def test_client_address(rf, peer, forwarded, trusted, expected):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    with _mediasite(FORWARDED_ALLOW_IPS=trusted):
        assert ratelimit.client_ip(rf.get("/", REMOTE_ADDR=peer, **extra)) == expected


@pytest.mark.django_db
def test_counters_are_shared_through_redis_between_processes(alice_client):
    require_service("Redis", bool(os.environ.get("REDIS_URL")), "REDIS_URL is not set")
    with _mediasite(UPLOAD_RATE_PER_USER="2/minute"):
        assert _upload(alice_client, b"1").status_code == 200
        ratelimit._limiter.cache_clear()  # a new connection: what another process has
        assert _upload(alice_client, b"2").status_code == 200
        ratelimit._limiter.cache_clear()
        assert _upload(alice_client, b"3").status_code == 429


def test_in_process_counters_start_no_thread_on_a_hit(monkeypatch):
    # limits' MemoryStorage starts a timer thread on a hit once the last has run out (10 ms),
    # and starting one waits for it to run: under load, milliseconds per hit.
    import threading
    import time

    from limits import parse
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    storage = ratelimit.SweptMemoryStorage()
    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: (started.append(thread), real_start(thread)))
    moving, fixed, item = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage), parse("2/minute")
    for _ in range(2):
        assert moving.hit(item, "k") and fixed.hit(item, "f")
        time.sleep(0.03)
    assert not moving.hit(item, "k") and not fixed.hit(item, "f")  # still counted without the timer
    assert started == []


def test_in_process_counters_sweep_what_has_expired(monkeypatch):
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    storage = ratelimit.SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    limiter.hit(parse("5/second"), "old")
    old = next(iter(storage.events))
    FixedWindowRateLimiter(storage).hit(parse("5/second"), "counter")
    counter = next(iter(storage.storage))
    # Both clocks moved on by `later` seconds.
    later, real_time, real_monotonic = [0.0], ratelimit.time.time, ratelimit.time.monotonic
    monkeypatch.setattr(ratelimit.time, "time", lambda: real_time() + later[0])
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: real_monotonic() + later[0])
    storage._next_sweep = real_monotonic() + 2
    later[0] = 1.5  # the entry has expired, the sweep is not due
    limiter.hit(parse("5/minute"), "new")
    assert len(storage.events[old]) == 1
    later[0] = 2.5
    limiter.hit(parse("5/minute"), "new")
    assert old not in storage.events and old not in storage.locks  # nothing kept of a client gone
    assert counter not in storage.storage and counter not in storage.expirations
    assert len(storage.events[next(iter(storage.events))]) == 2  # the live key keeps its hits


def test_without_redis_the_limits_count_in_a_swept_memory_store():
    with override_settings(REDIS_URL=""):
        assert isinstance(ratelimit._limiter().storage, ratelimit.SweptMemoryStorage)
    from media_app.federation import ratelimit as federation_ratelimit

    federation_ratelimit._limiter = None
    with override_settings(REDIS_URL=""):
        try:
            assert isinstance(federation_ratelimit.limiter().storage, ratelimit.SweptMemoryStorage)
        finally:
            federation_ratelimit._limiter = None


@pytest.mark.django_db
def test_pending_reservation_cap_answers_429_with_retry_after(alice_client):
    with _mediasite(MAX_PENDING_UPLOADS_PER_USER=2):
        for _ in range(2):
            assert alice_client.post("/_matrix/media/v1/create").status_code == 200
        response = alice_client.post("/_matrix/media/v1/create")
        assert response.status_code == 429 and response.json()["errcode"] == "M_LIMIT_EXCEEDED"
        assert int(response["Retry-After"]) >= 1


def test_concurrent_uploads_cannot_slip_past_the_file_quota(live, alice, alice_token):
    """Twelve uploads at once by one user with room for three: exactly three are stored, on a
    real server (two processes, four threads each) and the real database."""
    UserQuota.objects.create(user=alice, max_files=3)

    def send(i):
        request = urllib.request.Request(
            f"{live.url}/_matrix/media/v3/upload", data=b"concurrent %d" % i * 1000, method="POST",
            headers={"Authorization": f"Bearer {alice_token}", "Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(send, range(12)))
    assert statuses == [200] * 3 + [403] * 9, live.log()[-5000:]
    assert Media.objects.filter(uploader=alice).count() == 3


@pytest.mark.django_db
def test_a_superuser_edits_quotas_in_the_admin_and_a_moderator_cannot(admin_client, alice, make_user):
    """README: quotas are the operator's (a superuser's) admin forms; moderators, staff without
    the UserQuota permissions (moderation.services.MODERATOR_PERMISSIONS), get 403."""
    moderator = Client()
    moderator.force_login(make_user("marta", admin=True))
    assert moderator.get("/admin/media_app/userquota/").status_code == 403
    assert moderator.post("/admin/media_app/userquota/add/", {"user": alice.pk, "max_bytes": "1"}).status_code == 403
    response = admin_client.post("/admin/media_app/userquota/add/", {"user": alice.pk, "max_bytes": "5000", "max_files": ""})
    assert response.status_code == 302, response.content[:2000]
    assert UserQuota.objects.get(user=alice).max_bytes == 5000
    assert b"bytes used" in admin_client.get("/admin/media_app/userquota/").content.lower()


@pytest.mark.django_db
def test_an_unreachable_counter_store_lets_uploads_through_and_says_so(alice_client, caplog):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"), _mediasite(UPLOAD_RATE_PER_USER="1/minute"):
        assert _upload(alice_client, b"1").status_code == 200
        assert _upload(alice_client, b"2").status_code == 200
    assert "Rate-limit storage unavailable" in caplog.text
    ratelimit._limiter.cache_clear()


def test_a_forwarded_allow_ips_entry_that_is_no_address_stops_the_server_at_start():
    from django.core.exceptions import ImproperlyConfigured

    from media_app.conf import check_settings

    with _mediasite(FORWARDED_ALLOW_IPS=["10.0.0.0/8", "proxy.example"]), pytest.raises(ImproperlyConfigured):
        check_settings()
    with _mediasite(FORWARDED_ALLOW_IPS=["10.0.0.0/8", " *"]):
        check_settings()
