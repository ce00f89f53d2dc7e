"""Retention: what nobody uses is purged, reservations never filled expire, and local media past
its lifetime is proposed for a moderator's sign-off (never deleted here).

Every job walks its candidates in primary-key order, a bounded batch per transaction (keyset
pagination: memory and lock time do not grow with the number of rows). In one commit a batch
removes its rows, records a `media.purged` event per media row and dooms the blobs nothing
refers to any more (services.gc, step 1); their files and rows are removed right after the
commit (step 2). A run killed at any point leaves either an uncommitted batch (rolled back) or
doomed blobs, which the next run removes first: a rerun finishes the work and repeats nothing.

`retention_preview` computes the same sets with queries and no writes, so an operator sees counts
and bytes per kind before anything is deleted, and the run frees exactly those bytes when nothing
changed in between. Quarantined and protected media are never candidates: quarantine is a
moderator's decision about content that must stay on record, protection an explicit keep. Nor is
media a user reported until a moderator has decided on the report: approving it must find the
content to quarantine.
"""
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import reduce
from operator import or_

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Sum
from django.utils import timezone

from .. import events, singleflight, state
from ..selectors import unused_since
from ..conf import media_settings
from ..models import Blob, Media, MediaOrigin, MediaStatus, Thumbnail
from ..moderation.models import ModerationAction, ModerationRequest, RequestStatus
from ..moderation.selectors import reported_uris
from ..moderation.services import moderation_request_create
from ..services import identifiers
from ..services.gc import blobs_doom_unreferenced, blobs_remove_doomed
from ..services.progress import Progress

logger = logging.getLogger(__name__)


class Kind:
    INTERRUPTED = "interrupted"
    RESERVATIONS = "reservations"
    REMOTE_MEDIA = "remote_media"
    REMOTE_THUMBNAILS = "remote_thumbnails"
    THUMBNAILS = "thumbnails"
    LOCAL_PROPOSALS = "local_proposals"

    ORDER = (INTERRUPTED, RESERVATIONS, REMOTE_MEDIA, REMOTE_THUMBNAILS, THUMBNAILS, LOCAL_PROPOSALS)
    LABELS = {
        INTERRUPTED: "blobs left doomed by an interrupted run",
        RESERVATIONS: "reservations never filled, expired",
        REMOTE_MEDIA: "remote media not accessed within the lifetime",
        REMOTE_THUMBNAILS: "thumbnails of that remote media",
        THUMBNAILS: "thumbnails not accessed within the lifetime",
        LOCAL_PROPOSALS: "local media proposed for deletion (freed only after sign-off)",
    }
    # Kinds whose bytes this run frees itself; proposals wait for a moderator.
    FREED_NOW = (INTERRUPTED, RESERVATIONS, REMOTE_MEDIA, REMOTE_THUMBNAILS, THUMBNAILS)


class PurgeReason:
    REMOTE_EXPIRED = "remote_media_lifetime"
    RESERVATION_EXPIRED = "reservation_expired"


@dataclass
class Totals:
    count: int = 0
    bytes: int = 0


@dataclass
class RetentionReport:
    kinds: dict = field(default_factory=lambda: {kind: Totals() for kind in Kind.ORDER})

    def __getitem__(self, kind: str) -> Totals:
        return self.kinds[kind]

    @property
    def freed_bytes(self) -> int:
        return sum(self.kinds[kind].bytes for kind in Kind.FREED_NOW)

    def as_dict(self) -> dict:
        return {kind: {"count": t.count, "bytes": t.bytes} for kind, t in self.kinds.items()}


@dataclass(frozen=True)
class RetentionPolicy:
    """The cutoffs of one run; None switches a job off."""

    now: datetime
    remote_before: datetime | None
    thumbnails_before: datetime | None
    local_created_before: datetime | None
    local_idle_before: datetime | None


def retention_policy(*, now: datetime | None = None, remote_before: datetime | None = None,
                     local_before: datetime | None = None) -> RetentionPolicy:
    """Cutoffs from the configured lifetimes; `remote_before`/`local_before` override them
    (purge_media --remote-before / --local-before)."""
    now = now or timezone.now()

    def ago(days):
        return None if days is None else now - timedelta(days=days)

    return RetentionPolicy(
        now=now,
        remote_before=remote_before or ago(media_settings.REMOTE_MEDIA_LIFETIME_DAYS),
        thumbnails_before=ago(media_settings.THUMBNAIL_LIFETIME_DAYS),
        local_created_before=local_before or ago(media_settings.LOCAL_MEDIA_LIFETIME_DAYS),
        local_idle_before=ago(media_settings.LOCAL_MEDIA_IDLE_DAYS),
    )


