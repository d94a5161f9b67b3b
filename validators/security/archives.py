"""Archives (zip, tar, tar.gz) and the content of their members.

An archive is judged from its headers before anything is decompressed: member names (absolute
paths, ``..``), links, device files, duplicate names, the member count, the declared total
size and the compression ratio. Only then are members streamed, one at a time and never whole
in memory, through the same content sniffing as top-level files: pickles under any name,
safetensors headers, ``.npy`` object arrays, nested archives (to ``max_archive_depth``).
ONNX members are scanned from a private temporary extraction, so that their external data
resolves inside it, and the extraction is deleted afterwards.
"""

from __future__ import annotations

import ast
import io
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, BinaryIO, Literal, cast

from validators.report import Finding, Severity
from validators.security import pickle_scan
from validators.security.formats import HEAD_BYTES, Format, read_head, sniff
from validators.security.onnx_scan import scan_onnx, unsafe_location
from validators.security.policy import SecurityPolicy
from validators.security.safetensors_scan import scan_safetensors

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: A zip symlink's target is its content; longer targets are not read.
MAX_LINK_TARGET = 4096
CHUNK = 1024 * 1024

MemberKind = Literal["file", "dir", "symlink", "hardlink", "device", "other"]
ArchiveKind = Literal["zip", "tar"]

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


#: A pax or GNU long-name header larger than this is refused: tarfile would read it whole.
MAX_TAR_META_BYTES = 1024 * 1024
_TAR_META_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
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


