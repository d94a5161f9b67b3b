"""End to end, with real processes: ``modelreg serve`` on the embedded defaults (SQLite, local
artifacts, the validation worker and the controller in one process), and one real
``modelreg serve-model`` process per deployed version.

The two versions compute different things (y = x + 1 and y = x + 2), so an inference call
through the resolved endpoint says which version answered.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from registry.db import create_db_engine
from registry.models import AIModelDeployment
from tests.support.live import TERMINAL, Modelreg, infer, wait_for
from tests.support.onnx_models import add_model, unloadable_model

KEYS = [f"user-{i}" for i in range(300)]


def selected_versions(mr: Modelreg, model: str) -> dict[str, str]:
    picks = {}
    for key in KEYS:
        answer = mr.resolve(model, key=key)
        assert answer is not None
        picks[key] = answer["selected"]["versionNumber"]
    return picks


@pytest.fixture(scope="module")
def modelreg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Modelreg]:
    mr = Modelreg(tmp_path_factory.mktemp("e2e")).start()
    try:
        yield mr
    finally:
        mr.stop()
        mr.kill_servers()


@pytest.fixture(scope="module")
def two_versions(modelreg: Modelreg) -> str:
    """text2img 1.0 (x + 1) and 1.1 (x + 2), both validated."""
    modelreg.version("text2img", "1.0", add_model(constant=1.0))
    modelreg.version("text2img", "1.1", add_model(constant=2.0))
    for number in ("1.0", "1.1"):
        run = modelreg.validated("text2img", number)
        assert run["result"]["securityScanStatus"] == "Passed", run
        assert run["result"]["functionalStatus"] == "Passed", run
    return "text2img"


def test_canary_from_first_deploy_to_promotion(modelreg: Modelreg, two_versions: str) -> None:
    model = two_versions
    first = modelreg.deploy(model, "1.0")
    active = modelreg.until_status(first["id"], *TERMINAL)
    assert active["status"] == "Active", active
    answer = modelreg.resolve(model)
    assert answer is not None
    assert [(e["versionNumber"], e["weight"]) for e in answer["endpoints"]] == [("1.0", 100)]
    assert infer(answer["selected"]["url"], model) == 1.0

    canary = modelreg.deploy(
        model,
        "1.1",
        strategyParams={
            "steps": [
                {"weight": 10, "pause": "3s"},
                {"weight": 50, "pause": "3s"},
                {"weight": 100},
            ],
            # Nobody calls the model here: the production traffic hold is in
            # tests/e2e/test_prometheus_rollouts.py and tests/controller/test_strategies.py.
            "analysis": {"requireTraffic": False},
        },
    )
    modelreg.until_weights(model, {"1.0": 90, "1.1": 10})
    at_10 = selected_versions(modelreg, model)
    on_candidate = {k for k, v in at_10.items() if v == "1.1"}
    assert 10 <= len(on_candidate) <= 60, "about 10% of 300 keys"
    urls = {e["versionNumber"]: e["url"] for e in modelreg.resolve(model)["endpoints"]}  # type: ignore[index]
    assert infer(urls["1.0"], model) == 1.0
    assert infer(urls["1.1"], model) == 2.0

    modelreg.until_weights(model, {"1.0": 50, "1.1": 50})
    at_50 = selected_versions(modelreg, model)
    assert all(at_50[k] == "1.1" for k in on_candidate), "sticky keys stay on the candidate"

    done = modelreg.until_status(canary["id"], *TERMINAL)
    assert done["status"] == "Active", done
    modelreg.settled_weights(model, {"1.1": 100})
    old = modelreg.deployment(first["id"])
    assert old["status"] == "Inactive"
    versions = {
        v["versionNumber"]: v["status"]
        for v in modelreg.api.get(f"/api/v1/models/{model}/versions").json()["items"]
    }
    assert versions == {"1.0": "Deprecated", "1.1": "Production"}
    steps = [e["details"]["weight"] for e in modelreg.events(canary["id"]) if e["kind"] == "step"]
    assert steps == [10, 50]

    # Roll back by hand: instant, because 1.0's server is inside its scaleDownDelay.
    back = modelreg.api.post(f"/api/v1/models/{model}/rollback", json={"reason": "e2e"})
    assert back.status_code == 202, back.text
    assert modelreg.weights(model) == {"1.0": 100}
    answer = modelreg.resolve(model)
    assert answer is not None
    assert infer(answer["selected"]["url"], model) == 1.0


def test_a_broken_candidate_rolls_back_while_stable_keeps_serving(modelreg: Modelreg) -> None:
    model = "broken-demo"
    modelreg.version(model, "1.0", add_model(constant=1.0))
    # a model, so it passes the scan, that the model server cannot load (a file that only
    # claims to be ONNX now fails the scan, and the gate keeps it out of every environment)
    modelreg.version(model, "2.0", unloadable_model())
    modelreg.validated(model, "1.0")
    modelreg.validated(model, "2.0")
    stable = modelreg.deploy(model, "1.0", environment="staging")
    assert modelreg.until_status(stable["id"], *TERMINAL)["status"] == "Active"

    served: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def keep_calling() -> None:
        with httpx.Client(headers=modelreg.api.headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = client.get(
                        f"{modelreg.url}/api/v1/models/{model}/endpoint",
                        params={"environment": "staging"},
                    ).json()
                    url = answer["selected"]["url"]
                    served.append(infer(url, model))
                except Exception as exc:
                    failures.append(repr(exc))
                time.sleep(0.05)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        candidate = modelreg.deploy(
            model,
            "2.0",
            environment="staging",
            strategyParams={"steps": [{"weight": 50, "pause": "5s"}, {"weight": 100}]},
        )
        ended = modelreg.until_status(candidate["id"], *TERMINAL, timeout=120)
    finally:
        stop.set()
        caller.join()
    assert ended["status"] == "RolledBack", ended
    assert not failures, failures[:5]
    assert served
    assert set(served) == {1.0}
    reason = next(e for e in modelreg.events(candidate["id"]) if e["kind"] == "rolled_back")
    assert "exited with code" in reason["reason"]
    modelreg.settled_weights(model, {"1.0": 100}, environment="staging")


def test_abort_and_manual_promote(modelreg: Modelreg) -> None:
    model = "abort-demo"
    modelreg.version(model, "1.0", add_model(constant=1.0))
    modelreg.version(model, "2.0", add_model(constant=2.0))
    modelreg.validated(model, "1.0")
    modelreg.validated(model, "2.0")
    assert modelreg.until_status(modelreg.deploy(model, "1.0")["id"], *TERMINAL)["status"] == (
        "Active"
    )
    slow = {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 100}]}
    canary = modelreg.deploy(model, "2.0", strategyParams=slow)
    modelreg.until_weights(model, {"1.0": 80, "2.0": 20})
    aborted = modelreg.api.post(
        f"/api/v1/deployments/{canary['id']}/abort", json={"reason": "halfway"}
    )
    assert aborted.status_code == 202
    state = modelreg.until_status(canary["id"], "RolledBack")
    assert state["progress"]["trafficWeight"] == 0
    modelreg.settled_weights(model, {"1.0": 100})
    ledger = modelreg.events(canary["id"])
    kinds = [e["kind"] for e in ledger]
    assert kinds.index("abort_requested") < kinds.index("aborted")
    assert next(e for e in ledger if e["kind"] == "aborted")["actor"].startswith("key:")
    wait_for(
        lambda: modelreg.deployment(canary["id"])["finishedAt"] is not None or None,
        what="the aborted candidate's server to stop",
    )

    again = modelreg.deploy(model, "2.0", strategyParams=slow)
    modelreg.until_weights(model, {"1.0": 80, "2.0": 20})
    promoted = modelreg.api.post(f"/api/v1/deployments/{again['id']}/promote")
    assert promoted.status_code == 202
    assert modelreg.until_status(again["id"], *TERMINAL)["status"] == "Active"
    modelreg.settled_weights(model, {"2.0": 100})


def test_blue_green_previews_then_switches_atomically(modelreg: Modelreg) -> None:
    model = "bluegreen-demo"
    modelreg.version(model, "1.0", add_model(constant=1.0))
    modelreg.version(model, "2.0", add_model(constant=2.0))
    modelreg.validated(model, "1.0")
    modelreg.validated(model, "2.0")
    assert modelreg.until_status(modelreg.deploy(model, "1.0")["id"], *TERMINAL)["status"] == (
        "Active"
    )
    green = modelreg.deploy(
        model,
        "2.0",
        deploymentStrategy="blue_green",
        # The preview takes no routed traffic; in production it would wait for 20 requests.
        strategyParams={"previewDuration": "4s", "analysis": {"requireTraffic": False}},
    )

    def preview() -> dict[str, Any] | None:
        answer = modelreg.resolve(model)
        if answer is None:
            return None
        return next((e for e in answer["endpoints"] if e["role"] == "preview"), None)

    endpoint = wait_for(preview, what="the preview endpoint", timeout=90)
    assert endpoint["versionNumber"] == "2.0"
    assert endpoint["weight"] == 0
    assert infer(endpoint["url"], model) == 2.0, "the preview answers before the switch"
    seen: set[tuple[tuple[str, int], ...]] = set()
    while modelreg.deployment(green["id"])["status"] not in TERMINAL:
        answer = modelreg.resolve(model)
        assert answer is not None
        seen.add(tuple(sorted((e["versionNumber"], e["weight"]) for e in answer["endpoints"])))
        assert answer["selected"]["versionNumber"] in ("1.0", "2.0")
    assert modelreg.deployment(green["id"])["status"] == "Active"
    seen.add(tuple(sorted(modelreg.weights(model).items())))
    assert seen <= {(("1.0", 100), ("2.0", 0)), (("2.0", 100),)}, seen


def test_rolling_update(modelreg: Modelreg) -> None:
    model = "rolling-demo"
    modelreg.version(model, "1.0", add_model(constant=1.0))
    modelreg.version(model, "2.0", add_model(constant=2.0))
    modelreg.validated(model, "1.0")
    modelreg.validated(model, "2.0")
    first = modelreg.deploy(model, "1.0", strategyParams={"replicas": 2})
    assert modelreg.until_status(first["id"], *TERMINAL)["status"] == "Active"
    rolling = modelreg.deploy(
        model,
        "2.0",
        deploymentStrategy="rolling_update",
        strategyParams={"replicas": 2, "analysis": {"requireTraffic": False}},  # nobody calls it
    )
    modelreg.until_weights(model, {"1.0": 50, "2.0": 50})
    assert modelreg.until_status(rolling["id"], *TERMINAL)["status"] == "Active"
    modelreg.settled_weights(model, {"2.0": 100})
    instances = modelreg.deployment(rolling["id"])["observedState"]["workload"]["instances"]
    assert len(instances) == 2


def test_sigkill_mid_canary_resumes_without_duplicates(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    mr = Modelreg(tmp_path_factory.mktemp("e2e-kill")).start()
    try:
        model = "restart-demo"
        mr.version(model, "1.0", add_model(constant=1.0))
        mr.version(model, "2.0", add_model(constant=2.0))
        mr.validated(model, "1.0")
        mr.validated(model, "2.0")
        assert mr.until_status(mr.deploy(model, "1.0")["id"], *TERMINAL)["status"] == "Active"
        canary = mr.deploy(
            model,
            "2.0",
            strategyParams={
                # the pause outlasts the restart below: serve starts four processes now
                "steps": [{"weight": 10, "pause": "20s"}, {"weight": 60, "pause": "2s"}],
                "analysis": {"requireTraffic": False},  # nobody calls the model here
            },
        )
        mr.until_weights(model, {"1.0": 90, "2.0": 10})
        before = mr.deployment(canary["id"])
        pids = mr.server_pids()
        assert len(pids) == 2
        mr.kill()
        assert mr.server_pids() == pids, "model servers outlive the controller"
        mr.start()
        assert mr.weights(model) == {"1.0": 90, "2.0": 10}, "the routes are where they were"
        resumed = mr.deployment(canary["id"])
        assert resumed["progress"]["stepIndex"] == 0
        assert resumed["progress"]["stepStartedAt"] == before["progress"]["stepStartedAt"]
        mr.until_weights(model, {"1.0": 40, "2.0": 60})
        assert mr.server_pids() == pids, "adopted, not started again"
        assert mr.until_status(canary["id"], *TERMINAL)["status"] == "Active"
        steps = [e["details"]["weight"] for e in mr.events(canary["id"]) if e["kind"] == "step"]
        assert steps == [10, 60], "no step was taken twice"
        serving = mr.server_pids()
        mr.stop()  # SIGTERM: the servers stay, and the log says so and how to stop them
        said = mr.log()
        assert "model server(s) keep running" in said, said
        assert "modelreg deployments undeploy" in said
        assert all(str(pid) in said for pid in serving.values())
        assert mr.server_pids() == serving
    finally:
        mr.stop()
        mr.kill_servers()


def recorded_servers(mr: Modelreg) -> dict[str, list[tuple[int, int]]]:
    """Deployment id → (pid, process start time) of each model server the deployer recorded."""
    found: dict[str, list[tuple[int, int]]] = {}
    for path in (mr.home / "data" / "servers" / "instances").glob("*.json"):
        record = json.loads(path.read_text())
        found.setdefault(record["deployment_id"], []).append((record["pid"], record["proc_start"]))
    return found


def still_runs(pid: int, started: int) -> bool:
    """Whether the process recorded as (pid, start time) still runs (a reused pid does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) == started and fields[0] != "Z"


