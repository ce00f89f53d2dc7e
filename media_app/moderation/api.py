"""Moderation over HTTP: users' reports (native API) and Synapse's admin media API
(`/_synapse/admin/v1/…`, staff only), in Synapse's JSON shapes. Quarantine and protection act at
once; deletions and releases are requests for a second moderator and answer 202 with the
request's ID."""
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from ..api.endpoint import Access, Endpoint, json_response, read_json
from ..conf import media_settings
from .. import errors
from . import selectors, services


def _ms(value) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _int_param(request, name: str, default: int | None = None, minimum: int = 0) -> int:
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

    @extend_schema(
        summary="Report media to the moderators",
        description="Puts the media in the moderators' review queue. The reason is stored encrypted. "
        "Rate-limited per user (429 with Retry-After).",
        request=inline_serializer("MediaReport", {"reason": serializers.CharField(required=False)}),
        responses={200: OpenApiResponse(description="{}"), 404: OpenApiResponse(description="Unknown media"),
                   429: OpenApiResponse(description="Too many reports")},
    )
    def post(self, request, server_name, media_id):
        body = read_json(request)
        services.media_report(server_name=server_name, media_id=media_id, reporter=request.user,
                              reason=body.get("reason", ""))
        return {}


class QuarantineMediaView(ModeratorEndpoint):
    def post(self, request, server_name, media_id):
        services.media_quarantine(server_name=server_name, media_id=media_id, moderator=request.user,
                                  reason=read_json(request).get("reason", ""))
        return {}


class UnquarantineMediaView(ModeratorEndpoint):
    def post(self, request, server_name, media_id):
        media = services.media_for_moderation(server_name=server_name, media_id=media_id)
        if not media.is_quarantined:
            return {}
        row = services.media_release_request(media=[media], requested_by=request.user,
                                             reason=read_json(request).get("reason", ""))
        return json_response({"request_id": row.pk}, status=202)


class ProtectMediaView(ModeratorEndpoint):
    protected = True

    def post(self, request, media_id):
        services.media_protect(media_id=media_id, moderator=request.user, protected=self.protected)
        return {}


class UnprotectMediaView(ProtectMediaView):
    protected = False


class UserMediaQuarantineView(ModeratorEndpoint):
    def post(self, request, user_id):
        user = selectors.user_for_matrix_id(user_id)
        return {"num_quarantined": services.user_media_quarantine(user=user, moderator=request.user)}


class UserMediaListView(ModeratorEndpoint):
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
    def get(self, request, server_name, media_id):
        """Synapse's "query a piece of media by ID" (quarantined media included)."""
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

    def delete(self, request, server_name, media_id):
        if server_name != media_settings.SERVER_NAME:
            raise errors.InvalidParam("Can only delete local media")
        media = services.media_for_moderation(server_name=server_name, media_id=media_id)
        row = services.media_deletion_request(media=[media], requested_by=request.user,
                                              reason=read_json(request).get("reason", ""))
        return _pending(row, [media_id])


class DeleteMediaBeforeView(ModeratorEndpoint):
    def post(self, request):
        before_ts = _int_param(request, "before_ts")
        size_gt = _int_param(request, "size_gt", 0)
        media = list(selectors.local_media_unused_since(before_ts_ms=before_ts, size_gt=size_gt))
        if not media:
            return {"deleted_media": [], "total": 0}
        row = services.media_deletion_request(media=media, requested_by=request.user,
                                              reason=f"unused before {before_ts} (admin API)")
        return _pending(row, [m.media_id for m in media])
