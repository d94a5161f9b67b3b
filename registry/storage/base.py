"""The artifact store interface, and the one reader that hashes, counts and limits an upload."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from registry.errors import BadRequest, Invalid, PayloadTooLarge, Unavailable

CHUNK = 1024 * 1024
#: The hashing thread is fed batches of about this many bytes, at most ``HASH_DEPTH`` waiting.
HASH_BATCH = 1024 * 1024
HASH_DEPTH = 8


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """A complete object as a listing sees it; ``last_modified`` is timezone-aware UTC."""

    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class PartialUpload:
    """An upload that was begun and neither completed nor cleaned up (its writer died): no
    reader sees it, but it takes space. ``key`` is the object it was meant to become, when the
    store knows; ``handle`` is what the store needs to remove it."""

    handle: str
    key: str | None
    last_modified: datetime


class DigestMismatch(BadRequest):
    title = "Checksum mismatch"


class UploadAborted(Exception):
    """The client went away before the body was complete."""


class StoreUnavailable(Unavailable):
    """The artifact store failed. ``detail`` names paths, keys, hosts and the library's error:
    it is for the server log; the API tells the client only that the store is unavailable."""


#: How often at most a store's readiness check writes (and deletes) its probe object.
PROBE_EVERY_SECONDS = 5.0


class WriteProbe:
    """Runs ``write`` (write and delete a small object) at most once every ``every`` seconds,
    and raises :class:`StoreUnavailable` while the last run failed: a readiness probe that
    reports a full disk or a read-only bucket without a write per probe request."""

    def __init__(
        self,
        write: Callable[[], None],
        *,
        every: float = PROBE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._failure: str | None = None

    def check(self) -> None:
        with self._lock:  # concurrent probes: one writes, the others wait for its answer
            now = self._clock()
            if now - self._last >= self.every:
                self._last = now
                try:
                    self._write()
                    self._failure = None
                except StoreUnavailable as exc:
                    self._failure = exc.detail
                except OSError as exc:
                    self._failure = f"write probe failed: {exc}"
            failure = self._failure
        if failure is not None:
            raise StoreUnavailable(failure)


def check_key(key: str) -> str:
    """Refuse keys that could leave the store's root: absolute, ``..``, backslashes, empty parts."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"invalid object key {key!r}")
    return key


def _hash_batches(
    digest: Any, batches: queue.Queue[list[bytes] | None], cancelled: threading.Event
) -> None:
    """The hashing thread: ``digest.update`` each batch until ``None`` (or a cancel) comes."""
    while (batch := batches.get()) is not None and not cancelled.is_set():
        for chunk in batch:
            digest.update(chunk)  # hashlib releases the GIL for buffers above 2 KiB


def _cancel(batches: queue.Queue[list[bytes] | None], cancelled: threading.Event) -> None:
    cancelled.set()
    with contextlib.suppress(queue.Full):  # full: the thread sees the cancel after its batch
        batches.put_nowait(None)


