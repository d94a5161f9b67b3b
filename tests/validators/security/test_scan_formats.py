"""``scan_artifact`` reads every format of issue 16 through its own scanner: SavedModel folders,
legacy Keras H5, ``.keras`` zips and TorchScript archives, as users upload them (a folder or a
single file), with no false alarm on the real ones. Nothing is ever loaded.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from validators.report import ScanReport, Severity
from validators.security import scan_artifact

FIXTURES = Path(__file__).parent / "fixtures" / "savedmodel"
BENIGN_SAVED_MODELS = sorted(p.name for p in FIXTURES.iterdir() if p.name.startswith("benign_"))
MALICIOUS_SAVED_MODELS = sorted(
    p.name for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("benign_")
)


def _failing(report: ScanReport) -> list[tuple[str, str]]:
    return [(f.rule_id, f.message) for f in report.findings if f.severity >= Severity.HIGH]


def _saved_model_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    (folder / "variables").mkdir(parents=True)
    shutil.copy(FIXTURES / name / "saved_model.pb", folder / "saved_model.pb")
    (folder / "variables" / "variables.index").write_bytes(b"\0" * 16)
    return folder


@pytest.mark.parametrize("name", BENIGN_SAVED_MODELS)
def test_a_real_saved_model_folder_scans_clean(tmp_path: Path, name: str) -> None:
    report = scan_artifact(_saved_model_folder(tmp_path, name))
    assert report.verdict == "clean", _failing(report)
    assert not [f for f in report.findings if f.rule_id.startswith(("savedmodel.", "onnx."))]


@pytest.mark.parametrize("name", MALICIOUS_SAVED_MODELS)
def test_a_saved_model_with_a_file_or_python_op_fails_naming_the_node(
    tmp_path: Path, name: str
) -> None:
    report = scan_artifact(_saved_model_folder(tmp_path, name))
    assert report.verdict == "malicious"
    [finding] = [f for f in report.findings if f.rule_id == "savedmodel.dangerous-op"]
    assert "node:" in finding.location
    assert finding.location.startswith("saved_model.pb#")


def test_a_saved_model_pb_that_does_not_parse_is_high(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01\x12\xff\xff\xff\xff\x0f")
    report = scan_artifact(folder)
    assert report.status == "Failed"
    assert any(f.rule_id == "savedmodel.malformed" for f in report.findings)


def _lambda_config() -> bytes:
    return json.dumps(
        {
            "class_name": "Sequential",
            "config": {
                "name": "seq",
                "layers": [
                    {"class_name": "Dense", "config": {"name": "d", "units": 2}},
                    {
                        "class_name": "Lambda",
                        "config": {"name": "evil", "function": ["4wEAAAAA", None, None]},
                    },
                ],
            },
        }
    ).encode()


def test_a_legacy_h5_with_a_lambda_layer_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = _lambda_config().decode()
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert any(f.rule_id == "keras.lambda" and "evil" in f.location for f in report.findings)


def test_a_keras_zip_with_a_custom_object_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [{"module": "os", "class_name": "system", "config": {"name": "x"}}],
        },
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert any(f.rule_id == "keras.custom-object" for f in report.findings)


# -- TorchScript ----------------------------------------------------------------------------------


def _scripted(tmp_path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: deprecated, still used
        torch.jit.save(torch.jit.script(model.eval()), path)
    return path


def test_a_real_torchscript_archive_scans_clean(tmp_path: Path) -> None:
    for path in (
        _scripted(tmp_path),
        tmp_path / "traced.pt",
    ):
        if not path.exists():
            model = torch.nn.Sequential(torch.nn.Linear(4, 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.trace(model.eval(), torch.randn(1, 4)), path)
        report = scan_artifact(path)
        assert report.verdict == "clean", _failing(report)
        assert not [f for f in report.findings if f.severity >= Severity.MEDIUM], report.findings


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ('    _0 = torch.from_file("/etc/passwd", False, 100)\n', "torchscript.file-access"),
        ("    _0 = ops.evil_namespace.run(input)\n", "torchscript.custom-op"),
        ('    _0 = os.system("true")\n', "torchscript.python-escape"),
        ('    _0 = eval("1")\n', "torchscript.python-escape"),
    ],
)
def test_torchscript_code_that_reaches_outside_is_reported(
    tmp_path: Path, line: str, rule: str
) -> None:
    clean = _scripted(tmp_path)
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("container.py"):
                text = data.decode()
                head, sep, tail = text.partition("    input: Tensor) -> Tensor:\n")
                data = (head + sep + line + tail).encode()
            dst.writestr(info, data)
    report = scan_artifact(evil)
    [finding] = [f for f in report.findings if f.rule_id == rule]
    assert "container.py#line:" in finding.location
    if finding.severity >= Severity.HIGH:
        assert report.verdict == "malicious"


# -- SavedModel bundles, as users upload them ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "verdict"), [("benign_keras", "clean"), ("read_file", "malicious")]
)
def test_a_saved_model_in_a_tar_bundle_is_read_as_one(
    tmp_path: Path, name: str, verdict: str
) -> None:
    folder = _saved_model_folder(tmp_path, name)
    bundle = tmp_path / "model.tar.gz"
    with tarfile.open(bundle, "w:gz") as tf:
        tf.add(folder, arcname="model")
    report = scan_artifact(bundle)
    assert report.verdict == verdict, _failing(report)
    if verdict == "malicious":
        [finding] = [f for f in report.findings if f.rule_id == "savedmodel.dangerous-op"]
        assert finding.location.startswith("model.tar.gz:model/saved_model.pb#")


# -- a file that claims a format and does not parse (issue 16, item 8) -----------------------------

CLAIMS = {
    "weights.safetensors": (
        struct.pack("<Q", 2**40) + b"{}" + b"\0" * 190,
        "safetensors.header_length",
        "header length 1099511627776 runs past the file (200 bytes)",
    ),
    "model.pkl": (b"\xff\xfe not a pickle", "pickle.not-a-pickle", "named *.pkl"),
    "model.joblib": (b"", "pickle.not-a-pickle", "it is empty"),
    "array.npy": (b"just text", "npy.malformed", "named *.npy"),
    "saved_model.pb": (b"\x08\x05\x12\xff", "savedmodel.malformed", ""),
}


@pytest.mark.parametrize("name", list(CLAIMS))
def test_a_file_that_claims_a_format_and_does_not_parse_is_high(tmp_path: Path, name: str) -> None:
    data, rule, words = CLAIMS[name]
    path = tmp_path / name
    path.write_bytes(data)
    report = scan_artifact(path)
    [finding] = [f for f in report.findings if f.rule_id == rule]
    assert finding.severity >= Severity.HIGH
    assert words in finding.message
    assert report.status == "Failed"


@pytest.mark.parametrize("name", list(CLAIMS))
def test_an_archive_member_that_claims_a_format_and_does_not_parse_is_high(
    tmp_path: Path, name: str
) -> None:
    data, rule, _ = CLAIMS[name]
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tf:
        info = tarfile.TarInfo(f"model/{name}")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    report = scan_artifact(bundle)
    [finding] = [f for f in report.findings if f.rule_id == rule]
    assert finding.location.startswith(f"bundle.tar:model/{name}")
    assert report.status == "Failed"


def test_a_truncated_onnx_model_is_high_as_a_file_and_as_a_member(tmp_path: Path) -> None:
    truncated = b"\x08\x07\x12\x07pytorch\x3a\xff\xff\xff\x0f"
    (tmp_path / "model.onnx").write_bytes(truncated)
    report = scan_artifact(tmp_path / "model.onnx")
    assert [f.rule_id for f in report.findings if f.severity >= Severity.HIGH] == ["onnx.corrupt"]
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("model.onnx", truncated)
    report = scan_artifact(bundle)
    assert "onnx.corrupt" in {f.rule_id for f in report.findings}


def test_a_declared_format_is_a_claim_too(tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    path.write_bytes(b"\xff\xfe not a pickle")
    assert scan_artifact(path).verdict == "clean"  # no claim: unknown, LOW
    report = scan_artifact(path, declared="Pickle")
    assert report.status == "Failed"
    assert any(
        f.rule_id == "pickle.not-a-pickle" and "declared Pickle" in f.message
        for f in report.findings
    )


def test_unknown_content_with_no_claim_stays_low(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(np.random.default_rng(3).standard_normal(4096).astype(np.float32).tobytes())
    report = scan_artifact(path)
    assert report.verdict == "clean"
    assert all(f.severity <= Severity.LOW for f in report.findings)