# --- candidate sets (shared by the preview and the jobs) ---------------------------------------

_NOTHING = Q(pk__in=[])


# A report's row may commit a little after its timestamp, stamped by another node's clock.
REPORT_CLOCK_MARGIN = timedelta(minutes=5)


class _Reported:
    """Media under a pending report (moderation.selectors.reported_uris): read whole once, then,
    for each batch, only the reports filed since (a report takes the media row's lock, which the
    batch holds, so none on the batch's media can be missed), not the whole queue each time."""

    def __init__(self):
        self._started = timezone.now()
        self.uris = reported_uris()

    def of(self, uris: set[str]) -> set[str]:
        return uris & (self.uris | reported_uris(uris=uris, since=self._started - REPORT_CLOCK_MARGIN))

    def q(self) -> Q:
        """The same media as a condition, for the preview and the proposals."""
        if not self.uris:
            return _NOTHING
        pks = []
        pairs = sorted(identifiers.split_content_uri(uri) for uri in self.uris)
        for start in range(0, len(pairs), 200):
            which = reduce(or_, (Q(server_name=server, media_id=media_id) for server, media_id in pairs[start:start + 200]))
            pks += Media.objects.filter(which).values_list("pk", flat=True)
        return Q(pk__in=pks)


def _remote_q(before: datetime | None, *, under_review: Q = _NOTHING) -> Q:
    if before is None:
        return _NOTHING
    return (Q(origin=MediaOrigin.REMOTE, status=MediaStatus.STORED, protected=False,
              blob__isnull=False, blob__quarantined=False) & unused_since(before) & ~under_review)


def _thumbnail_q(before: datetime | None) -> Q:
    if before is None:
        return _NOTHING
    media_of_source = Media.objects.filter(blob=OuterRef("source"))
    # Renditions of a source no media refers to any more can never be served.
    orphaned = ~Exists(media_of_source)
    kept = Exists(media_of_source.filter(Q(protected=True) | Q(status=MediaStatus.QUARANTINED)))
    return (unused_since(before) | Q(orphaned)) & Q(source__quarantined=False) & ~Q(kept)


def _reservations_q(now: datetime) -> Q:
    # The download path treats a reservation as expired from unused_expires_at on (<=).
    return Q(status=MediaStatus.PENDING, origin=MediaOrigin.LOCAL, unused_expires_at__lte=now)


def _local_q(policy: RetentionPolicy, *, under_review: Q = _NOTHING) -> Q | None:
    clauses = []
    if policy.local_created_before is not None:
        clauses.append(Q(created_ts__lt=policy.local_created_before))
    if policy.local_idle_before is not None:
        clauses.append(unused_since(policy.local_idle_before))
    if not clauses:
        return None
    return (Q(origin=MediaOrigin.LOCAL, status=MediaStatus.STORED, protected=False,
              blob__isnull=False, blob__quarantined=False) & reduce(or_, clauses) & ~under_review)


def _unreferenced_q() -> Q:
    return (~Q(Exists(Media.objects.filter(blob=OuterRef("pk"))))
            & ~Q(Exists(Thumbnail.objects.filter(source=OuterRef("pk"))))
            & ~Q(Exists(Thumbnail.objects.filter(blob=OuterRef("pk")))))


