"""``modelreg scan``, as a user runs it: no server, three output formats, exit codes."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from api.cli import app


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _scan(cli: CliRunner, *args: str | Path, code: int) -> str:
    result = cli.invoke(app, ["scan", *map(str, args)])
    assert result.exit_code == code, result.output
    return result.output


def _benign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2))
    return folder


def _malicious(folder: Path) -> Path:
    _benign(folder)
    (folder / "weights.bin").write_bytes(pickle.dumps(_Evil(), protocol=4))
    return folder


def _broken(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buffer = folder / "full.zip"
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a", b"x" * 200)
    (folder / "broken.zip").write_bytes(buffer.read_bytes()[:60])
    buffer.unlink()
    return folder


def test_clean_folder_exits_0_with_a_summary(cli: CliRunner, tmp_path: Path) -> None:
    output = _scan(cli, _benign(tmp_path / "m"), code=0)
    assert "Passed: clean" in output
    assert "1 file(s)" in output


def test_malicious_file_exits_1_with_a_table(cli: CliRunner, tmp_path: Path) -> None:
    output = _scan(cli, _malicious(tmp_path / "m"), code=1)
    assert "pickle.dangerous-global" in output
    assert "weights.bin" in output
    assert "CRITICAL" in output
    assert "Failed: malicious" in output


def test_too_large_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (4 * 1024 * 1024))
    output = _scan(cli, path, code=2)
    assert "limit.compression_ratio" in output


def test_scan_error_exits_3(cli: CliRunner, tmp_path: Path) -> None:
    output = _scan(cli, _broken(tmp_path / "m"), "--format", "json", code=3)
    assert json.loads(output)["verdict"] == "error"


def test_missing_path_is_a_scan_error(cli: CliRunner, tmp_path: Path) -> None:
    _scan(cli, tmp_path / "nope", code=3)


def test_malicious_outranks_a_scan_error(cli: CliRunner, tmp_path: Path) -> None:
    folder = _malicious(_broken(tmp_path / "m"))
    report = json.loads(_scan(cli, folder, "--format", "json", code=1))
    assert report["verdict"] == "malicious"
    rules = {f["ruleId"] for f in report["findings"]}
    assert {"archive.corrupt", "pickle.dangerous-global"} <= rules


def test_json_output_is_the_report(cli: CliRunner, tmp_path: Path) -> None:
    report = json.loads(_scan(cli, _malicious(tmp_path / "m"), "--format", "json", code=1))
    assert report["status"] == "Failed"
    assert report["filesScanned"] == ["state.pkl", "weights.bin"]
    assert report["bytesScanned"] > 0
    assert report["toolVersions"]["modelreg-scanner"]
    # the installed distribution's version, read without importlib.metadata (issue 15)
    assert report["toolVersions"]["modelreg"] == metadata.version("modelreg")
    finding = next(f for f in report["findings"] if f["ruleId"] == "pickle.dangerous-global")
    assert finding["severity"] == "CRITICAL"
    assert finding["location"].startswith("weights.bin@")


def _check_sarif(log: dict[str, Any]) -> dict[str, Any]:
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "modelreg"
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    assert all(rule["shortDescription"]["text"] for rule in driver["rules"])
    for result in run["results"]:
        assert result["ruleId"] in rule_ids
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        (location,) = result["locations"]
        assert location["physicalLocation"]["artifactLocation"]["uri"]
    return run


def test_sarif_output_is_valid(cli: CliRunner, tmp_path: Path) -> None:
    folder = _malicious(tmp_path / "m")
    with tarfile.open(folder / "bundle.tar", "w") as tf:
        info = tarfile.TarInfo("model/l")
        info.type, info.linkname = tarfile.SYMTYPE, "a"
        tf.addfile(info)
    run = _check_sarif(json.loads(_scan(cli, folder, "--format", "sarif", code=1)))
    by_rule = {r["ruleId"]: r for r in run["results"]}
    pickle_hit = by_rule["pickle.dangerous-global"]
    assert pickle_hit["level"] == "error"
    physical = pickle_hit["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "weights.bin"
    assert physical["region"]["byteOffset"] >= 0
    link = by_rule["archive.link"]
    assert link["level"] == "warning"
    assert link["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "bundle.tar"


def test_sarif_of_a_clean_scan_has_no_results(cli: CliRunner, tmp_path: Path) -> None:
    run = _check_sarif(json.loads(_scan(cli, _benign(tmp_path / "m"), "--format", "sarif", code=0)))
    assert run["results"] == []


def test_threshold_decides_what_fails(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("l")
        info.type, info.linkname = tarfile.SYMTYPE, "a"
        tf.addfile(info)
    _scan(cli, path, code=0)
    _scan(cli, path, "--threshold", "MEDIUM", code=1)
    _scan(cli, path, "--threshold", "bogus", code=3)


def test_allow_com_microsoft(cli: CliRunner, tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    node = helper.make_node("Gelu", ["X"], ["Y"], domain="com.microsoft")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert "onnx.domain" in _scan(cli, path, code=1)
    _scan(cli, path, "--allow-com-microsoft", code=0)


def test_help_documents_the_exit_codes(cli: CliRunner) -> None:
    output = _scan(cli, "--help", code=0)
    for text in ("0 clean", "1 malicious", "2 too large", "3 scan error", "outranks"):
        assert text in " ".join(output.split())


def _scan_in_a_fresh_interpreter(
    target: Path, heavy: tuple[str, ...], fmt: str = "json"
) -> tuple[int, str, str]:
    """``modelreg scan TARGET --format FMT`` in a new interpreter with no MODELREG_* settings;
    stderr ends with ``LOADED [...]``: the modules under ``heavy`` it imported, but for the
    stdlib-only registry modules the scanner shares."""
    code = (
        "import sys\n"
        "from api.cli import main\n"
        f"sys.argv = ['modelreg', 'scan', sys.argv[1], '--format', {fmt!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        f"    heavy = {heavy!r}\n"
        # registry.bundles, bundle_checks and bundles_7z (stdlib only; py7zr is imported for a
        # 7z alone) hold the archive checks the model server shares, registry.vocabulary
        # (stdlib only) the statuses and formats every package names, and registry.formats
        # (stdlib only) the sniffers the upload's format check shares
        "    shared = ('registry', 'registry.bundles', 'registry.bundle_checks',\n"
        "              'registry.bundles_7z', 'registry.vocabulary', 'registry.formats')\n"
        "    loaded = [m for m in sys.modules if m.startswith(heavy) and m not in shared]\n"
        "    print('LOADED', loaded, file=sys.stderr)\n"
        "    raise\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[3],
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_scan_runs_without_a_server_or_registry(tmp_path: Path) -> None:
    """The command works in a fresh interpreter with no MODELREG_* settings and does not
    import the registry (but for its stdlib-only bundle checks) or the API app, nor typer and
    pydantic: the command line's own start-up costs more than a small file's scan."""
    _malicious(tmp_path / "m")
    code, stdout, stderr = _scan_in_a_fresh_interpreter(
        tmp_path / "m", ("registry", "api.app", "sqlalchemy", "typer", "pydantic")
    )
    assert code == 1, stderr
    assert json.loads(stdout)["verdict"] == "malicious"
    assert "LOADED []" in stderr


def test_a_pickle_scan_never_imports_onnx(tmp_path: Path) -> None:
    """Each format's scanner is imported when a file of that format is seen: ``onnx`` costs
    about 0.8 s to import, which a pickle's scan never needs (issue 15, item 3)."""
    _malicious(tmp_path / "m")
    code, stdout, stderr = _scan_in_a_fresh_interpreter(tmp_path / "m", ("onnx",))
    assert code == 1, stderr
    assert "LOADED []" in stderr
    assert "onnx" not in json.loads(stdout)["toolVersions"]
    onnx_file = tmp_path / "o" / "model.onnx"
    onnx_file.parent.mkdir()
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x], [y])
    onnx_file.write_bytes(helper.make_model(graph).SerializeToString())
    code, stdout, stderr = _scan_in_a_fresh_interpreter(onnx_file, ("onnx",))
    assert code == 0, stderr
    assert json.loads(stdout)["toolVersions"]["onnx"] == metadata.version("onnx")
    assert "'onnx'" in stderr.rsplit("LOADED", 1)[1]  # the ONNX scanner is loaded when needed


