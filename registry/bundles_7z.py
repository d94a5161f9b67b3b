"""7z archives, through ``py7zr``: listed, checked and read for the scanner.

A 7z is no bundle (``registry.bundles.archive_kind`` does not name it, so the model server
never unpacks one), but a model hidden in one is still scanned: ``registry.bundles`` lists
and reads one with :func:`list_7z` and :func:`stream_7z_members`, and its listing is checked
as a bundle's is (``registry.bundle_checks``). Its members are extracted privately, one
archive at a time, each bounded by its declared size; an encrypted 7z is a problem of its own
(``archive.encrypted``), never a crash. ``py7zr`` is imported only when a 7z is read.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from registry.bundle_checks import BundleLimits, BundleProblem, Listing, Member, MemberKind

if TYPE_CHECKING:
    from py7zr import SevenZipFile
    from py7zr.io import Py7zIO
    from py7zr.py7zr import ArchiveFile

__all__ = [
    "SEVEN_ZIP_MAGIC",
    "BadArchive",
    "EncryptedArchive",
    "list_7z",
    "stream_7z_members",
]

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"


class BadArchive(ValueError):
    """py7zr refused a 7z archive (its own exceptions are not ``registry.bundles.READ_ERRORS``)."""


class EncryptedArchive(BadArchive):
    """A 7z archive whose headers are encrypted: nothing in it can be listed."""


def _open_7z(fh: IO[bytes], *, max_extract: int) -> SevenZipFile:
    import py7zr

    try:
        # a file object, not a path: py7zr then reads one folder at a time, in this thread
        return py7zr.SevenZipFile(fh, mode="r", max_extract_size=max_extract)
    except py7zr.PasswordRequired as exc:
        raise EncryptedArchive("the 7z headers are encrypted: nothing can be listed") from exc
    except Exception as exc:
        # py7zr's header decoding runs its codecs (lzma, bz2, zlib, ppmd, bcj, zstd, brotli,
        # AES), and each raises errors of its own: any of them means an unreadable header
        raise BadArchive(f"unreadable 7z: {type(exc).__name__}: {exc}") from exc


def _7z_kind(info: ArchiveFile) -> MemberKind:
    if info.is_directory:
        return "dir"
    if info.is_symlink or info.is_junction:
        return "symlink"
    if info.is_socket or not info.is_file:
        return "device"
    return "file"


def list_7z(path: Path, *, limits: BundleLimits) -> Listing:
    """The members a 7z declares, listed by ``py7zr`` from its headers
    (:class:`EncryptedArchive` when they are encrypted, :class:`BadArchive` when unreadable)."""
    with path.open("rb") as fh, _open_7z(fh, max_extract=limits.max_declared_bytes) as archive:
        members = [
            # a 7z compresses members together (solid folders): the ratio is the archive's
            Member(f.filename, _7z_kind(f), int(f.uncompressed or 0), None, None)
            for f in archive.files
        ]
        encrypted = bool(archive.needs_password())
    truncated = len(members) > limits.max_members
    return Listing("7z", members, compressed=True, truncated=truncated, encrypted=encrypted)


def stream_7z_members(
    path: Path, listing: Listing, *, location: str, problems: list[BundleProblem]
) -> Iterator[tuple[Member, IO[bytes]]]:
    """A 7z's regular files: py7zr extracts them all, each into a private file bounded by
    its declared size (py7zr decompresses a solid folder once, in order), then each is given
    and deleted. Names py7zr refuses to extract are skipped (their problem is the name's)."""
    scratch = Path(tempfile.mkdtemp(prefix="modelreg-7z-"))
    try:
        os.chmod(scratch, 0o700)
        products = _extract_7z(path, listing, scratch=scratch, location=location, problems=problems)
        for member, file in products:
            try:
                with file.open("rb") as stream:
                    yield member, stream
            finally:
                file.unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract_7z(
    path: Path, listing: Listing, *, scratch: Path, location: str, problems: list[BundleProblem]
) -> list[tuple[Member, Path]]:
    import py7zr
    from py7zr.helpers import get_sanitized_output_path

    out = scratch / "members"
    out.mkdir(mode=0o700)

    def outname(name: str) -> str | None:
        try:
            return get_sanitized_output_path(name, out).relative_to(out).as_posix()
        except (py7zr.exceptions.ArchiveError, ValueError):
            return None  # a name py7zr refuses would stop the whole extraction

    targets = {m.name for m in listing.members if m.kind == "file" and outname(m.name)}
    by_outname: dict[str, list[Member]] = {}
    seen: dict[str, int] = {}
    for m in listing.members:
        if m.name not in targets:
            continue
        # py7zr's naming of what it extracts: the first of a name keeps it, later ones get
        # ``_0``, ``_1``, ...
        name = m.name if m.name not in seen else f"{m.name}_{seen[m.name]}"
        seen[m.name] = seen[m.name] + 1 if m.name in seen else 0
        target = outname(name)
        if target is not None and m.kind == "file":
            by_outname.setdefault(target, []).append(m)
    factory = _BoundedFiles(
        scratch, out=out, limits={n: ms[0].size for n, ms in by_outname.items()}
    )
    try:
        if targets:
            total = sum(m.size for m in listing.members)
            with path.open("rb") as fh, _open_7z(fh, max_extract=total) as archive:
                archive.extract(out, targets=sorted(targets), factory=factory)
    except py7zr.PasswordRequired:
        if not listing.encrypted:
            problems.append(
                BundleProblem(
                    "HIGH",
                    "archive.encrypted",
                    "the content is encrypted: it cannot be scanned without the password",
                    location,
                )
            )
    except py7zr.exceptions.DecompressionBombError as exc:
        problems.append(BundleProblem("HIGH", "limit.declared_bytes", str(exc), location))
    except Exception as exc:  # each of py7zr's codecs raises errors of its own (see _open_7z)
        last = factory.products[-1][0] if factory.products else None
        after = f" at {last!r}" if last else ""
        problems.append(
            BundleProblem(
                "HIGH",
                "archive.corrupt",
                f"unreadable 7z content{after} ({type(exc).__name__}: {exc}); "
                "later members were not read",
                location,
            )
        )
    finally:
        factory.close()
    members: list[tuple[Member, Path]] = []
    for relative, file in factory.products:
        queue = by_outname.get(relative)
        member = queue.pop(0) if queue else Member(relative, "file", 0)
        size = file.stat().st_size
        if member.size and not size:
            continue  # never written: the extraction stopped before it (a problem says why)
        members.append((Member(member.name, "file", size, None), file))
    return members


class _BoundedFiles:
    """py7zr's writer factory (py7zr calls its ``create`` only): each member into a private
    numbered file, never beyond its declared size (py7zr stops there too; this holds whatever
    py7zr does)."""

    def __init__(self, scratch: Path, *, out: Path, limits: dict[str, int]) -> None:
        self._scratch = scratch
        self._out = out
        self._limits = limits
        self._writers: list[Py7zIO] = []
        #: (the name py7zr extracted, relative to the destination; the private file)
        self.products: list[tuple[str, Path]] = []

    def create(self, filename: str) -> Py7zIO:
        given = Path(filename)
        relative = (
            given.relative_to(self._out).as_posix() if given.is_relative_to(self._out) else filename
        )
        file = self._scratch / f"m{len(self.products)}"
        self.products.append((relative, file))
        writer = _bounded_writer()(file, self._limits.get(relative, 0))
        self._writers.append(writer)
        return writer

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


@functools.cache
def _bounded_writer() -> Callable[[Path, int], Py7zIO]:
    """The writer class, made once py7zr is imported (it is imported only for a 7z)."""
    from py7zr.io import Py7zIO

    class Writer(Py7zIO):
        def __init__(self, file: Path, limit: int) -> None:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            self._out = os.fdopen(fd, "wb")
            self._limit = limit
            self._written = 0

        def write(self, s: bytes | bytearray) -> int:
            room = max(self._limit - self._written, 0)
            self._out.write(s[:room])
            self._written += min(len(s), room)
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return self._written

        def seekable(self) -> bool:
            return False

        def flush(self) -> None:
            self._out.flush()

        def size(self) -> int:
            return self._written

        def close(self) -> None:
            self._out.close()

    return Writer
