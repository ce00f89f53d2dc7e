import threading

import pytest
from django.db import connection

from media_app.models import Media, MediaOrigin, MediaStatus
from media_app.state import TRANSITIONS, Actor, IllegalTransition, SignoffRequired, create, transition

STATUSES = [None, *MediaStatus.values]
ACTORS = [Actor.UPLOADER, Actor.SYSTEM, Actor.MODERATOR]


def _media(status, origin=MediaOrigin.LOCAL, media_id="m1"):
    return Media.objects.create(server_name="test.local", media_id=media_id, status=status, origin=origin)


@pytest.mark.django_db
@pytest.mark.parametrize("from_status", MediaStatus.values)
@pytest.mark.parametrize("to_status", MediaStatus.values)
@pytest.mark.parametrize("actor", ACTORS)
def test_every_transition_outside_the_table_is_refused(from_status, to_status, actor):
    media = _media(from_status)
    rule = TRANSITIONS.get((from_status, to_status))
    if rule is None or actor not in rule.actors:
        with pytest.raises(IllegalTransition):
            transition(media, to_status, actor=actor, signed_off=True)
        media.refresh_from_db()
        assert media.status == from_status
    else:
        transition(media, to_status, actor=actor, signed_off=True)
        media.refresh_from_db()
        assert media.status == to_status


@pytest.mark.django_db
@pytest.mark.parametrize("to_status", MediaStatus.values)
def test_only_pending_and_stored_are_initial_states(to_status):
    if to_status in (MediaStatus.PENDING, MediaStatus.STORED):
        assert create(to=to_status, actor=Actor.UPLOADER, server_name="s", media_id="x").status == to_status
    else:
        with pytest.raises(IllegalTransition):
            create(to=to_status, actor=Actor.MODERATOR, server_name="s", media_id="x")
        assert not Media.objects.exists()


@pytest.mark.django_db
def test_deleted_is_terminal():
    assert not [key for key in TRANSITIONS if key[0] == MediaStatus.DELETED]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "from_status,to_status,origin,needs",
    [
        (MediaStatus.STORED, MediaStatus.DELETED, MediaOrigin.LOCAL, True),
        (MediaStatus.STORED, MediaStatus.DELETED, MediaOrigin.REMOTE, False),
        (MediaStatus.QUARANTINED, MediaStatus.STORED, MediaOrigin.LOCAL, True),
        (MediaStatus.QUARANTINED, MediaStatus.DELETED, MediaOrigin.REMOTE, True),
        (MediaStatus.STORED, MediaStatus.QUARANTINED, MediaOrigin.LOCAL, False),
    ],
)
def test_signoff_rules(from_status, to_status, origin, needs):
    media = _media(from_status, origin)
    if needs:
        with pytest.raises(SignoffRequired):
            transition(media, to_status, actor=Actor.MODERATOR)
        media.refresh_from_db()
        assert media.status == from_status
    else:
        transition(media, to_status, actor=Actor.MODERATOR)
        media.refresh_from_db()
        assert media.status == to_status


@pytest.mark.django_db
def test_a_stale_read_cannot_win():
    media = _media(MediaStatus.STORED)
    stale = Media.objects.get(pk=media.pk)
    transition(media, MediaStatus.QUARANTINED, actor=Actor.MODERATOR)
    with pytest.raises(IllegalTransition):
        transition(stale, MediaStatus.DELETED, actor=Actor.SYSTEM, signed_off=True)
    media.refresh_from_db()
    assert media.status == MediaStatus.QUARANTINED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_quarantine_and_delete_exactly_one_wins(round_):
    media = _media(MediaStatus.STORED, media_id=f"race{round_}")
    barrier = threading.Barrier(2)
    outcomes = {}

    def attempt(name, to_status, actor):
        copy = Media.objects.get(pk=media.pk)  # each thread reads "stored"
        barrier.wait()
        try:
            transition(copy, to_status, actor=actor, signed_off=True)
            outcomes[name] = "won"
        except IllegalTransition:
            outcomes[name] = "refused"
        finally:
            connection.close()

    threads = [
        threading.Thread(target=attempt, args=("quarantine", MediaStatus.QUARANTINED, Actor.MODERATOR)),
        threading.Thread(target=attempt, args=("delete", MediaStatus.DELETED, Actor.SYSTEM)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["refused", "won"]
    media.refresh_from_db()
    winner = next(name for name, result in outcomes.items() if result == "won")
    assert media.status == {"quarantine": MediaStatus.QUARANTINED, "delete": MediaStatus.DELETED}[winner]