class UnsafeArchive(ValueError):
    """``safe_extract`` refused an archive; ``findings`` say why."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__(
            "unsafe archive: " + "; ".join(f"{f.location}: {f.message}" for f in findings)
        )


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


# -- listing, from headers only ---------------------------------------------------------------


def archive_kind(path: Path) -> ArchiveKind | None:
    """zip or tar (plain or gzip-compressed), from the content; None otherwise."""
    with path.open("rb") as fh:
        fmt = sniff(read_head(fh, HEAD_BYTES), size=path.stat().st_size)
    if fmt is Format.ZIP:
        return "zip"
    if fmt in (Format.TAR, Format.GZIP):
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


def list_archive(path: Path, *, policy: SecurityPolicy) -> Listing:
    """The members an archive declares, read from its headers. A tar is read as a stream and
    the listing stops (``truncated``) as soon as a member-count or size limit is passed, so
    a hostile archive is never read to its end."""
    kind = archive_kind(path)
    if kind == "zip":
        declared = _zip_declared_entries(path)
        if declared is not None and declared > policy.max_archive_members:
            # refused from the end record, before zipfile reads the central directory
            members = [Member(f"#{i}", "file", 0) for i in range(policy.max_archive_members + 1)]
            return Listing("zip", members, compressed=True, truncated=True)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > policy.max_archive_members:
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
                if len(members) > policy.max_archive_members or total > policy.max_declared_bytes:
                    truncated = True
                    break
        return Listing("tar", members, compressed=_is_gzip(path), truncated=truncated)
    raise tarfile.ReadError("not a zip or tar archive")


def check_members(
    listing: Listing, *, location: str, policy: SecurityPolicy, archive_bytes: int
) -> list[Finding]:
    """What the headers alone show: limits, unsafe names, links, devices, duplicates."""
    members = listing.members
    findings: list[Finding] = []
    if len(members) > policy.max_archive_members:
        return [
            Finding(
                Severity.HIGH,
                "limit.archive_members",
                f"{'over ' if listing.truncated else ''}{len(members)} members, more than "
                f"the limit ({policy.max_archive_members}); not unpacked",
                location,
            )
        ]
    total = sum(m.size for m in members)
    if total > policy.max_declared_bytes:
        return [
            Finding(
                Severity.HIGH,
                "limit.declared_bytes",
                f"members declare {'over ' if listing.truncated else ''}{total} bytes, more "
                f"than the limit ({policy.max_declared_bytes}); not unpacked",
                location,
            )
        ]
    ratio = policy.max_compression_ratio
    for m in members:
        if (
            m.compressed is not None
            and m.size > policy.compression_ratio_floor_bytes
            and m.size > ratio * max(m.compressed, 1)
        ):
            findings.append(
                Finding(
                    Severity.HIGH,
                    "limit.compression_ratio",
                    f"{m.size} bytes from {m.compressed} compressed: ratio over "
                    f"{ratio:g} (zip bomb); not unpacked",
                    f"{location}:{m.name}",
                )
            )
    compressed_tar = listing.kind == "tar" and listing.compressed
    floor = policy.compression_ratio_floor_bytes
    if compressed_tar and floor < total > ratio * max(archive_bytes, 1):
        findings.append(
            Finding(
                Severity.HIGH,
                "limit.compression_ratio",
                f"{total} bytes from {archive_bytes} compressed: ratio over {ratio:g} "
                "(decompression bomb); not unpacked",
                location,
            )
        )
    if findings:
        return findings
    seen: set[str] = set()
    for m in members:
        where = f"{location}:{m.name}"
        name = m.name.rstrip("/") if m.kind == "dir" else m.name
        reason = unsafe_location(name)
        if reason is not None:
            findings.append(
                Finding(Severity.CRITICAL, "archive.path", f"member name {reason}", where)
            )
        normal = posixpath.normpath(name)
        if normal in seen and m.kind != "dir":
            findings.append(
                Finding(
                    Severity.HIGH,
                    "archive.duplicate",
                    "member name appears more than once; what is scanned may not be what is loaded",
                    where,
                )
            )
        seen.add(normal)
        if m.kind in ("symlink", "hardlink"):
            findings.append(_check_link(m, where))
        elif m.kind == "device":
            findings.append(
                Finding(Severity.HIGH, "archive.device", "device or FIFO member", where)
            )
        elif m.kind == "other":
            findings.append(
                Finding(Severity.MEDIUM, "archive.member_type", "unusual member type", where)
            )
    return findings


def _check_link(member: Member, where: str) -> Finding:
    kind = member.kind
    target = member.link
    if target is None:
        return Finding(Severity.HIGH, "archive.link", f"{kind} with an unreadable target", where)
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
        return Finding(
            Severity.CRITICAL,
            "archive.link",
            f"{kind} to {target!r} points outside the bundle",
            where,
        )
    return Finding(
        Severity.MEDIUM, "archive.link", f"{kind} to {target!r} inside the bundle", where
    )


# -- streaming member content -----------------------------------------------------------------


class _Prepended(io.RawIOBase):
    """A read-once stream: the bytes already read for sniffing, then the rest."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos < len(self._head):
            data = self._head[self._pos : self._pos + len(view)]
        else:
            data = self._rest.read(len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos


@dataclass
class StreamResult:
    findings: list[Finding] = field(default_factory=list)
    fmt: Format = Format.UNKNOWN
    is_pickle: bool = False


def scan_stream(
    stream: IO[bytes],
    *,
    size: int,
    location: str,
    policy: SecurityPolicy,
    depth: int,
) -> StreamResult:
    """Scan one file's or member's content, read once from ``stream``: pickles, safetensors,
    ``.npy`` and nested archives. ONNX is only recognised here (``fmt``); it is parsed from a
    file by the caller."""
    head = read_head(stream, HEAD_BYTES)
    result = StreamResult(fmt=sniff(head, size=size), is_pickle=pickle_scan.looks_like_pickle(head))
    with io.BufferedReader(_Prepended(head, stream), CHUNK) as body:
        if result.fmt in (Format.ZIP, Format.TAR, Format.GZIP):
            result.findings += _scan_nested(
                body, size=size, location=location, policy=policy, depth=depth
            )
        elif result.fmt is Format.SAFETENSORS:
            result.findings += scan_safetensors(body, size=size, location=location)
        elif result.fmt is Format.NPY:
            result.findings += _scan_npy(body, location=location, policy=policy)
        elif result.is_pickle:
            result.findings += pickle_scan.scan_pickle(body, location=location, policy=policy)
    return result


def _scan_npy(stream: BinaryIO, *, location: str, policy: SecurityPolicy) -> list[Finding]:
    """A ``.npy`` array of dtype object is a pickle after its header: scan that pickle."""
    prefix = read_head(stream, 10)
    if len(prefix) < 10:
        return [Finding(Severity.MEDIUM, "npy.header", "truncated .npy header", location)]
    if prefix[6] == 1:
        (length,) = struct.unpack("<H", prefix[8:10])
    else:
        (length,) = struct.unpack("<I", prefix[8:10] + read_head(stream, 2))
    if length > 1024 * 1024:
        return [Finding(Severity.HIGH, "npy.header", f"header of {length} bytes", location)]
    text = read_head(stream, length)
    try:
        header = ast.literal_eval(text.decode("latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return [Finding(Severity.MEDIUM, "npy.header", "unreadable .npy header", location)]
    if "O" in str(descr):
        return pickle_scan.scan_pickle(stream, location=f"{location}#object-array", policy=policy)
    return []


def _scan_nested(
    body: BinaryIO, *, size: int, location: str, policy: SecurityPolicy, depth: int
) -> list[Finding]:
    if depth + 1 > policy.max_archive_depth:
        return [
            Finding(
                Severity.HIGH,
                "limit.archive_depth",
                f"archive nested deeper than the limit ({policy.max_archive_depth}); not unpacked",
                location,
            )
        ]
    limit = min(size if size >= 0 else policy.max_file_bytes, policy.max_file_bytes)
    with _private_dir() as tmp:
        nested = tmp / "nested"
        with nested.open("xb") as out:
            copied = _copy(body, out, limit=limit + 1)
        if copied > limit:
            return [
                Finding(
                    Severity.HIGH,
                    "limit.file_bytes",
                    f"nested archive is larger than {limit} bytes; not unpacked",
                    location,
                )
            ]
        return scan_archive(nested, location=location, policy=policy, depth=depth + 1)


def _copy(src: IO[bytes], dst: IO[bytes], *, limit: int) -> int:
    copied = 0
    while copied < limit:
        chunk = src.read(min(CHUNK, limit - copied))
        if not chunk:
            break
        dst.write(chunk)
        copied += len(chunk)
    return copied


@contextmanager
def _private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="modelreg-scan-"))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _torch_like(names: list[str]) -> bool:
    return any(
        len(parts) == 2 and parts[1] == "data.pkl" for parts in (n.split("/") for n in names)
    )


def scan_archive(
    path: Path, *, location: str, policy: SecurityPolicy, depth: int = 1
) -> list[Finding]:
    """Findings for the zip or tar (plain or gzip) at ``path``, at nesting ``depth``."""
    size = path.stat().st_size
    try:
        listing = list_archive(path, policy=policy)
    except TarMetadataTooLarge as exc:
        return [Finding(Severity.HIGH, "limit.tar_header", str(exc), location)]
    except tarfile.ReadError:
        if archive_kind(path) == "tar" and _is_gzip(path):
            return _scan_gunzipped(path, location=location, policy=policy, depth=depth)
        return [Finding(Severity.HIGH, "archive.corrupt", "not a readable archive", location)]
    except READ_ERRORS as exc:
        return [Finding(Severity.HIGH, "archive.corrupt", f"unreadable archive: {exc}", location)]
    findings = check_members(listing, location=location, policy=policy, archive_bytes=size)
    header_findings = list(findings)
    if any(f.rule_id.startswith("limit.") for f in findings):
        return findings
    names = [m.name for m in listing.members]
    if listing.kind == "zip" and _torch_like(names):
        findings += pickle_scan.check_torch_zip(names, location=location)
    onnx_members: list[str] = []
    try:
        for member, stream in _member_streams(path, listing, location=location, findings=findings):
            where = f"{location}:{member.name}"
            try:
                result = scan_stream(
                    stream, size=member.size, location=where, policy=policy, depth=depth
                )
            except READ_ERRORS as exc:
                findings.append(
                    Finding(Severity.HIGH, "archive.corrupt", f"unreadable member: {exc}", where)
                )
                if listing.kind == "tar":
                    return findings  # a tar stream cannot be read past a broken member
                continue
            findings += result.findings
            if result.fmt is Format.ONNX:
                onnx_members.append(member.name)
    except READ_ERRORS as exc:
        findings.append(
            Finding(Severity.HIGH, "archive.corrupt", f"unreadable archive: {exc}", location)
        )
        return findings
    if onnx_members:
        try:
            findings += _scan_onnx_members(
                path,
                onnx_members,
                location=location,
                policy=policy,
                header_findings=header_findings,
            )
        except UnsafeArchive as exc:
            findings += exc.findings
    return findings


def _member_streams(
    path: Path, listing: Listing, *, location: str, findings: list[Finding]
) -> Iterator[tuple[Member, IO[bytes]]]:
    if listing.kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if _zip_kind(info) != "file":
                    continue
                member = Member(info.filename, "file", info.file_size, info.compress_size)
                try:
                    stream = zf.open(info)
                except READ_ERRORS as exc:
                    findings.append(
                        Finding(
                            Severity.HIGH,
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


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _scan_gunzipped(
    path: Path, *, location: str, policy: SecurityPolicy, depth: int
) -> list[Finding]:
    """A gzip file that holds no tar: its decompressed content is scanned as a member."""
    import gzip

    where = f"{location}:<gunzipped>"
    try:
        with gzip.open(path, "rb") as fh:
            result = scan_stream(
                cast("IO[bytes]", fh),
                size=policy.max_declared_bytes,
                location=where,
                policy=policy,
                depth=depth,
            )
    except READ_ERRORS as exc:
        return [Finding(Severity.HIGH, "archive.corrupt", f"unreadable gzip: {exc}", where)]
    return result.findings


def _scan_onnx_members(
    path: Path,
    names: list[str],
    *,
    location: str,
    policy: SecurityPolicy,
    header_findings: list[Finding],
) -> list[Finding]:
    """ONNX members, scanned from a private extraction so external data resolves inside it."""
    if any(f.severity >= Severity.HIGH for f in header_findings):
        return [
            Finding(
                Severity.LOW,
                "archive.onnx_not_extracted",
                "ONNX members were not extracted because the archive is unsafe",
                location,
            )
        ]
    findings: list[Finding] = []
    with _private_dir() as tmp:
        root = tmp / "bundle"
        safe_extract(path, root, policy=policy)
        for name in names:
            findings += scan_onnx(
                root / name, policy=policy, location=f"{location}:{name}", root=root
            )
    return findings


# -- extraction -------------------------------------------------------------------------------


def safe_extract(archive: Path, dest: Path, *, policy: SecurityPolicy) -> list[Path]:
    """Unpack a zip or tar (plain or gzip) into ``dest`` and return the files written.

    Everything is checked from the headers first; any finding of HIGH or above, and any link
    or device member, raises ``UnsafeArchive`` before a byte is written. Files are created
    with ``O_EXCL | O_NOFOLLOW``, never beyond their declared size, directories with mode
    0700. Nested archives are written as files, not unpacked.
    """
    location = archive.name
    try:
        listing = list_archive(archive, policy=policy)
    except READ_ERRORS as exc:
        raise UnsafeArchive(
            [Finding(Severity.HIGH, "archive.corrupt", f"unreadable archive: {exc}", location)]
        ) from exc
    findings = check_members(
        listing, location=location, policy=policy, archive_bytes=archive.stat().st_size
    )
    refused = [
        f
        for f in findings
        if f.severity >= Severity.HIGH or f.rule_id in ("archive.link", "archive.member_type")
    ]
    if refused:
        raise UnsafeArchive(refused)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = dest.resolve()
    written: list[Path] = []
    try:
        for m in listing.members:
            if m.kind == "dir":
                _inside(root, m.name.rstrip("/")).mkdir(parents=True, exist_ok=True, mode=0o700)
        for member, stream in _member_streams(
            archive, listing, location=location, findings=findings
        ):
            target = _inside(root, member.name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise UnsafeArchive(
                    [
                        Finding(
                            Severity.HIGH,
                            "archive.path",
                            f"member cannot be written where its name says: {exc.strerror}",
                            f"{location}:{member.name}",
                        )
                    ]
                ) from exc
            try:
                with os.fdopen(fd, "wb") as out:
                    copied = _copy(stream, out, limit=member.size + 1)
            except READ_ERRORS as exc:
                raise UnsafeArchive(
                    [
                        Finding(
                            Severity.HIGH,
                            "archive.corrupt",
                            f"unreadable member: {exc}",
                            f"{location}:{member.name}",
                        )
                    ]
                ) from exc
            if copied != member.size:
                raise UnsafeArchive(
                    [
                        Finding(
                            Severity.HIGH,
                            "archive.corrupt",
                            f"member holds {'more' if copied > member.size else 'fewer'} bytes "
                            f"than its header declares ({member.size})",
                            f"{location}:{member.name}",
                        )
                    ]
                )
            written.append(target)
    except UnsafeArchive:
        raise
    except READ_ERRORS as exc:
        raise UnsafeArchive(
            [Finding(Severity.HIGH, "archive.corrupt", f"unreadable archive: {exc}", location)]
        ) from exc
    if findings and any(f.rule_id == "archive.corrupt" for f in findings):
        raise UnsafeArchive([f for f in findings if f.rule_id == "archive.corrupt"])
    return written


def _inside(root: Path, name: str) -> Path:
    target = root.joinpath(*PurePosixPath(name).parts)
    if not target.resolve().is_relative_to(root):
        raise UnsafeArchive(
            [Finding(Severity.CRITICAL, "archive.path", "member leaves the destination", name)]
        )
    return target
