"""Archives (zip, tar, tar.gz) and the content of their members.

An archive is judged from its headers before anything is decompressed: member names (absolute
paths, ``..``), links, device files, duplicate names, the member count, the declared total
size and the compression ratio. Only then are members streamed, one at a time and never whole
in memory, through the same content sniffing as top-level files: pickles under any name,
safetensors headers, ``.npy`` object arrays, nested archives (to ``max_archive_depth``).
ONNX members are scanned from a private temporary extraction, so that their external data
resolves inside it, and the extraction is deleted afterwards.

The header checks and the extraction live in ``registry.bundles``, because the model server
unpacks what it serves with the same code; this module turns their problems into findings.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from registry import bundles
from registry.bundles import BundleLimits, BundleProblem, Listing, Member, UnsafeBundle
from registry.formats import HEAD_BYTES, Format, read_head, sniff
from validators.report import Finding, Severity
from validators.security.pickle import check_torch_zip, looks_like_pickle, scan_pickle
from validators.security.policy import SecurityPolicy
from validators.security.safetensors_scan import scan_safetensors

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = bundles.CHUNK
READ_ERRORS = bundles.READ_ERRORS
TarMetadataTooLarge = bundles.TarMetadataTooLarge
archive_kind = bundles.archive_kind
_is_gzip = bundles.is_gzip
_copy = bundles.copy_bounded


class UnsafeArchive(ValueError):
    """``safe_extract`` refused an archive; ``findings`` say why."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__(
            "unsafe archive: " + "; ".join(f"{f.location}: {f.message}" for f in findings)
        )


def limits_of(policy: SecurityPolicy) -> BundleLimits:
    """The archive limits of a security policy, as the shared bundle code takes them."""
    return BundleLimits(
        max_members=policy.max_archive_members,
        max_declared_bytes=policy.max_declared_bytes,
        max_compression_ratio=policy.max_compression_ratio,
        compression_ratio_floor_bytes=policy.compression_ratio_floor_bytes,
    )


def finding_of(problem: BundleProblem) -> Finding:
    return Finding(Severity[problem.severity], problem.rule_id, problem.message, problem.location)


# -- listing, from headers only (registry.bundles: the model server uses the same checks) -----


def list_archive(path: Path, *, policy: SecurityPolicy) -> Listing:
    """The members an archive declares, read from its headers (see ``registry.bundles``)."""
    return bundles.list_archive(path, limits=limits_of(policy))


def check_members(
    listing: Listing, *, location: str, policy: SecurityPolicy, archive_bytes: int
) -> list[Finding]:
    """What the headers alone show: limits, unsafe names, links, devices, duplicates."""
    problems = bundles.check_members(
        listing, location=location, limits=limits_of(policy), archive_bytes=archive_bytes
    )
    return [finding_of(p) for p in problems]


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
    result = StreamResult(fmt=sniff(head, size=size), is_pickle=looks_like_pickle(head))
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
            result.findings += scan_pickle(body, location=location, policy=policy)
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
        return scan_pickle(stream, location=f"{location}#object-array", policy=policy)
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
        findings += check_torch_zip(names, location=location)
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
    problems: list[BundleProblem] = []
    try:
        for member, stream in bundles.member_streams(
            path, listing, location=location, problems=problems
        ):
            findings.extend(finding_of(p) for p in problems)
            problems.clear()
            yield member, stream
    finally:
        findings.extend(finding_of(p) for p in problems)


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
    """ONNX members, scanned from a private extraction so external data resolves inside it.
    The ONNX scanner is imported here, only when a bundle has ONNX members: ``onnx`` costs
    about 0.8 s to import (``ml_dtypes``), which a pickle's scan never needs."""
    from validators.security.onnx_scan import scan_onnx

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
    """Unpack a zip or tar (plain or gzip) into ``dest`` and return the files written, with
    the checks of ``registry.bundles.safe_extract`` (the model server unpacks with the same
    code); a refusal raises ``UnsafeArchive`` with its findings."""
    try:
        return bundles.safe_extract(archive, dest, limits=limits_of(policy))
    except UnsafeBundle as exc:
        raise UnsafeArchive([finding_of(p) for p in exc.problems]) from exc
