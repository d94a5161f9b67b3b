"""Files written by the real ``torch.save`` pass the scan, and a payload slipped into one is
caught. Skipped where PyTorch is not installed (CI installs it: see .ci/run)."""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest

from validators.security import scan_artifact

torch = pytest.importorskip("torch", reason="PyTorch is not installed")


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def _module() -> Any:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _state_dict() -> Any:
    return collections.OrderedDict(
        w=torch.randn(3, 4), b=torch.zeros(4, dtype=torch.float16), i=torch.arange(5)
    )


@pytest.mark.parametrize(
    ("name", "make"),
    [
        pytest.param("state_dict.pt", lambda p: torch.save(_state_dict(), p), id="state-dict"),
        pytest.param(
            "module_sd.pth", lambda p: torch.save(_module().state_dict(), p), id="module-state-dict"
        ),
        pytest.param(
            "checkpoint.pt",
            lambda p: torch.save(
                {
                    "epoch": 3,
                    "model": _module().state_dict(),
                    "opt": torch.optim.Adam(_module().parameters()).state_dict(),
                },
                p,
            ),
            id="checkpoint-with-optimizer",
        ),
        pytest.param(
            "legacy.pt",
            lambda p: torch.save(_state_dict(), p, _use_new_zipfile_serialization=False),
            id="legacy-format",
        ),
        pytest.param("module.pt", lambda p: torch.save(_module(), p), id="whole-module"),
    ],
)
def test_real_torch_files_pass(tmp_path: Path, name: str, make: Any) -> None:
    path = tmp_path / name
    make(path)
    report = scan_artifact(path)
    assert report.status == "Passed", [f.to_dict() for f in report.findings]
    assert report.verdict == "clean"


@pytest.mark.parametrize(
    "member",
    [
        pytest.param("state_dict/data.pkl", id="replacing-data-pkl"),
        pytest.param("state_dict/data/77", id="as-a-storage-file"),
        pytest.param("state_dict/.data/extra", id="under-an-unusual-name"),
    ],
)
def test_a_payload_in_a_real_torch_zip_is_caught(tmp_path: Path, member: str) -> None:
    clean = tmp_path / "state_dict.pt"
    torch.save(_state_dict(), clean)
    dirty = tmp_path / "dirty.pt"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(dirty, "w") as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info))
        dst.writestr(member, pickle.dumps(_Evil(), protocol=2))  # built, never loaded
    report = scan_artifact(dirty)
    assert report.status == "Failed"
    assert report.verdict == "malicious"
    assert any(
        f.rule_id == "pickle.dangerous-global" and member in f.location for f in report.findings
    ), [f.to_dict() for f in report.findings]
