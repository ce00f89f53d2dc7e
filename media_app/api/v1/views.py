"""Native REST API (`/api/v1/`): the same services as the Matrix API, in REST shapes."""
from dataclasses import asdict
from datetime import datetime, timezone as dt_timezone

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.utils.urls import remove_query_param

from ... import errors
from ...conf import media_settings
from ...models import MediaStatus
from ...selectors import media_list_for_user
from ...services import deletion, download, quotas, tokens, upload
from ..body import MULTIPART, UPLOAD_ACCEPTS, request_body, upload_body_kind
from ..endpoint import Endpoint, drf_request, json_response, read_json
from ..schema import (
    ALLOW_REDIRECT, FILENAME_QUERY, MEDIA_ID, SERVER_NAME, SERVING_ERRORS, THUMBNAIL_ERRORS, THUMBNAIL_PARAMETERS,
    TIMEOUT_MS, UPLOAD_ERRORS, binary_parameters, binary_responses, endpoint_schema,
)
from ..serving import download_response, thumbnail_response
from .serializers import (
    DeletionAcceptedSerializer, DeletionRequestSerializer, MediaSerializer, NewTokenSerializer, TokenCreateSerializer,
    TokenSerializer, UsageSerializer, media_path,
)

_LISTED_STATUSES = [s for s in MediaStatus.values if s != MediaStatus.DELETED]


def _created(data: dict, media) -> HttpResponse:
    """201 for one new media, with its metadata's address in Location (RFC 9110)."""
    response = json_response(data, status=201)
    response["Location"] = media_path(media)
    return response


class MediaCursorPagination(CursorPagination):
    ordering = ("-created_ts", "-pk")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise errors.InvalidParam("Invalid cursor") from None

    def paginate_queryset(self, queryset, request, view=None):
        # A cursor is opaque but not signed: one that decodes and holds a position no row can
        # have ("p=2026") fails where the position is compared, and is the client's error.
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, OverflowError, DataError):
            raise errors.InvalidParam("Invalid cursor") from None

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise errors.InvalidParam(f"limit must be a whole number from 1 to {self.max_page_size}")
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size,
                                       "default": self.page_size}
        return parameters

    def encode_cursor(self, cursor):
        # A token sent as ?access_token= must not be copied into the links of the answer.
        return remove_query_param(super().encode_cursor(cursor), "access_token")


def _since(raw: str | None) -> datetime | None:
    """`since` as an ISO 8601 date-time or milliseconds since the epoch (the Matrix unit)."""
    if not raw:
        return None
    if raw.isdigit():
        try:
            return datetime.fromtimestamp(int(raw) / 1000, tz=dt_timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise errors.InvalidParam("since is out of range") from None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise errors.InvalidParam("since must be an ISO 8601 date-time or milliseconds since the epoch")
    return value if value.tzinfo else value.replace(tzinfo=dt_timezone.utc)


def _list_filters(params) -> dict:
    status = params.get("status") or None
    if status is not None and status not in _LISTED_STATUSES:
        raise errors.InvalidParam(f"status must be one of {', '.join(_LISTED_STATUSES)}")
    media_type = (params.get("type") or "").strip().lower() or None
    return {"media_type": media_type, "status": status, "since": _since(params.get("since"))}


_UPLOAD_FORM = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
            "description": "One or more files; each part's file name is kept as the media's upload name",
        },
    },
    "required": ["file"],
}
_UPLOADED = OpenApiResponse(
    {"oneOf": [{"$ref": "#/components/schemas/Media"},
               {"type": "array", "items": {"$ref": "#/components/schemas/Media"}}]},
    description="The new media's metadata; a list when a multipart body carried several `file` parts",
)


class MediaCollectionView(Endpoint):
    rate_limits = {"post": "upload"}
    serializer_class = MediaSerializer
    pagination_class = MediaCursorPagination

    @endpoint_schema(
        summary="Upload media",
        description=f"{UPLOAD_ACCEPTS}. Each file is streamed to disk, cut off past the upload "
        "limit, hashed and deduplicated; its type is detected from the bytes, never taken from "
        "the request. With multipart, every file is checked before any is stored.",
        request={
            "application/octet-stream": OpenApiTypes.BINARY,
            "multipart/form-data": _UPLOAD_FORM,
            "*/*": OpenApiTypes.BINARY,
        },
        parameters=[FILENAME_QUERY],
        responses={201: _UPLOADED},
        errors=[*UPLOAD_ERRORS, errors.UnsupportedContentType, errors.MalformedMultipart, errors.MissingParam,
                errors.TooManyFiles],
    )
    def post(self, request):
        kind = upload_body_kind(request)
        stream, length = request_body(request)
        context = {"request": request}
        if kind == MULTIPART:
            created = upload.media_upload_form(
                uploader=request.user, stream=stream, declared_length=length,
                content_type=request.META.get("CONTENT_TYPE", ""), upload_name=request.GET.get("filename"),
            )
            data = MediaSerializer(created, many=True, context=context).data
            if len(data) == 1:
                return _created(data[0], created[0])
            return json_response(data, status=201)
        media = upload.media_upload(
            uploader=request.user, stream=stream, declared_length=length,
            upload_name=request.GET.get("filename"),
        )
        return _created(MediaSerializer(media, context=context).data, media)

    @endpoint_schema(
        summary="List your own media",
        description="Newest first, cursor-paginated: follow `next` / `previous`.",
        parameters=[
            OpenApiParameter("type", str, description="A media type (`image/png`) or a family (`image/*`, `image`)"),
            OpenApiParameter("status", str, enum=_LISTED_STATUSES),
            OpenApiParameter("since", str, description="Only media created at or after this ISO 8601 date-time "
                             "or time in milliseconds since the epoch"),
        ],
        responses={200: MediaSerializer(many=True)},
        errors=[errors.InvalidParam],
    )
    def get(self, request):
        queryset = media_list_for_user(user=request.user, **_list_filters(request.GET))
        paginator = MediaCursorPagination()
        wrapped = drf_request(request)
        page = paginator.paginate_queryset(queryset, wrapped, view=self)
        data = MediaSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data).data


