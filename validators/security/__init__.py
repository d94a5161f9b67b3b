"""The security scanner. It reads artifacts as data: it never unpickles, imports or executes
anything from them.

``scan_artifact(path, policy)`` scans a file or a folder (every file, recursively; symlinks
are reported, never followed) and returns a frozen ``ScanReport``. Formats are told from
content, not names (``formats``): ONNX (``onnx_scan``), pickles under any name
(``pickle``), safetensors (``safetensors_scan``), zip and tar bundles (``archives``).

The verdict, from the findings at or above ``policy.threshold``:

- ``malicious``: a security finding (the scan outranks everything else);
- ``too-large``: a resource limit was hit (rule ``limit.*``), so the scan stopped: fail-closed;
- ``error``: the scanner could not read a file (``scanner.error``, ``*.corrupt``);
- ``clean`` otherwise, the only verdict whose status is ``Passed``.

Limit and scanner-error findings are ``HIGH``, so they fail a scan at the default threshold.
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
import time
import zipfile
from pathlib import Path

from registry.formats import ARCHIVE_FORMATS, Format, looks_like_h5
from registry.vocabulary import CheckStatus
from validators.report import Finding, ScanReport, ScanVerdict, Severity
from validators.security.claims import claimed_format
from validators.security.policy import DEFAULT_POLICY, SecurityPolicy

__all__ = ["SCANNER_VERSION", "scan_artifact", "verdict_of"]

#: Bumped whenever a change to the scanner may change a verdict.
SCANNER_VERSION = "1.0"

#: Rule-id prefixes that mean "a resource limit stopped the scan".
LIMIT_PREFIXES = ("limit.", "pickle.limits")


def _category(rule_id: str) -> ScanVerdict:
    if rule_id.startswith(LIMIT_PREFIXES) or rule_id.endswith(".limit"):
        return "too-large"
    if rule_id == "scanner.error" or rule_id.endswith(".corrupt"):
        return "error"
    return "malicious"


def verdict_of(
    findings: list[Finding] | tuple[Finding, ...], *, policy: SecurityPolicy
) -> ScanVerdict:
    """``malicious`` outranks ``too-large``, which outranks ``error``; else ``clean``.

    Security findings count from ``policy.threshold`` up; limit and scanner-error findings
    (``HIGH``) always count, whatever the threshold: the scan is fail-closed.
    """
    failing = set()
    for f in findings:
        category = _category(f.rule_id)
        if policy.fails(f.severity) or (category != "malicious" and f.severity >= Severity.HIGH):
            failing.add(category)
    for verdict in ("malicious", "too-large", "error"):
        if verdict in failing:
            return verdict
    return "clean"


def scan_artifact(
    path: Path, policy: SecurityPolicy | None = None, *, declared: str | None = None
) -> ScanReport:
    """Scan the file or folder at ``path``. Never raises for a bad artifact: a scanner failure
    on a file becomes a ``scanner.error`` finding and the verdict ``error``.

    ``declared`` is the version's declared artifact format, if any: a single file that does
    not parse as what it is declared to be is a finding (``claims``), as is any file whose
    name claims a format it does not parse as."""
    policy = policy or DEFAULT_POLICY
    started = time.monotonic()
    findings: list[Finding] = []
    scanned: list[str] = []
    total = 0
    path = Path(path)
    try:
        if path.is_symlink():
            findings.append(_symlink_finding(path, root=path.parent, location=path.name))
        elif path.is_dir():
            root = path.resolve()
            external_data: set[Path] = set()
            for file, location in _walk(root, findings):
                total += _scan_one(
                    file,
                    root=root,
                    location=location,
                    policy=policy,
                    out=findings,
                    external_data=external_data,
                )
                scanned.append(location)
            findings = _drop_unknown_external_data(findings, root=root, claimed=external_data)
        elif path.exists() and not path.is_file():
            findings.append(
                Finding(
                    Severity.HIGH,
                    "artifact.special_file",
                    "device, FIFO or socket; not opened",
                    path.name,
                )
            )
        elif path.exists():
            total += _scan_one(
                path,
                root=path.resolve().parent,
                location=path.name,
                policy=policy,
                out=findings,
                declared=declared,
            )
            scanned.append(path.name)
        else:
            findings.append(
                Finding(Severity.HIGH, "scanner.error", "no such file or folder", str(path))
            )
    except Exception as exc:  # a bug in the walk must still give a report, never a crash
        findings.append(
            Finding(
                Severity.HIGH,
                "scanner.error",
                f"the scan stopped: {type(exc).__name__}: {exc}",
                path.name or str(path),
            )
        )
    verdict = verdict_of(findings, policy=policy)
    return ScanReport(
        # CheckStatus values, as strings: the scanner does not import the registry
        status=CheckStatus.PASSED if verdict == "clean" else CheckStatus.FAILED,
        verdict=verdict,
        findings=tuple(findings),
        files_scanned=tuple(scanned),
        bytes_scanned=total,
        duration_seconds=round(time.monotonic() - started, 6),
        tool_versions=tool_versions(),
    )


def tool_versions() -> dict[str, str]:
    """The scanner's and modelreg's versions, and onnx's once this process has loaded the ONNX
    scanner (so a report that scanned an ONNX model always has it, and a pickle's scan does not
    import onnx for it). Read from the modules, not ``importlib.metadata``: importing that
    costs more than a small file's scan."""
    import registry

    versions = {"modelreg-scanner": SCANNER_VERSION, "modelreg": registry.__version__}
    if "validators.security.onnx_scan" in sys.modules:
        versions["onnx"] = str(sys.modules["onnx"].__version__)
    return versions


