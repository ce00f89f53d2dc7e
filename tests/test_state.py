import threading

import pytest
from django.db import connection

from media_app.models import Media, MediaOrigin, MediaStatus
from media_app.state import Actor, IllegalTransition, SignoffRequired, create, transition

S = MediaStatus
UPLOADER, SYSTEM, MODERATOR = Actor.UPLOADER, Actor.SYSTEM, Actor.MODERATOR
ACTORS = [UPLOADER, SYSTEM, MODERATOR]

# The state machine as docs/ARCHITECTURE.md draws it, written out here by hand (not read from
# media_app.state.TRANSITIONS, so a wrong entry in the table fails these tests).
# (from, to) -> the actors that may make the change; every other (from, to, actor) is refused.
ALLOWED = {
    (S.PENDING, S.STORED): {UPLOADER},
    (S.PENDING, S.DELETED): {SYSTEM},
    (S.STORED, S.QUARANTINED): {MODERATOR, SYSTEM},
    (S.STORED, S.DELETED): {SYSTEM, MODERATOR},
    (S.QUARANTINED, S.STORED): {MODERATOR},
    (S.QUARANTINED, S.DELETED): {MODERATOR},
}
# The states a row may be created in, and by whom.
INITIAL = {S.PENDING: {UPLOADER}, S.STORED: {UPLOADER, SYSTEM}}


def _media(status, origin=MediaOrigin.LOCAL, media_id="m1"):
    return Media.objects.create(server_name="test.local", media_id=media_id, status=status, origin=origin)


@pytest.mark.django_db
@pytest.mark.parametrize("from_status", MediaStatus.values)
@pytest.mark.parametrize("to_status", MediaStatus.values)
@pytest.mark.parametrize("actor", ACTORS)
def test_every_transition_outside_the_table_is_refused(from_status, to_status, actor):
    media = _media(from_status)
    if actor in ALLOWED.get((from_status, to_status), set()):
        transition(media, to_status, actor=actor, signed_off=True)
        media.refresh_from_db()
        assert media.status == to_status
    else:
        with pytest.raises(IllegalTransition):
            transition(media, to_status, actor=actor, signed_off=True)
        media.refresh_from_db()
        assert media.status == from_status


@pytest.mark.django_db
@pytest.mark.parametrize("to_status", MediaStatus.values)
@pytest.mark.parametrize("actor", ACTORS)
def test_only_pending_and_stored_are_initial_states(to_status, actor):
    if actor in INITIAL.get(to_status, set()):
        assert create(to=to_status, actor=actor, server_name="s", media_id="x").status == to_status
        assert Media.objects.get().status == to_status
    else:
        with pytest.raises(IllegalTransition):
            create(to=to_status, actor=actor, server_name="s", media_id="x")
        assert not Media.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("to_status", MediaStatus.values)
@pytest.mark.parametrize("actor", ACTORS)
def test_deleted_is_terminal(to_status, actor):
    media = _media(S.DELETED)
    with pytest.raises(IllegalTransition):
        transition(media, to_status, actor=actor, signed_off=True)
    media.refresh_from_db()
    assert media.status == S.DELETED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "from_status,to_status,origin,needs",
    [
        (MediaStatus.STORED, MediaStatus.DELETED, MediaOrigin.LOCAL, True),
        (MediaStatus.STORED, MediaStatus.DELETED, MediaOrigin.REMOTE, False),
        (MediaStatus.QUARANTINED, MediaStatus.STORED, MediaOrigin.LOCAL, True),
        (MediaStatus.QUARANTINED, MediaStatus.STORED, MediaOrigin.REMOTE, True),
        (MediaStatus.QUARANTINED, MediaStatus.DELETED, MediaOrigin.LOCAL, True),
        (MediaStatus.QUARANTINED, MediaStatus.DELETED, MediaOrigin.REMOTE, True),
        (MediaStatus.STORED, MediaStatus.QUARANTINED, MediaOrigin.LOCAL, False),
        (MediaStatus.STORED, MediaStatus.QUARANTINED, MediaOrigin.REMOTE, False),
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
