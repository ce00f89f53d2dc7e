"""Moderation over HTTP: users' reports (native API) and Synapse's admin media API
(`/_synapse/admin/v1/…`, staff only), in Synapse's JSON shapes. Quarantine and protection act at
once; deletions and releases are requests for a second moderator and answer 202 with the
request's ID."""
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from ..api.endpoint import Access, Endpoint, json_response, read_json
from ..api.schema import EMPTY_OBJECT, MEDIA_ID, SERVER_NAME, endpoint_schema
from ..conf import media_settings
from ..retention.services import remote_cache_purge
from .. import errors
from . import selectors, services

# --- schema: Synapse's admin media API shapes ---------------------------------------------

_MEDIA_PATH = [SERVER_NAME, MEDIA_ID]
_JSON_ERRORS = [errors.BadRequest, errors.UnsupportedContentType]
_REASON = {"application/json": inline_serializer("ModerationReason", {
    "reason": serializers.CharField(
        required=False, allow_null=True, max_length=services.MAX_REASON_CHARS,
        help_text="Why (kept with the moderation record); the body may be omitted"),
})}
_USER_ID = OpenApiParameter(
    "user_id", str, OpenApiParameter.PATH,
    description="A local user's Matrix ID (`@alice:server`) or bare username",
)
_MS = "ms since the epoch"
_USER_MEDIA = inline_serializer("SynapseUserMedia", {
    "created_ts": serializers.IntegerField(help_text=_MS),
    "last_access_ts": serializers.IntegerField(allow_null=True, help_text=_MS),
    "media_id": serializers.CharField(),
    "media_length": serializers.IntegerField(allow_null=True, help_text="Size in bytes"),
    "media_type": serializers.CharField(),
    "quarantined_by": serializers.CharField(allow_null=True, help_text="Matrix ID of the moderator, if quarantined"),
    "safe_from_quarantine": serializers.BooleanField(help_text="Protected from quarantine"),
    "upload_name": serializers.CharField(allow_null=True),
})
_USER_MEDIA_PAGE = inline_serializer("SynapseUserMediaPage", {
    "media": serializers.ListField(child=_USER_MEDIA, help_text="One page, in the requested order"),
    "total": serializers.IntegerField(help_text="All media of the user"),
    "next_token": serializers.IntegerField(required=False, help_text="`from` of the next page; absent on the last"),
})
_MEDIA_INFO = inline_serializer("SynapseMediaInfo", {
    "media_info": inline_serializer("SynapseMediaInfoFields", {
        "media_origin": serializers.CharField(help_text="The server name of the mxc:// URI"),
        "user_id": serializers.CharField(allow_null=True, help_text="Matrix ID of the uploader"),
        "media_id": serializers.CharField(),
        "media_type": serializers.CharField(),
        "media_length": serializers.IntegerField(allow_null=True, help_text="Size in bytes"),
        "upload_name": serializers.CharField(allow_null=True),
        "created_ts": serializers.IntegerField(help_text=_MS),
        "filesystem_id": serializers.CharField(),
        "url_cache": serializers.CharField(allow_null=True, help_text="Always null (no URL previews)"),
        "last_access_ts": serializers.IntegerField(allow_null=True, help_text=_MS),
        "quarantined_by": serializers.CharField(allow_null=True, help_text="Matrix ID of the moderator, if quarantined"),
        "authenticated": serializers.BooleanField(help_text="Always true: served by the authenticated API"),
        "safe_from_quarantine": serializers.BooleanField(help_text="Protected from quarantine"),
        "sha256": serializers.CharField(allow_null=True, help_text="Hex SHA-256 of the content"),
    }),
})
_NOTHING_DELETED = inline_serializer("SynapseDeletedMedia", {
    "deleted_media": serializers.ListField(child=serializers.CharField(), help_text="Always empty"),
    "total": serializers.IntegerField(help_text="Always 0"),
})
_DELETION_PENDING = OpenApiResponse(
    inline_serializer("SynapseDeletionPending", {
        "deleted_media": serializers.ListField(child=serializers.CharField(), help_text="Always empty: nothing is deleted yet"),
        "total": serializers.IntegerField(help_text="Always 0"),
        "request_id": serializers.IntegerField(help_text="The moderation request awaiting a second moderator"),
        "pending_media": serializers.ListField(child=serializers.CharField(), help_text="Media IDs the request covers"),
    }),
    description="A deletion request was queued; a different moderator must approve it",
)
_RELEASE_PENDING = OpenApiResponse(
    inline_serializer("ModerationReleasePending", {
        "request_id": serializers.IntegerField(help_text="The moderation request awaiting a second moderator"),
    }),
    description="A release request was queued; a different moderator must approve it",
)


