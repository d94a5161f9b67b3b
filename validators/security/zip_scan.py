"""Zips, read by the scanner's permissive reader (``zip_raw``), and the formats that are zips.

``zip_raw`` reads what ``torch.load`` (miniz) and streaming readers read where ``zipfile``
gives up: each irregularity is a ``zip.irregular`` finding (MEDIUM) and the content is
scanned all the same, under both names when the local header names a member differently.
The header checks of ``registry.bundles`` apply to every name a reader may give a member.

Zips that are model formats get their own checks on top of the member scan:

- a PyTorch zip (``<folder>/data.pkl``): its layout (``check_torch_zip``) and, when it is
  TorchScript, its ``code/**/*.py`` (``torchscript_scan``);
- a Keras ``.keras`` zip (root ``config.json`` and ``metadata.json``): its config
  (``keras_scan``).
"""

from __future__ import annotations

import dataclasses
import io
import stat
from pathlib import Path
from typing import IO

from registry import bundles
from registry.bundles import CHUNK, READ_ERRORS, Listing, Member, MemberKind
from registry.formats import Format
from validators.report import Finding, Severity
from validators.security import zip_raw
from validators.security.archive_checks import (
    StreamScanner,
    UnsafeArchive,
    check_members,
    decompression_limit,
    scan_onnx_members,
    torch_like,
)
from validators.security.keras_scan import is_keras_zip, scan_keras_zip
from validators.security.pickle import check_torch_zip
from validators.security.policy import SecurityPolicy
from validators.security.torchscript_scan import MAX_CODE_BYTES, scan_torchscript_code

_NOTE_RULES = {
    "irregular": ("zip.irregular", Severity.MEDIUM),
    "corrupt": ("archive.corrupt", Severity.HIGH),
    "encrypted": ("archive.encrypted", Severity.HIGH),
}


def _note_finding(note: zip_raw.Note, *, location: str) -> Finding:
    rule, severity = _NOTE_RULES[note.kind]
    return Finding(
        severity, rule, note.message, f"{location}:{note.name}" if note.name else location
    )


def _entry_kind(entry: zip_raw.Entry) -> MemberKind:
    mode = entry.external_attr >> 16 if entry.create_system == 3 else 0
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "device"
    return "dir" if entry.is_dir else "file"


def _zip_listing(raw: zip_raw.RawZip, fh: IO[bytes], *, policy: SecurityPolicy) -> Listing:
    """What the header checks judge: every name a reader may give a member (the central
    name, a local name that differs, a member only streaming readers see)."""
    if raw.declared is not None:
        count = policy.max_archive_members + 1
        return Listing("zip", [Member(f"#{i}", "file", 0) for i in range(count)], True, True)
    central = {e.header_offset for e in raw.entries if e.view == "central"}
    members: list[Member] = []
    for entry in raw.entries:
        if entry.view == "local" and entry.header_offset in central:
            continue  # the same member, read as its local header says: not another name
        kind = _entry_kind(entry)
        link = None
        if kind == "symlink" and entry.size <= bundles.MAX_LINK_TARGET:
            with zip_raw.open_member(fh, entry) as target:
                link = target.read(bundles.MAX_LINK_TARGET).decode("utf-8", "replace")
        for name in entry.names:
            members.append(Member(name, kind, entry.size, entry.compressed, link))
    return Listing("zip", members, compressed=True, truncated=raw.truncated)