#: The scanners of formats a plain pickle is not: each is imported for its own format alone.
_OTHER_FORMAT_SCANNERS = (
    "validators.security.zip",
    "validators.security.compression",
    "validators.security.npy_scan",
    "validators.security.keras_scan",
    "validators.security.savedmodel_scan",
    "validators.security.torchscript_scan",
)


def test_a_pickle_scan_loads_no_other_format_s_scanner(tmp_path: Path) -> None:
    """A pickle's scan imports none of the zip, compression, ``.npy``, Keras, SavedModel or
    TorchScript code: together they cost ~4 MB of resident memory at the first scan (issue
    16's benchmark). A zip of the same pickles loads the zip scanner, and the compression
    code for a compressed file."""
    code, _, stderr = _scan_in_a_fresh_interpreter(
        _malicious(tmp_path / "m"), _OTHER_FORMAT_SCANNERS
    )
    assert code == 1, stderr
    assert "LOADED []" in stderr
    archive = tmp_path / "z" / "m.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.pkl", pickle.dumps(_Evil(), protocol=4))
    code, _, stderr = _scan_in_a_fresh_interpreter(archive, _OTHER_FORMAT_SCANNERS)
    assert code == 1, stderr
    loaded = stderr.rsplit("LOADED", 1)[1]
    assert "'validators.security.zip_scan'" in loaded
    assert "savedmodel_scan" not in loaded
    gzipped = tmp_path / "g" / "m.pkl.gz"
    gzipped.parent.mkdir()
    gzipped.write_bytes(gzip.compress(pickle.dumps(_Evil(), protocol=4)))
    code, _, stderr = _scan_in_a_fresh_interpreter(gzipped, _OTHER_FORMAT_SCANNERS)
    assert code == 1, stderr
    assert "'validators.security.compression'" in stderr.rsplit("LOADED", 1)[1]


