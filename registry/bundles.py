"""Bundles (zip, tar, tar.gz): what their headers declare, whether that is safe, and unpacking.

Both sides of the promise unpack a bundle with this code: the security scanner
(``validators.security.archives``) and the functional check judge it, and the model server
(``deployers.model_server``) unpacks what it serves. So what validated is what serves.

7z archives (``py7zr``) are listed, checked and read with the same code, for the scanner: a
7z is no bundle (:func:`archive_kind` does not name it, so the model server never unpacks
one), but a model hidden in one is still scanned.

This module lists an archive from its headers (:func:`list_archive`), gives its members'
content (:func:`member_streams`) and unpacks a bundle. The listing's types and the header
checks (:func:`check_members`) are ``registry.bundle_checks``'s, the reading of a 7z is
``registry.bundles_7z``'s; both are re-exported here, so callers import every bundle name
from this module. :func:`safe_extract` refuses (:class:`UnsafeBundle`) an archive with any
serious problem, and any link or device member, before a byte is written; it writes files
with ``O_EXCL | O_NOFOLLOW``, never beyond their declared size, and directories with mode
0700.
"""

from __future__ import annotations

import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from registry.bundle_checks import (
    ArchiveKind,
    BundleKind,
    BundleLimits,
    BundleProblem,
    Listing,
    Member,
    MemberKind,
    SeverityName,
    check_members,
    unsafe_name,
)
from registry.bundles_7z import (
    SEVEN_ZIP_MAGIC,
    BadArchive,
    EncryptedArchive,
    list_7z,
    stream_7z_members,
)

__all__ = [
    "CHUNK",
    "MAX_LINK_TARGET",
    "READ_ERRORS",
    "SEVEN_ZIP_MAGIC",
    "ArchiveKind",
    "BadArchive",
    "BundleKind",
    "BundleLimits",
    "BundleProblem",
    "EncryptedArchive",
    "Listing",
    "Member",
    "MemberKind",
    "SeverityName",
    "TarMetadataTooLarge",
    "UnsafeBundle",
    "archive_kind",
    "check_members",
    "container_kind",
    "copy_bounded",
    "is_gzip",
    "list_archive",
    "member_streams",
    "safe_extract",
    "unsafe_name",
]

#: A zip symlink's target is its content; longer targets are not read.
MAX_LINK_TARGET = 4096
CHUNK = 1024 * 1024
#: A pax or GNU long-name header larger than this is refused: tarfile would read it whole.
MAX_TAR_META_BYTES = 1024 * 1024

#: Errors that mean an archive or a member cannot be read as what it claims to be.
READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,  # encrypted zip member
    NotImplementedError,  # unsupported zip compression
    ValueError,
    struct.error,
    TypeError,  # tarfile's gzip reader on a truncated gzip header
)