def _ms(value) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


# Offsets, limits and sizes go to PostgreSQL as bigint.
MAX_COUNT = 2**63 - 1
# The last millisecond Python's datetime can hold (9999-12-31).
MAX_TS_MS = 253402300799999


def _int_param(request, name: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        if default is None:
            raise errors.InvalidParam(f"Missing {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidParam(f"{name} must be an integer") from None
    if value < minimum:
        raise errors.InvalidParam(f"{name} must be at least {minimum}")
    if value > maximum:
        raise errors.InvalidParam(f"{name} must be at most {maximum}")
    return value


def _pending(request_row, media_ids: list[str]):
    """Synapse's deletion shape (nothing deleted yet) plus the request awaiting sign-off."""
    return json_response(
        {"deleted_media": [], "total": 0, "request_id": request_row.pk, "pending_media": media_ids}, status=202
    )


class ModeratorEndpoint(Endpoint):
    """Staff only (a staff user's Bearer token), and of those only moderators."""

    access = Access.STAFF

    def authenticate(self, request):
        user = super().authenticate(request)
        services.require_moderator(user)
        return user


class MediaReportView(Endpoint):
    access = Access.TOKEN

    @endpoint_schema(
        summary="Report media to the moderators",
        description="Puts the media in the moderators' review queue. The reason is stored encrypted. "
        "Rate-limited per user (429 with Retry-After).",
        parameters=_MEDIA_PATH,
        request=_REASON,
        responses={200: OpenApiResponse(EMPTY_OBJECT, description="Reported: `{}`")},
        errors=[errors.InvalidParam, *_JSON_ERRORS, errors.MediaNotFound, errors.RateLimited],
    )
    def post(self, request, server_name, media_id):
        body = read_json(request)
        services.media_report(server_name=server_name, media_id=media_id, reporter=request.user,
                              reason=body.get("reason", ""))
        return {}


class QuarantineMediaView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Quarantine media",
        description="At once, by content: every media ID sharing these bytes is quarantined, and "
        "the same bytes uploaded later arrive quarantined.",
        parameters=_MEDIA_PATH,
        request=_REASON,
        responses={200: OpenApiResponse(EMPTY_OBJECT, description="Quarantined: `{}`")},
        errors=[errors.InvalidParam, *_JSON_ERRORS, errors.MediaProtected, errors.MediaNotFound,
                errors.MediaInvalidState],
    )
    def post(self, request, server_name, media_id):
        services.media_quarantine(server_name=server_name, media_id=media_id, moderator=request.user,
                                  reason=read_json(request).get("reason", ""))
        return {}


class UnquarantineMediaView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Release media from quarantine",
        description="Queues a release request for a second moderator (202 with its ID); media that "
        "is not quarantined answers `{}`.",
        parameters=_MEDIA_PATH,
        request=_REASON,
        responses={
            200: OpenApiResponse(EMPTY_OBJECT, description="Not quarantined: nothing to do, `{}`"),
            202: _RELEASE_PENDING,
        },
        errors=[errors.InvalidParam, *_JSON_ERRORS, errors.MediaNotFound, errors.MediaInvalidState],
    )
    def post(self, request, server_name, media_id):
        media = services.media_for_moderation(server_name=server_name, media_id=media_id)
        if not media.is_quarantined:
            return {}
        row = services.media_release_request(media=[media], requested_by=request.user,
                                             reason=read_json(request).get("reason", ""))
        return json_response({"request_id": row.pk}, status=202)


