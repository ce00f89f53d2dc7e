"""The one place where backend failures become Mediasite errors.

Whatever the backend (a local disk, botocore, s3transfer, urllib3), a failure reaches the
client as one of three errors: STORAGE_FULL (507, the operator must act), MEDIA_UNREADABLE (the
row's bytes are gone) or STORAGE_UNAVAILABLE (503, retry later). Backends wrap their work in
`with guard():` and never translate anything themselves.
"""
import errno

from .. import errors


def translate_os_error(exc: OSError) -> errors.MediasiteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return errors.StorageFull()
    return errors.StorageUnavailable()


def is_not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status == 404 or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
    return isinstance(exc, FileNotFoundError)


def translate(exc: Exception) -> errors.MediasiteError:
    if is_not_found(exc):
        return errors.BlobMissing()
    if isinstance(exc, OSError) and exc.errno is not None:
        return translate_os_error(exc)
    # Everything else from botocore, s3transfer or urllib3 (refused or reset connections,
    # timeouts, 5xx and throttling answers, a failed multipart upload) means "try again later".
    return errors.StorageUnavailable()


def _backend_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError as Urllib3Error

    return (OSError, BotoCoreError, ClientError, Boto3Error, Urllib3Error)


class guard:
    """`with guard():` turns backend failures into Mediasite errors (and lets those through)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, errors.MediasiteError):
            return False
        if isinstance(exc, _backend_errors()):
            raise translate(exc) from exc
        return False
