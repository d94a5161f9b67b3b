"""Containers a model hides in: ``.npy``/``.npz`` object arrays under any dtype spelling,
joblib's compressed files, 7z archives, and zips that ``zipfile`` refuses while ``torch.load``
or a streaming reader loads them. Each is scanned through to its content."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import numpy as np
import py7zr
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry.formats import BUNDLE_FORMATS, Format, detect_format
from registry.onnx_artifact import is_bundle
from validators.report import ScanReport, Severity
from validators.security import scan_artifact
from validators.security.archives import UnsafeArchive, safe_extract
from validators.security.npy_scan import holds_objects
from validators.security.policy import DEFAULT_POLICY


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


#: Pickled (or dumped) here, never loaded anywhere.
EVIL_PICKLE = pickle.dumps(_Evil(), protocol=2)
BENIGN_PICKLE = pickle.dumps({"state": [1, 2, 3], "name": "weights"}, protocol=2)
ZEROS = b"\0" * (64 * 1024 * 1024)


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


def _worst(report: ScanReport) -> Severity | None:
    return max((f.severity for f in report.findings), default=None)


# -- .npy and .npz: object arrays, whatever the dtype's spelling ------------------------------


def _npy(descr: str, body: bytes, *, version: int = 1) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}"
    prefix = 10 if version == 1 else 12
    header += " " * (-(prefix + len(header) + 1) % 64) + "\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode("latin-1") + body


OBJECT_DESCRS = [
    pytest.param("'O'", id="O"),
    pytest.param("'|O'", id="|O"),
    pytest.param("'<O'", id="<O"),
    pytest.param("'O8'", id="O8"),
    pytest.param("'object'", id="object"),
    pytest.param("'object_'", id="object_"),
    pytest.param("'T'", id="StringDType"),
    pytest.param("'f4,O'", id="comma-string"),
    pytest.param("'(2,)O'", id="subarray-string"),
    pytest.param("('O', (2,))", id="subarray-tuple"),
    pytest.param("[('a', '<f4'), ('b', '|O')]", id="structured"),
    pytest.param("[('a', 'O', (2,))]", id="structured-subarray"),
    pytest.param("[('x', [('y', '<i4'), ('z', 'object')])]", id="nested-structured"),
    pytest.param("[(('title', 'a'), '|O')]", id="titled-field"),
    pytest.param("['xO']", id="two-character-field"),
]

PLAIN_DESCRS = [
    pytest.param("'<f4'", id="float"),
    pytest.param("[('O', '<f4')]", id="field-named-O"),
    pytest.param("[('Object', '<i8'), ('b', '<f4')]", id="field-named-Object"),
    pytest.param("[('x', [('O', '<u1')])]", id="nested-field-named-O"),
    pytest.param("'<M8[ns]'", id="datetime"),
    pytest.param("'|S5'", id="bytes"),
]


@pytest.mark.parametrize("descr", OBJECT_DESCRS)
def test_an_object_array_is_scanned_as_a_pickle_whatever_the_spelling(
    tmp_path: Path, descr: str
) -> None:
    for version in (1, 2):
        path = tmp_path / f"array-v{version}.npy"
        path.write_bytes(_npy(descr, EVIL_PICKLE, version=version))
        report = scan_artifact(path)
        assert report.verdict == "malicious", (descr, report.findings)
        assert any("#object-array@" in f.location for f in report.findings)


@pytest.mark.parametrize("descr", PLAIN_DESCRS)
def test_a_field_named_O_does_not_make_an_object_array(tmp_path: Path, descr: str) -> None:
    """numpy.load reads these bodies as raw data, never as a pickle: neither does the scan."""
    path = tmp_path / "array.npy"
    path.write_bytes(_npy(descr, EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "clean", (descr, report.findings)


@pytest.mark.parametrize(
    ("descr", "expected"),
    [(str(d.values[0]), True) for d in OBJECT_DESCRS]
    + [(str(d.values[0]), False) for d in PLAIN_DESCRS],
)
def test_holds_objects_agrees_with_numpy(descr: str, expected: bool) -> None:
    import ast

    from numpy.lib.format import descr_to_dtype

    value = ast.literal_eval(descr)
    assert holds_objects(value) is expected
    if value == "T" and int(np.__version__.split(".")[0]) < 2:
        return  # StringDType is numpy 2's
    assert descr_to_dtype(value).hasobject is expected


def test_a_dtype_nested_past_the_bound_counts_as_objects() -> None:
    descr: object = "<f4"
    for _ in range(40):
        descr = [("x", descr)]
    assert holds_objects(descr)


def test_npz_members_are_scanned_for_every_spelling(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, param in enumerate(OBJECT_DESCRS):
            zf.writestr(f"evil{i}.npy", _npy(str(param.values[0]), EVIL_PICKLE))
        zf.writestr("plain.npy", _npy("[('O', '<f4')]", EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    hits = {f.location.split(".npy")[0] for f in report.findings if "#object-array@" in f.location}
    assert hits == {f"arrays.npz:evil{i}" for i in range(len(OBJECT_DESCRS))}


def test_a_real_structured_object_array_is_found_and_a_real_numeric_one_is_clean(
    tmp_path: Path,
) -> None:
    evil = np.zeros(1, dtype=[("O", "<f4"), ("payload", object)])
    evil["payload"][0] = _Evil()
    plain = np.zeros(4, dtype=[("O", "<f4"), ("b", "<i8")])
    path = tmp_path / "arrays.npz"
    with path.open("wb") as fh:
        np.savez(fh, evil=evil, plain=plain)
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert {f.location.split("#")[0] for f in report.findings} == {"arrays.npz:evil.npy"}


# -- joblib's compressed files ----------------------------------------------------------------

CODECS = ["zlib", "gzip", "bz2", "lzma", "xz"]
FORMATS = {
    "zlib": Format.ZLIB,
    "gzip": Format.GZIP,
    "bz2": Format.BZIP2,
    "lzma": Format.LZMA,
    "xz": Format.XZ,
}
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": lambda data: zlib.compress(data, 9),
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    "xz": lzma.compress,
}


@pytest.fixture(scope="module")
def pipeline() -> object:
    rng = np.random.default_rng(0)
    x = rng.random((40, 3))
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, x[:, 0] > 0.5)


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_joblib_pipeline_is_clean(
    tmp_path: Path, codec: str, pipeline: object
) -> None:
    path = tmp_path / f"model.joblib.{codec}"
    joblib.dump(pipeline, path, compress=(codec, 3))
    assert detect_format(path) is FORMATS[codec]
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings
    assert not [f for f in report.findings if f.rule_id.startswith(("archive.", "limit."))]


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_joblib_payload_is_found(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(_Evil(), path, compress=(codec, 3))
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    hit = next(f for f in report.findings if f.rule_id == "pickle.dangerous-global")
    assert hit.severity is Severity.CRITICAL
    inner = "<gunzipped>" if codec == "gzip" else f"<{codec}-decompressed>"
    assert hit.location.startswith(f"model.joblib:{inner}@")


@pytest.mark.parametrize("payload", [BENIGN_PICKLE, EVIL_PICKLE], ids=["clean", "malicious"])
def test_a_legacy_joblib_zfile_is_decompressed_and_scanned(tmp_path: Path, payload: bytes) -> None:
    """joblib before 0.10 wrote ``ZF`` + the length + zlib; joblib.load still unpickles it."""
    from joblib.numpy_pickle_compat import write_zfile

    path = tmp_path / "model.joblib"
    with path.open("wb") as fh:
        write_zfile(fh, payload)
    assert detect_format(path) is Format.JOBLIB_ZFILE
    report = scan_artifact(path)
    assert report.verdict == ("clean" if payload is BENIGN_PICKLE else "malicious"), report.findings
    if payload is EVIL_PICKLE:
        assert any(
            f.location.startswith("model.joblib:<zfile-decompressed>@") for f in report.findings
        )


@pytest.mark.parametrize("codec", CODECS)
def test_a_decompression_bomb_is_bounded_and_too_large(tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"bomb.{codec}"
    path.write_bytes(COMPRESSORS[codec](ZEROS))
    assert path.stat().st_size < len(ZEROS) // 200
    report = scan_artifact(path)
    assert report.verdict == "too-large", report.findings
    assert _rules(report) == {"limit.compression_ratio"}


def test_an_lzma_header_asking_for_too_much_memory_is_too_large(tmp_path: Path) -> None:
    """joblib decodes it (no memory limit): the scan refuses it rather than pass it unread."""
    data = bytearray(lzma.compress(EVIL_PICKLE, format=lzma.FORMAT_ALONE))
    struct.pack_into("<I", data, 1, 1 << 30)  # a 1 GiB dictionary
    path = tmp_path / "model.joblib"
    path.write_bytes(bytes(data))
    assert lzma.decompress(bytes(data), format=lzma.FORMAT_ALONE) == EVIL_PICKLE
    assert detect_format(path) is Format.LZMA
    report = scan_artifact(path)
    assert report.verdict == "too-large", report.findings
    assert _rules(report) == {"limit.decompression_memory"}


@pytest.mark.parametrize("codec", CODECS)
def test_content_past_the_declared_bytes_limit_is_too_large(tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"model.{codec}"
    path.write_bytes(COMPRESSORS[codec](BENIGN_PICKLE + os.urandom(4096)))
    policy = dataclasses.replace(DEFAULT_POLICY, max_declared_bytes=2048)
    report = scan_artifact(path, policy)
    assert report.verdict == "too-large", report.findings
    assert "limit.declared_bytes" in _rules(report)


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_member_of_a_bundle_is_scanned(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/config.json", b"{}")
        zf.writestr("model/weights", COMPRESSORS[codec](EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    assert any(f.location.startswith("bundle.zip:model/weights:<") for f in report.findings)


@pytest.mark.parametrize("codec", ["bz2", "xz"])
def test_a_compressed_tar_is_unpacked_and_its_members_scanned(tmp_path: Path, codec: str) -> None:
    path = tmp_path / f"bundle.tar.{codec}"
    with tarfile.open(path, f"w:{codec}") as tf:  # type: ignore[call-overload]
        info = tarfile.TarInfo("model/weights.bin")
        info.size = len(EVIL_PICKLE)
        tf.addfile(info, io.BytesIO(EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    assert any(":model/weights.bin@" in f.location for f in report.findings)


@pytest.mark.parametrize("codec", ["zlib", "bz2", "xz"])
def test_a_payload_in_a_second_stream_is_found(tmp_path: Path, codec: str) -> None:
    """joblib's zlib reader, BZ2File and LZMAFile read concatenated streams as one."""
    path = tmp_path / "model.bin"
    path.write_bytes(COMPRESSORS[codec](BENIGN_PICKLE) + COMPRESSORS[codec](EVIL_PICKLE))
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings


def test_data_after_the_last_stream_is_noted_not_failed(tmp_path: Path) -> None:
    path = tmp_path / "model.xz"
    path.write_bytes(lzma.compress(BENIGN_PICKLE) + b"not a stream at all")
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings
    assert _rules(report) == {"compression.trailing_data"}


@pytest.mark.parametrize("codec", ["zlib", "bz2", "xz"])
def test_a_truncated_stream_is_an_error(tmp_path: Path, codec: str) -> None:
    data = COMPRESSORS[codec](BENIGN_PICKLE + os.urandom(8192))
    path = tmp_path / "model.bin"
    path.write_bytes(data[: len(data) // 2])
    report = scan_artifact(path)
    assert report.verdict == "error", report.findings
    assert "archive.corrupt" in _rules(report)


def test_compressed_files_are_no_bundles(tmp_path: Path) -> None:
    """The model server unpacks bundles only: a compressed single file or a 7z is served as
    it is (and an ONNX server refuses it)."""
    assert {Format.ZLIB, Format.BZIP2, Format.LZMA, Format.XZ, Format.SEVEN_ZIP}.isdisjoint(
        BUNDLE_FORMATS
    )
    path = tmp_path / "model.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writestr(BENIGN_PICKLE, "model.pt")
    assert not is_bundle(path)


# -- 7z ---------------------------------------------------------------------------------------


def _7z(path: Path, members: dict[str, bytes], **options: object) -> Path:
    with py7zr.SevenZipFile(path, "w", **options) as archive:  # type: ignore[arg-type]
        for name, data in members.items():
            archive.writestr(data, name)
    return path


def _torch_save(path: Path, *, evil: bool) -> Path:
    state: dict[str, object] = {"w": torch.zeros(3)}
    if evil:
        state["hook"] = _Evil()  # pickled by torch.save, never loaded
    torch.save(state, path)
    return path


def test_a_pickle_named_model_pt_in_a_7z_is_found(tmp_path: Path) -> None:
    path = _7z(tmp_path / "model.7z", {"model.pt": EVIL_PICKLE, "README": b"weights"})
    assert detect_format(path) is Format.SEVEN_ZIP
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    hit = next(f for f in report.findings if f.rule_id == "pickle.dangerous-global")
    assert hit.location.startswith("model.7z:model.pt@")


def test_a_benign_7z_is_clean(tmp_path: Path) -> None:
    path = _7z(tmp_path / "model.7z", {"model.pt": BENIGN_PICKLE, "config.json": b"{}"})
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings


@pytest.mark.parametrize("evil", [False, True], ids=["clean", "malicious"])
def test_a_torch_checkpoint_in_a_7z_is_scanned(tmp_path: Path, evil: bool) -> None:
    checkpoint = _torch_save(tmp_path / "ckpt.pt", evil=evil)
    path = _7z(tmp_path / "model.7z", {"model.pt": checkpoint.read_bytes()})
    checkpoint.unlink()
    report = scan_artifact(path)
    assert report.verdict == ("malicious" if evil else "clean"), report.findings
    if evil:
        assert any(
            f.location.startswith("model.7z:model.pt:ckpt/data.pkl@") for f in report.findings
        )


@pytest.mark.parametrize("payload", [BENIGN_PICKLE, EVIL_PICKLE], ids=["clean", "malicious"])
def test_a_torch_zip_layout_inside_a_7z_is_scanned(tmp_path: Path, payload: bytes) -> None:
    members = {"archive/data.pkl": payload, "archive/data/0": b"\0" * 64, "archive/version": b"3\n"}
    path = _7z(tmp_path / "model.7z", members)
    report = scan_artifact(path)
    assert report.verdict == ("clean" if payload is BENIGN_PICKLE else "malicious"), report.findings


@pytest.mark.parametrize("header_encryption", [False, True], ids=["content", "headers"])
def test_an_encrypted_7z_is_high_never_a_crash(tmp_path: Path, header_encryption: bool) -> None:
    path = _7z(
        tmp_path / "model.7z",
        {"model.pt": EVIL_PICKLE},
        password="secret",
        header_encryption=header_encryption,
    )
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert _rules(report) == {"archive.encrypted"}
    assert _worst(report) is Severity.HIGH


def test_a_corrupt_7z_is_an_error(tmp_path: Path) -> None:
    data = _7z(tmp_path / "good.7z", {"model.pt": BENIGN_PICKLE * 20}).read_bytes()
    for name, broken in {
        "payload": data[:40] + bytes(b ^ 0xFF for b in data[40:60]) + data[60:],
        "truncated": data[:50],
        "header": data[:-8] + b"\xff" * 8,
    }.items():
        path = tmp_path / f"{name}.7z"
        path.write_bytes(broken)
        report = scan_artifact(path)
        assert report.verdict == "error", (name, report.findings)
        assert "archive.corrupt" in _rules(report)


def test_a_7z_bomb_is_too_large(tmp_path: Path) -> None:
    path = _7z(tmp_path / "bomb.7z", {"zeros.bin": ZEROS})
    assert path.stat().st_size < 64 * 1024
    report = scan_artifact(path)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.compression_ratio"}


def test_7z_header_checks_are_the_bundles(tmp_path: Path) -> None:
    many = _7z(tmp_path / "many.7z", {f"f{i}": b"x" for i in range(20)})
    policy = dataclasses.replace(DEFAULT_POLICY, max_archive_members=5)
    assert _rules(scan_artifact(many, policy)) == {"limit.archive_members"}

    large = _7z(tmp_path / "large.7z", {"a": os.urandom(2000), "b": os.urandom(2000)})
    policy = dataclasses.replace(DEFAULT_POLICY, max_declared_bytes=3000)
    assert _rules(scan_artifact(large, policy)) == {"limit.declared_bytes"}

    path = tmp_path / "dup.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writestr(BENIGN_PICKLE, "model.pt")
        archive.writestr(EVIL_PICKLE, "model.pt")
    report = scan_artifact(path)
    assert {"archive.duplicate", "pickle.dangerous-global"} <= _rules(report)


def _7z_with_a_plain_header(path: Path, members: dict[str, bytes]) -> bytes:
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.encoded_header_mode = False
        for name, data in members.items():
            archive.writestr(data, name)
    return path.read_bytes()


def _rename_in_7z(data: bytes, old: str, new: str) -> bytes:
    """Rename a member in a 7z's plain header (same length), fixing the header CRCs."""
    assert len(old) == len(new)
    patched = bytearray(data.replace(old.encode("utf-16-le"), new.encode("utf-16-le")))
    offset, size = struct.unpack("<QQ", patched[12:28])
    header = patched[32 + offset : 32 + offset + size]
    struct.pack_into("<L", patched, 28, zlib.crc32(header))
    struct.pack_into("<L", patched, 8, zlib.crc32(patched[12:32]))
    return bytes(patched)


def test_an_escaping_7z_member_name_is_critical_and_the_rest_is_scanned(tmp_path: Path) -> None:
    data = _7z_with_a_plain_header(
        tmp_path / "plain.7z", {"ab/evil.pt": BENIGN_PICKLE, "model.pt": EVIL_PICKLE}
    )
    path = tmp_path / "slip.7z"
    path.write_bytes(_rename_in_7z(data, "ab/evil.pt", "../evil.pt"))
    report = scan_artifact(path)
    escape = next(f for f in report.findings if f.rule_id == "archive.path")
    assert escape.severity is Severity.CRITICAL
    assert escape.location == "slip.7z:../evil.pt"
    assert any(f.location.startswith("slip.7z:model.pt@") for f in report.findings)


def test_onnx_in_a_7z_is_extracted_privately_and_scanned(tmp_path: Path) -> None:
    from tests.validators.security.test_archives import _onnx_with_external

    path = _7z(
        tmp_path / "model.7z",
        {"model.onnx": _onnx_with_external("../../../etc/passwd"), "w.dat": b"\0" * 16},
    )
    report = scan_artifact(path)
    assert "onnx.external_data.path" in _rules(report)


# -- zips that zipfile refuses and other readers load -----------------------------------------


def _torch_like_zip(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/data/0", b"\x00\x01" * 64)
        zf.writestr("archive/version", b"3\n")
    return path


def _member_offsets(data: bytes, name: bytes) -> tuple[int, int]:
    """The offsets of ``name``'s central-directory entry and local header."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + length] == name:
            (local,) = struct.unpack_from("<L", data, at + 42)
            return at, local
        at = data.find(b"PK\x01\x02", at + 4)
    raise KeyError(name)


def _patch(
    data: bytes,
    name: str,
    *,
    crc: bool = False,
    local_name: str | None = None,
    central_flags: int = 0,
    local_flags: int = 0,
) -> bytes:
    """The zip with one member's headers patched in place."""
    patched = bytearray(data)
    central, local = _member_offsets(data, name.encode())
    if crc:
        (value,) = struct.unpack_from("<L", patched, central + 16)
        struct.pack_into("<L", patched, central + 16, value ^ 0x5A5A5A5A)
    for at, bits in ((central + 8, central_flags), (local + 6, local_flags)):
        (flags,) = struct.unpack_from("<H", patched, at)
        struct.pack_into("<H", patched, at, flags | bits)
    if local_name is not None:
        assert len(local_name) == len(name)
        patched[local + 30 : local + 30 + len(name)] = local_name.encode()
    return bytes(patched)


IRREGULAR = [
    pytest.param({"crc": True}, "CRC mismatch", id="bad-crc"),
    pytest.param({"local_name": "archive/datx.pkl"}, "differs from central name", id="local-name"),
    pytest.param({"central_flags": 0x1}, "flag 0x1 (encrypted)", id="flag-0x1"),
    pytest.param({"central_flags": 0x20}, "flag 0x20", id="flag-0x20"),
    pytest.param({"central_flags": 0x40}, "flag 0x40", id="flag-0x40"),
    pytest.param({"local_flags": 0x1 | 0x20}, "local header sets flag", id="local-flags"),
]


def _source(kind: str, tmp_path: Path, *, evil: bool) -> tuple[bytes, str]:
    """A real zip (zipfile's) or a real torch.save file, with the payload in data.pkl."""
    if kind == "zipfile":
        path = _torch_like_zip(tmp_path / "src.zip", EVIL_PICKLE if evil else BENIGN_PICKLE)
        return path.read_bytes(), "archive"
    return _torch_save(tmp_path / "archive.pt", evil=evil).read_bytes(), "archive"


@pytest.mark.parametrize("source", ["zipfile", "torch.save"])
@pytest.mark.parametrize(("patch", "named"), IRREGULAR)
def test_an_irregular_zip_with_a_payload_is_malicious(
    tmp_path: Path, source: str, patch: dict[str, object], named: str
) -> None:
    data, folder = _source(source, tmp_path, evil=True)
    path = tmp_path / "model.pt"
    path.write_bytes(_patch(data, f"{folder}/data.pkl", **patch))  # type: ignore[arg-type]
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    assert any(f.rule_id == "pickle.dangerous-global" for f in report.findings)
    irregular = [f for f in report.findings if f.rule_id == "zip.irregular"]
    assert irregular, report.findings
    assert all(f.severity is Severity.MEDIUM for f in irregular)
    assert any(named in f.message for f in irregular), irregular


@pytest.mark.parametrize("source", ["zipfile", "torch.save"])
@pytest.mark.parametrize(("patch", "named"), IRREGULAR)
def test_the_same_irregular_zip_with_a_benign_pickle_is_only_medium(
    tmp_path: Path, source: str, patch: dict[str, object], named: str
) -> None:
    data, folder = _source(source, tmp_path, evil=False)
    path = tmp_path / "model.pt"
    path.write_bytes(_patch(data, f"{folder}/data.pkl", **patch))  # type: ignore[arg-type]
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings
    assert _worst(report) is Severity.MEDIUM
    assert any(f.rule_id == "zip.irregular" and named in f.message for f in report.findings)


@pytest.mark.parametrize("patch", [{"crc": True}, {"local_name": "archive/datx.pkl"}])
def test_torch_load_reads_what_zipfile_refuses(tmp_path: Path, patch: dict[str, object]) -> None:
    """Why the scanner must read these: torch.load takes them (our own benign checkpoint,
    weights only), zipfile does not."""
    data = _torch_save(tmp_path / "archive.pt", evil=False).read_bytes()
    path = tmp_path / "patched.pt"
    path.write_bytes(_patch(data, "archive/data.pkl", **patch))  # type: ignore[arg-type]
    assert torch.load(path, weights_only=True)["w"].shape == (3,)
    with pytest.raises(zipfile.BadZipFile), zipfile.ZipFile(path) as zf:
        zf.read("archive/data.pkl")


def test_a_payload_is_reported_under_both_names(tmp_path: Path) -> None:
    data = _torch_like_zip(tmp_path / "src.zip", EVIL_PICKLE).read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(_patch(data, "archive/data.pkl", local_name="archive/datx.pkl"))
    report = scan_artifact(path)
    hits = {f.location.split("@")[0] for f in report.findings if f.rule_id.startswith("pickle.")}
    assert hits == {"model.pt:archive/data.pkl", "model.pt:archive/datx.pkl"}


def test_an_escaping_local_name_is_critical(tmp_path: Path) -> None:
    data = _torch_like_zip(tmp_path / "src.zip", BENIGN_PICKLE).read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(_patch(data, "archive/data.pkl", local_name="../../../evil.pk"))
    report = scan_artifact(path)
    escape = next(f for f in report.findings if f.rule_id == "archive.path")
    assert escape.severity is Severity.CRITICAL
    assert escape.location == "model.pt:../../../evil.pk"


def test_really_encrypted_content_is_high(tmp_path: Path) -> None:
    """Flag 0x1 over data that is not the member's: it is encrypted, and cannot be scanned."""
    path = tmp_path / "src.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", os.urandom(256))
    data = bytearray(_patch(path.read_bytes(), "archive/data.pkl", central_flags=0x1))
    central, _ = _member_offsets(bytes(data), b"archive/data.pkl")
    struct.pack_into("<L", data, central + 16, zlib.crc32(b"something else"))
    path.write_bytes(bytes(data))
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert "archive.encrypted" in _rules(report)


def _zipcrypto(plain: bytes, password: bytes, *, crc: int) -> bytes:
    """PKWARE's traditional encryption (what ``zip -e`` writes): a 12-byte header, then the
    data, each byte xored with a key stream driven by the plaintext."""

    def update(value: int, byte: int) -> int:  # CRC-32's step for one byte, without inversion
        return zlib.crc32(bytes([byte]), value ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    keys = [0x12345678, 0x23456789, 0x34567890]

    def feed(byte: int) -> None:
        keys[0] = update(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = update(keys[2], keys[1] >> 24)

    for byte in password:
        feed(byte)
    out = bytearray()
    for byte in os.urandom(11) + bytes([crc >> 24]) + plain:
        temp = keys[2] | 2
        out.append(byte ^ ((temp * (temp ^ 1)) >> 8) & 0xFF)
        feed(byte)
    return bytes(out)


def test_a_zipcrypto_encrypted_payload_is_high(tmp_path: Path) -> None:
    crc = zlib.crc32(EVIL_PICKLE)
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _zipcrypto(EVIL_PICKLE, b"secret", crc=crc))
    data = bytearray(_patch(path.read_bytes(), "archive/data.pkl", central_flags=1, local_flags=1))
    central, local = _member_offsets(bytes(data), b"archive/data.pkl")
    struct.pack_into("<LLL", data, central + 16, crc, len(EVIL_PICKLE) + 12, len(EVIL_PICKLE))
    struct.pack_into("<LLL", data, local + 14, crc, len(EVIL_PICKLE) + 12, len(EVIL_PICKLE))
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        assert zf.read("archive/data.pkl", pwd=b"secret") == EVIL_PICKLE  # a real one
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert "archive.encrypted" in _rules(report)
    assert _worst(report) is Severity.HIGH


def test_a_bomb_in_an_irregular_zip_is_still_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", b"\0" * (8 * 1024 * 1024))
    path.write_bytes(_patch(path.read_bytes(), "zeros.bin", crc=True, central_flags=0x1))
    report = scan_artifact(path)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.compression_ratio"}


def _central_start(data: bytes) -> int:
    end = data.rfind(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<L", data, end + 16)
    return int(offset)


def test_a_zip_without_central_directory_is_read_from_its_local_headers(tmp_path: Path) -> None:
    """Only streaming readers load it; the members are scanned, the absence is MEDIUM."""
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = tmp_path / "model.zip"
        with zipfile.ZipFile(path, "w", compression) as zf:
            zf.writestr("config.json", b"{}")
            zf.writestr("weights.bin", EVIL_PICKLE)
        data = path.read_bytes()
        path.write_bytes(data[: _central_start(data)])
        report = scan_artifact(path)
        assert report.verdict == "malicious", report.findings
        assert any(f.location.startswith("model.zip:weights.bin@") for f in report.findings)
        notes = [f for f in report.findings if f.rule_id == "zip.irregular"]
        assert any("no central directory" in f.message for f in notes)


def test_a_streamed_zip_without_central_directory_is_read_through_its_descriptors(
    tmp_path: Path,
) -> None:
    """zipfile writing to a pipe puts sizes in data descriptors after each member."""
    buffer = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            return buffer.write(data)  # type: ignore[arg-type]

    with zipfile.ZipFile(Unseekable(), "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"hello" * 100)
        with zf.open("weights.bin", "w") as member:
            member.write(EVIL_PICKLE)
    data = buffer.getvalue()
    path = tmp_path / "model.zip"
    path.write_bytes(data[: _central_start(data)])
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings


def test_a_member_hidden_from_the_central_directory_is_found(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("weights.bin", BENIGN_PICKLE)
        zf.writestr("hidden.bin", EVIL_PICKLE)
    data = path.read_bytes()
    start = _central_start(data)
    first, _ = _member_offsets(data, b"weights.bin")
    second, _ = _member_offsets(data, b"hidden.bin")
    end = data.rfind(b"PK\x05\x06")
    record = bytearray(data[end:])
    struct.pack_into("<HHL", record, 8, 1, 1, second - first)
    path.write_bytes(data[:start] + data[first:second] + bytes(record))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["weights.bin"]  # what zipfile and torch.load see
    report = scan_artifact(path)
    assert report.verdict == "malicious", report.findings
    assert any(f.location.startswith("model.zip:hidden.bin@") for f in report.findings)
    assert any(
        f.rule_id == "zip.irregular" and "not in the central directory" in f.message
        for f in report.findings
    )


def test_no_zip_header_at_all_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(b"PK\x03\x04" + os.urandom(10))
    report = scan_artifact(path)
    assert report.verdict == "error"
    assert _rules(report) == {"archive.corrupt"}


def test_onnx_in_an_irregular_zip_is_not_extracted_and_not_an_error(tmp_path: Path) -> None:
    from tests.validators.security.test_archives import _onnx_with_external

    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", _onnx_with_external("w.dat"))
        zf.writestr("w.dat", b"\0" * 16)
    path.write_bytes(_patch(path.read_bytes(), "model.onnx", crc=True))
    report = scan_artifact(path)
    assert report.verdict == "clean", report.findings
    assert _rules(report) == {"zip.irregular", "archive.onnx_not_extracted"}


def test_the_model_server_still_refuses_an_irregular_zip(tmp_path: Path) -> None:
    data = _torch_like_zip(tmp_path / "src.zip", BENIGN_PICKLE).read_bytes()
    path = tmp_path / "bundle.zip"
    path.write_bytes(_patch(data, "archive/data.pkl", crc=True))
    with pytest.raises(UnsafeArchive, match="CRC"):
        safe_extract(path, tmp_path / "out", policy=DEFAULT_POLICY)