class ProtectMediaView(ModeratorEndpoint):
    protected = True

    @endpoint_schema(
        summary="Protect local media from quarantine",
        description="For stickers and emoji: quarantining it, or content it shares, is refused. "
        "Quarantined media cannot be protected (release it first).",
        parameters=[MEDIA_ID],
        request=None,
        responses={200: OpenApiResponse(EMPTY_OBJECT, description="Protected: `{}`")},
        errors=[errors.InvalidParam, errors.MediaNotFound, errors.MediaInvalidState],
    )
    def post(self, request, media_id):
        services.media_protect(media_id=media_id, moderator=request.user, protected=self.protected)
        return {}


class UnprotectMediaView(ProtectMediaView):
    protected = False

    @endpoint_schema(
        summary="Remove the protection of local media",
        parameters=[MEDIA_ID],
        request=None,
        responses={200: OpenApiResponse(EMPTY_OBJECT, description="Unprotected: `{}`")},
        errors=[errors.InvalidParam, errors.MediaNotFound],
    )
    def post(self, request, media_id):
        return super().post(request, media_id)


class UserMediaQuarantineView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Quarantine all media of a local user",
        description="Protected media is left alone.",
        parameters=[_USER_ID],
        request=None,
        responses={200: inline_serializer("SynapseQuarantinedCount", {
            "num_quarantined": serializers.IntegerField(help_text="Media newly quarantined"),
        })},
        errors=[errors.InvalidParam, errors.UserNotFound],
    )
    def post(self, request, user_id):
        user = selectors.user_for_matrix_id(user_id)
        return {"num_quarantined": services.user_media_quarantine(user=user, moderator=request.user)}


class UserMediaListView(ModeratorEndpoint):
    @endpoint_schema(
        summary="List the media of a local user",
        description="Deleted media is left out. Default order: newest first.",
        parameters=[
            _USER_ID,
            OpenApiParameter("from", {"type": "integer", "minimum": 0, "maximum": MAX_COUNT, "default": 0},
                             description="Offset of the first item (`next_token` of the previous page)"),
            OpenApiParameter("limit", {"type": "integer", "minimum": 0, "maximum": MAX_COUNT, "default": 100},
                             description="Largest number of items"),
            OpenApiParameter("order_by", str, enum=list(selectors.USER_MEDIA_ORDER), description="Sort field"),
            OpenApiParameter("dir", str, enum=["f", "b"], description="Forwards or backwards"),
        ],
        responses={200: _USER_MEDIA_PAGE},
        errors=[errors.InvalidParam, errors.UserNotFound],
    )
    def get(self, request, user_id):
        user = selectors.user_for_matrix_id(user_id)
        start = _int_param(request, "from", 0)
        limit = _int_param(request, "limit", 100)
        queryset = selectors.media_of_user(user=user, order_by=request.GET.get("order_by"),
                                           direction=request.GET.get("dir"))
        total = queryset.count()
        page = list(queryset[start:start + limit])
        body = {
            "media": [
                {
                    "created_ts": _ms(m.created_ts),
                    "last_access_ts": _ms(m.last_access_ts),
                    "media_id": m.media_id,
                    "media_length": m.media_length,
                    "media_type": m.media_type,
                    "quarantined_by": selectors.matrix_id(m.quarantined_by) if m.is_quarantined else None,
                    "safe_from_quarantine": m.protected,
                    "upload_name": m.upload_name,
                }
                for m in page
            ],
            "total": total,
        }
        if start + len(page) < total:
            body["next_token"] = start + len(page)
        return body


