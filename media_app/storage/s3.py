"""Blobs as objects in an S3 bucket (django-storages' S3Storage configures which).

The bucket is used through boto3 directly rather than through `S3File`, which buffers whole
objects in memory: uploads are multipart from the temp file (bounded by the backend's
TransferConfig), downloads are ranged GetObjects streamed as they arrive. Works with MinIO,
Ceph and R2 through `endpoint_url`.
"""
import os
from collections.abc import Iterator

from .. import errors
from .base import COPY_CHUNK_BYTES, MediaBackend, StoredFile
from .failures import guard, is_not_found
from .presign import sigv4_presigned_get


class _RemoteStream:
    """The body of one (ranged) GetObject, read as it arrives: nothing is buffered beyond the
    read in progress. A connection lost mid-body surfaces as STORAGE_UNAVAILABLE."""

    def __init__(self, body):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        with guard():
            return self._body.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._body.close()


class _Empty:
    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class S3Backend(MediaBackend):
    def __init__(self, alias: str, django_storage):
        super().__init__(alias, django_storage)
        self._credentials = None

    @property
    def _client(self):
        return self.django_storage.connection.meta.client

    def _name(self, key: str) -> str:
        """The object name of `key`, honouring the backend's `location` prefix like django-storages."""
        location = (self.django_storage.location or "").strip("/")
        return f"{location}/{key}" if location else key

    def _get_object(self, key: str, start: int | None = None, length: int | None = None):
        params = {"Bucket": self.django_storage.bucket_name, "Key": self._name(key)}
        if start is not None:
            params["Range"] = f"bytes={start}-{start + length - 1}"
        return self._client.get_object(**params)["Body"]

    def put(self, key: str, src_path: str, *, keep_source: bool = False) -> None:
        with guard():
            # upload_file reads the file part by part (bounded by the TransferConfig) instead
            # of handing s3transfer a file object, which it would buffer in memory.
            self.django_storage.bucket.Object(self._name(key)).upload_file(
                src_path,
                ExtraArgs={"ContentType": "application/octet-stream"},
                Config=self.django_storage.transfer_config,
            )
            if not keep_source:
                os.unlink(src_path)

    def delete(self, key: str) -> None:
        with guard():
            self._client.delete_object(Bucket=self.django_storage.bucket_name, Key=self._name(key))

    def open_range(self, key: str, start: int, length: int):
        if length <= 0:
            return _Empty()
        with guard():
            return _RemoteStream(self._get_object(key, start, length))

    def iter_chunks(self, key: str, chunk_size: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
        with guard():
            stream = _RemoteStream(self._get_object(key))
        try:
            while chunk := stream.read(chunk_size):
                yield chunk
        finally:
            stream.close()

    def exists(self, key: str) -> bool:
        with guard():
            try:
                self._client.head_object(Bucket=self.django_storage.bucket_name, Key=self._name(key))
            except Exception as exc:
                if is_not_found(exc):
                    return False
                raise
            return True

    def list_files(self) -> Iterator[StoredFile]:
        prefix = (self.django_storage.location or "").strip("/")
        prefix = f"{prefix}/" if prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        with guard():
            for page in paginator.paginate(Bucket=self.django_storage.bucket_name, Prefix=prefix):
                for entry in page.get("Contents", ()):
                    yield StoredFile(key=entry["Key"][len(prefix):], size=entry["Size"],
                                     modified=entry["LastModified"])

    def free_space(self) -> None:
        return None  # a bucket has no capacity we can ask about

    def _frozen_credentials(self):
        """The credentials boto3 would use for this backend (keys given to it, else profile,
        environment, instance role), resolved once; refreshable ones are frozen per call."""
        if self._credentials is None:
            import boto3

            storage = self.django_storage
            session = boto3.Session(
                aws_access_key_id=storage.access_key, aws_secret_access_key=storage.secret_key,
                aws_session_token=storage.security_token, profile_name=storage.session_profile or None,
            )
            credentials = session.get_credentials()
            if credentials is None:
                raise errors.StorageUnavailable("No credentials for the storage backend")
            self._credentials = credentials
        return self._credentials.get_frozen_credentials()

    def presign(self, key, *, signed_at, expires_seconds, response_headers) -> str:
        with guard():
            return sigv4_presigned_get(
                client=self._client, bucket=self.django_storage.bucket_name, object_name=self._name(key),
                credentials=self._frozen_credentials(), signed_at=signed_at,
                expires_seconds=expires_seconds, response_headers=response_headers,
            )