def _walk(root: Path, findings: list[Finding]) -> list[tuple[Path, str]]:
    """Every regular file under ``root`` with its location, in a stable order; symlinks and
    special files become findings and are neither followed nor opened."""
    files: list[tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename).relative_to(root).as_posix() if exc.filename else "."
        findings.append(
            Finding(Severity.HIGH, "scanner.error", f"cannot list folder: {exc.strerror}", where)
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        base = Path(dirpath)
        dirnames.sort()
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                location = (base / name).relative_to(root).as_posix()
                findings.append(_symlink_finding(base / name, root=root, location=location))
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for name in sorted(filenames):
            file = base / name
            location = file.relative_to(root).as_posix()
            try:
                mode = file.lstat().st_mode
            except OSError as exc:
                findings.append(
                    Finding(
                        Severity.HIGH, "scanner.error", f"cannot stat: {exc.strerror}", location
                    )
                )
                continue
            if stat.S_ISLNK(mode):
                findings.append(_symlink_finding(file, root=root, location=location))
            elif not stat.S_ISREG(mode):
                findings.append(
                    Finding(
                        Severity.HIGH,
                        "artifact.special_file",
                        "device, FIFO or socket in the artifact; not opened",
                        location,
                    )
                )
            else:
                files.append((file, location))
    return files


def _symlink_finding(link: Path, *, root: Path, location: str) -> Finding:
    target = os.readlink(link)
    resolved = posixpath.normpath(
        posixpath.join(
            link.parent.relative_to(root).as_posix() if link.parent != root else "", target
        )
    )
    outside = os.path.isabs(target) or resolved == ".." or resolved.startswith("../")
    return Finding(
        Severity.CRITICAL if outside else Severity.HIGH,
        "artifact.symlink",
        f"symlink to {target!r}{' outside the artifact' if outside else ''}; not followed",
        location,
    )


def _drop_unknown_external_data(
    findings: list[Finding], *, root: Path, claimed: set[Path]
) -> list[Finding]:
    """A raw tensor file that an ONNX model in the folder names as its external data is a
    known format after all: its ``format.unknown`` note is noise. (It was still checked for
    pickles, and the model's scan checked its path and size.)"""
    known = {p.relative_to(root).as_posix() for p in claimed if p.is_relative_to(root)}
    return [f for f in findings if not (f.rule_id == "format.unknown" and f.location in known)]


def _scan_one(
    path: Path,
    *,
    root: Path,
    location: str,
    policy: SecurityPolicy,
    out: list[Finding],
    external_data: set[Path] | None = None,
    declared: str | None = None,
) -> int:
    """Scan one regular file into ``out``; return its size. Any scanner failure becomes a
    ``scanner.error`` finding, so one bad file never stops the scan of the others. ONNX
    models add the external-data files they name to ``external_data``."""
    size = 0
    try:
        size = path.lstat().st_size
        out.extend(
            _scan_file(
                path,
                size=size,
                root=root,
                location=location,
                policy=policy,
                external_data=external_data,
                declared=declared,
            )
        )
    except Exception as exc:
        out.append(
            Finding(
                Severity.HIGH,
                "scanner.error",
                f"the scanner failed on this file: {type(exc).__name__}: {exc}",
                location,
            )
        )
    return size


def _scan_file(
    path: Path,
    *,
    size: int,
    root: Path,
    location: str,
    policy: SecurityPolicy,
    external_data: set[Path] | None = None,
    declared: str | None = None,
) -> list[Finding]:
    from registry.formats import read_head, sniff
    from validators.security.archives import scan_archive, scan_stream
    from validators.security.pickle import looks_like_pickle, scan_pickle

    if size > policy.max_file_bytes:
        return [
            Finding(
                Severity.HIGH,
                "limit.file_bytes",
                f"file of {size} bytes is over the limit ({policy.max_file_bytes}); not scanned",
                location,
            )
        ]
    with path.open("rb") as fh:
        head = read_head(fh)
        fmt = sniff(head, size=size)
        if looks_like_h5(head):
            from validators.security.keras_scan import scan_h5  # imported for an H5 file alone

            return scan_h5(path, location=location)
        if fmt in ARCHIVE_FORMATS:
            return scan_archive(path, location=location, policy=policy)
        claim = claimed_format(path.name, declared=declared)
        if fmt is Format.ONNX and claim is not Format.SAVED_MODEL:
            # imported only for an ONNX file: ``onnx`` costs ~0.8 s to import (ml_dtypes)
            from validators.security.onnx_scan import scan_onnx

            findings = scan_onnx(
                path,
                policy=policy,
                location=location,
                root=root,
                external_data=external_data,
                claimed=claim is Format.ONNX,
            )
            if looks_like_pickle(head, size=size):
                fh.seek(0)
                findings += scan_pickle(fh, location=location, policy=policy)
            return findings
        fh.seek(0)
        result = scan_stream(
            fh,
            size=size,
            location=location,
            policy=policy,
            depth=0,
            name=path.name,
            declared=declared,
        )
    if result.fmt is Format.ONNX:  # claimed ONNX, and not sniffed as it: parse it as ONNX
        from validators.security.onnx_scan import scan_onnx

        result.findings += scan_onnx(path, policy=policy, location=location, root=root)
    if zipfile.is_zipfile(path):
        # a polyglot: a zip reader (numpy, zipfile) sees members a pickle reader does not
        result.findings.append(
            Finding(
                Severity.MEDIUM,
                "format.polyglot",
                f"{result.fmt} file that is also a zip archive; both were scanned",
                location,
            )
        )
        result.findings += scan_archive(path, location=location, policy=policy)
        return result.findings
    if result.fmt is Format.UNKNOWN and not result.is_pickle:
        result.findings.append(
            Finding(
                Severity.LOW,
                "format.unknown",
                "not a format the scanner knows (ONNX, pickle, safetensors, npy, zip, tar, "
                "7z, Keras, SavedModel) and claims none; checked for pickles only",
                location,
            )
        )
    return result.findings
