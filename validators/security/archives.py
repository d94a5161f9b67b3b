"""Archives (zip, tar, tar.gz, 7z), compressed files, and the content of their members.

An archive is judged from its headers before anything is decompressed: member names (absolute
paths, ``..``), links, device files, duplicate names, the member count, the declared total
size and the compression ratio. Only then are members streamed, one at a time and never whole
in memory, through the same content sniffing as top-level files: pickles under any name,
safetensors headers, ``.npy`` object arrays (whatever the dtype's spelling), nested archives
and compressed streams (zlib, gzip, bz2, lzma, xz: joblib's containers), to
``max_archive_depth``. ONNX members are scanned from a private temporary extraction, so that
their external data resolves inside it, and the extraction is deleted afterwards.

The header checks and the extraction live in ``registry.bundles``, because the model server
unpacks what it serves with the same code; this module turns their problems into findings.
A zip is listed and read by the scanner's permissive reader (``zip_raw``), which reads what
``torch.load`` and streaming readers read where ``zipfile`` gives up: each irregularity is a
``zip.irregular`` finding (MEDIUM) and the content is scanned all the same. A 7z is read with
``py7zr`` (``registry.bundles``); one whose content or headers are encrypted is
``archive.encrypted`` (HIGH).

Each format's scanner is imported when a file or member of that format is first met, so
that scanning a pickle or a safetensors file loads none of the zip, compression, ``.npy``,
SavedModel, TorchScript or Keras code (``bench.scan_speed`` measures the memory).

A decompressed stream is bounded: past ``max_compression_ratio`` times its compressed size
(and the ``compression_ratio_floor_bytes``), or past ``max_declared_bytes``, the scan stops
with ``limit.compression_ratio`` or ``limit.declared_bytes``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from registry import bundles
from registry.bundles import (
    BundleProblem,
    EncryptedArchive,
    Listing,
    Member,
)
from registry.formats import (
    ARCHIVE_FORMATS,
    COMPRESSED_FORMATS,
    HEAD_BYTES,
    Format,
    read_head,
    sniff,
)
from validators.report import Finding, Severity
from validators.security.archive_checks import (
    StreamResult,
    UnsafeArchive,
    check_members,
    decompression_limit,
    finding_of,
    limits_of,
    list_archive,
    private_dir,
    safe_extract,
    scan_onnx_members,
)
from validators.security.claims import claimed_format, describe_claim
from validators.security.pickle import looks_like_pickle, scan_pickle
from validators.security.pickle.reader import OPCODES
from validators.security.policy import SecurityPolicy
from validators.security.safetensors_scan import scan_safetensors

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [  # the extraction and header helpers live in archive_checks; found here too
    "UnsafeArchive",
    "check_members",
    "finding_of",
    "limits_of",
    "list_archive",
    "safe_extract",
    "scan_archive",
    "scan_stream",
]

CHUNK = bundles.CHUNK
READ_ERRORS = bundles.READ_ERRORS
TarMetadataTooLarge = bundles.TarMetadataTooLarge
archive_kind = bundles.archive_kind
_is_gzip = bundles.is_gzip
_copy = bundles.copy_bounded


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


def scan_stream(
    stream: IO[bytes],
    *,
    size: int,
    location: str,
    policy: SecurityPolicy,
    depth: int,
    name: str | None = None,
    declared: str | None = None,
) -> StreamResult:
    """Scan one file's or member's content, read once from ``stream``: pickles, safetensors,
    ``.npy``, SavedModel graphs, nested archives and compressed streams. ONNX is only
    recognised here (``fmt``); it is parsed from a file by the caller.

    ``name`` (the file's or member's) and ``declared`` (a single file's declared format) say
    what the content claims to be (``claims``): content the sniffers cannot name is then read
    as the claimed format anyway, and what is wrong with it is at least HIGH. A claimed ONNX
    model comes back as ``fmt`` ONNX, for the caller to parse."""
    head = read_head(stream, HEAD_BYTES)
    is_pickle = looks_like_pickle(head, size=size if size >= 0 else None)
    result = StreamResult(fmt=sniff(head, size=size), is_pickle=is_pickle)
    claim = claimed_format(name, declared=declared) if name is not None else None
    if result.fmt is Format.ONNX and claim is Format.SAVED_MODEL:
        result.fmt = claim  # the two protobuf heads look alike: TensorFlow reads it as its own
    if result.fmt is Format.UNKNOWN and not is_pickle and claim is not None:
        assert name is not None
        result.claimed = describe_claim(name, declared=declared)
        result.fmt = claim
    with io.BufferedReader(_Prepended(head, stream), CHUNK) as body:
        if result.claimed and result.fmt is not Format.ONNX:
            result.findings += _read_as_claimed(
                body, result, head=head, size=size, location=location, policy=policy
            )
            return result
        if result.fmt in ARCHIVE_FORMATS:
            result.findings += _scan_nested(
                body, size=size, location=location, policy=policy, depth=depth
            )
        elif result.fmt in COMPRESSED_FORMATS:
            result.findings += _scan_compressed(
                body, fmt=result.fmt, size=size, location=location, policy=policy, depth=depth
            )
        elif result.fmt is Format.SAFETENSORS:
            result.findings += scan_safetensors(body, size=size, location=location)
        elif result.fmt is Format.NPY:
            from validators.security.npy_scan import scan_npy

            result.findings += scan_npy(body, location=location, policy=policy)
        elif result.fmt is Format.SAVED_MODEL:
            result.findings += _scan_saved_model(body, size=size, location=location)
        elif result.is_pickle:
            result.findings += scan_pickle(body, location=location, policy=policy)
    return result


def _read_as_claimed(
    body: BinaryIO,
    result: StreamResult,
    *,
    head: bytes,
    size: int,
    location: str,
    policy: SecurityPolicy,
) -> list[Finding]:
    """Content that claims ``result.fmt`` (``result.claimed`` says how) and was not sniffed as
    it, read as the claimed format anyway, since its loader will: what is wrong is at least
    HIGH."""
    what = result.claimed
    if result.fmt is Format.SAVED_MODEL:
        return _scan_saved_model(body, size=size, location=location)
    if result.fmt is Format.SAFETENSORS:
        return scan_safetensors(body, size=size, location=location) or [
            Finding(
                Severity.HIGH,
                "safetensors.malformed",
                f"{what}, but it does not read as a safetensors file",
                location,
            )
        ]
    if result.fmt is Format.PICKLE:
        first = head[:1]
        reason = (
            "it is empty"
            if not first
            else f"its first byte {first[0]:#04x} does not start a pickle's opcodes"
            if first[0] not in OPCODES
            else "its first opcodes do not parse"
        )
        not_pickle = Finding(
            Severity.HIGH,
            "pickle.not-a-pickle",
            f"{what}, but it does not read as a pickle: {reason}",
            location,
        )
        return [not_pickle, *scan_pickle(body, location=location, policy=policy)]
    return [
        Finding(
            Severity.HIGH,
            f"{result.fmt}.malformed",
            f"{what}, but it does not read as one (no {result.fmt} header)",
            location,
        )
    ]


def _scan_saved_model(body: BinaryIO, *, size: int, location: str) -> list[Finding]:
    """A SavedModel's graph, read whole: protobuf's limit is 2 GiB, and the graph holds no
    weights (those are in ``variables/``)."""
    from validators.security.savedmodel_scan import MAX_SAVED_MODEL_BYTES, scan_saved_model

    data = body.read(MAX_SAVED_MODEL_BYTES + 1)
    if len(data) > MAX_SAVED_MODEL_BYTES:
        return [
            Finding(
                Severity.HIGH,
                "limit.savedmodel_bytes",
                f"a SavedModel graph of more than {MAX_SAVED_MODEL_BYTES} bytes (protobuf's "
                "limit); not parsed",
                location,
            )
        ]
    return scan_saved_model(data, location=location)


def _too_deep(location: str, *, policy: SecurityPolicy) -> Finding:
    return Finding(
        Severity.HIGH,
        "limit.archive_depth",
        f"archive nested deeper than the limit ({policy.max_archive_depth}); not unpacked",
        location,
    )


def _scan_compressed(
    body: IO[bytes], *, fmt: Format, size: int, location: str, policy: SecurityPolicy, depth: int
) -> list[Finding]:
    """A compressed stream's content, decompressed as it is read (bounded) and scanned as a
    file of its own; a compression layer counts as a level of nesting."""
    from validators.security.compression import DECODER_MEMORY_LIMIT, Decompressed, codec_name

    if depth + 1 > policy.max_archive_depth:
        return [_too_deep(location, policy=policy)]
    name = "gunzipped" if fmt is Format.GZIP else f"{codec_name(fmt)}-decompressed"
    where = f"{location}:<{name}>"
    limit = decompression_limit(size, policy=policy)
    by_ratio = limit < policy.max_declared_bytes
    content = Decompressed(body, fmt, limit=limit)
    with io.BufferedReader(content, CHUNK) as stream:
        result = scan_stream(stream, size=limit, location=where, policy=policy, depth=depth + 1)
        # what the scan did not read is still decompressed (and dropped), up to the limit: a
        # loader decompresses it all, so a bomb is one whatever it holds
        while stream.read(CHUNK):
            pass
    findings = result.findings
    if content.over_limit and by_ratio:
        findings.append(
            Finding(
                Severity.HIGH,
                "limit.compression_ratio",
                f"over {limit} bytes from {size} compressed: ratio over "
                f"{policy.max_compression_ratio:g} (decompression bomb); the scan stopped there",
                where,
            )
        )
    elif content.over_limit:
        findings.append(
            Finding(
                Severity.HIGH,
                "limit.declared_bytes",
                f"the content is larger than the limit ({limit} bytes); the scan stopped there",
                where,
            )
        )
    if content.memory_limited:
        findings.append(
            Finding(
                Severity.HIGH,
                "limit.decompression_memory",
                f"the {codec_name(fmt)} header asks for more memory than the limit "
                f"({DECODER_MEMORY_LIMIT} bytes) to decompress; not scanned",
                where,
            )
        )
    elif content.error is not None:
        findings.append(
            Finding(
                Severity.HIGH,
                "archive.corrupt",
                f"unreadable {codec_name(fmt)} stream after {content.produced} bytes: "
                f"{content.error}",
                where,
            )
        )
    if content.trailing:
        findings.append(
            Finding(
                Severity.LOW,
                "compression.trailing_data",
                f"data after the last {codec_name(fmt)} stream that is no {codec_name(fmt)} "
                "stream; readers stop before it (not scanned)",
                location,
            )
        )
    return findings


def _scan_nested(
    body: BinaryIO, *, size: int, location: str, policy: SecurityPolicy, depth: int
) -> list[Finding]:
    if depth + 1 > policy.max_archive_depth:
        return [_too_deep(location, policy=policy)]
    limit = min(size if size >= 0 else policy.max_file_bytes, policy.max_file_bytes)
    with private_dir() as tmp:
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


def scan_archive(
    path: Path, *, location: str, policy: SecurityPolicy, depth: int = 1
) -> list[Finding]:
    """Findings for the zip, tar (plain or gzip) or 7z at ``path``, at nesting ``depth``."""
    size = path.stat().st_size
    if bundles.container_kind(path) == "zip":
        from validators.security.zip_scan import scan_zip

        # the zip scanner streams its members through this module's scan_stream
        return scan_zip(
            path, size=size, location=location, policy=policy, depth=depth, scan=scan_stream
        )
    try:
        listing = list_archive(path, policy=policy)
    except TarMetadataTooLarge as exc:
        return [Finding(Severity.HIGH, "limit.tar_header", str(exc), location)]
    except EncryptedArchive as exc:
        return [Finding(Severity.HIGH, "archive.encrypted", f"{exc}: not scanned", location)]
    except tarfile.ReadError:
        if archive_kind(path) == "tar" and _is_gzip(path):
            return _scan_gunzipped(path, location=location, policy=policy, depth=depth)
        return [Finding(Severity.HIGH, "archive.corrupt", "not a readable archive", location)]
    except READ_ERRORS as exc:
        return [Finding(Severity.HIGH, "archive.corrupt", f"unreadable archive: {exc}", location)]
    if listing.kind == "tar" and listing.compressed and not listing.members:
        # no tar member before the end blocks (a gzip of zeros): nothing a tar reader unpacks;
        # what a gunzip of it gives is still read, and bounded
        return _scan_gunzipped(path, location=location, policy=policy, depth=depth)
    findings = check_members(listing, location=location, policy=policy, archive_bytes=size)
    header_findings = list(findings)
    if any(f.rule_id.startswith("limit.") for f in findings):
        return findings
    onnx_members: list[str] = []
    try:
        for member, stream in _member_streams(path, listing, location=location, findings=findings):
            where = f"{location}:{member.name}"
            try:
                result = scan_stream(
                    stream,
                    size=member.size,
                    location=where,
                    policy=policy,
                    depth=depth,
                    name=member.name,
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
            findings += scan_onnx_members(
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
    """A gzip file that holds no tar: its decompressed content is scanned as a member
    (bounded, as every compressed stream is)."""
    with path.open("rb") as fh:
        return _scan_compressed(
            fh,
            fmt=Format.GZIP,
            size=path.stat().st_size,
            location=location,
            policy=policy,
            depth=depth - 1,
        )
