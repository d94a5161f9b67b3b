"""What the scanner knows of an archive before it reads a member: its listing and header checks
(from ``registry.bundles``, which the model server's extraction shares, turned into findings),
the bound on decompressed bytes, and a private extraction for the members that must be read
from a file (ONNX, whose external data resolves inside the extraction).

``archives`` (tar, 7z, compressed streams, member content) and ``zip_scan`` (zips) both build
on this module; neither imports the other's internals through it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from registry import bundles
from registry.bundles import BundleLimits, BundleProblem, Listing, UnsafeBundle
from registry.formats import Format
from validators.report import Finding, Severity
from validators.security.claims import claimed_format
from validators.security.policy import SecurityPolicy

__all__ = [
    "StreamResult",
    "StreamScanner",
    "UnsafeArchive",
    "check_members",
    "decompression_limit",
    "finding_of",
    "limits_of",
    "list_archive",
    "private_dir",
    "safe_extract",
    "scan_onnx_members",
    "torch_like",
]


@dataclass
class StreamResult:
    findings: list[Finding] = field(default_factory=list)
    fmt: Format = Format.UNKNOWN
    is_pickle: bool = False
    #: how the content claimed ``fmt`` ("named *.onnx") when the sniffers could not name it
    claimed: str = ""


class StreamScanner(Protocol):
    """``archives.scan_stream``'s signature: how the zip scanner reads each member's content,
    without importing the module that imports it."""

    def __call__(
        self,
        stream: IO[bytes],
        *,
        size: int,
        location: str,
        policy: SecurityPolicy,
        depth: int,
        name: str | None = None,
        declared: str | None = None,
    ) -> StreamResult: ...


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


def decompression_limit(compressed: int, *, policy: SecurityPolicy) -> int:
    """How many bytes ``compressed`` bytes may decompress to: the compression ratio (above its
    floor), and never more than ``max_declared_bytes``. An unknown size (< 0) gets the latter."""
    if compressed < 0:
        return policy.max_declared_bytes
    by_ratio = int(policy.max_compression_ratio * max(compressed, 1))
    return min(max(policy.compression_ratio_floor_bytes, by_ratio), policy.max_declared_bytes)


@contextmanager
def private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="modelreg-scan-"))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def torch_like(names: list[str]) -> bool:
    return any(
        len(parts) == 2 and parts[1] == "data.pkl" for parts in (n.split("/") for n in names)
    )


def scan_onnx_members(
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
    with private_dir() as tmp:
        root = tmp / "bundle"
        safe_extract(path, root, policy=policy)
        for name in names:
            findings += scan_onnx(
                root / name,
                policy=policy,
                location=f"{location}:{name}",
                root=root,
                # a member only sniffed as ONNX's protobuf (a float storage in a checkpoint
                # may be) and not named as one is unknown content when it does not parse
                claimed=claimed_format(name) is Format.ONNX,
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
