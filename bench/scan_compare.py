"""Detection and false positives: modelreg's scanner against picklescan, ModelScan and fickling.

    python -m bench.scan_compare [--json out.json]

Two labelled corpora, each scanned by every scanner in the same run:

- ``pickles``: the one the tests use (``tests/support/corpus_pickle.py``): every malicious
  and benign pickle, each as a bare ``.pkl`` file and again inside a PyTorch-style zip under
  the member name ``archive/data.pkl``;
- ``formats``: issue 16's classes (``tests/support/corpus_formats.py``): pickle header
  tricks, object arrays, compressed and irregular containers (joblib's compressors, 7z, zips
  ``zipfile`` refuses), Keras, SavedModel, TorchScript, gadgets and framing, with a benign
  set made by the real libraries.

A scanner *detects* a malicious file when it reports it as unsafe (modelreg: verdict
malicious; picklescan: an infected file; ModelScan: an issue of any severity; fickling:
"likely overtly malicious" or worse), and raises a *false positive* when it reports a benign one
so. Scan errors are counted apart: an error is not a detection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_corpus(root: Path) -> dict[str, bool]:
    """Write the corpus under ``root``; file name → malicious?"""
    from tests.support.corpus_pickle import benign_samples, malicious_samples, sklearn_samples

    labels: dict[str, bool] = {}
    samples = [(s, True) for s in malicious_samples()]
    samples += [(s, False) for s in benign_samples() + sklearn_samples()]
    for sample, malicious in samples:
        name = sample.id.replace("/", "_")
        (root / f"{name}.pkl").write_bytes(sample.data)
        labels[f"{name}.pkl"] = malicious
        with zipfile.ZipFile(root / f"{name}.pt", "w") as zf:
            zf.writestr("archive/data.pkl", sample.data)
            zf.writestr("archive/version", "3\n")
        labels[f"{name}.pt"] = malicious
    return labels


def scan_modelreg(root: Path, names: list[str]) -> dict[str, str]:
    from validators.security import scan_artifact

    out = {}
    for name in names:
        report = scan_artifact(root / name)
        out[name] = (
            "unsafe"
            if report.verdict == "malicious"
            else ("error" if report.status == "Failed" else "safe")
        )
    return out


def scan_picklescan(root: Path, names: list[str]) -> dict[str, str]:
    from picklescan.scanner import scan_directory_path, scan_file_path

    out = {}
    for name in names:
        path = root / name
        try:
            result = (scan_directory_path if path.is_dir() else scan_file_path)(str(path))
        except Exception:
            out[name] = "error"
            continue
        if result.infected_files:
            out[name] = "unsafe"
        elif result.scan_err:
            out[name] = "error"
        else:
            out[name] = "safe"
    return out


def scan_modelscan(root: Path, names: list[str]) -> dict[str, str]:
    report_path = root.parent / "modelscan.json"
    subprocess.run(  # the modelscan CLI, on our own temporary folder
        [
            str(Path(sys.executable).with_name("modelscan")),
            "-p",
            str(root),
            "-r",
            "json",
            "-o",
            str(report_path),
        ],
        capture_output=True,
        check=False,
    )
    report = json.loads(report_path.read_text())
    flagged = {Path(i["source"]).parts[0] for i in report.get("issues", [])}
    errored = {
        Path(str(e.get("source", ""))).parts[0] for e in report.get("errors", []) if e.get("source")
    }
    return {n: "unsafe" if n in flagged else "error" if n in errored else "safe" for n in names}


def scan_fickling(root: Path, names: list[str]) -> dict[str, str]:
    """fickling's ``scan_file``: unsafe from ``LIKELY_OVERTLY_MALICIOUS`` up. Its lower grades
    (``LIKELY_UNSAFE``) flag every import outside its allow-list, numpy's array rebuilder
    included, so counting them would make every real model a false positive."""
    from fickling.analysis import Severity
    from fickling.loader import scan_file

    out = {}
    for name in names:
        path = root / name
        verdicts = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            try:
                result = scan_file(str(file), graceful=True)
            except Exception:
                verdicts.append("error")
                continue
            if result.severity >= Severity.LIKELY_OVERTLY_MALICIOUS:
                verdicts.append("unsafe")
            else:
                verdicts.append("error" if result.errors else "safe")
        out[name] = next((v for v in ("unsafe", "error") if v in verdicts), "safe")
    return out


def build_format_corpus(root: Path) -> dict[str, bool]:
    from tests.support.corpus_formats import write_format_corpus

    return write_format_corpus(root)


CORPORA: dict[str, Callable[[Path], dict[str, bool]]] = {
    "pickles": build_corpus,
    "formats": build_format_corpus,
}
SCANNERS: dict[str, Callable[[Path, list[str]], dict[str, str]]] = {
    "modelreg": scan_modelreg,
    "picklescan": scan_picklescan,
    "modelscan": scan_modelscan,
    "fickling": scan_fickling,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", help="comma-separated corpora (default: all)")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(CORPORA)
    rows: list[dict[str, Any]] = []
    for corpus in chosen:
        rows += _compare(corpus)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _compare(corpus: str) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="modelreg-scan-compare-"))
    try:
        root = tmp / "corpus"
        root.mkdir()
        labels = CORPORA[corpus](root)
        names = sorted(labels)
        verdicts = {scanner: scan(root, names) for scanner, scan in SCANNERS.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    malicious = [n for n in names if labels[n]]
    benign = [n for n in names if not labels[n]]
    rows: list[dict[str, Any]] = []
    print(f"corpus {corpus}: {len(malicious)} malicious and {len(benign)} benign samples")
    print(
        f"{'scanner':11} {'detected':>14} {'missed':>7} {'errors on malicious':>20} "
        f"{'false positives':>16} {'errors on benign':>17}"
    )
    for scanner, found in verdicts.items():
        detected = sum(found[n] == "unsafe" for n in malicious)
        row = {
            "corpus": corpus,
            "scanner": scanner,
            "malicious": len(malicious),
            "detected": detected,
            "missed": sum(found[n] == "safe" for n in malicious),
            "errorsOnMalicious": sum(found[n] == "error" for n in malicious),
            "benign": len(benign),
            "falsePositives": sum(found[n] == "unsafe" for n in benign),
            "errorsOnBenign": sum(found[n] == "error" for n in benign),
            "missedFiles": [n for n in malicious if found[n] != "unsafe"],
            "falsePositiveFiles": [n for n in benign if found[n] != "safe"],
        }
        rows.append(row)
        print(
            f"{scanner:11} {detected:>5}/{len(malicious)} ({detected / len(malicious):5.1%}) "
            f"{row['missed']:>7} {row['errorsOnMalicious']:>20} {row['falsePositives']:>16} "
            f"{row['errorsOnBenign']:>17}"
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