class MediaAdminView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Metadata of any media",
        description="Synapse's query of a piece of media by ID; quarantined media included.",
        parameters=_MEDIA_PATH,
        responses={200: _MEDIA_INFO},
        errors=[errors.InvalidParam, errors.MediaNotFound],
    )
    def get(self, request, server_name, media_id):
        media = services.media_for_moderation(server_name=server_name, media_id=media_id)
        return {
            "media_info": {
                "media_origin": media.server_name,
                "user_id": selectors.matrix_id(media.uploader),
                "media_id": media.media_id,
                "media_type": media.media_type,
                "media_length": media.media_length,
                "upload_name": media.upload_name,
                "created_ts": _ms(media.created_ts),
                "filesystem_id": media.media_id,
                "url_cache": None,
                "last_access_ts": _ms(media.last_access_ts),
                "quarantined_by": selectors.matrix_id(media.quarantined_by) if media.is_quarantined else None,
                "authenticated": True,
                "safe_from_quarantine": media.protected,
                "sha256": media.blob.sha256 if media.blob_id else None,
            }
        }

    @endpoint_schema(
        summary="Ask for local media to be deleted",
        description="Queues a deletion request for a second moderator. An optional JSON body "
        "`{\"reason\": \"…\"}` is kept with the request.",
        parameters=_MEDIA_PATH,
        responses={202: _DELETION_PENDING},
        errors=[errors.InvalidParam, *_JSON_ERRORS, errors.MediaNotFound, errors.MediaInvalidState],
    )
    def delete(self, request, server_name, media_id):
        if server_name != media_settings.SERVER_NAME:
            raise errors.InvalidParam("Can only delete local media")
        media = services.media_for_moderation(server_name=server_name, media_id=media_id)
        row = services.media_deletion_request(media=[media], requested_by=request.user,
                                              reason=read_json(request).get("reason", ""))
        return _pending(row, [media_id])


class DeleteMediaBeforeView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Ask for local media unused since a date to be deleted",
        description="Media last accessed (never accessed: created) before `before_ts`; "
        "quarantined and protected media are left out. Queues one deletion request for a "
        "second moderator.",
        parameters=[
            OpenApiParameter("before_ts", {"type": "integer", "minimum": 0, "maximum": MAX_TS_MS}, required=True,
                             description="In ms since the epoch"),
            OpenApiParameter("size_gt", {"type": "integer", "minimum": 0, "maximum": MAX_COUNT, "default": 0},
                             description="Only media larger than this many bytes"),
        ],
        request=None,
        responses={200: OpenApiResponse(_NOTHING_DELETED, description="No media matched"), 202: _DELETION_PENDING},
        errors=[errors.InvalidParam],
    )
    def post(self, request):
        before_ts = _int_param(request, "before_ts", maximum=MAX_TS_MS)
        size_gt = _int_param(request, "size_gt", 0)
        media = list(selectors.local_media_unused_since(before_ts_ms=before_ts, size_gt=size_gt))
        if not media:
            return {"deleted_media": [], "total": 0}
        row = services.media_deletion_request(media=media, requested_by=request.user,
                                              reason=f"unused before {before_ts} (admin API)")
        return _pending(row, [m.media_id for m in media])


class PurgeRemoteCacheView(ModeratorEndpoint):
    @endpoint_schema(
        summary="Purge the remote media cache",
        description="Remote media (and its thumbnails) not accessed since `before_ts` is removed at "
        "once, as retention would: it is only a cache, fetched again from its origin when asked for. "
        "Quarantined, protected and reported media stays. Needs no sign-off.",
        parameters=[OpenApiParameter("before_ts", {"type": "integer", "minimum": 0, "maximum": MAX_TS_MS},
                                     required=True, description="In ms since the epoch")],
        request=None,
        responses={200: inline_serializer("SynapsePurgedCache", {
            "deleted": serializers.IntegerField(help_text="Remote media purged"),
        })},
        errors=[errors.InvalidParam],
    )
    def post(self, request):
        return {"deleted": remote_cache_purge(before_ts_ms=_int_param(request, "before_ts", maximum=MAX_TS_MS))}