def _batches(queryset, batch_size: int):
    """Primary keys in ascending batches; each query starts after the last key seen, so the
    cost of a batch does not grow with how far the walk has gone."""
    last = 0
    while True:
        pks = list(queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not pks:
            return
        yield pks
        last = pks[-1]


def _sum_size(queryset) -> int:
    return queryset.aggregate(total=Sum("size"))["total"] or 0


# --- preview -----------------------------------------------------------------------------------

def retention_preview(*, policy: RetentionPolicy) -> RetentionReport:
    """What a run with `policy` would do, by kind: rows and the bytes it would free. No writes.

    Deduplication is accounted for: a blob counts only if every row referring to it goes (a
    remote copy of content also uploaded locally frees nothing), and a blob shared by several
    candidates counts once.
    """
    report = RetentionReport()

    leftovers = Blob.objects.filter(gc_pending=True).filter(_unreferenced_q())
    report[Kind.INTERRUPTED].count = leftovers.count()
    report[Kind.INTERRUPTED].bytes = _sum_size(leftovers)

    report[Kind.RESERVATIONS].count = Media.objects.filter(_reservations_q(policy.now)).count()

    remote_q = _remote_q(policy.remote_before, under_review=_Reported().q())
    remote = Media.objects.filter(remote_q)
    # Sources whose every media row is a remote candidate: they lose all their media.
    freed_sources = (Blob.objects.filter(Exists(remote.filter(blob=OuterRef("pk"))))
                     .exclude(Exists(Media.objects.filter(blob=OuterRef("pk")).exclude(remote_q))))
    remote_thumbs_q = Q(source__in=freed_sources.values("pk")) if policy.remote_before else _NOTHING
    expired_thumbs_q = _thumbnail_q(policy.thumbnails_before)
    removed_thumbs_q = remote_thumbs_q | expired_thumbs_q
    expired_thumbs = Thumbnail.objects.filter(expired_thumbs_q).exclude(remote_thumbs_q)

    freed = (Blob.objects.filter(quarantined=False)
             .filter(Q(pk__in=freed_sources.values("pk"))
                     | Q(pk__in=Thumbnail.objects.filter(removed_thumbs_q).values("blob_id")))
             .exclude(Exists(Media.objects.filter(blob=OuterRef("pk")).exclude(remote_q)))
             .exclude(Exists(Thumbnail.objects.filter(source=OuterRef("pk")).exclude(removed_thumbs_q)))
             .exclude(Exists(Thumbnail.objects.filter(blob=OuterRef("pk")).exclude(removed_thumbs_q))))
    renditions = freed.exclude(pk__in=freed_sources.values("pk"))
    # A rendition also used by an expiring thumbnail is freed by the thumbnail job, which runs last.
    expired_renditions = renditions.filter(pk__in=expired_thumbs.values("blob_id"))

    report[Kind.REMOTE_MEDIA].count = remote.count()
    report[Kind.REMOTE_MEDIA].bytes = _sum_size(freed.filter(pk__in=freed_sources.values("pk")))
    report[Kind.REMOTE_THUMBNAILS].count = Thumbnail.objects.filter(remote_thumbs_q).count()
    report[Kind.REMOTE_THUMBNAILS].bytes = _sum_size(renditions.exclude(pk__in=expired_thumbs.values("blob_id")))
    report[Kind.THUMBNAILS].count = expired_thumbs.count()
    report[Kind.THUMBNAILS].bytes = _sum_size(expired_renditions)

    _propose_local(policy=policy, totals=report[Kind.LOCAL_PROPOSALS], dry_run=True)
    return report


# --- jobs --------------------------------------------------------------------------------------

def _remove(doomed: list[tuple[int, int]], totals: Totals) -> int:
    _count, nbytes = blobs_remove_doomed(blob_ids=[pk for pk, _size in doomed])
    totals.bytes += nbytes
    return nbytes


def blobs_finish_interrupted(*, totals: Totals, progress: Progress) -> None:
    """Remove the blobs a killed run (or collection) doomed and did not get to remove."""
    for pks in _batches(Blob.objects.filter(gc_pending=True), media_settings.RETENTION_BATCH_SIZE):
        count, nbytes = blobs_remove_doomed(blob_ids=pks)
        totals.count += count
        totals.bytes += nbytes
        progress.advance(nbytes=nbytes, items=count)


def reservations_expire(*, now: datetime, totals: Totals, progress: Progress) -> None:
    """pending -> deleted for reservations past unused_expires_at; the ID is never reused."""
    q = _reservations_q(now)
    for pks in _batches(Media.objects.filter(q), media_settings.RETENTION_BATCH_SIZE):
        with transaction.atomic():
            rows = list(Media.objects.select_for_update().filter(q, pk__in=pks)
                        .values_list("pk", "server_name", "media_id"))
            ids = [pk for pk, _server, _mid in rows]
            moved = state.transition_many(ids, MediaStatus.PENDING, MediaStatus.DELETED,
                                          actor=state.Actor.SYSTEM, origin=MediaOrigin.LOCAL)
            if moved != len(ids):  # the rows are locked: anything else is a bug, not a race
                raise RuntimeError(f"expired {moved} of {len(ids)} locked reservations")
            events.emit_many(events.PURGED, [
                (server, {"media_id": media_id, "reason": PurgeReason.RESERVATION_EXPIRED})
                for _pk, server, media_id in rows
            ])
        totals.count += len(ids)
        progress.advance(nbytes=0, items=len(ids))


def remote_media_purge(*, before: datetime, media_totals: Totals, thumbnail_totals: Totals,
                       progress: Progress) -> None:
    """Purge remote media not accessed since `before`, with the thumbnails of its content."""
    q = _remote_q(before)
    reported = _Reported()
    for pks in _batches(Media.objects.filter(q), media_settings.RETENTION_BATCH_SIZE):
        with transaction.atomic():
            # The blobs' locks before the media's, in the order a quarantine takes them (content,
            # then its media): the two cannot deadlock.
            blob_ids = Media.objects.filter(q, pk__in=pks).values("blob_id")
            list(Blob.objects.select_for_update().filter(pk__in=blob_ids).order_by("pk").values_list("pk", flat=True))
            rows = list(Media.objects.select_for_update(of=("self",)).filter(q, pk__in=pks)
                        .values_list("pk", "server_name", "media_id", "blob_id"))
            # Reported media waits for its review; a report takes the row's lock, held here now.
            uris = {row[0]: f"mxc://{row[1]}/{row[2]}" for row in rows}
            kept = reported.of(set(uris.values()))
            rows = [row for row in rows if uris[row[0]] not in kept]
            ids = [row[0] for row in rows]
            moved = state.transition_many(ids, MediaStatus.STORED, MediaStatus.DELETED,
                                          actor=state.Actor.SYSTEM, origin=MediaOrigin.REMOTE)
            if moved != len(ids):
                raise RuntimeError(f"purged {moved} of {len(ids)} locked media")
            events.emit_many(events.PURGED, [
                (server, {"media_id": media_id, "reason": PurgeReason.REMOTE_EXPIRED})
                for _pk, server, media_id, _blob in rows
            ])
            # A remote row is only a cache entry: removing it (its event stays) lets the media be
            # fetched from its origin again, where a deleted row would answer 404 for ever.
            Media.objects.filter(pk__in=ids).delete()
            sources = {row[3] for row in rows}
            # Content shared with media that stays (a local upload of the same bytes) keeps its
            # blob and thumbnails.
            kept = set(Media.objects.filter(blob_id__in=sources).values_list("blob_id", flat=True).distinct())
            freed_sources = sources - kept
            thumbs = list(Thumbnail.objects.select_for_update().filter(source_id__in=freed_sources)
                          .values_list("pk", "blob_id"))
            Thumbnail.objects.filter(pk__in=[pk for pk, _blob in thumbs]).delete()
            doomed = blobs_doom_unreferenced(blob_ids=freed_sources | {blob for _pk, blob in thumbs})
        media_totals.count += len(ids)
        thumbnail_totals.count += len(thumbs)
        nbytes = _remove([d for d in doomed if d[0] in freed_sources], media_totals)
        nbytes += _remove([d for d in doomed if d[0] not in freed_sources], thumbnail_totals)
        progress.advance(nbytes=nbytes, items=len(ids))


def thumbnails_purge(*, before: datetime, totals: Totals, progress: Progress) -> None:
    """Purge thumbnails not served since `before` (they are rendered again on demand)."""
    q = _thumbnail_q(before)
    for pks in _batches(Thumbnail.objects.filter(q), media_settings.RETENTION_BATCH_SIZE):
        with transaction.atomic():
            rows = list(Thumbnail.objects.select_for_update(of=("self",)).filter(q, pk__in=pks)
                        .values_list("pk", "blob_id"))
            Thumbnail.objects.filter(pk__in=[pk for pk, _blob in rows]).delete()
            doomed = blobs_doom_unreferenced(blob_ids={blob for _pk, blob in rows})
        totals.count += len(rows)
        progress.advance(nbytes=_remove(doomed, totals), items=len(rows))


def _already_proposed(uris: set[str]) -> set[str]:
    """Which of these mxc URIs a delete request already names that is waiting, approved, or was
    rejected (a moderator chose to keep it). Streamed: memory does not grow with the requests."""
    found = set()
    requests = ModerationRequest.objects.filter(
        action=ModerationAction.DELETE_MEDIA,
        status__in=[RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.REJECTED],
    ).values_list("targets", flat=True)
    for targets in requests.iterator(chunk_size=200):
        found.update(uris.intersection(targets))
    return found


def _propose_local(*, policy: RetentionPolicy, totals: Totals, dry_run: bool,
                   progress: Progress | None = None, requested_by=None) -> None:
    q = _local_q(policy, under_review=_Reported().q())
    if q is None:
        return
    reasons = []
    if policy.local_created_before is not None:
        reasons.append(f"uploaded before {policy.local_created_before:%Y-%m-%d %H:%M} UTC")
    if policy.local_idle_before is not None:
        reasons.append(f"not accessed since {policy.local_idle_before:%Y-%m-%d %H:%M} UTC")
    reason = "Retention: " + " or ".join(reasons)
    for pks in _batches(Media.objects.filter(q), media_settings.RETENTION_PROPOSAL_BATCH_SIZE):
        rows = Media.objects.filter(pk__in=pks).values_list("server_name", "media_id", "blob__size")
        sizes = {f"mxc://{server}/{media_id}": size for server, media_id, size in rows}
        new = sorted(set(sizes) - _already_proposed(set(sizes)))
        if new and not dry_run:
            moderation_request_create(action=ModerationAction.DELETE_MEDIA, targets=new,
                                      requested_by=requested_by, reason=reason, retention=True)
        totals.count += len(new)
        totals.bytes += sum(sizes[uri] for uri in new)
        if progress is not None:
            progress.advance(nbytes=0, items=len(new))


PROPOSE_FLIGHT = "retention:propose-local"
PROPOSE_LEASE_SECONDS = 30
PROPOSE_MAX_SECONDS = 6 * 3600


def local_media_propose(*, policy: RetentionPolicy, totals: Totals, progress: Progress, requested_by=None) -> None:
    """Propose local media past its lifetime for deletion; a moderator signs off (or not).
    One run at a time, so two overlapping runs cannot propose the same media twice: a run that
    finds another one proposing leaves the work to it. `requested_by`: whoever started the run
    by hand (they cannot approve its proposals), None for the schedule."""
    if _local_q(policy) is None:
        return
    # A short lease renewed while the run lives: a run killed mid-way (kill -9, where leases
    # expire: Redis) frees the work for the next run within PROPOSE_LEASE_SECONDS.
    flight = singleflight.claim(PROPOSE_FLIGHT, lease=PROPOSE_LEASE_SECONDS, renew_for=PROPOSE_MAX_SECONDS)
    if flight is None:
        logger.info("Another retention run is proposing local media for deletion; this one leaves it that work")
        return
    try:
        _propose_local(policy=policy, totals=totals, dry_run=False, progress=progress, requested_by=requested_by)
    except BaseException:
        singleflight.abandon(flight)
        raise
    singleflight.publish_done(flight)


JOBS = ("interrupted", "reservations", "remote", "thumbnails", "local")


def retention_run(*, policy: RetentionPolicy, jobs=JOBS, progress_for=None, requested_by=None) -> RetentionReport:
    """Run the jobs named in `jobs` in the order of JOBS. `progress_for(kind)` returns the
    Progress to report a kind's work to (the command's bars); nothing is reported by default.
    `requested_by`: the person who started the run, named on its proposals."""
    report = RetentionReport()

    def progress(kind: str) -> Progress:
        return progress_for(kind) if progress_for else Progress()

    def run(kind, job, **kwargs):
        bar = progress(kind)
        try:
            job(progress=bar, **kwargs)
        finally:
            bar.finish()

    if "interrupted" in jobs:
        run(Kind.INTERRUPTED, blobs_finish_interrupted, totals=report[Kind.INTERRUPTED])
    if "reservations" in jobs:
        run(Kind.RESERVATIONS, reservations_expire, now=policy.now, totals=report[Kind.RESERVATIONS])
    if "remote" in jobs and policy.remote_before is not None:
        run(Kind.REMOTE_MEDIA, remote_media_purge, before=policy.remote_before,
            media_totals=report[Kind.REMOTE_MEDIA], thumbnail_totals=report[Kind.REMOTE_THUMBNAILS])
    if "thumbnails" in jobs and policy.thumbnails_before is not None:
        run(Kind.THUMBNAILS, thumbnails_purge, before=policy.thumbnails_before, totals=report[Kind.THUMBNAILS])
    if "local" in jobs:
        run(Kind.LOCAL_PROPOSALS, local_media_propose, policy=policy, totals=report[Kind.LOCAL_PROPOSALS],
            requested_by=requested_by)
    return report


def remote_cache_purge(*, before_ts_ms: int) -> int:
    """Purge remote media not accessed since `before_ts_ms` (ms since the epoch), with its
    thumbnails (Synapse's `purge_media_cache`): a cache only, fetched again from its origin when
    asked for. Returns how many media were purged."""
    before = datetime.fromtimestamp(before_ts_ms / 1000, tz=dt_timezone.utc)
    report = retention_run(policy=retention_policy(remote_before=before), jobs=("interrupted", "remote"))
    return report[Kind.REMOTE_MEDIA].count
