"""The functional check of formats other than ONNX: real models load (and predict), hostile
safetensors headers are named findings, and what cannot be checked is Skipped saying why."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from registry.vocabulary import ArtifactFormat, CheckStatus
from validators.functional import FunctionalReport
from validators.functional.other_formats import check_other_format
from validators.run import validate_artifact


def _safetensors(
    path: Path, header: dict[str, object], data: bytes, *, length: int | None = None
) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _rules(report: FunctionalReport) -> list[str]:
    return [f.rule_id for f in report.findings]


def _logistic() -> object:
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((40, 4))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def test_a_joblib_estimator_loads_and_predicts_in_the_child(tmp_path: Path) -> None:
    import joblib

    joblib.dump(_logistic(), tmp_path / "m.joblib")
    phases: list[str] = []

    report = validate_artifact(
        tmp_path / "m.joblib",
        workdir=tmp_path,
        fmt=ArtifactFormat.JOBLIB,
        parameters=None,
        on_phase=phases.append,
    )

    assert report["securityStatus"] == CheckStatus.PASSED, report["security"]
    assert report["functionalStatus"] == CheckStatus.PASSED, report["functional"]
    loaded = report["functional"]["loaded"]
    assert loaded["type"].endswith("LogisticRegression")
    assert loaded["predict"] == {"inputShape": [1, 4], "outputShape": [1], "outputDtype": "int64"}
    assert phases == ["scan", "load", "run"]
    assert report["benchmark"] is None


def test_a_pickle_predicts_on_the_declared_input_shape(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(_logistic()))

    report = check_other_format(path, fmt=ArtifactFormat.PICKLE, parameters={"inputShape": [3, 4]})

    assert report.status == CheckStatus.PASSED, report.findings
    assert report.to_dict()["loaded"]["predict"]["outputShape"] == [3]


def test_a_predict_that_fails_on_the_sample_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(_logistic()))

    report = check_other_format(path, fmt=ArtifactFormat.PICKLE, parameters={"inputShape": [2, 7]})

    assert report.status == CheckStatus.FAILED
    assert _rules(report) == ["functional.predict"]


def test_a_pickle_the_scan_refuses_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "m.pkl"
    # os.system("touch pwned"), built by hand: loading it would create the marker.
    path.write_bytes(
        b"\x80\x04cposix\nsystem\n" + pickle.dumps(f"touch {marker}")[2:-1] + b"\x85R."
    )

    report = validate_artifact(path, workdir=tmp_path, fmt=ArtifactFormat.PICKLE, parameters=None)

    assert report["securityStatus"] == CheckStatus.FAILED
    assert report["functionalStatus"] == CheckStatus.SKIPPED
    assert not marker.exists()


def test_a_torch_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(3, 2), "b": torch.zeros(2)}, tmp_path / "w.pt")

    report = validate_artifact(
        tmp_path / "w.pt", workdir=tmp_path, fmt=ArtifactFormat.PYTORCH, parameters=None
    )

    assert report["securityStatus"] == CheckStatus.PASSED, report["security"]
    assert report["functionalStatus"] == CheckStatus.PASSED, report["functional"]
    assert report["functional"]["loaded"]["parameterCount"] == 8


def test_a_whole_pickled_module_is_refused_by_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pt")

    report = check_other_format(tmp_path / "m.pt", fmt=ArtifactFormat.PYTORCH)

    assert report.status == CheckStatus.FAILED
    assert _rules(report) == ["functional.torch-load"]
    assert "state_dict" in report.findings[0].message


def test_a_format_that_cannot_be_loaded_is_skipped_saying_what_would_check_it(
    tmp_path: Path,
) -> None:
    # a real SavedModel graph, so the scan passes (a file named saved_model.pb that does not
    # parse as one fails it)
    fixture = Path(__file__).parent / "security" / "fixtures" / "savedmodel" / "benign_module"
    shutil.copy(fixture / "saved_model.pb", tmp_path / "saved_model.pb")

    report = validate_artifact(
        tmp_path / "saved_model.pb",
        workdir=tmp_path,
        fmt=ArtifactFormat.TF_SAVEDMODEL,
        parameters=None,
    )

    assert report["functionalStatus"] == CheckStatus.SKIPPED
    assert "convert it to ONNX" in report["functional"]["reason"]


def test_safetensors_tensors_are_mapped_and_read(tmp_path: Path) -> None:
    data = np.arange(6, dtype="<f4").tobytes() + np.array([np.nan], dtype="<f4").tobytes()
    path = _safetensors(
        tmp_path / "w.safetensors",
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "n": {"dtype": "F32", "shape": [1], "data_offsets": [24, 28]},
        },
        data,
    )

    report = check_other_format(path, fmt=ArtifactFormat.SAFETENSORS)

    assert report.status == CheckStatus.PASSED, report.findings
    tensors = report.to_dict()["loaded"]["tensors"]
    assert tensors["a"] == {"dtype": "F32", "shape": [2, 3], "nonFinite": 0}
    assert tensors["n"]["nonFinite"] == 1


@pytest.mark.parametrize(
    ("header", "data", "length", "rule"),
    [
        pytest.param(
            {}, b"", 1 << 40, "functional.safetensors.header-length", id="length-past-file"
        ),
        pytest.param(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
            None,
            "functional.safetensors.overlap",
            id="overlapping-offsets",
        ),
        pytest.param(
            {"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}},
            bytes(8),
            None,
            "functional.safetensors.shape",
            id="absurd-shape",
        ),
        pytest.param(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1 << 50]}},
            bytes(8),
            None,
            "functional.safetensors.offsets",
            id="offsets-past-data",
        ),
        pytest.param(
            {"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}},
            bytes(8),
            None,
            "functional.safetensors.dtype",
            id="unknown-dtype",
        ),
    ],
)
def test_hostile_safetensors_headers_are_named_findings(
    tmp_path: Path, header: dict[str, object], data: bytes, length: int | None, rule: str
) -> None:
    path = _safetensors(tmp_path / "w.safetensors", header, data, length=length)

    report = check_other_format(path, fmt=ArtifactFormat.SAFETENSORS)

    assert report.status == CheckStatus.FAILED
    assert rule in _rules(report)
    assert "tensors" not in report.to_dict()["loaded"] or not report.to_dict()["loaded"]["tensors"]


def test_a_header_that_is_not_json_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")

    report = check_other_format(path, fmt=ArtifactFormat.SAFETENSORS)

    assert _rules(report) == ["functional.safetensors.header-json"]
