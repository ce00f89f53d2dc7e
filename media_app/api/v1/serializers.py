"""Shapes of the native API's bodies; read-only (views call services, never `save()`)."""
from urllib.parse import quote

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ...models import AccessToken, Media, MediaStatus
from ...moderation.models import ModerationRequest
from ...services.thumbnails import THUMBNAILABLE_TYPES

# The size `thumbnail_url` asks for: one of the default pre-generated sizes.
THUMBNAIL_URL_QUERY = "width=320&height=240&method=scale"


def media_path(media: Media) -> str:
    return f"/api/v1/media/{quote(media.server_name, safe=':[]')}/{quote(media.media_id, safe='')}"


class MediaSerializer(serializers.ModelSerializer):
    """Metadata of one media. Pass `context={"request": request}` for absolute URLs."""

    content_uri = serializers.CharField(read_only=True, help_text="mxc:// URI for Matrix clients")
    sha256 = serializers.CharField(source="blob.sha256", read_only=True, allow_null=True, default=None,
                                   help_text="SHA-256 of the content (null until uploaded)")
    download_url = serializers.SerializerMethodField(help_text="Where to GET the bytes (with a token)")
    thumbnail_url = serializers.SerializerMethodField(help_text="A 320×240 thumbnail, for image types only")

    class Meta:
        model = Media
        fields = [
            "media_id", "server_name", "content_uri", "upload_name", "media_type", "media_length",
            "sha256", "created_ts", "last_access_ts", "status", "download_url", "thumbnail_url",
        ]
        read_only_fields = fields

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(OpenApiTypes.URI)
    def get_download_url(self, media: Media) -> str:
        return self._absolute(media_path(media) + "/content")

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_thumbnail_url(self, media: Media) -> str | None:
        if media.media_type not in THUMBNAILABLE_TYPES or media.status != MediaStatus.STORED:
            return None
        return self._absolute(media_path(media) + "/thumbnail?" + THUMBNAIL_URL_QUERY)


class DeletionRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModerationRequest
        fields = ["id", "action", "status", "targets", "created_ts"]
        read_only_fields = fields


class DeletionAcceptedSerializer(serializers.Serializer):
    """The answer to DELETE: the request waiting for a moderator, and what happens next."""

    deletion_request = DeletionRequestSerializer()
    message = serializers.CharField()


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessToken
        fields = ["id", "name", "created_ts", "last_used_ts"]
        read_only_fields = fields


class NewTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret: shown in this answer only")

    class Meta(TokenSerializer.Meta):
        fields = TokenSerializer.Meta.fields + ["token"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                 help_text="A label to recognise the token by")


class UsageSerializer(serializers.Serializer):
    """What a user has stored and may store (services.quotas.Usage); a limit of 0 is none."""

    bytes_used = serializers.IntegerField()
    files_used = serializers.IntegerField(help_text="Stored media and open reservations")
    pending_uploads = serializers.IntegerField(help_text="Open reservations (create, not yet uploaded)")
    max_bytes = serializers.IntegerField(help_text="0: unlimited")
    max_files = serializers.IntegerField(help_text="0: unlimited")
    max_pending_uploads = serializers.IntegerField()
