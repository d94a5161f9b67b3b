"""The validator child runs under resource limits and without credentials.

The memory-bomb model asks onnxruntime for 8 GB; every test here gives the child a small limit
(1 GiB at most), so that it fails fast and never endangers the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import TensorProto, helper
from sqlalchemy import select

from registry.children import Limits, clean_env, limited_argv, looks_secret, parse_memory
from registry.models import AIModelValidationResult
from registry.services import Registry
from tests.support.helpers import make_model, make_version, upload
from tests.support.onnx_models import add_model
from validators.child import run_in_child
from validators.worker import ValidationWorker

GiB = 1024**3
SECRETS = {
    "MODELREG_DATABASE_URL": "postgresql+psycopg://admin:hunter2@db.internal/modelreg",
    "MODELREG_TOKEN": "mr_secret_token_value",
    "MODELREG_S3_ACCESS_KEY": "AKIAEXAMPLE",
    "MODELREG_S3_SECRET_KEY": "s3-secret-value",
    "MODELREG_WEBHOOK_SECRET": "whsec_value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_SESSION_TOKEN": "aws-session-value",
}


def memory_bomb() -> bytes:
    """y = ConstantOfShape([2e9]) + x: a model of about 130 bytes that needs 8 GB to run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2_000_000_000])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [2_000_000_000])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("Add", ["big", "x"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bomb", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


# -- child entries (what the child runs instead of the validators) ---------------------------


def allocate_in_child(**kwargs: Any) -> None:
    """Passes the scan's place, then asks Python for more than the limit."""
    Path(kwargs["output"]).with_name("security.json").write_text(
        json.dumps({"status": "Passed", "findings": []})
    )
    blob = bytearray(2 * GiB)
    blob[-1] = 1


def spin_in_child(**_kwargs: Any) -> None:
    while True:
        pass


def hang_in_child(**_kwargs: Any) -> None:
    time.sleep(600)


def report_env_then_validate(**kwargs: Any) -> None:
    """Writes what the child sees, waits for the test to look at it, then validates."""
    workdir = Path(kwargs["workdir"])
    (workdir / "environ.json").write_text(json.dumps(dict(os.environ)))
    print(json.dumps(dict(os.environ)), flush=True)  # stdout: the child's log
    deadline = time.monotonic() + 60
    while not (workdir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run_in_child(**kwargs)


# -- helpers ---------------------------------------------------------------------------------


def _results(registry: Registry) -> list[AIModelValidationResult]:
    with registry.sessions() as s:
        return list(s.scalars(select(AIModelValidationResult)))


def _by_version(registry: Registry) -> dict[str, AIModelValidationResult]:
    from registry.models import AIModelVersion

    with registry.sessions() as s:
        rows = s.execute(
            select(AIModelVersion.version_number, AIModelValidationResult).join(
                AIModelValidationResult,
                AIModelValidationResult.model_version_id == AIModelVersion.id,
            )
        )
        return {row[0]: row[1] for row in rows}


def _rules(result: AIModelValidationResult) -> list[str]:
    assert result.results is not None
    return [f["ruleId"] for f in result.results["functional"]["findings"]]


@pytest.fixture
def model(http: httpx.Client) -> str:
    make_model(http, "m")
    return "m"


# -- memory ----------------------------------------------------------------------------------


def test_the_memory_bomb_fails_on_the_memory_limit_and_the_worker_goes_on(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    bomb = memory_bomb()
    assert len(bomb) < 200
    registry.settings.validator_memory = GiB
    make_version(http, model, "1.0")
    make_version(http, model, "2.0", parameters={"dimensions": {"batch": 2}})
    upload(http, model, "1.0", bomb)
    upload(http, model, "2.0", add_model())
    worker = ValidationWorker(registry)
    assert worker.run_once()
    assert worker.run_once()  # the next run, in a fresh child
    results = _by_version(registry)
    bombed = results["1.0"]
    assert (bombed.security_scan_status, bombed.functional_status) == ("Passed", "Failed")
    assert _rules(bombed)[0] == "resource.memory-limit", _rules(bombed)
    assert bombed.results is not None
    message = bombed.results["functional"]["findings"][0]["message"]
    assert str(GiB) in message
    assert "MODELREG_VALIDATOR_MEMORY" in message
    assert bombed.performance_benchmark is None
    good = results["2.0"]
    assert (good.security_scan_status, good.functional_status) == ("Passed", "Passed")


def test_a_python_allocation_over_the_limit_is_a_memory_finding_and_the_scan_is_kept(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    registry.settings.validator_memory = GiB
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    assert ValidationWorker(registry, child_entry=allocate_in_child).run_once()
    (result,) = _results(registry)
    assert (result.security_scan_status, result.functional_status) == ("Passed", "Failed")
    assert _rules(result) == ["resource.memory-limit"]
    assert result.results is not None
    assert result.results["security"]["status"] == "Passed"
    assert "ran out of memory" in result.results["error"]


# -- CPU and wall clock -----------------------------------------------------------------------


def test_a_child_over_its_cpu_time_is_stopped_with_a_cpu_finding(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    registry.settings.validator_cpu_seconds = 1
    registry.settings.validation_timeout_seconds = 120
    make_version(http, model, "1.0")
    make_version(http, model, "2.0")
    upload(http, model, "1.0", add_model())
    upload(http, model, "2.0", add_model())
    worker = ValidationWorker(registry, child_entry=spin_in_child)
    assert worker.run_once()
    assert worker.run_once()
    results = _results(registry)
    assert len(results) == 2
    for result in results:
        assert result.functional_status == "Failed"
        assert _rules(result) == ["resource.cpu-limit"]
        assert result.results is not None
        assert "SIGXCPU" in result.results["error"]
        assert "MODELREG_VALIDATOR_CPU_SECONDS" in result.results["error"]


def test_a_child_past_the_timeout_is_stopped_with_a_timeout_finding(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    registry.settings.validation_timeout_seconds = 1
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    assert ValidationWorker(registry, child_entry=hang_in_child).run_once()
    (result,) = _results(registry)
    assert (result.security_scan_status, result.functional_status) == ("Failed", "Failed")
    assert _rules(result) == ["resource.timeout"]


# -- the environment -------------------------------------------------------------------------


def _validator_child(parent: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == parent and b"validators.child" in cmdline:
                return int(stat.parent.name)
    return None


def test_the_validator_child_sees_no_credentials(
    http: httpx.Client, model: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Kept for the child whether or not the run that tests this set it (CI does not).
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH") or str(Path.cwd()))
    make_version(http, model, "1.0", parameters={"dimensions": {"batch": 2}})
    upload(http, model, "1.0", add_model())
    worker = ValidationWorker(registry, child_entry=report_env_then_validate)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while (pid := _validator_child(os.getpid())) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid is not None, "the validation child did not start"
        job = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()
        workdir = Path(json.loads(Path(job).read_text())["kwargs"]["workdir"])
        while not (workdir / "environ.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        seen = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        printed = (workdir / "environ.json").read_text()
        (workdir / "go").touch()
    finally:
        thread.join(timeout=120)
    for name, value in SECRETS.items():
        assert name not in seen
        assert value not in raw.decode()
        assert value not in printed
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["PYTHONPATH"] == os.environ["PYTHONPATH"]
    assert seen["OMP_NUM_THREADS"] == "1"
    assert seen["MALLOC_ARENA_MAX"] == "2"  # under a memory limit: few malloc arenas
    assert not [name for name in seen if name.startswith("MODELREG_")]
    (result,) = _results(registry)  # and the validation itself ran through
    assert (result.security_scan_status, result.functional_status) == ("Passed", "Passed")


# -- the mechanics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        pytest.param("MODELREG_DATABASE_URL", True, id="database-url"),
        pytest.param("MODELREG_TOKEN", True, id="api-token"),
        pytest.param("MODELREG_S3_ENDPOINT", True, id="any-s3-setting"),
        pytest.param("AWS_PROFILE", True, id="any-aws"),
        pytest.param("MODELREG_OIDC_CLIENT_SECRET", True, id="secret-looking"),
        pytest.param("GITHUB_TOKEN", True, id="a-token"),
        pytest.param("MODELREG_ARTIFACT_DIR", False, id="artifact-dir"),
        pytest.param("OMP_NUM_THREADS", False, id="omp"),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_clean_env_keeps_only_what_a_process_needs_and_refuses_a_secret() -> None:
    base = {"PATH": "/bin", "LC_ALL": "C.UTF-8", "HOME": "/h", "EDITOR": "vi", **SECRETS}
    assert clean_env({"MODELREG_LOG_LEVEL": "INFO"}, base=base) == {
        "PATH": "/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": "/h",
        "MODELREG_LOG_LEVEL": "INFO",
    }
    with pytest.raises(ValueError, match="MODELREG_TOKEN looks like a credential"):
        clean_env({"MODELREG_TOKEN": "x"}, base=base)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("512Mi", 512 * 1024**2, id="mebibytes"),
        pytest.param("4Gi", 4 * GiB, id="gibibytes"),
        pytest.param("1G", 10**9, id="gigabytes"),
        pytest.param(1234, 1234, id="bytes"),
    ],
)
def test_memory_quantities(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["lots", "-1Mi", "0", True, 1.5])
def test_a_bad_memory_quantity_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(value)


def test_the_wrapper_runs_the_module_under_the_limits(tmp_path: Path) -> None:
    import subprocess

    probe = "import pathlib, sys\nprint(sys.argv[1:])\n"
    probe += "print(pathlib.Path('/proc/self/limits').read_text())"
    (tmp_path / "limits_probe.py").write_text(probe)
    argv = limited_argv("limits_probe", ["a", "b"], Limits(memory_bytes=GiB, cpu_seconds=7))
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = clean_env({"PYTHONPATH": os.pathsep.join(path)})
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "['a', 'b']"
    limits = {line[:26].strip(): line[26:].split() for line in lines[2:]}
    assert limits["Max address space"][:2] == [str(GiB), str(GiB)]
    assert limits["Max cpu time"][:2] == ["7", "12"]
