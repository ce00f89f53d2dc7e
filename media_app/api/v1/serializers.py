from rest_framework import serializers

from ...models import Media


class MediaSerializer(serializers.ModelSerializer):
    content_uri = serializers.CharField(read_only=True)
    sha256 = serializers.CharField(source="blob.sha256", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Media
        fields = [
            "media_id", "server_name", "content_uri", "upload_name", "media_type", "media_length",
            "sha256", "created_ts", "last_access_ts", "status",
        ]
        read_only_fields = fields
