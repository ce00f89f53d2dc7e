"""Named storage backends and the content-addressed layout of blobs.

Backends are Django `STORAGES` aliases resolved at call time (never a module-level instance),
so tests and operators can switch them. Keys are derived from the content hash: the same bytes
always land at the same key, which is what makes a lost upload race harmless.

Two kinds of backend are supported: Django's FileSystemStorage (zero-copy sendfile, atomic
renames) and django-storages' S3Storage (MinIO, Ceph, R2 through `endpoint_url`). Everything
the rest of the code needs from a backend goes through the functions here, so the S3 branches
can stream (multipart uploads from the temp file, ranged GetObject for downloads) instead of
using the whole-object buffering of `S3File`, and so every backend failure reaches the client
as one of two errors: STORAGE_UNAVAILABLE (503, retry) or STORAGE_FULL (507).
"""
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import hmac
import os
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from django.core.files.storage import FileSystemStorage, storages

from . import errors
from .conf import media_settings

# Read size for hashing and copying between backends: large enough to keep S3 requests few,
# small enough that memory stays flat whatever the blob size.
COPY_CHUNK_BYTES = 1 << 20


StorageFull = errors.StorageFull


class BlobMissing(errors.MediasiteError):
    """The row exists but its bytes do not: a server-side fault, not the client's."""

    code, status, errcode, message = "MEDIA_UNREADABLE", 500, "M_UNKNOWN", "The stored media could not be read"


def blob_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def sha256_of_key(key: str) -> str | None:
    """The hash a content-addressed key was made from, or None for anything else (debris)."""
    parts = key.split("/")
    if len(parts) == 3 and len(parts[2]) == 64 and blob_key(parts[2]) == key:
        try:
            int(parts[2], 16)
        except ValueError:
            return None
        return parts[2]
    return None


def backend_for_new_blobs(*, thumbnail: bool = False) -> str:
    return media_settings.THUMBNAIL_STORAGE if thumbnail else media_settings.STORAGE


def is_local(alias: str) -> bool:
    return isinstance(storages[alias], FileSystemStorage)


# --- temp files ---------------------------------------------------------------------------
# A temp file is named after the process that owns it and stays flock()ed by that process until
# it is discarded; the kernel drops the lock when the process dies, however it dies. So a sweep
# can remove the temp files of dead processes at once (a worker killed mid-upload must not
# leave its bytes until the collector's grace period ends) without touching uploads in flight.

TEMP_PREFIX = "upload-"
# A file this young may not be locked yet by its (live) creator.
TEMP_LOCK_SETTLE_SECONDS = 60


def temp_dir() -> Path:
    path = Path(media_settings.DATA_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) >= 3 and parts[0] + "-" == TEMP_PREFIX and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too waits as a zombie until an init reaps it, which a
    # container's first process may never do: it holds no lock and writes nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def temp_files_sweep() -> int:
    """Remove the temp files no live process holds; returns how many. Safe at any time, from
    any process: a file still locked is in use, and a young one whose owner lives may be
    about to be locked."""
    removed = 0
    now = time.time()
    for path in temp_dir().iterdir():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, IsADirectoryError, OSError):
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # held by a live process
            owner = _owner_pid(path.name)
            young = now - os.fstat(fd).st_mtime < TEMP_LOCK_SETTLE_SECONDS
            if young and (owner is None or _pid_alive(owner)):
                continue
            _unlink_quietly(str(path))
            removed += 1
        finally:
            os.close(fd)
    return removed


