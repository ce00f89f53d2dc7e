"""The one place where backend failures become Mediasite errors.

Whatever the backend (a local disk, botocore, s3transfer, urllib3), a failure reaches the
client as one of three errors: STORAGE_FULL (507, the operator must act), MEDIA_UNREADABLE (the
row's bytes are gone) or STORAGE_UNAVAILABLE (503, retry later). Backends wrap their work in
`with guard():` and never translate anything themselves.
"""
import errno
import sys

from .. import errors


def translate_os_error(exc: OSError) -> errors.MediasiteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return errors.StorageFull()
    return errors.StorageUnavailable()


def _botocore_loaded() -> bool:
    # No botocore error can reach a process that never imported it (one storing on local disks
    # only): importing it to test for its errors would cost that process boto3 for nothing.
    return "botocore" in sys.modules


def is_not_found(exc: Exception) -> bool:
    if _botocore_loaded():
        from botocore.exceptions import ClientError
    else:
        ClientError = ()

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
    from urllib3.exceptions import HTTPError as Urllib3Error

    if not _botocore_loaded():
        return (OSError, Urllib3Error)
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

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
