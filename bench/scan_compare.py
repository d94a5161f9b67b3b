"""Detection and false positives: modelreg's scanner against picklescan and ModelScan.

    python -m bench.scan_compare [--json out.json]

The corpus is the labelled one the tests use (``tests/support/corpus_pickle.py``): every
malicious and benign pickle, each as a bare ``.pkl`` file and again inside a PyTorch-style zip
under the member name ``archive/data.pkl``. A scanner *detects* a malicious file when it
reports it as unsafe (modelreg: status Failed; picklescan: an infected file; ModelScan: an
issue of any severity), and raises a *false positive* when it reports a benign one so.
Scan errors are counted apart: an error is not a detection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
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
    from picklescan.scanner import scan_file_path

    out = {}
    for name in names:
        try:
            result = scan_file_path(str(root / name))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="modelreg-scan-compare-"))
    try:
        root = tmp / "corpus"
        root.mkdir()
        labels = build_corpus(root)
        names = sorted(labels)
        verdicts = {
            "modelreg": scan_modelreg(root, names),
            "picklescan": scan_picklescan(root, names),
            "modelscan": scan_modelscan(root, names),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    malicious = [n for n in names if labels[n]]
    benign = [n for n in names if not labels[n]]
    rows: list[dict[str, Any]] = []
    print(
        f"corpus: {len(malicious)} malicious and {len(benign)} benign files "
        "(.pkl and PyTorch-style .pt)"
    )
    print(
        f"{'scanner':11} {'detected':>14} {'missed':>7} {'errors on malicious':>20} "
        f"{'false positives':>16} {'errors on benign':>17}"
    )
    for scanner, found in verdicts.items():
        detected = sum(found[n] == "unsafe" for n in malicious)
        row = {
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
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
