"""Servable means validated: a bundle that passes validation is served by a real
``modelreg serve-model`` process, and a hostile bundle is refused by both, with the same checks
(``registry.bundles``) and the same loader (``registry.onnx_artifact``)."""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry.bundles import BundleLimits
from registry.storage import HashingReader
from registry.storage.local import LocalStore
from tests.support.model_server import ServerProcess, sha256_of
from validators.run import validate_artifact
from validators.security.archives import limits_of
from validators.security.policy import DEFAULT_POLICY

INFER = "/v2/models/m/infer"
W = np.arange(64 * 8, dtype=np.float32).reshape(64, 8) / 100
B = np.linspace(-1, 1, 8, dtype=np.float32)


def linear_model() -> Any:
    """y = x @ W + b, x: float[batch, 64], W and b stored as external data."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def model_folder(tmp_path: Path) -> Path:
    """``model.onnx`` and its external data ``weights.bin``, as a user bundles them."""
    folder = tmp_path / "src"
    folder.mkdir()
    onnx.save_model(
        linear_model(),
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (folder / "weights.bin").stat().st_size >= W.nbytes
    return folder


def tar_gz(path: Path, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def zip_file(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def bundle_members(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("model.onnx", "weights.bin")}


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


def validate(tmp_path: Path, artifact: Path, **parameters: Any) -> dict[str, Any]:
    workdir = tmp_path / f"work-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    return validate_artifact(artifact, workdir=workdir, fmt="ONNX", parameters=parameters or None)


def infer(url: str) -> list[float]:
    x = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    body = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": x.tolist()}]}
    with httpx.Client(timeout=10) as client:
        answer = client.post(f"{url}{INFER}", json=body)
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(got, (x @ W + B).ravel(), rtol=1e-5, atol=1e-5)
    data: list[float] = got.tolist()
    return data


def test_the_server_holds_bundles_to_the_scanner_limits() -> None:
    assert limits_of(DEFAULT_POLICY) == BundleLimits()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_bundle_that_validates_is_served(
    tmp_path: Path, processes: list[ServerProcess], kind: str
) -> None:
    members = bundle_members(model_folder(tmp_path))
    path = tmp_path / f"bundle.{kind}"
    bundle = tar_gz(path, members) if kind == "tar.gz" else zip_file(path, members)

    report = validate(tmp_path, bundle)
    assert report["securityStatus"] == "Passed", report["security"]["findings"]
    assert report["functionalStatus"] == "Passed", report["functional"]["findings"]
    assert report["functional"]["modelFile"] == "model.onnx"
    assert report["functional"]["signature"] == {
        "inputs": [{"name": "x", "type": "tensor(float)", "shape": ["batch", 64]}],
        "outputs": [{"name": "y", "type": "tensor(float)", "shape": ["batch", 8]}],
    }

    proc = ServerProcess(tmp_path, "--artifact", str(bundle), "--sha256", sha256_of(bundle))
    processes.append(proc)
    proc.wait_ready()
    infer(proc.url)
    assert proc.stop() == 0
    assert f"unpacked the bundle {bundle}" in proc.output()


def test_a_bundle_from_the_store_is_served(tmp_path: Path, processes: list[ServerProcess]) -> None:
    """The local deployer's way: ``--artifact-key``, downloaded into a private folder."""
    bundle = tar_gz(tmp_path / "bundle.tar.gz", bundle_members(model_folder(tmp_path)))
    data_dir = tmp_path / "data"
    key = "models/m1/versions/v1/bundle.tar.gz"
    stored = LocalStore(data_dir / "artifacts").put(
        key, HashingReader([bundle.read_bytes()], max_bytes=1 << 24)
    )
    env = {"MODELREG_DATA_DIR": str(data_dir)}
    proc = ServerProcess(tmp_path, "--artifact-key", key, "--sha256", stored.sha256, env=env)
    processes.append(proc)
    proc.wait_ready()
    infer(proc.url)
    assert proc.stop() == 0


