"""The ``modelreg`` command line, as a user types it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from registry import migrate
from registry.services import Registry
from tests.support.helpers import pass_validation
from tests.support.live_server import LiveServer
from tests.support.onnx_models import add_model, nan_model, write
from tests.support.ports import free_port
from tests.support.serve_process import modelreg, serve, stop, wait_ready
from validators.worker import start_worker_thread


@pytest.fixture
def cli(
    server: LiveServer, admin_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_model_and_version_workflow(cli: CliRunner, tmp_path: Path, registry: Registry) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    run(
        cli,
        "models",
        "create",
        "text2img",
        "--task",
        "ImageGeneration",
        "--provider",
        "Internal",
        "--description",
        "a test model",
    )
    output = run(
        cli, "versions", "upload", "text2img", "1.0", str(artifact), "--notes", "first cut"
    )
    import hashlib

    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert digest in output
    assert str(artifact.stat().st_size) in output

    table = run(cli, "versions", "list", "text2img")
    assert "1.0" in table
    assert "Staged" in table
    assert digest[:12] in table

    run(cli, "versions", "download", "text2img", "1.0", "-o", str(tmp_path / "out.onnx"))
    assert (tmp_path / "out.onnx").read_bytes() == artifact.read_bytes()

    refused = run(cli, "versions", "transition", "text2img", "1.0", "Deprecated", code=1)
    assert pass_validation(registry) == 1
    assert "409" in refused
    assert "Production" in refused
    assert "Production" in run(cli, "versions", "transition", "text2img", "1.0", "Production")
    assert "Deprecated" in run(
        cli, "versions", "transition", "text2img", "1.0", "Deprecated", "--reason", "superseded"
    )

    again = run(cli, "versions", "upload", "text2img", "1.0", str(artifact), code=1)
    assert "immutable" in again

    listed = json.loads(run(cli, "models", "list", "--json"))
    assert [m["name"] for m in listed] == ["text2img"]
    shown = json.loads(run(cli, "versions", "show", "text2img", "1.0", "--json"))
    assert shown["releaseNotes"] == "first cut"
    assert shown["sha256"] == digest


def test_upload_retry_reuses_the_version_left_without_artifact(
    cli: CliRunner, tmp_path: Path
) -> None:
    run(cli, "models", "create", "m", "--task", "TextGeneration")
    run(cli, "versions", "create", "m", "2.0", "--format", "safetensors")  # any case
    artifact = tmp_path / "weights.safetensors"
    artifact.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    output = run(cli, "versions", "upload", "m", "2.0", str(artifact), "--format", "SafeTensors")
    assert "weights.safetensors" in output


def test_validate_waits_and_prints_the_findings(
    cli: CliRunner, tmp_path: Path, registry: Registry
) -> None:
    good = write(tmp_path / "good.onnx", add_model())
    bad = write(tmp_path / "bad.onnx", nan_model())
    run(cli, "models", "create", "m", "--task", "ImageGeneration")
    run(cli, "versions", "upload", "m", "1", str(good))
    run(cli, "versions", "upload", "m", "2", str(bad))
    thread, stop = start_worker_thread(registry)
    try:
        passed = run(cli, "validate", "m", "1", "--wait", "--timeout", "120")
        assert "security scan  Passed" in passed
        assert "functional     Passed" in passed
        assert "p95" in passed
        failed = run(cli, "validate", "m", "2", "--wait", "--timeout", "120", code=1)
        assert "functional     Failed" in failed
        assert "finding" in failed
    finally:
        stop.set()
        thread.join(timeout=30)
    shown = run(cli, "validate", "m", "1")  # the finished run is shown, nothing is queued
    assert "security scan  Passed" in shown
    assert "modelreg validate m 1 --again" in shown
    assert "queued" in run(cli, "validate", "m", "1", "--again")
    assert "is queued" in run(cli, "validate", "m", "1")  # follows the run, no duplicate
    assert len(json.loads(run(cli, "validate", "m", "1", "--json"))["id"]) == 36


def test_validation_runs_are_read_without_queueing_one(
    cli: CliRunner, tmp_path: Path, registry: Registry
) -> None:
    good = write(tmp_path / "good.onnx", add_model())
    run(cli, "models", "create", "m", "--task", "ImageGeneration")
    run(cli, "versions", "upload", "m", "1", str(good))
    listed = run(cli, "versions", "list", "m")
    assert "- - +queued" in listed
    thread, stop = start_worker_thread(registry)
    try:
        waited = run(cli, "validate", "m", "1", "--wait", "--timeout", "120")
    finally:
        stop.set()
        thread.join(timeout=30)
    (only,) = json.loads(run(cli, "validations", "list", "m", "1", "--json"))
    assert only["result"]["id"] == only["id"]  # one id for the run and its result
    assert only["id"] in waited
    table = run(cli, "validations", "list", "m", "1")
    assert f" {only['id'][:8]} " in table  # the prefix `validations show` accepts
    assert "Passed" in table
    shown = run(cli, "validations", "show", only["id"])
    bench = only["result"]["performanceBenchmark"]
    for line in ("latency        p50 ", "iterations, 3 repeat(s)", "resources      load "):
        assert line in shown
        assert line in waited
    assert "peak RSS" in shown
    assert "throughput" in shown
    assert (bench["noisy"] is True) == ("noisy          " in shown)
    assert len(json.loads(run(cli, "validations", "list", "m", "1", "--json"))) == 1
    listed = run(cli, "versions", "list", "m")
    assert "scan/func" in listed
    assert "│ ✓ ✓ " in listed
    assert "validation  scan ✓ func ✓" in run(cli, "versions", "show", "m", "1")
    missing = run(cli, "validations", "show", str(uuid.uuid4()), code=1)
    assert "no validation" in missing


def test_benchmark_numbers_have_three_significant_digits() -> None:
    from api.cli.validations import _benchmark_lines, _status_line, format_latency

    assert format_latency(0.012345) == "12.3 µs"
    assert format_latency(0.5) == "500 µs"
    assert format_latency(1.23456) == "1.23 ms"
    assert format_latency(123.456) == "123 ms"
    assert format_latency(4567.0) == "4.57 s"
    lines = _benchmark_lines(
        {
            "latencyMs": {"p50": 0.1234, "p95": 0.2, "p99": 2.5, "iterations": 60},
            "repeats": [{}, {}, {}],
            "throughput": {"1": 8123.4, "8": None},
            "modelLoadSeconds": 0.0456,
            "peakRssBytes": 150 * 2**20,
            "noisy": True,
            "noisyReasons": ["only 60 timed iterations, fewer than the 100 a p99 needs"],
            "regression": {"p95Ratio": 1.5, "noisy": True, "note": "this benchmark was noisy"},
        }
    )
    assert lines == [
        "latency        p50 123 µs · p95 200 µs · p99 2.50 ms  (60 iterations, 3 repeat(s))",
        "throughput     batch 1: 8.12k/s",
        "resources      load 45.6 ms · peak RSS 150 MiB",
        "noisy          only 60 timed iterations, fewer than the 100 a p99 needs",
        "regression     p95 1.50x the Production version's (this benchmark was noisy)",
    ]

    class Run:
        status, phase = "Running", "benchmark"

    assert _status_line(Run(), 12.34) == "phase: benchmark · 12.3 s"


def test_errors_are_readable(cli: CliRunner) -> None:
    missing = run(cli, "models", "show", "nope", code=1)
    assert "404" in missing
    assert "nope" in missing
    bad = run(cli, "models", "create", "x y", "--task", "ImageGeneration", code=1)
    assert "NAME: must start with a letter or digit" in bad


def test_unreachable_server_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELREG_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MODELREG_TOKEN", "x")
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "none"))
    output = run(CliRunner(), "models", "list", code=2)
    assert "cannot reach modelreg" in output


def test_keys_create_list_revoke(cli: CliRunner) -> None:
    created = run(
        cli,
        "keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "models:read",
        "--scope",
        "models:write",
        "--user",
        "ci@example.com",
    )
    token = next(w for w in created.split() if w.startswith("mr_") and "." in w)
    api_key = token.split(".")[0]
    listed = run(cli, "keys", "list")
    assert api_key[:8] in listed
    assert "ci@example.com" in listed
    assert token.split(".")[1] not in listed
    run(cli, "keys", "revoke", api_key)
    assert "revoked" in run(cli, "keys", "list")


# -- the real thing: `modelreg serve` on the embedded defaults --------------------------------


def test_serve_on_embedded_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"), COLUMNS="200")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(env, port)
    try:
        wait_ready(url, proc)
        credentials = home / ".config" / "modelreg" / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        token = credentials.read_text().split("token = ")[1].strip()
        assert (home / ".local" / "share" / "modelreg" / "modelreg.db").is_file()
        created = modelreg("models", "create", "text2img", "--task", "ImageGeneration", env=env)
        assert created.returncode == 0, created.stderr
        listed = modelreg("models", "list", env=env)
        assert "text2img" in listed.stdout
    finally:
        out, _err = stop(proc)
    assert out.count(token) == 1

    proc = serve(env, port)
    try:
        wait_ready(url, proc)
        assert modelreg("models", "show", "text2img", env=env).returncode == 0
    finally:
        out, _err = stop(proc)
    assert "mr_" not in out  # the key is created and printed on the first start only


def test_serve_refuses_an_unmigrated_postgres_until_db_upgrade(
    tmp_path: Path, empty_pg_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        HOME=str(tmp_path),
        MODELREG_DATABASE_URL=empty_pg_url,
        MODELREG_DATA_DIR=str(tmp_path / "data"),
    )
    port = free_port()
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "modelreg db upgrade" in refused.stderr
    upgraded = modelreg("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    current, head = modelreg("db", "current", env=env).stdout.splitlines()
    assert current.split()[-1] == head.split()[-1] == migrate.head_revision(empty_pg_url)
    proc = serve(env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        stop(proc)


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"modelreg {version('modelreg')}"


def test_download_creates_folders_refuses_to_overwrite_and_never_shows_a_traceback(
    cli: CliRunner, tmp_path: Path
) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(os.urandom(4096))
    run(cli, "models", "create", "m", "--task", "ImageGeneration")
    run(cli, "versions", "upload", "m", "1.0", str(artifact))

    nested = tmp_path / "a" / "b" / "out.onnx"
    run(cli, "versions", "download", "m", "1.0", "-o", str(nested))
    assert nested.read_bytes() == artifact.read_bytes()

    nested.write_bytes(b"mine")
    refused = run(cli, "versions", "download", "m", "1.0", "-o", str(nested), code=1)
    assert "exists" in refused
    assert "--force" in refused
    assert nested.read_bytes() == b"mine", "an existing file is left alone"
    run(cli, "versions", "download", "m", "1.0", "-o", str(nested), "--force")
    assert nested.read_bytes() == artifact.read_bytes()

    folder = tmp_path / "into"
    folder.mkdir()
    run(cli, "versions", "download", "m", "1.0", "-o", str(folder))
    assert (folder / "model.onnx").read_bytes() == artifact.read_bytes()

    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where a folder should be")
    failed = run(cli, "versions", "download", "m", "1.0", "-o", str(blocked / "out.onnx"), code=1)
    assert "cannot write" in failed
    assert "Traceback" not in failed
