"""The default artifact store: a directory on the local filesystem."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from registry.errors import Invalid, NotFound
from registry.storage.base import (
    CHUNK,
    PROBE_EVERY_SECONDS,
    HashingReader,
    ObjectInfo,
    PartialUpload,
    StoredObject,
    StoreUnavailable,
    WriteProbe,
    check_key,
)

TMP_DIR = ".tmp"
TMP_PREFIX = "upload-"
TMP_SUFFIX = ".part"
PROBE_PREFIX = "probe-"
#: Write-back of an upload's file starts every this many bytes, while the upload goes on.
WRITE_BEHIND = 32 * 1024 * 1024


class _WriteBehind:
    """Writes a file's dirty pages back while more is being written, then drops them.

    Every ``WRITE_BEHIND`` bytes a thread of its own runs ``fdatasync`` (one at a time; the
    writer never waits for it) and then evicts what is now on disk from the page cache. So
    the disk works while the body is still arriving and hashing, instead of all at once in the
    final ``fsync``; and an upload of any size holds a few dozen MiB of page cache, which it
    recycles, rather than growing the cache by its whole size (on some VMs a page the guest
    has not used lately costs far more to fill than to copy: see bench/README.md).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started = 0
        self._pool: ThreadPoolExecutor | None = None
        self._running: Future[None] | None = None

    def wrote(self, offset: int) -> None:
        if offset - self.started < WRITE_BEHIND:
            return
        if self._running is not None:
            if not self._running.done():
                return  # the disk is behind: the next chunk asks again
            self._running.result()  # an I/O error surfaces here
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self._running = self._pool.submit(self._sync, offset)
        self.started = offset

    def _sync(self, upto: int) -> None:
        os.fdatasync(self.fd)
        os.posix_fadvise(self.fd, 0, upto, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        """Wait for the write-back in flight; raise its error."""
        if self._pool is None:
            return
        try:
            if self._running is not None:
                self._running.result()
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None


def _write_all(fd: int, data: bytes) -> int:
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])
    return done


class LocalStore:
    """Objects are files under ``root``. Writes go to ``root/.tmp`` first and are renamed into
    place, so a reader never sees a partial file at its final key."""

    def __init__(self, root: Path, *, probe_every: float = PROBE_EVERY_SECONDS) -> None:
        self.root = root.resolve()
        self._probe = WriteProbe(self._write_probe, every=probe_every)

    def _path(self, key: str) -> Path:
        if check_key(key).split("/", 1)[0] == TMP_DIR:
            raise Invalid(f"invalid object key {key!r}: {TMP_DIR}/ holds unfinished uploads")
        return self.root / key

    def put(self, key: str, reader: HashingReader) -> StoredObject:
        final = self._path(key)
        tmp_name: str | None = None
        try:
            tmp_dir = self.root / TMP_DIR
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
            with os.fdopen(fd, "wb", buffering=0) as out:
                behind = _WriteBehind(fd)
                try:
                    written = 0
                    for chunk in reader.chunks():  # checked at the end, before the rename
                        written += _write_all(fd, chunk)
                        behind.wrote(written)
                finally:
                    behind.close()
                os.fsync(out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        except BaseException as exc:
            if tmp_name is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
            if isinstance(exc, OSError):  # disk full, permissions, a directory in the way...
                raise StoreUnavailable(
                    f"could not write artifact {key!r} under {self.root}: {exc}"
                ) from exc
            raise
        return StoredObject(key=key, sha256=reader.sha256, size=reader.size)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"artifact object {key!r} is missing from the store")
        return path.stat().st_size

    def open_range(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"artifact object {key!r} is missing from the store")
        # The file is opened on the first read, so an iterator that is never read (a client
        # gone before the response began) leaves no open file behind.
        return self._iter(key, path, start, length)

    @staticmethod
    def _iter(key: str, path: Path, start: int, length: int | None) -> Iterator[bytes]:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"artifact object {key!r} is missing from the store") from None
        with handle:
            handle.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Remove the now-empty version and model folders, never the root.
        for parent in path.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:  # never an object: TMP_DIR keys are refused
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
                filenames = [f for f in filenames if f != TMP_DIR]
            for name in filenames:
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in self.list_keys(prefix):
            try:
                stat = (self.root / key).stat()
            except FileNotFoundError:  # removed since the walk saw it
                continue
            yield ObjectInfo(
                key=key,
                size=stat.st_size,
                last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
            )

    def list_partial(self, prefix: str = "") -> Iterator[PartialUpload]:
        """The files of uploads whose writer died (a process killed mid-upload).

        A file being written is listed too: its modification time is that of its last write.
        The key an upload was meant for is not known here, so ``prefix`` is not used.
        """
        tmp_dir = self.root / TMP_DIR
        if not tmp_dir.is_dir():
            return
        for path in tmp_dir.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:  # finished or removed since the listing
                continue
            yield PartialUpload(
                handle=path.name, key=None, last_modified=datetime.fromtimestamp(modified, UTC)
            )

    def discard_partial(self, partial: PartialUpload) -> None:
        name = partial.handle
        if "/" in name or not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)):
            raise Invalid(f"{name!r} is not an unfinished upload")
        with contextlib.suppress(FileNotFoundError):
            (self.root / TMP_DIR / name).unlink()

    def check(self) -> None:
        """The root is a directory, and (probed at most every few seconds) a small file can be
        written, synced and removed under ``root/.tmp``: a full disk or a read-only mount makes
        the store unavailable before an upload finds out."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            detail = f"artifact directory {self.root} is not writable: {exc}"
            raise StoreUnavailable(detail) from exc
        self._probe.check()

    def _write_probe(self) -> None:
        tmp_dir = self.root / TMP_DIR
        try:
            tmp_dir.mkdir(exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix=PROBE_PREFIX) as probe:
                probe.write(b"modelreg write probe\n" * 64)  # a block's worth, not a bare inode
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            detail = f"artifact directory {self.root} is not writable: {exc}"
            raise StoreUnavailable(detail) from exc

    def describe(self) -> str:
        return f"local:{self.root}"
