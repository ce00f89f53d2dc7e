"""The one state-transition table and the only code that changes Media.status (the table is
drawn in docs/ARCHITECTURE.md, "State machine").

A transition is applied as `UPDATE … WHERE pk = … AND status = <from>`: when two requests race
(two moderators, a moderator and the purge task) exactly one update matches and the other is
refused, whatever the database's isolation level.
"""
from dataclasses import dataclass

from django.db import transaction

from .errors import IllegalTransition, SignoffRequired
from .models import Media, MediaOrigin, MediaStatus

S = MediaStatus


class Actor:
    UPLOADER = "uploader"
    SYSTEM = "system"
    MODERATOR = "moderator"


@dataclass(frozen=True)
class Rule:
    actors: frozenset
    # Origins for which a human sign-off (four eyes: docs/ARCHITECTURE.md, "Rules") must be presented.
    signoff_for: frozenset = frozenset()


_ALL_ORIGINS = frozenset(MediaOrigin.values)

# (from, to) -> who may make the change. `None` is "no row yet". A direct upload (POST /upload)
# is the reservation and its filling in one step, so it creates the row already stored; remote
# media enters the cache the same way.
TRANSITIONS: dict[tuple[str | None, str], Rule] = {
    (None, S.PENDING): Rule(frozenset({Actor.UPLOADER})),
    (None, S.STORED): Rule(frozenset({Actor.UPLOADER, Actor.SYSTEM})),
    (S.PENDING, S.STORED): Rule(frozenset({Actor.UPLOADER})),
    (S.PENDING, S.DELETED): Rule(frozenset({Actor.SYSTEM})),
    (S.STORED, S.QUARANTINED): Rule(frozenset({Actor.MODERATOR, Actor.SYSTEM})),
    # Purging the remote cache is autonomous; deleting local media needs a sign-off.
    (S.STORED, S.DELETED): Rule(frozenset({Actor.SYSTEM, Actor.MODERATOR}), frozenset({MediaOrigin.LOCAL})),
    (S.QUARANTINED, S.STORED): Rule(frozenset({Actor.MODERATOR}), _ALL_ORIGINS),
    (S.QUARANTINED, S.DELETED): Rule(frozenset({Actor.MODERATOR}), _ALL_ORIGINS),
}


def rule_for(from_status: str | None, to_status: str, *, actor: str) -> Rule:
    rule = TRANSITIONS.get((from_status, to_status))
    if rule is None or actor not in rule.actors:
        raise IllegalTransition(f"Media cannot go from {from_status or 'nothing'} to {to_status} by {actor}")
    return rule


def create(*, to: str, actor: str, **fields) -> Media:
    """Insert a new Media row in its first state."""
    rule_for(None, to, actor=actor)
    return Media.objects.create(status=to, **fields)


def transition(media: Media, to: str, *, actor: str, signed_off: bool = False, **changes) -> Media:
    """Move `media` from the status it was read with to `to`, or raise.

    Raises IllegalTransition when the table forbids it or when another request changed the
    status first; SignoffRequired when the change needs a human sign-off not presented.
    """
    rule = rule_for(media.status, to, actor=actor)
    if media.origin in rule.signoff_for and not signed_off:
        raise SignoffRequired()
    with transaction.atomic():
        won = Media.objects.filter(pk=media.pk, status=media.status).update(status=to, **changes)
    if not won:
        raise IllegalTransition("The media changed state while this request was being handled")
    media.status = to
    for name, value in changes.items():
        setattr(media, name, value)
    return media


def transition_many(pks: list[int], from_status: str, to: str, *, actor: str, origin: str,
                    signed_off: bool = False, **changes) -> int:
    """`transition` for a batch of rows of one origin in one status (the retention jobs): the
    same table and conditional UPDATE, one statement. Returns how many rows moved; the caller
    locks the rows first when it must know that all of them did."""
    rule = rule_for(from_status, to, actor=actor)
    if origin in rule.signoff_for and not signed_off:
        raise SignoffRequired()
    return Media.objects.filter(pk__in=pks, status=from_status, origin=origin).update(status=to, **changes)
