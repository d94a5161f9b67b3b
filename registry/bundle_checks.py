"""What an archive declares, and whether that is safe: its listing and the header checks.

A :class:`Listing` holds the members (:class:`Member`) an archive's headers declare, read by
``registry.bundles`` (zip, tar) or ``registry.bundles_7z`` (7z). An archive is judged from its
headers before anything is decompressed: member names (absolute paths, ``..``, backslashes,
NUL bytes), links, device files, duplicate names, the member count, the declared total size
and the compression ratio (:func:`check_members`, within :class:`BundleLimits`).

A problem is a :class:`BundleProblem` with a severity name (``LOW`` to ``CRITICAL``) and a rule
id (``archive.path``, ``archive.link``, ``limit.archive_members``, ...); the scanner turns each
into a finding of the same rule id.

``registry.bundles`` re-exports every name here: callers import them from there.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

__all__ = [
    "ArchiveKind",
    "BundleKind",
    "BundleLimits",
    "BundleProblem",
    "Listing",
    "Member",
    "MemberKind",
    "SeverityName",
    "check_members",
    "unsafe_name",
]

GIB = 1024**3

MemberKind = Literal["file", "dir", "symlink", "hardlink", "device", "other"]
#: What the model server unpacks.
BundleKind = Literal["zip", "tar"]
#: What the scanner lists and reads: the bundles, and 7z.
ArchiveKind = Literal["zip", "tar", "7z"]
SeverityName = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
_RANK: dict[str, int] = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
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
    #: The content cannot be read without a password (a 7z whose coders include AES).
    encrypted: bool = False


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
    compressed_whole = listing.kind in ("tar", "7z") and listing.compressed
    if compressed_whole and floor < total > ratio * max(archive_bytes, 1):
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
    if listing.encrypted:
        problems.append(
            BundleProblem(
                "HIGH",
                "archive.encrypted",
                "the content is encrypted: it cannot be scanned without the password",
                location,
            )
        )
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