def test_a_clean_scan_off_a_terminal_prints_rich_s_line_without_importing_rich(
    tmp_path: Path,
) -> None:
    """Off a terminal rich would print the summary without colour anyway; importing it costs a
    tiny file's scan a fifth of its wall time (issue 15, item 3). A table still uses rich."""
    from rich.console import Console

    from validators.security import scan_artifact
    from validators.security.render import summary_line

    code, stdout, stderr = _scan_in_a_fresh_interpreter(_benign(tmp_path / "m"), ("rich",), "table")
    assert code == 0, stderr
    assert "LOADED []" in stderr
    report = scan_artifact(tmp_path / "m")
    printed = io.StringIO()
    Console(file=printed, soft_wrap=True).print(summary_line(report))
    ours, theirs = stdout.strip(), printed.getvalue().strip()
    timing = re.compile(r"in \d+\.\d\ds")
    assert timing.sub("in Ts", ours) == timing.sub("in Ts", theirs)
    assert ours.startswith("Passed: clean — 1 file(s)")
    code, stdout, stderr = _scan_in_a_fresh_interpreter(
        _malicious(tmp_path / "bad"), ("rich",), "table"
    )
    assert code == 1, stderr
    assert "pickle.dangerous-global" in stdout
    assert "'rich" in stderr.rsplit("LOADED", 1)[1]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--format", "xml"], ["--format", "table", "json", "sarif"]),
        (["--threshold", "severe"], ["--threshold", "LOW", "CRITICAL"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
)
def test_a_refused_command_line_exits_3_and_says_why(
    cli: CliRunner, tmp_path: Path, args: list[str], named: list[str]
) -> None:
    """Exit 3, not argparse's 2, which means "too large" here; by ``main``'s fast path and
    through the typer app (behind a root option) alike."""
    target = _benign(tmp_path / "m")
    fast = subprocess.run(
        [sys.executable, "-m", "api.cli", "scan", str(target), *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[3],
        timeout=60,
        check=False,
    )
    assert fast.returncode == 3, fast.stderr
    routed = cli.invoke(app, ["--url", "http://127.0.0.1:9", "scan", str(target), *args])
    assert routed.exit_code == 3, routed.output
    for text in (fast.stderr, routed.output):
        assert all(word in text for word in named), text
    assert "Passed" not in fast.stdout + routed.output


def test_format_and_threshold_take_any_case(cli: CliRunner, tmp_path: Path) -> None:
    report = json.loads(
        _scan(
            cli, _malicious(tmp_path / "m"), "--format", "JSON", "--threshold", "critical", code=1
        )
    )
    assert report["verdict"] == "malicious"


def test_limits_fail_whatever_the_threshold(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * (4 * 1024 * 1024))
    _scan(cli, path, "--threshold", "CRITICAL", code=2)


def test_symlinks_in_a_folder_are_findings_never_followed(cli: CliRunner, tmp_path: Path) -> None:
    outside = _malicious(tmp_path / "outside")
    folder = _benign(tmp_path / "m")
    os.symlink(outside / "weights.bin", folder / "weights.bin")
    os.symlink(outside, folder / "more")
    report = json.loads(_scan(cli, folder, "--format", "json", code=1))
    assert report["filesScanned"] == ["state.pkl"]
    links = {f["location"]: f for f in report["findings"]}
    assert set(links) == {"weights.bin", "more"}
    assert all(f["ruleId"] == "artifact.symlink" for f in links.values())
    assert all(f["severity"] == "CRITICAL" for f in links.values())


def test_fifo_is_reported_not_opened(cli: CliRunner, tmp_path: Path) -> None:
    folder = _benign(tmp_path / "m")
    os.mkfifo(folder / "pipe")
    report = json.loads(_scan(cli, folder, "--format", "json", code=1))
    assert {f["ruleId"] for f in report["findings"]} == {"artifact.special_file"}
    _scan(cli, folder / "pipe", code=1)