def scan_zip(
    path: Path,
    *,
    size: int,
    location: str,
    policy: SecurityPolicy,
    depth: int,
    scan: StreamScanner,
) -> list[Finding]:
    """Findings for the zip at ``path``; ``scan`` reads each member's content
    (``archives.scan_stream``)."""
    with path.open("rb") as fh:
        try:
            raw = zip_raw.read_zip(
                fh,
                size=size,
                max_entries=policy.max_archive_members,
                # a member of unknown size is inflated to find its end: at most this much
                max_member_bytes=decompression_limit(size, policy=policy),
            )
        except zip_raw.ZipUnreadable as exc:
            return [
                Finding(Severity.HIGH, "archive.corrupt", f"not a readable zip: {exc}", location)
            ]
        listing = _zip_listing(raw, fh, policy=policy)
        findings = check_members(listing, location=location, policy=policy, archive_bytes=size)
        if any(f.rule_id.startswith("limit.") for f in findings):
            return findings
        findings += [_note_finding(n, location=location) for n in raw.notes]
        header_findings = list(findings)
        names = [m.name for m in listing.members]
        pytorch = torch_like(names)
        if pytorch:
            findings += check_torch_zip(names, location=location)
        if is_keras_zip(names):
            findings += scan_keras_zip(path, location=location)
        onnx_members: list[str] = []
        central = {e.header_offset for e in raw.entries if e.view == "central"}
        for entry in raw.entries:
            if _entry_kind(entry) != "file":
                continue
            where = f"{location}:{entry.name}"
            if entry.view == "local" and entry.header_offset in central:
                # the same member, as streaming readers read it (another method or size)
                where += "#local-header"
            member_findings, fmt = _scan_zip_member(
                fh, entry, where=where, policy=policy, depth=depth, scan=scan
            )
            if pytorch and _torchscript_code(entry.name):
                member_findings += _scan_code(fh, entry, where=where)
            findings += member_findings
            if entry.local_name is not None:
                # a reader may know it by either name: what it holds is reported under both
                other = f"{location}:{entry.local_name}"
                findings += [
                    dataclasses.replace(f, location=other + f.location[len(where) :])
                    for f in member_findings
                    if f.location.startswith(where) and f.rule_id != "zip.irregular"
                ]
            if fmt is Format.ONNX and entry.view == "central":
                onnx_members.append(entry.name)
    if onnx_members:
        findings += _scan_zip_onnx_members(
            path,
            onnx_members,
            location=location,
            policy=policy,
            header_findings=header_findings,
            irregular=any(f.rule_id == "zip.irregular" for f in findings),
        )
    return findings


def _scan_zip_member(
    fh: IO[bytes],
    entry: zip_raw.Entry,
    *,
    where: str,
    policy: SecurityPolicy,
    depth: int,
    scan: StreamScanner,
) -> tuple[list[Finding], Format]:
    reader = zip_raw.open_member(fh, entry)
    try:
        with io.BufferedReader(reader, CHUNK) as stream:
            result = scan(
                stream,
                size=entry.size,
                location=where,
                policy=policy,
                depth=depth,
                name=entry.name,
            )
            if entry.flags & zip_raw.FLAG_ENCRYPTED:
                # read to the end (its declared size, checked): only the CRC tells data
                # stored plainly under the flag from encrypted data, which cannot be scanned
                while stream.read(CHUNK):
                    pass
    except READ_ERRORS as exc:
        unreadable = Finding(Severity.HIGH, "archive.corrupt", f"unreadable member: {exc}", where)
        return [unreadable], Format.UNKNOWN
    notes = [
        Finding(_NOTE_RULES[n.kind][1], _NOTE_RULES[n.kind][0], n.message, where)
        for n in reader.notes
    ]
    return result.findings + notes, result.fmt


def _scan_zip_onnx_members(
    path: Path,
    names: list[str],
    *,
    location: str,
    policy: SecurityPolicy,
    header_findings: list[Finding],
    irregular: bool,
) -> list[Finding]:
    """ONNX members, scanned from the model server's own extraction (which refuses a zip that
    zipfile cannot read: then they are not extracted, and the server would not serve them)."""
    if irregular:
        return [
            Finding(
                Severity.LOW,
                "archive.onnx_not_extracted",
                "ONNX members were not extracted: the zip is irregular (zip.irregular), and the "
                "model server's extraction (zipfile) refuses it",
                location,
            )
        ]
    try:
        return scan_onnx_members(
            path, names, location=location, policy=policy, header_findings=header_findings
        )
    except UnsafeArchive as exc:
        return list(exc.findings)


def _torchscript_code(name: str) -> bool:
    """``<folder>/code/**/*.py``: the TorchScript a ``torch.jit.save`` archive holds."""
    parts = name.split("/")
    return len(parts) > 2 and parts[1] == "code" and name.endswith(".py")


def _scan_code(fh: IO[bytes], entry: zip_raw.Entry, *, where: str) -> list[Finding]:
    try:
        with zip_raw.open_member(fh, entry) as member:
            source = member.read(MAX_CODE_BYTES + 1)
    except READ_ERRORS as exc:
        return [Finding(Severity.HIGH, "archive.corrupt", f"unreadable member: {exc}", where)]
    return scan_torchscript_code(source, location=where)
