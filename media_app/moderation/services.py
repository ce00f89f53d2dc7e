"""Moderation services: every change the admin, the admin API and the native API make to
moderation state goes through here."""
from django.db import transaction

from .. import events
from .models import BlockedServer, ModerationAction, ModerationRequest


def moderation_request_create(*, action: str, targets: list[str], requested_by, reason: str = "") -> ModerationRequest:
    """Queue an irreversible step for a second person's sign-off.

    `targets`: mxc URIs (`mxc://server/id`) for media actions, server names for BLOCK_SERVER.
    `requested_by`: the user asking, or None when the system proposes it (retention).
    """
    if action not in ModerationAction.values:
        raise ValueError(f"Unknown moderation action {action!r}")
    with transaction.atomic():
        request = ModerationRequest.objects.create(
            action=action, targets=list(targets), requested_by=requested_by, reason=reason or ""
        )
        if action == ModerationAction.BLOCK_SERVER:
            for name in targets:
                BlockedServer.objects.get_or_create(server_name=name, defaults={"request": request})
        events.emit(
            events.SIGNOFF_REQUESTED,
            {"request_id": request.pk, "action": action, "targets": list(targets)},
            actor=requested_by,
        )
    return request