class _Sha256:
    """SHA-256 computed on a thread of its own, so that hashing overlaps with the writing.

    ``update`` hands chunks to the thread in batches of about ``HASH_BATCH`` bytes through a
    queue of at most ``HASH_DEPTH`` batches: a writer faster than the hash waits for it, so
    memory stays bounded. A body smaller than one batch never starts the thread.
    ``hexdigest`` waits for the thread to hash everything. ``close`` (also run when the object
    is collected) stops a thread whose body will never end.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._batches: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=HASH_DEPTH)
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._stop = weakref.finalize(self, _cancel, self._batches, self._cancelled)

    def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= HASH_BATCH:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_hash_batches,
                    args=(self._digest, self._batches, self._cancelled),
                    name="upload-sha256",
                    daemon=True,
                )
                self._thread.start()
            self._batches.put(self._batch)
            self._batch = []
            self._batched = 0

    def hexdigest(self) -> str:
        if self._cancelled.is_set():
            raise RuntimeError("the hash was closed before the end of the body")
        if self._thread is not None:
            self._stop.detach()
            self._batches.put(None)
            self._thread.join()
            self._thread = None
        for chunk in self._batch:
            self._digest.update(chunk)
        self._batch = []
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the thread, if any, and wait until it has stopped (a batch at most)."""
        self._stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class HashingReader:
    """A file-like ``read()``, and a zero-copy ``chunks()``, over an iterator of byte chunks.

    It computes the SHA-256 and the size on the way, refuses to pass more than ``max_bytes``,
    and checks ``expected_sha256`` *before* ``read`` hands out the last bytes. A store therefore
    never completes an object whose digest or size is wrong: the error surfaces inside the
    store's own read loop, which aborts the write.

    The hash runs on a thread of its own (:class:`_Sha256`) while the store writes what it was
    handed; the end of the body waits for it, so the check still comes before the end. A reader
    given up half-way should be closed (``with`` or ``close()``), which stops that thread.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        max_bytes: int,
        expected_sha256: str | None = None,
    ) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._max = max_bytes
        self._expected = expected_sha256.lower() if expected_sha256 else None
        self._hash = _Sha256()
        self._size = 0
        self._leftover = memoryview(b"")
        self._eof = False
        self._digest: str | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> str:
        if self._digest is None:
            raise RuntimeError("the stream has not been read to the end")
        return self._digest

    def _next(self) -> bytes:
        """The next chunk of the source, counted, limited and hashed; b"" at the end, once the
        digest was checked."""
        if self._eof:
            return b""
        try:
            for chunk in self._chunks:
                if not chunk:
                    continue
                if not isinstance(chunk, bytes):  # hashed later, on a thread: freeze it
                    chunk = bytes(chunk)
                self._size += len(chunk)
                if self._size > self._max:
                    raise PayloadTooLarge(
                        f"artifact exceeds the limit of {self._max} bytes", limit=self._max
                    )
                self._hash.update(chunk)
                return chunk
        except BaseException:
            self.close()
            raise
        self._finish()
        return b""

    def _finish(self) -> None:
        self._eof = True
        self._digest = self._hash.hexdigest()
        if self._expected is not None and self._digest != self._expected:
            raise DigestMismatch(
                f"X-Checksum-Sha256 was {self._expected} but the body hashes to {self._digest}",
                expected=self._expected,
                actual=self._digest,
            )

    def close(self) -> None:
        """Stop hashing (the body will not be read to the end); the digest is then unknown."""
        self._hash.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def chunks(self) -> Iterator[bytes]:
        """The source's chunks as they arrive, without copying them.

        For stores that write to a private place first: the digest is checked after the last
        chunk, so the caller must not publish what it wrote until the iteration has ended.
        """
        if self._leftover:
            yield bytes(self._leftover)
            self._leftover = memoryview(b"")
        while chunk := self._next():
            yield chunk

    def read(self, size: int = -1) -> bytearray:
        """Return ``size`` bytes (fewer only at the end, after the digest check). ``-1`` reads
        everything. The bytes are copied once, into the buffer returned."""
        if size < 0:
            return bytearray(b"".join(self.chunks()))
        out = bytearray(size)
        filled = 0
        with memoryview(out) as view:
            while filled < size:
                if not self._leftover:
                    chunk = self._next()
                    if not chunk:
                        break
                    self._leftover = memoryview(chunk)
                take = min(len(self._leftover), size - filled)
                view[filled : filled + take] = self._leftover[:take]
                self._leftover = self._leftover[take:]
                filled += take
        if filled < size:
            del out[filled:]
        return out


class ArtifactStore(Protocol):
    """Where artifacts live. Keys look like ``models/{modelId}/versions/{versionId}/{filename}``."""

    def put(self, key: str, reader: HashingReader) -> StoredObject:
        """Stream ``reader`` to ``key``. The object appears at ``key`` only once complete; on any
        error nothing is left behind and the error propagates."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; ``NotFound`` if absent."""
        ...

    def open_range(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream ``length`` bytes (all, when None) from offset ``start``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object. Removing an absent object is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every complete object under ``prefix``."""
        ...

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every complete object under ``prefix``, with its size and last modification."""
        ...

    def list_partial(self, prefix: str = "") -> Iterator[PartialUpload]:
        """Every unfinished upload (of a key under ``prefix``, when the store knows the key).
        An upload still being written is listed too: the caller decides by ``last_modified``
        and by the key."""
        ...

    def discard_partial(self, partial: PartialUpload) -> None:
        """Remove an unfinished upload; one already gone is not an error."""
        ...

    def check(self) -> None:
        """Raise ``Unavailable`` if the store cannot serve requests now."""
        ...

    def describe(self) -> str: ...


def artifact_key(model_id: object, version_id: object, filename: str) -> str:
    return check_key(f"models/{model_id}/versions/{version_id}/{filename}")
