"""The interface every storage backend offers, and what all of them share.

A backend holds blobs under content-addressed keys (`media_app.storage.blob_key`). Callers ask
`media_app.storage.backend(alias)` for one and use only these methods; which class answers
(local files, S3) is decided once per configured alias, so no caller asks what kind of
backend it holds. Every failure leaves a backend as a Mediasite error (`failures.guard`).
"""
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from .failures import guard
from .tempfiles import spool_file

# Read size for hashing and copying between backends: large enough to keep S3 requests few,
# small enough that memory stays flat whatever the blob size.
COPY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    modified: datetime


class MediaBackend(ABC):
    """One configured storage alias (a Django `STORAGES` entry) seen through Mediasite's needs."""

    def __init__(self, alias: str, django_storage):
        self.alias = alias
        self.django_storage = django_storage

    # --- writing ---------------------------------------------------------------------------

    @abstractmethod
    def put(self, key: str, src_path: str, *, keep_source: bool = False) -> None:
        """Store the (already fsync'd) file at `src_path` under `key`, durably.

        The source is consumed (renamed into place or deleted) unless `keep_source`, which
        callers use when they may have to store the same bytes again (a garbage-collection race).
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a stored file; one that is already gone is not an error."""

    # --- reading ---------------------------------------------------------------------------

    @abstractmethod
    def open_range(self, key: str, start: int, length: int):
        """A readable stream of `length` bytes from `start` of the stored file."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
        """The whole stored file, streamed in chunks (hashing, copying between backends)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        ...

    @abstractmethod
    def list_files(self) -> Iterator[StoredFile]:
        """Every file the backend holds (for the garbage collector's orphan sweep)."""

    @abstractmethod
    def free_space(self) -> int | None:
        """Bytes that can still be stored, or None when the backend sets no known bound."""

    @abstractmethod
    def presign(self, key: str, *, signed_at: datetime, expires_seconds: int,
                response_headers: dict[str, str]) -> str | None:
        """A URL the client can fetch the bytes from directly, or None if this backend has
        none to offer (then the bytes are served by us)."""

    def local_path(self, key: str) -> str | None:
        """The path of the stored file on this machine, if it has one (a copy can start from it)."""
        return None

    def open(self, key: str):
        """The whole stored file, seekable, for reading from the start (thumbnailing).

        Spooled to an anonymous temp file on disk (deleted when closed): seekable for image
        decoders without holding the object in memory. Local backends return the file itself.
        """
        spool = spool_file()
        try:
            for chunk in self.iter_chunks(key):
                with guard():
                    spool.write(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool

    def hash(self, key: str) -> tuple[str, int]:
        """(sha256, size) of the bytes stored under `key`, read back from the backend."""
        digest, size = hashlib.sha256(), 0
        for chunk in self.iter_chunks(key):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size
