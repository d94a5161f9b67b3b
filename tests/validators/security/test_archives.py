"""Bundles: zip and tar checked from their headers, members streamed through the scanners."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from validators.report import ScanReport, Severity
from validators.security import scan_artifact
from validators.security.archives import UnsafeArchive, safe_extract
from validators.security.policy import DEFAULT_POLICY


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


#: Pickled here, never loaded anywhere.
EVIL_PICKLE = pickle.dumps(_Evil(), protocol=4)
#: The same call as a protocol 0 stream: no PROTO header, text opcodes.
EVIL_PICKLE_V0 = b"cos\nsystem\n(S'echo pwned'\ntR."
BENIGN_PICKLE = pickle.dumps({"state": [1, 2, 3], "name": "weights"}, protocol=2)


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Scanner temp dirs go under the test's tmp_path, so we can see they are cleaned up."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch
    assert list(scratch.iterdir()) == [], "the scanner left temporary files behind"


def _rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def _zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _torch_zip(path: Path, extra: dict[str, bytes]) -> Path:
    return _zip(
        path,
        {
            "archive/data.pkl": BENIGN_PICKLE,
            "archive/data/0": b"\x00\x01" * 64,
            "archive/version": b"3\n",
            **extra,
        },
    )


# -- header checks ----------------------------------------------------------------------------


def test_zip_slip_tar_fails(tmp_path: Path) -> None:
    path = _tar(tmp_path / "bundle.tar", [(_info("../../evil.sh"), b"#!/bin/sh\n")])
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    finding = next(f for f in report.findings if f.rule_id == "archive.path")
    assert finding.severity == Severity.CRITICAL
    assert finding.location == "bundle.tar:../../evil.sh"


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "C:/evil.bat", "a\\..\\..\\evil"])
def test_absolute_or_odd_member_path_fails(tmp_path: Path, name: str) -> None:
    for path in (
        _tar(tmp_path / "b.tar", [(_info(name), b"x")]),
        _zip(tmp_path / "b.zip", {name: b"x"}),
    ):
        report = scan_artifact(path)
        assert "archive.path" in _rules(report), (path, report.findings)


def test_symlink_pointing_outside_fails(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "b.tgz",
        [(_info("model/weights", tarfile.SYMTYPE, "../../../etc/passwd"), None)],
        mode="w:gz",
    )
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    finding = next(f for f in report.findings if f.rule_id == "archive.link")
    assert finding.severity == Severity.CRITICAL


def test_symlink_inside_the_bundle_is_medium(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "b.tar",
        [(_info("model/a.bin"), b"\0" * 8), (_info("model/b.bin", tarfile.SYMTYPE, "a.bin"), None)],
    )
    report = scan_artifact(path)
    links = [f for f in report.findings if f.rule_id == "archive.link"]
    assert [f.severity for f in links] == [Severity.MEDIUM]
    assert report.status == "Passed"


def test_zip_symlink_outside_fails(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    assert "archive.link" in _rules(scan_artifact(path))


def test_hardlink_outside_fails(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar", [(_info("h", tarfile.LNKTYPE, "../../etc/shadow"), None)])
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert any(f.rule_id == "archive.link" and "hardlink" in f.message for f in report.findings)


def test_device_member_fails(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar", [(_info("dev/sda", tarfile.BLKTYPE), None)])
    assert "archive.device" in _rules(scan_artifact(path))


def test_duplicate_member_names_fail(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("model.pkl", BENIGN_PICKLE)
            zf.writestr("model.pkl", EVIL_PICKLE)
    report = scan_artifact(path)
    assert "archive.duplicate" in _rules(report)
    # both copies are scanned, not only the one a loader would pick
    assert "pickle.dangerous-global" in _rules(report)


def test_too_many_members_is_too_large(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar", [(_info(f"f{i}"), b"x") for i in range(20)])
    policy = dataclasses.replace(DEFAULT_POLICY, max_archive_members=5)
    report = scan_artifact(path, policy)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.archive_members"}


def test_declared_size_over_the_limit_is_too_large(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"a": b"\0" * 1000, "b": b"\0" * 1000})
    policy = dataclasses.replace(DEFAULT_POLICY, max_declared_bytes=1500)
    report = scan_artifact(path, policy)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.declared_bytes"}


def test_zip_bomb_ratio_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", b"\0" * (8 * 1024 * 1024))
    assert path.stat().st_size < 64 * 1024
    report = scan_artifact(path)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.compression_ratio"}


def test_small_members_are_held_to_the_ratio_only_above_the_policy_floor(tmp_path: Path) -> None:
    path = tmp_path / "small.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", b"\0" * (512 * 1024))
    assert scan_artifact(path).verdict == "clean"
    strict = dataclasses.replace(DEFAULT_POLICY, compression_ratio_floor_bytes=64 * 1024)
    report = scan_artifact(path, strict)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.compression_ratio"}


def test_tar_gz_bomb_ratio_is_too_large(tmp_path: Path) -> None:
    path = _tar(tmp_path / "bomb.tar.gz", [(_info("zeros.bin"), b"\0" * (8 * 1024 * 1024))], "w:gz")
    report = scan_artifact(path)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.compression_ratio"}


def test_nested_archives_stop_at_the_depth_limit(tmp_path: Path) -> None:
    inner = _zip(tmp_path / "inner.zip", {"weights.bin": EVIL_PICKLE})
    middle = _zip(tmp_path / "middle.zip", {"inner.zip": inner.read_bytes()})
    inner.unlink()
    outer = _tar(tmp_path / "outer.tar", [(_info("middle.zip"), middle.read_bytes())])
    middle.unlink()

    report = scan_artifact(outer)
    hit = next(f for f in report.findings if f.rule_id == "pickle.dangerous-global")
    assert hit.location.startswith("outer.tar:middle.zip:inner.zip:weights.bin@")

    shallow = dataclasses.replace(DEFAULT_POLICY, max_archive_depth=2)
    report = scan_artifact(outer, shallow)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.archive_depth"}


# -- member content ---------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["archive/data/77", "weights.bin", "archive/.hidden"])
def test_malicious_pickle_hidden_in_a_pytorch_zip_is_found(tmp_path: Path, member: str) -> None:
    path = _torch_zip(tmp_path / "model.pt", {member: EVIL_PICKLE})
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    hit = next(f for f in report.findings if f.rule_id == "pickle.dangerous-global")
    assert hit.severity == Severity.CRITICAL
    assert hit.location.startswith(f"model.pt:{member}@")


def test_benign_pytorch_zip_passes(tmp_path: Path) -> None:
    report = scan_artifact(_torch_zip(tmp_path / "model.pt", {}))
    assert report.status == "Passed", report.findings
    assert report.verdict == "clean"


def test_protocol_0_pickle_in_a_tar_gz_is_found(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar.gz", [(_info("config.txt"), EVIL_PICKLE_V0)], "w:gz")
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings


def test_gzipped_pickle_is_found(tmp_path: Path) -> None:
    path = tmp_path / "model.gz"
    path.write_bytes(gzip.compress(EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings


def test_object_array_in_npz_is_scanned_as_a_pickle(tmp_path: Path) -> None:
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil()
    path = tmp_path / "arrays.npz"
    with path.open("wb") as fh:
        np.savez(fh, plain=np.zeros(3), evil=evil)
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    assert any(".npy#object-array@" in f.location for f in report.findings)


def _onnx_with_external(location: str) -> bytes:
    tensor = helper.make_tensor("W", TensorProto.FLOAT, [4], [0.0] * 4)
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])], "g", [x], [y], initializer=[tensor]
    )
    return helper.make_model(graph).SerializeToString()


def test_onnx_bundle_with_external_data_passes(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "bundle.tar.gz",
        [
            (_info("model/graph.bin"), _onnx_with_external("weights/w.dat")),
            (_info("model/weights/w.dat"), b"\0" * 16),
        ],
        "w:gz",
    )
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings


def test_onnx_bundle_with_traversing_external_data_fails(tmp_path: Path) -> None:
    path = _zip(
        tmp_path / "bundle.zip",
        {"model.onnx": _onnx_with_external("../../../etc/passwd"), "w.dat": b"\0" * 16},
    )
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    hit = next(f for f in report.findings if f.rule_id == "onnx.external_data.path")
    assert hit.location.startswith("bundle.zip:model.onnx#")


def test_onnx_external_data_missing_from_the_bundle_fails(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bundle.zip", {"model.onnx": _onnx_with_external("w.dat")})
    assert "onnx.external_data.missing" in _rules(scan_artifact(path))


def test_truncated_archive_is_an_error_not_an_exception(tmp_path: Path) -> None:
    data = _torch_zip(tmp_path / "m.pt", {}).read_bytes()
    path = tmp_path / "broken.pt"
    path.write_bytes(data[:100])
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert report.verdict == "error"


# -- safe_extract -----------------------------------------------------------------------------


def test_safe_extract_unpacks_a_benign_bundle(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "b.tgz",
        [(_info("model/a.bin"), b"aaaa"), (_info("model/sub/b.bin"), b"bb")],
        "w:gz",
    )
    dest = tmp_path / "out"
    written = safe_extract(path, dest, policy=DEFAULT_POLICY)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == [
        "model/a.bin",
        "model/sub/b.bin",
    ]
    assert (dest / "model" / "a.bin").read_bytes() == b"aaaa"


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([(_info("../escape"), b"x")], id="zip-slip"),
        pytest.param([(_info("/abs"), b"x")], id="absolute"),
        pytest.param([(_info("l", tarfile.SYMTYPE, "/etc/passwd"), None)], id="symlink-out"),
        pytest.param([(_info("l", tarfile.SYMTYPE, "a"), None)], id="symlink-in"),
        pytest.param([(_info("h", tarfile.LNKTYPE, "a"), None)], id="hardlink"),
        pytest.param([(_info("d", tarfile.CHRTYPE), None)], id="device"),
    ],
)
def test_safe_extract_refuses_unsafe_bundles(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    path = _tar(tmp_path / "b.tar", [(_info("a"), b"data"), *members])
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchive) as caught:
        safe_extract(path, dest, policy=DEFAULT_POLICY)
    assert isinstance(caught.value, ValueError)
    assert caught.value.findings
    assert not dest.exists()
    assert not (tmp_path / "escape").exists()


def test_safe_extract_refuses_a_zip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (4 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="ratio"):
        safe_extract(path, tmp_path / "out", policy=DEFAULT_POLICY)


def test_onnx_model_is_detected_by_content_inside_a_bundle(tmp_path: Path) -> None:
    """The ONNX member has no .onnx suffix; it is still parsed and its domains checked."""
    node = helper.make_node("Evil", ["X"], ["Y"], domain="evil.ops")
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    path = _zip(tmp_path / "b.zip", {"blob": model.SerializeToString()})
    report = scan_artifact(path)
    assert "onnx.domain" in _rules(report)
    assert isinstance(onnx.__version__, str)


def test_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 4 * 1024 * 1024
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * header.size + b"\0" * 1024
    path = tmp_path / "pax.tar.gz"
    path.write_bytes(gzip.compress(raw))
    report = scan_artifact(path)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.tar_header"}


def test_pickle_zip_polyglot_is_scanned_both_ways(tmp_path: Path) -> None:
    """A benign pickle up front for pickle readers, a zip at the end for zip readers."""
    inner = _zip(tmp_path / "inner.zip", {"payload.pkl": EVIL_PICKLE})
    path = tmp_path / "model.bin"
    path.write_bytes(BENIGN_PICKLE + inner.read_bytes())
    inner.unlink()
    report = scan_artifact(path)
    assert "format.polyglot" in _rules(report)
    assert report.verdict == "malicious"
    assert any(f.location.startswith("model.bin:payload.pkl@") for f in report.findings)


def test_zip_member_count_is_read_from_the_end_record(tmp_path: Path) -> None:
    path = _zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(20)})
    policy = dataclasses.replace(DEFAULT_POLICY, max_archive_members=5)
    report = scan_artifact(path, policy)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.archive_members"}
    with pytest.raises(UnsafeArchive, match="members"):
        safe_extract(path, tmp_path / "out", policy=policy)