def test_a_bundle_with_two_models_serves_the_one_named(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    members = bundle_members(model_folder(tmp_path))
    junk = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["a"], ["b"])],
            "other",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    members["extra/other.onnx"] = junk.SerializeToString()
    bundle = tar_gz(tmp_path / "bundle.tar.gz", members)
    digest = sha256_of(bundle)

    ambiguous = ServerProcess(tmp_path, "--artifact", str(bundle), "--sha256", digest)
    processes.append(ambiguous)
    assert ambiguous.process.wait(timeout=60) == 1
    assert "holds 2 .onnx files" in ambiguous.output()
    assert "parameters.modelFile" in ambiguous.output()

    named = ServerProcess(
        tmp_path, "--artifact", str(bundle), "--sha256", digest, "--model-file", "model.onnx"
    )
    processes.append(named)
    named.wait_ready()
    infer(named.url)
    assert named.stop() == 0


def escape_name() -> str:
    return f"modelreg-test-escape-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("hostile", "rule", "needle"),
    [
        pytest.param("dotdot", "archive.path", "contains a '..' component", id="dotdot-member"),
        pytest.param("absolute", "archive.path", "is an absolute path", id="absolute-member"),
        pytest.param("symlink", "archive.link", "points outside the bundle", id="symlink-out"),
    ],
)
def test_a_hostile_bundle_is_refused_by_validator_and_server(
    tmp_path: Path, processes: list[ServerProcess], hostile: str, rule: str, needle: str
) -> None:
    members = bundle_members(model_folder(tmp_path))
    outside = tmp_path / escape_name()
    links: dict[str, str] = {}
    if hostile == "dotdot":
        members[f"../../../../../../..{outside}"] = b"escaped"
    elif hostile == "absolute":
        members[str(outside)] = b"escaped"
    else:
        outside.write_bytes(b"secret outside the bundle")
        del members["weights.bin"]
        links["weights.bin"] = str(outside)
    bundle = tar_gz(tmp_path / "hostile.tar.gz", members, links=links)

    report = validate(tmp_path, bundle)
    assert report["securityStatus"] == "Failed"
    assert report["functionalStatus"] == "Skipped"
    findings = [f for f in report["security"]["findings"] if f["ruleId"] == rule]
    assert findings, report["security"]["findings"]
    assert needle in findings[0]["message"]
    assert report["functional"]["signature"] is None

    proc = ServerProcess(tmp_path, "--artifact", str(bundle), "--sha256", sha256_of(bundle))
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 1
    output = proc.output()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert f"refusing to serve {bundle}: unsafe archive" in errors[0]
    assert needle in errors[0]
    assert "Traceback" not in output
    assert "listening" not in output
    if hostile == "symlink":
        assert outside.read_bytes() == b"secret outside the bundle"
    else:
        assert not outside.exists()


def test_a_gzip_that_holds_no_tar_fails_validation_and_is_not_served(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """The scanner reads the gunzipped ONNX as data and passes it; unpacking it as a bundle
    fails. That is a Failed functional check with the reason, not a crashed validation."""
    folder = model_folder(tmp_path)
    onnx.save_model(onnx.load(str(folder / "model.onnx")), str(tmp_path / "whole.onnx"))
    artifact = tmp_path / "model.onnx.gz"
    artifact.write_bytes(gzip.compress((tmp_path / "whole.onnx").read_bytes()))

    report = validate(tmp_path, artifact)
    assert report["securityStatus"] == "Passed", report["security"]["findings"]
    assert report["functionalStatus"] == "Failed"
    assert [f["ruleId"] for f in report["functional"]["findings"]] == ["archive.corrupt"]
    assert report["functional"]["signature"] is None

    proc = ServerProcess(tmp_path, "--artifact", str(artifact), "--sha256", sha256_of(artifact))
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 1
    assert f"error: refusing to serve {artifact}: unsafe archive" in proc.output()
