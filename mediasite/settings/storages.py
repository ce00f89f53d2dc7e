"""The STORAGES setting: named storage backends. `fs` always exists; `s3` only when its
bucket is configured (media_app.storage turns each alias into a backend class).

Both may be configured at once: each Blob row names the backend holding its bytes, so a
repository can read from both while `migrate_storage` moves blobs from one to the other.
"""
from .base import DATA_DIR, env

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "media")},
    },
    "fs": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "media"), "file_permissions_mode": 0o640},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}


def s3_options(*, bucket: str, endpoint_url: str | None, region: str | None, access_key: str | None,
               secret_key: str | None, part_size: int = 8 << 20, concurrency: int = 4) -> dict:
    """OPTIONS of an S3Storage for Mediasite (also used by the tests to point at their server).

    Multipart parts of `part_size`, at most `concurrency` in flight: memory per upload stays at
    about part_size x concurrency whatever the file size. Bounded retries and timeouts so an
    unreachable backend becomes a quick 503 instead of a request hanging for minutes.
    """
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    return {
        "bucket_name": bucket,
        "endpoint_url": endpoint_url,
        "region_name": region,
        "access_key": access_key,
        "secret_key": secret_key,
        "signature_version": "s3v4",
        "file_overwrite": True,  # keys are content-addressed: same key, same bytes
        "default_acl": None,
        "querystring_auth": True,
        "transfer_config": TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size,
            max_concurrency=concurrency, max_io_queue=concurrency,
        ),
        # The client config replaces django-storages' default one, so it repeats s3v4 and
        # picks path-style addressing for custom endpoints (MinIO, Ceph, moto).
        "client_config": Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    }


if env.str("AWS_STORAGE_BUCKET_NAME", default=""):
    STORAGES["s3"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": s3_options(
            bucket=env.str("AWS_STORAGE_BUCKET_NAME"),
            endpoint_url=env.str("AWS_S3_ENDPOINT_URL", default=None),
            region=env.str("AWS_S3_REGION_NAME", default=None),
            access_key=env.str("AWS_ACCESS_KEY_ID", default=None),
            secret_key=env.str("AWS_SECRET_ACCESS_KEY", default=None),
            part_size=env.int("MEDIASITE_S3_PART_SIZE", default=8 << 20),
            concurrency=env.int("MEDIASITE_S3_CONCURRENCY", default=4),
        ),
    }
