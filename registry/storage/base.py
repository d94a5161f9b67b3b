"""The artifact store interface, and the one reader that hashes, counts and limits an upload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from registry.errors import BadRequest, Invalid, PayloadTooLarge

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int


class DigestMismatch(BadRequest):
    title = "Checksum mismatch"


class UploadAborted(Exception):
    """The client went away before the body was complete."""


def check_key(key: str) -> str:
    """Refuse keys that could leave the store's root: absolute, ``..``, backslashes, empty parts."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"invalid object key {key!r}")
    return key


class HashingReader:
    """A file-like ``read()`` over an iterator of byte chunks.

    It computes the SHA-256 and the size on the way, refuses to pass more than ``max_bytes``,
    and checks ``expected_sha256`` *before* it hands out the last bytes. A store therefore never
    completes an object whose digest or size is wrong: the error surfaces inside the store's own
    read loop, which aborts the write.
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
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending = bytearray()
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

    def _pull(self) -> bool:
        """Move one chunk from the source into the buffer. False at the end of the source."""
        chunk = next(self._chunks, None)
        if chunk is None:
            self._finish()
            return False
        if not chunk:
            return True
        self._size += len(chunk)
        if self._size > self._max:
            raise PayloadTooLarge(
                f"artifact exceeds the limit of {self._max} bytes", limit=self._max
            )
        self._hash.update(chunk)
        self._pending += chunk
        return True

    def _finish(self) -> None:
        self._eof = True
        self._digest = self._hash.hexdigest()
        if self._expected is not None and self._digest != self._expected:
            raise DigestMismatch(
                f"X-Checksum-Sha256 was {self._expected} but the body hashes to {self._digest}",
                expected=self._expected,
                actual=self._digest,
            )

    def read(self, size: int = -1) -> bytes:
        """Return ``size`` bytes (fewer only at the end). ``-1`` reads everything."""
        want = size if size >= 0 else None
        while not self._eof and (want is None or len(self._pending) < want):
            self._pull()
        if want is None or want >= len(self._pending):
            out = bytes(self._pending)
            self._pending.clear()
            return out
        out = bytes(self._pending[:want])
        del self._pending[:want]
        return out

    def drain(self) -> None:
        """Read to the end without keeping anything (a store that writes elsewhere uses this)."""
        while self.read(CHUNK):
            pass


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

    def check(self) -> None:
        """Raise ``Unavailable`` if the store cannot serve requests now."""
        ...

    def describe(self) -> str: ...


def artifact_key(model_id: object, version_id: object, filename: str) -> str:
    return check_key(f"models/{model_id}/versions/{version_id}/{filename}")