def test_undeployed_and_orphaned_servers_stop_and_a_restart_adopts_neither(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    mr = Modelreg(tmp_path_factory.mktemp("e2e-orphans")).start()
    servers: dict[str, list[tuple[int, int]]] = {}
    try:
        for model in ("undeploy-demo", "orphan-demo"):
            mr.version(model, "1.0", add_model(constant=1.0))
            mr.validated(model, "1.0")
        undeployed = mr.deploy("undeploy-demo", "1.0")["id"]
        orphaned = mr.deploy("orphan-demo", "1.0")["id"]
        for dep_id in (undeployed, orphaned):
            assert mr.until_status(dep_id, *TERMINAL)["status"] == "Active"
        servers = recorded_servers(mr)
        assert sorted(servers) == sorted([undeployed, orphaned])

        # Undeploy: Active → Inactive; the server stops and its records go within a pass or two.
        answer = mr.api.post(f"/api/v1/deployments/{undeployed}/undeploy", json={"reason": "e2e"})
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: mr.deployment(undeployed)["finishedAt"] is not None or None,
            what="the undeployed server to stop",
        )
        assert mr.deployment(undeployed)["status"] == "Inactive"
        assert not any(still_runs(*server) for server in servers[undeployed])
        assert sorted(recorded_servers(mr)) == [orphaned]
        assert mr.resolve("undeploy-demo") is None

        # The controller dies, and the orphan's row goes while it is down (a bad migration).
        mr.kill()
        engine = create_db_engine(f"sqlite:///{mr.home / 'data' / 'modelreg.db'}")
        try:
            with engine.begin() as conn:
                gone = conn.execute(
                    delete(AIModelDeployment).where(AIModelDeployment.id == uuid.UUID(orphaned))
                )
                assert gone.rowcount == 1
        finally:
            engine.dispose()
        assert all(still_runs(*server) for server in servers[orphaned])
        restarted_at = (mr.home / "serve.log").stat().st_size
        mr.start()
        wait_for(
            lambda: recorded_servers(mr) == {} or None,
            what="the orphaned server to stop and its records to go",
        )
        assert not any(still_runs(*server) for server in servers[orphaned])
        assert mr.resolve("orphan-demo") is None
        log = (mr.home / "serve.log").read_text(errors="replace")[restarted_at:]
        stopped = [line for line in log.splitlines() if "stopped orphaned workload" in line]
        assert len(stopped) == 1, log
        assert f"orphan-demo 1.0 in production (deployment {orphaned})" in stopped[0]
        assert "no deployment row has its id" in stopped[0]
        assert "undeploy-demo" not in log, "nothing of the undeployed one was left to adopt"
    finally:
        mr.stop()
        for pid, started in (server for found in servers.values() for server in found):
            if still_runs(pid, started):
                os.kill(pid, signal.SIGKILL)
