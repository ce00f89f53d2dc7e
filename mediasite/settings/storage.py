"""Named storage backends. `fs` always exists; `s3` only when its bucket is configured."""
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

if env.str("AWS_STORAGE_BUCKET_NAME", default=""):
    STORAGES["s3"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
            "region_name": env.str("AWS_S3_REGION_NAME", default=None),
            "access_key": env.str("AWS_ACCESS_KEY_ID", default=None),
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default=None),
            "signature_version": "s3v4",
            "file_overwrite": True,  # keys are content-addressed: same key, same bytes
            "default_acl": None,
            "querystring_auth": True,
        },
    }