_TAR_META_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class UnsafeBundle(ValueError):
    """:func:`safe_extract` refused an archive; ``problems`` say why."""

    def __init__(self, problems: list[BundleProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "unsafe archive: " + "; ".join(f"{p.location}: {p.message}" for p in problems)
        )


class TarMetadataTooLarge(tarfile.TarError):
    pass


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers over ``MAX_TAR_META_BYTES`` before tarfile reads
    them into memory (``_proc_member`` is tarfile's documented override point)."""

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _TAR_META_TYPES and self.size > MAX_TAR_META_BYTES:
            raise TarMetadataTooLarge(
                f"a {self.type!r} metadata header declares {self.size} bytes "
                f"(limit {MAX_TAR_META_BYTES})"
            )
        proc: Callable[[tarfile.TarFile], tarfile.TarInfo] = getattr(super(), "_proc_member")  # noqa: B009
        return proc(tf)


# -- listing, from headers only ---------------------------------------------------------------


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def archive_kind(path: Path) -> BundleKind | None:
    """zip or tar (plain or gzip-compressed), from the content; None otherwise. These are the
    bundles the model server unpacks."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "tar"
    # a zip is read from its end: data before the first member (a polyglot) is allowed
    return "zip" if zipfile.is_zipfile(path) else None


def container_kind(path: Path) -> ArchiveKind | None:
    """A bundle's kind (:func:`archive_kind`), or ``7z``, from the content; None otherwise."""
    with path.open("rb") as fh:
        if fh.read(6) == SEVEN_ZIP_MAGIC:
            return "7z"
    return archive_kind(path)


def _zip_kind(info: zipfile.ZipInfo) -> MemberKind:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "device"
    return "dir" if info.is_dir() else "file"


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    kind = _zip_kind(info)
    link = None
    if kind == "symlink" and info.file_size <= MAX_LINK_TARGET:
        with zf.open(info) as fh:
            link = fh.read(MAX_LINK_TARGET).decode("utf-8", "replace")
    return Member(info.filename, kind, info.file_size, info.compress_size, link)


def _tar_member(info: tarfile.TarInfo) -> Member:
    kind: MemberKind
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr() or info.isblk() or info.isfifo():
        kind = "device"
    else:
        kind = "other"
    link = info.linkname if kind in ("symlink", "hardlink") else None
    return Member(info.name, kind, info.size, None, link)


def _zip_declared_entries(path: Path) -> int | None:
    """The entry count in a zip's end-of-central-directory record (for zip64, a bound from
    the central directory's size), or None when it cannot be told."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (22 + 65535)))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    entries, cd_size = struct.unpack("<HI", tail[at + 10 : at + 16])
    if entries != 0xFFFF:
        return int(entries)
    return None if cd_size == 0xFFFFFFFF else int(cd_size) // 46


def list_archive(path: Path, *, limits: BundleLimits) -> Listing:
    """The members an archive declares, read from its headers. A tar is read as a stream and
    the listing stops (``truncated``) as soon as a member-count or size limit is passed, so
    a hostile archive is never read to its end. A 7z is listed by ``py7zr`` from its headers
    (:class:`EncryptedArchive` when they are encrypted, :class:`BadArchive` when unreadable)."""
    kind = container_kind(path)
    if kind == "7z":
        return list_7z(path, limits=limits)
    if kind == "zip":
        declared = _zip_declared_entries(path)
        if declared is not None and declared > limits.max_members:
            # refused from the end record, before zipfile reads the central directory
            members = [Member(f"#{i}", "file", 0) for i in range(limits.max_members + 1)]
            return Listing("zip", members, compressed=True, truncated=True)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                members = [Member(i.filename, "file", i.file_size) for i in infos]
                return Listing("zip", members, compressed=True, truncated=True)
            return Listing("zip", [_zip_member(zf, i) for i in infos], compressed=True)
    if kind == "tar":
        members = []
        total = 0
        truncated = False
        with tarfile.open(path, mode="r|*", tarinfo=_BoundedTarInfo) as tf:
            for info in tf:
                members.append(_tar_member(info))
                total += info.size
                if len(members) > limits.max_members or total > limits.max_declared_bytes:
                    truncated = True
                    break
        return Listing("tar", members, compressed=is_gzip(path), truncated=truncated)
    raise tarfile.ReadError("not a zip or tar archive")


# -- member content ---------------------------------------------------------------------------


def member_streams(
    path: Path, listing: Listing, *, location: str, problems: list[BundleProblem]
) -> Iterator[tuple[Member, IO[bytes]]]:
    """The regular files of the archive, in order, each with a stream of its content. A zip
    member that cannot be opened is appended to ``problems`` and skipped; so is a 7z that
    cannot be read to its end (the members read before the error are still given)."""
    if listing.kind == "7z":
        yield from stream_7z_members(path, listing, location=location, problems=problems)
        return
    if listing.kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if _zip_kind(info) != "file":
                    continue
                member = Member(info.filename, "file", info.file_size, info.compress_size)
                try:
                    stream = zf.open(info)
                except READ_ERRORS as exc:
                    problems.append(
                        BundleProblem(
                            "HIGH",
                            "archive.corrupt",
                            f"unreadable member: {exc}",
                            f"{location}:{member.name}",
                        )
                    )
                    continue
                with stream:
                    yield member, stream
        return
    count = 0
    with tarfile.open(path, mode="r|*", tarinfo=_BoundedTarInfo) as tf:
        for tar_info in tf:
            count += 1
            if count > len(listing.members):
                break
            if not tar_info.isreg():
                continue
            extracted = tf.extractfile(tar_info)
            if extracted is None:
                continue
            with extracted:
                yield _tar_member(tar_info), extracted


def copy_bounded(src: IO[bytes], dst: IO[bytes], *, limit: int) -> int:
    """Copy at most ``limit`` bytes; the number copied."""
    copied = 0
    while copied < limit:
        chunk = src.read(min(CHUNK, limit - copied))
        if not chunk:
            break
        dst.write(chunk)
        copied += len(chunk)
    return copied


# -- extraction -------------------------------------------------------------------------------


def _corrupt(message: str, where: str) -> UnsafeBundle:
    return UnsafeBundle([BundleProblem("HIGH", "archive.corrupt", message, where)])


def safe_extract(
    archive: Path, dest: Path, *, limits: BundleLimits, location: str | None = None
) -> list[Path]:
    """Unpack a zip or tar (plain or gzip) into ``dest`` and return the files written.

    Everything is checked from the headers first; any HIGH or CRITICAL problem, and any link
    or unusual member, raises :class:`UnsafeBundle` before a byte is written. Files are
    created with ``O_EXCL | O_NOFOLLOW``, never beyond their declared size, directories with
    mode 0700. Nested archives are written as files, not unpacked.
    """
    location = location or archive.name
    try:
        listing = list_archive(archive, limits=limits)
    except READ_ERRORS as exc:
        raise _corrupt(f"unreadable archive: {exc}", location) from exc
    problems = check_members(
        listing, location=location, limits=limits, archive_bytes=archive.stat().st_size
    )
    refused = [
        p for p in problems if p.serious or p.rule_id in ("archive.link", "archive.member_type")
    ]
    if refused:
        raise UnsafeBundle(refused)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = dest.resolve()
    written: list[Path] = []
    try:
        for m in listing.members:
            if m.kind == "dir":
                _inside(root, m.name.rstrip("/")).mkdir(parents=True, exist_ok=True, mode=0o700)
        for member, stream in member_streams(
            archive, listing, location=location, problems=problems
        ):
            where = f"{location}:{member.name}"
            target = _inside(root, member.name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise UnsafeBundle(
                    [
                        BundleProblem(
                            "HIGH",
                            "archive.path",
                            f"member cannot be written where its name says: {exc.strerror}",
                            where,
                        )
                    ]
                ) from exc
            try:
                with os.fdopen(fd, "wb") as out:
                    copied = copy_bounded(stream, out, limit=member.size + 1)
            except READ_ERRORS as exc:
                raise _corrupt(f"unreadable member: {exc}", where) from exc
            if copied != member.size:
                more = "more" if copied > member.size else "fewer"
                raise _corrupt(
                    f"member holds {more} bytes than its header declares ({member.size})", where
                )
            written.append(target)
    except UnsafeBundle:
        raise
    except READ_ERRORS as exc:
        raise _corrupt(f"unreadable archive: {exc}", location) from exc
    corrupt = [p for p in problems if p.rule_id == "archive.corrupt"]
    if corrupt:
        raise UnsafeBundle(corrupt)
    return written


def _inside(root: Path, name: str) -> Path:
    target = root.joinpath(*PurePosixPath(name).parts)
    if not target.resolve().is_relative_to(root):
        raise UnsafeBundle(
            [BundleProblem("CRITICAL", "archive.path", "member leaves the destination", name)]
        )
    return target