_MEDIA_PATH = [SERVER_NAME, MEDIA_ID]


class MediaDetailView(Endpoint):
    serializer_class = MediaSerializer

    @endpoint_schema(
        summary="Metadata of your media",
        description="Your own media in any status but deleted; someone else's answers 404 (staff see all).",
        parameters=_MEDIA_PATH,
        responses={200: MediaSerializer},
        errors=[errors.InvalidParam, errors.MediaNotFound],
    )
    def get(self, request, server_name, media_id):
        media = download.media_get_metadata(server_name=server_name, media_id=media_id, user=request.user)
        return MediaSerializer(media, context={"request": request}).data

    @endpoint_schema(
        summary="Ask for your media to be deleted",
        description="Queues a deletion request; the media is deleted when a moderator signs it off "
        "(until then it stays as it is). Asking again returns the same pending request. Media "
        "that is not yours answers 404.",
        parameters=_MEDIA_PATH,
        request=None,
        responses={202: DeletionAcceptedSerializer},
        errors=[errors.InvalidParam, errors.MediaNotFound, errors.MediaInvalidState],
    )
    def delete(self, request, server_name, media_id):
        pending, _created = deletion.media_request_deletion(
            server_name=server_name, media_id=media_id, user=request.user
        )
        body = {
            "deletion_request": DeletionRequestSerializer(pending).data,
            "message": "Deletion requested: the media is deleted once a moderator signs the request off.",
        }
        return json_response(body, status=202)


class MediaContentView(Endpoint):
    @endpoint_schema(
        summary="Media bytes",
        description="Supports HEAD, single byte ranges (206/416), ETag / If-None-Match (304) and If-Range.",
        parameters=[*_MEDIA_PATH, TIMEOUT_MS, ALLOW_REDIRECT, *binary_parameters()],
        responses=binary_responses(),
        errors=SERVING_ERRORS,
    )
    def get(self, request, server_name, media_id):
        return download_response(request, server_name, media_id)


class MediaThumbnailView(Endpoint):
    @endpoint_schema(
        summary="Media thumbnail",
        description="Matrix thumbnail semantics: the smallest configured size at least as large as "
        "asked, never upscaled, metadata stripped; animated WebP when animated=true.",
        parameters=[*_MEDIA_PATH, *THUMBNAIL_PARAMETERS, TIMEOUT_MS, *binary_parameters()],
        responses=binary_responses(),
        errors=THUMBNAIL_ERRORS,
    )
    def get(self, request, server_name, media_id):
        return thumbnail_response(request, server_name, media_id)


class UsageView(Endpoint):
    @endpoint_schema(
        summary="Your quota and usage",
        description="Bytes and files you have stored (reservations count as files), your limits "
        "(0 = unlimited) and your open reservations.",
        responses={200: UsageSerializer},
    )
    def get(self, request):
        return UsageSerializer(asdict(quotas.quota_usage(user=request.user))).data


class TokenCollectionView(Endpoint):
    serializer_class = TokenSerializer

    @endpoint_schema(summary="List your access tokens", description="Never the secrets.",
                     responses={200: TokenSerializer(many=True)})
    def get(self, request):
        return TokenSerializer(tokens.token_list(user=request.user), many=True).data

    @endpoint_schema(
        summary="Create an access token",
        description="The answer carries the secret (`token`); it is stored only as a hash and never shown again.",
        request={"application/json": TokenCreateSerializer},
        responses={201: NewTokenSerializer},
        errors=[errors.InvalidParam, errors.BadRequest, errors.UnsupportedContentType, errors.QuotaExceeded],
    )
    def post(self, request):
        name = read_json(request).get("name", "")
        row, secret = tokens.token_create(user=request.user, name=name,
                                          max_tokens=media_settings.MAX_TOKENS_PER_USER)
        return json_response({**TokenSerializer(row).data, "token": secret}, status=201)


class TokenDetailView(Endpoint):
    @endpoint_schema(
        summary="Revoke one of your access tokens",
        description="It stops working at once, on every server node (tokens are checked against "
        "the database on each request).",
        parameters=[OpenApiParameter("token_id", int, OpenApiParameter.PATH)],
        responses={204: OpenApiResponse(description="Revoked")},
        errors=[errors.TokenNotFound],
    )
    def delete(self, request, token_id):
        tokens.token_revoke(token_id=token_id, user=request.user)
        response = HttpResponse(status=204)
        del response["Content-Type"]  # no content, so no type of it
        return response
