"""``modelreg deploy``, ``deployments …``, ``rollback``, ``history`` and ``endpoint``, as a user
types them, against the real API; the controller is driven in-test over a fake deployer."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.cli.rollout_view import _watch_view
from api.schemas import DeploymentOut
from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from deployers.base import Instance, OwnedWorkload, Target, Workload, WorkloadStatus
from registry.services import Registry
from tests.support.fakes import SteadyTraffic
from tests.support.helpers import make_model, make_version, pass_validation, upload
from tests.support.live_server import LiveServer

MODEL = "text2img"


class FakeDeployer:
    """Workloads that are ready the moment they are applied; each gets a port of its own.
    With ``instances``, each reports its one server as an instance (which the direct
    analysis scrapes)."""

    def __init__(self, *, instances: bool = False) -> None:
        self.workloads: dict[tuple[str, str], dict[uuid.UUID, WorkloadStatus]] = {}
        self.ports = 0
        self.instances = instances
        self.targets: dict[tuple[str, str], Target] = {}

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        return dict(self.workloads.get((target.model, target.environment), {}))

    def apply(self, target: Target, workloads: Sequence[Workload]) -> None:
        mine = self.workloads.setdefault((target.model, target.environment), {})
        for w in workloads:
            if w.replicas == 0:
                mine.pop(w.deployment_id, None)
                continue
            known = mine.get(w.deployment_id)
            if known is not None and known.url is not None:
                url = known.url
            else:
                self.ports += 1
                url = f"http://127.0.0.1:{9000 + self.ports}"
            mine[w.deployment_id] = WorkloadStatus(
                deployment_id=w.deployment_id,
                version_id=w.version.id,
                replicas=w.replicas,
                ready_replicas=w.replicas,
                url=url,
                instances=(Instance(url=url, ready=True),) if self.instances else (),
            )
        self.targets[(target.model, target.environment)] = target

    def owned(self) -> list[OwnedWorkload]:
        return [
            OwnedWorkload(dep_id, self.targets[key], None, f"a fake server on {status.url}")
            for key, mine in self.workloads.items()
            for dep_id, status in mine.items()
        ]

    def remove(self, workload: OwnedWorkload) -> None:
        key = (workload.target.model, workload.target.environment)
        self.workloads.get(key, {}).pop(workload.deployment_id, None)


class Driver:
    """Runs controller passes with a fixed clock that jumps past every pause."""

    def __init__(self, registry: Registry, *, analysis: StepAnalysis | None = None) -> None:
        self.registry = registry
        # A given analysis scrapes the servers it is shown; the default one sees none.
        deployer = FakeDeployer(instances=analysis is not None)
        self.controller = Controller(
            registry.deployments, deployers={"local": deployer}, analysis=analysis
        )
        self.now = datetime.now(UTC)
        self.lock = threading.Lock()

    def passes(self, count: int = 1, *, step: timedelta = timedelta(minutes=2)) -> None:
        with self.lock:
            for _ in range(count):
                self.now += step
                self.controller.run_pass(now=self.now)

    def until(self, deployment_id: str, *statuses: str, limit: int = 20) -> str:
        for _ in range(limit):
            status = self.registry.deployments.get(uuid.UUID(deployment_id)).status
            if status in statuses:
                return status
            self.passes()
        raise AssertionError(f"deployment {deployment_id} is still {status}")


@pytest.fixture
def cli(
    server: LiveServer, admin_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> CliRunner:
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


@pytest.fixture
def driver(registry: Registry) -> Driver:
    return Driver(registry)


@pytest.fixture
def versions(http: httpx.Client) -> list[str]:
    make_model(http, MODEL)
    numbers = ["1.0", "2.0", "3.0"]
    for number in numbers:
        make_version(http, MODEL, number)
        assert upload(http, MODEL, number, f"model {number}".encode()).status_code == 201
    return numbers


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def deploy_json(cli: CliRunner, version: str, *args: str) -> dict[str, object]:
    output = run(cli, "deploy", MODEL, version, "--env", "staging", *args, "--json")
    result: dict[str, object] = json.loads(output)
    return result


def test_deploy_prints_the_deployment_and_lists_it(
    cli: CliRunner, versions: list[str], driver: Driver
) -> None:
    output = run(
        cli,
        "deploy",
        MODEL,
        "1.0",
        "--env",
        "staging",
        "--steps",
        "10,50,100",
        "--pause",
        "60s",
        "--replicas",
        "2",
        "--params",
        '{"replicas": 5, "maxHold": "2m"}',
    )
    assert "Initiated" in output
    dep_id = output.split("deployment ", 1)[1].split()[0]
    assert f"modelreg deployments watch {dep_id}" in output

    shown = json.loads(run(cli, "deployments", "show", dep_id, "--json"))
    assert shown["strategyParams"] == {
        "steps": [
            {"weight": 10, "pause": "60s"},
            {"weight": 50, "pause": "60s"},
            {"weight": 100, "pause": "0s"},
        ],
        "replicas": 2,
        "maxHold": "2m",
    }
    table = run(cli, "deployments", "list", "--model", MODEL, "--env", "staging")
    assert dep_id[:8] in table
    assert "canary" in table
    assert "Initiated" in table
    assert json.loads(run(cli, "deployments", "list", "--status", "Active", "--json")) == []
    listed = json.loads(run(cli, "deployments", "list", "--json"))
    assert [d["id"] for d in listed] == [dep_id]

    events = run(cli, "deployments", "events", dep_id)
    assert "created" in events


def test_canary_walks_to_active_and_show_follows(
    cli: CliRunner, versions: list[str], driver: Driver
) -> None:
    first = str(deploy_json(cli, "1.0", "--steps", "100")["id"])
    assert driver.until(first, "Active") == "Active"  # nothing to canary against: all at once
    dep_id = str(deploy_json(cli, "2.0", "--steps", "25,100", "--pause", "30s")["id"])
    seen: set[tuple[str, str]] = set()
    for _ in range(12):
        driver.passes()
        shown = json.loads(run(cli, "deployments", "show", dep_id, "--json"))
        progress = shown["progress"]
        seen.add((shown["status"], f"{progress['stepIndex']}:{progress['trafficWeight']}"))
        if shown["status"] == "Active":
            break
    assert shown["status"] == "Active", seen
    assert ("Deploying", "0:25") in seen
    table = run(cli, "deployments", "show", dep_id)
    assert "Active" in table
    assert "2/2" in table
    assert "100%" in table
    assert "http://127.0.0.1:90" in table  # the observed workload

    answer = run(cli, "endpoint", MODEL, "--env", "staging", "--key", "user-7")
    assert "2.0" in answer
    assert "100%" in answer
    assert "selected: 2.0 at http://127.0.0.1:90" in answer
    picked = json.loads(run(cli, "endpoint", MODEL, "--env", "staging", "--json", "--key", "a"))
    assert picked["selected"]["versionNumber"] == "2.0"

    # watch on a finished rollout draws it once and exits 0
    watched = run(cli, "deployments", "watch", dep_id, "--interval", "0.05")
    assert "Active" in watched
    assert "step 2/2" in watched


def test_pause_resume_promote_and_abort(
    cli: CliRunner, versions: list[str], driver: Driver
) -> None:
    first = str(deploy_json(cli, "1.0", "--steps", "100")["id"])
    driver.until(first, "Active")

    second = str(deploy_json(cli, "2.0", "--steps", "10,50,100", "--pause", "1h")["id"])
    driver.passes(3)
    assert "pause requested" in run(cli, "deployments", "pause", second, "--reason", "look")
    driver.passes(2, step=timedelta(hours=2))
    shown = json.loads(run(cli, "deployments", "show", second, "--json"))
    assert shown["progress"]["paused"] is True
    assert shown["status"] == "Deploying"
    assert "paused" in run(cli, "deployments", "show", second)

    run(cli, "deployments", "resume", second)
    run(cli, "deployments", "promote", second, "--reason", "looks good")
    assert driver.until(second, "Active") == "Active"
    events = json.loads(run(cli, "deployments", "events", second, "--json"))
    kinds = [e["kind"] for e in events]
    assert "paused" in kinds
    assert "resumed" in kinds
    assert "promote_requested" in kinds

    third = str(deploy_json(cli, "3.0", "--steps", "10,100", "--pause", "1h")["id"])
    driver.passes(2)
    run(cli, "deployments", "abort", third, "--reason", "bad numbers")
    assert driver.until(third, "RolledBack", "Failed") == "RolledBack"
    run(cli, "deployments", "watch", third, "--interval", "0.05", code=1)
    answer = json.loads(run(cli, "endpoint", MODEL, "--env", "staging", "--json"))
    assert {e["versionNumber"] for e in answer["endpoints"] if e["weight"] > 0} == {"2.0"}


def test_rollback_and_history_at(cli: CliRunner, versions: list[str], driver: Driver) -> None:
    first = str(deploy_json(cli, "1.0", "--strategy", "blue_green")["id"])
    driver.until(first, "Active")
    between = datetime.now(UTC)
    second = str(deploy_json(cli, "2.0", "--strategy", "blue_green")["id"])
    driver.until(second, "Active")

    output = run(cli, "rollback", MODEL, "--env", "staging", "--reason", "regression")
    assert "back to 1.0" in output
    assert f"modelreg deployments watch {first}" in output  # its servers were still up
    driver.passes(2)
    assert json.loads(run(cli, "deployments", "show", second, "--json"))["status"] == "Inactive"
    answer = json.loads(run(cli, "endpoint", MODEL, "--env", "staging", "--json"))
    assert answer["selected"]["versionNumber"] == "1.0"

    table = run(cli, "history", MODEL, "--env", "staging")
    assert "created" in table
    assert "2.0" in table
    at = between.isoformat()
    past = run(cli, "history", MODEL, "--env", "staging", "--at", at)
    assert "served at" in past
    body = json.loads(run(cli, "history", MODEL, "--env", "staging", "--at", at, "--json"))
    assert [(r["versionNumber"], r["weight"]) for r in body["servingAt"]] == [("1.0", 100)]
    assert all(datetime.fromisoformat(e["at"]) <= between for e in body["events"])


def test_deploy_wait_exits_0_when_active(
    cli: CliRunner, versions: list[str], driver: Driver, registry: Registry
) -> None:
    stop = threading.Event()

    def drive() -> None:
        while not stop.wait(0.05):
            driver.passes()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        output = run(
            cli,
            "deploy",
            MODEL,
            "1.0",
            "--env",
            "staging",
            "--steps",
            "50,100",
            "--pause",
            "10s",
            "--wait",
            "--interval",
            "0.05",
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    assert "ended Active" in output
    assert "step 2/2" in output


def test_wait_and_watch_exit_1_when_rolled_back(
    cli: CliRunner, versions: list[str], driver: Driver
) -> None:
    first = str(deploy_json(cli, "1.0", "--steps", "100")["id"])
    driver.until(first, "Active")
    second = str(deploy_json(cli, "2.0", "--steps", "10,100", "--pause", "1h")["id"])
    run(cli, "deployments", "abort", second)
    driver.until(second, "RolledBack", "Failed")
    output = run(cli, "deployments", "watch", second, "--interval", "0.05", code=1)
    assert "RolledBack" in output
    assert "abort" in output  # the ledger's newest events


def test_show_and_watch_say_a_production_canary_waits_for_traffic(
    cli: CliRunner, versions: list[str], registry: Registry
) -> None:
    pass_validation(registry)
    # Every server has served 3 inference requests, and no more come.
    driver = Driver(registry, analysis=StepAnalysis(scrape=SteadyTraffic(per_scrape=0, already=3)))

    def deploy_production(version: str, *args: str) -> str:
        output = run(cli, "deploy", MODEL, version, "--env", "production", *args, "--json")
        return str(json.loads(output)["id"])

    first = deploy_production("1.0", "--steps", "100")
    assert driver.until(first, "Active") == "Active"
    second = deploy_production("2.0", "--steps", "10,100", "--pause", "30s")
    driver.passes(6, step=timedelta(seconds=20))  # well past the pause, within maxHold
    shown = json.loads(run(cli, "deployments", "show", second, "--json"))
    assert (shown["status"], shown["progress"]["trafficWeight"]) == ("Deploying", 10)
    assert shown["progress"]["holdSince"] is not None
    conditions = {c["type"]: c for c in shown["conditions"]}
    assert conditions["Analysis"]["reason"] == "inconclusive"
    assert conditions["Analysis"]["message"] == "waiting for traffic: 3 of 20 requests"
    assert conditions["Progressing"]["message"] == "waiting for traffic: 3 of 20 requests"

    table = run(cli, "deployments", "show", second)
    holding = next(line for line in table.splitlines() if "│ holding  " in line)
    assert "waiting for traffic: 3 of 20 requests" in holding

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(_watch_view(DeploymentOut.model_validate(shown), None, []))
    watched = console.export_text()
    assert "holding: waiting for traffic: 3 of 20 requests" in watched
    assert "Analysis: False inconclusive waiting for traffic: 3 of 20 requests" in watched

    # Outside production the same canary passes on health alone, as before.
    run(cli, "deployments", "abort", second)
    driver.until(second, "RolledBack")
    staging = str(deploy_json(cli, "1.0", "--steps", "100")["id"])
    driver.until(staging, "Active")
    canary = str(deploy_json(cli, "2.0", "--steps", "10,100", "--pause", "30s")["id"])
    assert driver.until(canary, "Active", "RolledBack") == "Active"


def test_readable_errors(cli: CliRunner, versions: list[str]) -> None:
    gate = run(cli, "deploy", MODEL, "1.0", "--env", "production", code=1)
    assert "409" in gate
    assert "failedChecks" in gate
    assert "validation" in gate

    unknown = str(uuid.uuid4())
    missing = run(cli, "deployments", "show", unknown, code=1)
    assert "404" in missing
    malformed = run(cli, "deployments", "show", "abc123", code=1)
    assert "too short" in malformed
    run(cli, "deployments", "promote", "nope", code=1)

    nothing = run(cli, "endpoint", MODEL, "--env", "staging", code=1)
    assert "404" in nothing
    bad_steps = run(cli, "deploy", MODEL, "1.0", "--steps", "ten", code=1)
    assert "--steps" in bad_steps
    bad_pause = run(cli, "deploy", MODEL, "1.0", "--env", "staging", "--pause", "soon", code=1)
    assert "--pause: must be a duration" in bad_pause
    assert "pause" in bad_pause
    bad_at = run(cli, "history", MODEL, "--at", "yesterday", code=1)
    assert "ISO 8601" in bad_at


def test_tables_fit_80_columns_and_keep_ids_states_and_versions_whole(
    cli: CliRunner,
    versions: list[str],
    driver: Driver,
    monkeypatch: pytest.MonkeyPatch,
    http: httpx.Client,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    first = deploy_json(cli, "1.0", "--strategy", "rolling_update")
    driver.until(str(first["id"]), "Active")
    second = deploy_json(cli, "2.0")
    why = "the candidate looks wrong on the dashboards after a day of traffic; rolling back now"
    run(cli, "deployments", "abort", str(second["id"]), "--reason", why)
    driver.until(str(second["id"]), "RolledBack")

    listed = run(cli, "deployments", "list")
    events = run(cli, "deployments", "events", str(second["id"]))
    history = run(cli, "history", MODEL, "--env", "staging")
    for output in (listed, events, history, run(cli, "deployments", "show", str(second["id"]))):
        too_long = [line for line in output.splitlines() if len(line) > 80]
        assert not too_long, output
    for whole in (str(first["id"])[:8], str(second["id"])[:8], "1.0", "2.0", "rolling_update"):
        assert whole in listed, listed
    assert "RolledBack" in listed
    assert "Active" in listed or "Inactive" in listed
    # The actor is the admin's email, not a key name and a UUID; the reason wraps, whole words.
    assert "admin@modelreg.local" in events
    assert "(user " not in events
    assert "admin@modelreg.local" in history
    tokens = set(events.split())
    assert all(word in tokens for word in why.split()), events  # wrapped, never cut mid-word
    ledger = http.get(f"/api/v1/deployments/{second['id']}/events").json()
    by_kind = {e["kind"]: e for e in ledger}
    assert by_kind["abort_requested"]["actorEmail"] == "admin@modelreg.local"
    assert all(e["actorEmail"] is None for e in ledger if e["actor"] == "controller")