def _load_sync_file_range():
    """Linux's sync_file_range(2), which Python's os module lacks; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
# Start writing a big upload to disk every this many bytes, so the fsync before its row is
# committed waits for the last stretch only (measured: a 200 MB upload's final fsync took
# 0.23 s, a quarter of the upload, when all of it was left to the end).
WRITEBACK_EVERY_BYTES = 16 << 20


class _TempFile:
    """An unbuffered temp file whose write() writes everything or raises a Mediasite error.

    Unbuffered so that a full disk surfaces at write() (where the caller's cleanup runs)
    rather than at close(); looping because a write on a nearly full disk can be short, and a
    short write that went unnoticed would store bytes that do not match their hash.
    """

    _fh = _lock_fd = None  # until __init__ has set them (so __del__ and __getattr__ are safe)

    def __init__(self):
        try:
            self._fh = tempfile.NamedTemporaryFile(
                dir=temp_dir(), prefix=f"{TEMP_PREFIX}{os.getpid()}-", delete=False, buffering=0
            )
        except OSError as exc:
            raise translate_os_error(exc) from exc
        self.name = self._fh.name
        # A descriptor of its own, so the lock outlives close() until discard().
        try:
            self._lock_fd = os.open(self.name, os.O_RDONLY)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.discard()
            raise translate_os_error(exc) from exc
        self._written = 0
        self._flushed_to = 0

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                written = self._fh.write(view)
                view = view[written:]
        except OSError as exc:
            raise translate_os_error(exc) from exc
        self._written += len(data)
        if _sync_file_range and self._written - self._flushed_to >= WRITEBACK_EVERY_BYTES:
            # Asynchronous: queues the dirty pages for writing and returns at once.
            _sync_file_range(self._fh.fileno(), self._flushed_to, self._written - self._flushed_to,
                             _SYNC_FILE_RANGE_WRITE)
            self._flushed_to = self._written
        return len(data)

    def flush(self) -> None:
        pass  # unbuffered: nothing held back

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        """Close for writing; the file stays locked (in use) until discard()."""
        self._fh.close()

    def discard(self) -> None:
        """Remove the file (if it is still here) and drop the lock."""
        self._fh.close()
        _unlink_quietly(self.name)
        self.release()

    def release(self) -> None:
        """Drop the lock only: for a file that was renamed into place."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        self.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def new_temp_file() -> _TempFile:
    """A temp file in the data dir: on the same filesystem as local media, so a rename is atomic."""
    return _TempFile()


# --- error translation -----------------------------------------------------------------------

def translate_os_error(exc: OSError) -> errors.MediasiteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageFull()
    return errors.StorageUnavailable()


def _is_not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status == 404 or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
    return isinstance(exc, FileNotFoundError)


def _translate(exc: Exception) -> Exception:
    """Map any backend failure to the error model; None-safe for unknown exceptions."""
    if _is_not_found(exc):
        return BlobMissing()
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


class _guard:
    """`with _guard():` turns backend failures into Mediasite errors (and lets those through)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, errors.MediasiteError):
            return False
        if isinstance(exc, _backend_errors()):
            raise _translate(exc) from exc
        return False


# --- writing ---------------------------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _s3_name(backend, key: str) -> str:
    """The object name of `key`, honouring the backend's `location` prefix like django-storages."""
    location = (backend.location or "").strip("/")
    return f"{location}/{key}" if location else key


def put_file(alias: str, key: str, src_path: str, *, keep_source: bool = False) -> None:
    """Store the (already fsync'd) file at `src_path` under `key`, durably.

    The source is consumed (renamed into place or deleted) unless `keep_source`, which callers
    use when they may have to store the same bytes again (a garbage-collection race).
    """
    backend = storages[alias]
    with _guard():
        if isinstance(backend, FileSystemStorage):
            _put_local(backend, key, src_path, keep_source=keep_source)
            return
        # upload_file reads the file part by part (bounded by the backend's TransferConfig)
        # instead of handing s3transfer a file object, which it would buffer in memory.
        backend.bucket.Object(_s3_name(backend, key)).upload_file(
            src_path,
            ExtraArgs={"ContentType": "application/octet-stream"},
            Config=backend.transfer_config,
        )
        if not keep_source:
            os.unlink(src_path)


def _put_local(backend: FileSystemStorage, key: str, src_path: str, *, keep_source: bool) -> None:
    dest = backend.path(key)
    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    if backend.file_permissions_mode is not None:
        os.chmod(src_path, backend.file_permissions_mode)
    part = f"{dest}.{os.getpid()}.{os.urandom(4).hex()}.part"
    try:
        if keep_source:
            os.link(src_path, part)  # the same inode under a second name: no copy
            os.replace(part, dest)
        else:
            # Atomic: readers see no file or the whole file. Same content at the same key, so
            # replacing the file of a racing upload of the same bytes changes nothing.
            os.replace(src_path, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            _unlink_quietly(part)  # linked but not renamed into place (a full directory)
            raise
        # Another filesystem (or no hard links): copy beside the target, then rename.
        try:
            with open(src_path, "rb") as src, open(part, "wb") as out:
                while chunk := src.read(COPY_CHUNK_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, dest)
        except BaseException:
            _unlink_quietly(part)
            raise
        if not keep_source:
            os.unlink(src_path)
    _fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def copy_to(alias: str, key: str, *, from_alias: str) -> None:
    """Copy the blob at `key` from one backend to another, bounded in memory.

    A local source is uploaded straight from its path; anything else is first spooled to a temp
    file on disk, so the destination write is the same durable put as an upload's.
    """
    source_path = local_path(from_alias, key)
    if source_path is not None:
        if not os.path.exists(source_path):
            raise BlobMissing()
        put_file(alias, key, source_path, keep_source=True)
        return
    tmp = new_temp_file()
    try:
        for chunk in iter_chunks(from_alias, key):
            tmp.write(chunk)
        os.fsync(tmp.fileno())
        tmp.close()
        put_file(alias, key, tmp.name)
    finally:
        tmp.discard()


# --- reading ---------------------------------------------------------------------------------

class _Window:
    """A read-limited view of an open file: the test client and non-sendfile servers read
    exactly the range; gunicorn's sendfile uses fileno() from the current offset and the
    Content-Length."""

    def __init__(self, fh, start: int, length: int):
        if start:
            fh.seek(start)
        self._fh, self._left = fh, length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._fh.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()

    def __getattr__(self, name):
        if name == "fileno":  # present only when the backend gives a real file
            return self._fh.fileno
        raise AttributeError(name)


class _RemoteStream:
    """The body of one (ranged) GetObject, read as it arrives: nothing is buffered beyond the
    read in progress. A connection lost mid-body surfaces as STORAGE_UNAVAILABLE."""

    def __init__(self, body):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        with _guard():
            return self._body.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._body.close()


class _Empty:
    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _get_object(backend, key: str, start: int | None = None, length: int | None = None):
    params = {"Bucket": backend.bucket_name, "Key": _s3_name(backend, key)}
    if start is not None:
        params["Range"] = f"bytes={start}-{start + length - 1}"
    return backend.connection.meta.client.get_object(**params)["Body"]


def open_range(alias: str, key: str, start: int, length: int):
    """A readable stream of `length` bytes from `start` of the stored file."""
    backend = storages[alias]
    with _guard():
        if isinstance(backend, FileSystemStorage):
            return _Window(backend.open(key, "rb"), start, length)
        if length <= 0:
            return _Empty()
        return _RemoteStream(_get_object(backend, key, start, length))


def iter_chunks(alias: str, key: str, chunk_size: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
    """The whole stored file, streamed in chunks (hashing, copying between backends)."""
    backend = storages[alias]
    with _guard():
        fh = backend.open(key, "rb") if isinstance(backend, FileSystemStorage) else _RemoteStream(_get_object(backend, key))
    try:
        while True:
            with _guard():
                chunk = fh.read(chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        fh.close()


def hash_stored(alias: str, key: str) -> tuple[str, int]:
    """(sha256, size) of the bytes stored under `key`, read back from the backend."""
    digest, size = hashlib.sha256(), 0
    for chunk in iter_chunks(alias, key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def open_file(alias: str, key: str):
    """The whole stored file, seekable, for reading from the start (thumbnailing).

    Remote bytes are spooled to an anonymous temp file on disk (deleted when closed): seekable
    for image decoders without holding the object in memory.
    """
    backend = storages[alias]
    if isinstance(backend, FileSystemStorage):
        with _guard():
            return backend.open(key, "rb")
    with _guard():
        spool = tempfile.TemporaryFile(dir=temp_dir(), prefix="read-")
    try:
        for chunk in iter_chunks(alias, key):
            with _guard():
                spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def local_path(alias: str, key: str) -> str | None:
    backend = storages[alias]
    return backend.path(key) if isinstance(backend, FileSystemStorage) else None


def exists(alias: str, key: str) -> bool:
    backend = storages[alias]
    with _guard():
        if isinstance(backend, FileSystemStorage):
            return os.path.exists(backend.path(key))
        try:
            backend.connection.meta.client.head_object(Bucket=backend.bucket_name, Key=_s3_name(backend, key))
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True


def delete_file(alias: str, key: str) -> None:
    """Remove a stored file; one that is already gone is not an error."""
    backend = storages[alias]
    with _guard():
        if isinstance(backend, FileSystemStorage):
            _unlink_quietly(backend.path(key))
        else:
            backend.connection.meta.client.delete_object(Bucket=backend.bucket_name, Key=_s3_name(backend, key))


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    modified: datetime


def list_files(alias: str) -> Iterator[StoredFile]:
    """Every file the backend holds (for the garbage collector's orphan sweep)."""
    backend = storages[alias]
    if isinstance(backend, FileSystemStorage):
        root = Path(backend.location)
        with _guard():
            for directory, _dirs, files in os.walk(root):
                for name in files:
                    path = Path(directory) / name
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue  # removed while we walked
                    yield StoredFile(
                        key=path.relative_to(root).as_posix(),
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
                    )
        return
    prefix = (backend.location or "").strip("/")
    prefix = f"{prefix}/" if prefix else ""
    paginator = backend.connection.meta.client.get_paginator("list_objects_v2")
    with _guard():
        for page in paginator.paginate(Bucket=backend.bucket_name, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield StoredFile(key=entry["Key"][len(prefix):], size=entry["Size"], modified=entry["LastModified"])


# --- redirects -------------------------------------------------------------------------------

def can_presign(alias: str) -> bool:
    return not is_local(alias)


_credentials_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _credentials(backend):
    """The backend's credentials, resolved the way boto3 resolves them for it (keys given to
    the backend, else profile, environment, instance role), cached per backend instance."""
    creds = _credentials_cache.get(backend)
    if creds is None:
        import boto3

        session = boto3.Session(
            aws_access_key_id=backend.access_key, aws_secret_access_key=backend.secret_key,
            aws_session_token=backend.security_token, profile_name=backend.session_profile or None,
        )
        creds = session.get_credentials()
        if creds is None:
            raise errors.StorageUnavailable("No credentials for the storage backend")
        _credentials_cache[backend] = creds
    return creds.get_frozen_credentials()


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def presigned_url(alias: str, key: str, *, signed_at: datetime, expires_seconds: int,
                  response_headers: dict[str, str]) -> str:
    """A SigV4 query-signed GET URL whose every byte is determined by its arguments.

    botocore's presigner always signs at "now", so two requests a second apart get different
    URLs and a browser cache keyed on the URL never hits. Signing at a caller-chosen time (the
    start of a time bucket) gives every request within the bucket the same URL. The endpoint
    and addressing style (path or virtual host) are taken from botocore's own URL for the
    object, so only the signature is computed here (AWS Signature Version 4, query form).
    """
    backend = storages[alias]
    client = backend.connection.meta.client
    unsigned = urlsplit(client.generate_presigned_url(
        "get_object", Params={"Bucket": backend.bucket_name, "Key": _s3_name(backend, key)}, ExpiresIn=1,
    ))
    creds = _credentials(backend)
    region = client.meta.region_name or "us-east-1"
    amz_date = signed_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{creds.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
        **response_headers,
    }
    if creds.token:
        params["X-Amz-Security-Token"] = creds.token
    query = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(params.items()))
    canonical_request = "\n".join(
        ["GET", unsigned.path, query, f"host:{unsigned.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signing_key = _sign(_sign(_sign(_sign(f"AWS4{creds.secret_key}".encode(), amz_date[:8]), region), "s3"), "aws4_request")
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return urlunsplit((unsigned.scheme, unsigned.netloc, unsigned.path, f"{query}&X-Amz-Signature={signature}", ""))


# SigV4 presigned URLs are valid for at most seven days.
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def download_redirect(alias: str, key: str, *, media_type: str, disposition: str,
                      now: float | None = None) -> tuple[str, int]:
    """(presigned URL, seconds it may be cached) for a 307 download redirect.

    Every request within one REDIRECT_URL_BUCKET_SECONDS bucket gets the same URL (signed at
    the bucket's start), so browsers and proxies that cache by URL keep hitting; each URL stays
    valid REDIRECT_URL_MIN_VALIDITY_SECONDS past its bucket's end, so a redirect cached until
    then still works. The backend is told the type and disposition to answer with, since the
    client will never see ours.
    """
    bucket = max(1, media_settings.REDIRECT_URL_BUCKET_SECONDS)
    now = time.time() if now is None else now
    bucket_start = int(now) - int(now) % bucket
    expires = min(bucket + media_settings.REDIRECT_URL_MIN_VALIDITY_SECONDS, _MAX_PRESIGN_SECONDS)
    url = presigned_url(
        alias, key,
        signed_at=datetime.fromtimestamp(bucket_start, tz=timezone.utc),
        expires_seconds=expires,
        response_headers={"response-content-type": media_type, "response-content-disposition": disposition},
    )
    return url, max(0, bucket_start + bucket - int(now))
