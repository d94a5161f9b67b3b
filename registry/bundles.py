"""Bundles (zip, tar, tar.gz): what their headers declare, whether that is safe, and unpacking.

Both sides of the promise unpack a bundle with this code: the security scanner
(``validators.security.archives``) and the functional check judge it, and the model server
(``deployers.model_server``) unpacks what it serves. So what validated is what serves.

An archive is judged from its headers before anything is decompressed: member names (absolute
paths, ``..``, backslashes, NUL bytes), links, device files, duplicate names, the member count,
the declared total size and the compression ratio (:func:`check_members`). :func:`safe_extract`
refuses (:class:`UnsafeBundle`) an archive with any serious problem, and any link or device
member, before a byte is written; it writes files with ``O_EXCL | O_NOFOLLOW``, never beyond
their declared size, and directories with mode 0700.

A problem is a :class:`BundleProblem` with a severity name (``LOW`` to ``CRITICAL``) and a rule
id (``archive.path``, ``archive.link``, ``limit.archive_members``, ...); the scanner turns each
into a finding of the same rule id.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

__all__ = [
    "READ_ERRORS",
    "ArchiveKind",
    "BundleLimits",
    "BundleProblem",
    "Listing",
    "Member",
    "TarMetadataTooLarge",
    "UnsafeBundle",
    "archive_kind",
    "check_members",
    "copy_bounded",
    "is_gzip",
    "list_archive",
    "member_streams",
    "safe_extract",
    "unsafe_name",
]

GIB = 1024**3
#: A zip symlink's target is its content; longer targets are not read.
MAX_LINK_TARGET = 4096
CHUNK = 1024 * 1024
#: A pax or GNU long-name header larger than this is refused: tarfile would read it whole.
MAX_TAR_META_BYTES = 1024 * 1024

MemberKind = Literal["file", "dir", "symlink", "hardlink", "device", "other"]
ArchiveKind = Literal["zip", "tar"]
SeverityName = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
_RANK: dict[str, int] = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

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
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class BundleLimits:
    """The bounds on an archive, from its headers. The defaults are the security policy's
    (``validators.security.policy.SecurityPolicy``), so the model server holds a bundle to the
    limits it was scanned with."""

    max_members: int = 10_000
    max_declared_bytes: int = 50 * GIB
    #: Uncompressed size over compressed size, per zip member and for a whole tar.gz.
    max_compression_ratio: float = 200.0
    #: Members (or a whole tar.gz) declaring at most this many bytes are not held to the ratio.
    compression_ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class BundleProblem:
    """One reason an archive is not safe, or worth mentioning."""

    severity: SeverityName
    rule_id: str
    message: str
    location: str

    @property
    def serious(self) -> bool:
        """HIGH or CRITICAL: the archive is not unpacked."""
        return _RANK[self.severity] >= _RANK["HIGH"]


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


@dataclass(frozen=True)
class Member:
    name: str
    kind: MemberKind
    size: int
    compressed: int | None = None
    link: str | None = None


@dataclass
class Listing:
    kind: ArchiveKind
    members: list[Member]
    compressed: bool
    truncated: bool = False


def unsafe_name(name: str) -> str | None:
    """Why a member name (or an ONNX external-data location) is unsafe, or None."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains a '..' component"
    return None


# -- listing, from headers only ---------------------------------------------------------------


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def archive_kind(path: Path) -> ArchiveKind | None:
    """zip or tar (plain or gzip-compressed), from the content; None otherwise."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "tar"
    # a zip is read from its end: data before the first member (a polyglot) is allowed
    return "zip" if zipfile.is_zipfile(path) else None


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
    a hostile archive is never read to its end."""
    kind = archive_kind(path)
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


def check_members(
    listing: Listing, *, location: str, limits: BundleLimits, archive_bytes: int
) -> list[BundleProblem]:
    """What the headers alone show: limits, unsafe names, links, devices, duplicates."""
    members = listing.members
    problems: list[BundleProblem] = []
    if len(members) > limits.max_members:
        return [
            BundleProblem(
                "HIGH",
                "limit.archive_members",
                f"{'over ' if listing.truncated else ''}{len(members)} members, more than "
                f"the limit ({limits.max_members}); not unpacked",
                location,
            )
        ]
    total = sum(m.size for m in members)
    if total > limits.max_declared_bytes:
        return [
            BundleProblem(
                "HIGH",
                "limit.declared_bytes",
                f"members declare {'over ' if listing.truncated else ''}{total} bytes, more "
                f"than the limit ({limits.max_declared_bytes}); not unpacked",
                location,
            )
        ]
    ratio = limits.max_compression_ratio
    floor = limits.compression_ratio_floor_bytes
    for m in members:
        if m.compressed is not None and m.size > floor and m.size > ratio * max(m.compressed, 1):
            problems.append(
                BundleProblem(
                    "HIGH",
                    "limit.compression_ratio",
                    f"{m.size} bytes from {m.compressed} compressed: ratio over "
                    f"{ratio:g} (zip bomb); not unpacked",
                    f"{location}:{m.name}",
                )
            )
    compressed_tar = listing.kind == "tar" and listing.compressed
    if compressed_tar and floor < total > ratio * max(archive_bytes, 1):
        problems.append(
            BundleProblem(
                "HIGH",
                "limit.compression_ratio",
                f"{total} bytes from {archive_bytes} compressed: ratio over {ratio:g} "
                "(decompression bomb); not unpacked",
                location,
            )
        )
    if problems:
        return problems
    seen: set[str] = set()
    for m in members:
        where = f"{location}:{m.name}"
        name = m.name.rstrip("/") if m.kind == "dir" else m.name
        reason = unsafe_name(name)
        if reason is not None:
            problems.append(
                BundleProblem("CRITICAL", "archive.path", f"member name {reason}", where)
            )
        normal = posixpath.normpath(name)
        if normal in seen and m.kind != "dir":
            problems.append(
                BundleProblem(
                    "HIGH",
                    "archive.duplicate",
                    "member name appears more than once; what is scanned may not be what is loaded",
                    where,
                )
            )
        seen.add(normal)
        if m.kind in ("symlink", "hardlink"):
            problems.append(_check_link(m, where))
        elif m.kind == "device":
            problems.append(BundleProblem("HIGH", "archive.device", "device or FIFO member", where))
        elif m.kind == "other":
            problems.append(
                BundleProblem("MEDIUM", "archive.member_type", "unusual member type", where)
            )
    return problems


def _check_link(member: Member, where: str) -> BundleProblem:
    kind = member.kind
    target = member.link
    if target is None:
        return BundleProblem("HIGH", "archive.link", f"{kind} with an unreadable target", where)
    base = posixpath.dirname(member.name) if kind == "symlink" else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    outside = (
        not target
        or target.startswith(("/", "\\"))
        or "\\" in target
        or (len(target) > 1 and target[1] == ":")
        or resolved == ".."
        or resolved.startswith("../")
    )
    if outside:
        return BundleProblem(
            "CRITICAL", "archive.link", f"{kind} to {target!r} points outside the bundle", where
        )
    return BundleProblem("MEDIUM", "archive.link", f"{kind} to {target!r} inside the bundle", where)


# -- member content ---------------------------------------------------------------------------


def member_streams(
    path: Path, listing: Listing, *, location: str, problems: list[BundleProblem]
) -> Iterator[tuple[Member, IO[bytes]]]:
    """The regular files of the archive, in order, each with a stream of its content. A zip
    member that cannot be opened is appended to ``problems`` and skipped."""
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
