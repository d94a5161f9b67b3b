"""Metric- and feedback-gated rollouts against a real Prometheus (Debian's package).

One ``modelreg serve`` (embedded defaults, its controller pointed at Prometheus) and one
Prometheus that scrapes the API and, through the ``file_sd`` targets file the local deployer
writes, every model server. The rollouts:

1. a candidate that answers 5xx to a share of requests: the Prometheus error-rate gate fails
   it, and it rolls back;
2. a candidate that answers 400 to the clients the stable version serves (its input was
   renamed): the 4xx rule fails it, through Prometheus and through the direct gate (which
   reads the model servers' own /metrics, not Prometheus);
3. a healthy candidate that users rate badly through the feedback API: the feedback gate fails
   it, and it rolls back; one key's many ratings do not open the gate, several users' do;
4. a healthy, well-rated candidate: it is promoted;
5. Prometheus stopped mid-rollout: the step holds, and is never promoted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import TERMINAL, Modelreg, wait_for
from tests.support.onnx_models import add_model, reshape_model
from tests.support.ports import free_port

ENV = "staging"  # no validation gate: the reshape model is meant to fail at inference


class Prometheus:
    def __init__(self, workdir: Path, *, api_port: int, targets: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: modelreg-api
    static_configs:
      - targets: ["127.0.0.1:{api_port}"]
  - job_name: modelreg-model-servers
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"""
        )
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary is not None
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def ready() -> bool | None:
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200 or None
            except httpx.TransportError:
                return None

        wait_for(ready, what="Prometheus to be ready", timeout=30)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def value(self, query: str) -> float | None:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5).json()
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Modelreg, Prometheus]]:
    if shutil.which("prometheus") is None:
        if os.environ.get("MODELREG_TEST_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is not installed, and CI requires it")
        pytest.skip("needs Debian's prometheus package (`apt-get install prometheus`)")
    home = tmp_path_factory.mktemp("prom-e2e")
    api_port = free_port()
    targets = home / "data" / "servers" / "prometheus-targets.json"
    prometheus = Prometheus(home, api_port=api_port, targets=targets).start()
    mr = Modelreg(home, port=api_port, env={"MODELREG_PROMETHEUS_URL": prometheus.url})
    try:
        mr.start()
        yield mr, prometheus
    finally:
        mr.stop()
        mr.kill_servers()
        prometheus.stop()


def setup_model(mr: Modelreg, model: str, candidate: bytes) -> dict[str, Any]:
    """``model`` 1.0 (y = x + 1) Active in staging, and 2.0 = ``candidate`` uploaded."""
    mr.version(model, "1.0", add_model(constant=1.0))
    mr.version(model, "2.0", candidate)
    stable = mr.deploy(model, "1.0", environment=ENV)
    assert mr.until_status(stable["id"], *TERMINAL)["status"] == "Active"
    return stable


class Traffic:
    """Calls the model through endpoint resolution, as a generation service would."""

    def __init__(self, mr: Modelreg, model: str, *, batch: int) -> None:
        self.mr, self.model, self.batch = mr, model, batch
        self.stop = threading.Event()
        self.statuses: dict[str, list[int]] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        body = {
            "inputs": [
                {
                    "name": "x",
                    "shape": [self.batch, 4],
                    "datatype": "FP32",
                    "data": [0.0] * (4 * self.batch),
                }
            ]
        }
        i = 0
        with httpx.Client(headers=self.mr.api.headers, timeout=10) as client:
            while not self.stop.is_set():
                i += 1
                answer = client.get(
                    f"{self.mr.url}/api/v1/models/{self.model}/endpoint",
                    params={"environment": ENV, "key": f"user-{i % 50}"},
                )
                if answer.status_code == 200:
                    picked = answer.json()["selected"]
                    status = client.post(
                        f"{picked['url']}/v2/models/{self.model}/infer", json=body
                    ).status_code
                    self.statuses.setdefault(picked["versionNumber"], []).append(status)
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def verdicts(mr: Modelreg, dep_id: str) -> list[dict[str, Any]]:
    return [e for e in mr.events(dep_id) if e["kind"] == "verdict"]


def raters(mr: Modelreg, count: int, *, prefix: str) -> list[str]:
    """``count`` people, each with a ``feedback:write`` key (token) of their own."""
    tokens = []
    for i in range(count):
        made = mr.api.post(
            "/api/v1/keys",
            json={
                "name": f"{prefix}-{i}",
                "scopes": ["feedback:write"],
                "user": f"{prefix}-{i}@example.com",
            },
        )
        assert made.status_code == 201, made.text
        tokens.append(made.json()["token"])
    return tokens


def rate(mr: Modelreg, people: list[str], model: str, number: str, rating: int) -> None:
    """Each person rates ``number`` once, with their own key."""
    item = {"model": model, "versionNumber": number, "rating": rating}
    for token in people:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=mr.url, headers=headers, timeout=10) as person:
            answer = person.post("/api/v1/feedback", json={"items": [item]})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "analysis",
    [
        pytest.param(
            {"gates": [{"type": "prometheus", "template": "error-rate"}]}, id="prometheus"
        ),
        pytest.param({}, id="direct-by-default"),
    ],
)
def test_a_candidate_that_answers_400_is_rolled_back(
    stack: tuple[Modelreg, Prometheus], analysis: dict[str, Any]
) -> None:
    mr, _ = stack
    model = f"renamed-input-{'prom' if analysis else 'direct'}"
    # The stable version reads "x", as its clients send; the candidate wants "features".
    setup_model(mr, model, add_model(constant=2.0, input_name="features"))
    with Traffic(mr, model, batch=1) as traffic:
        canary = mr.deploy(
            model,
            "2.0",
            environment=ENV,
            strategyParams={
                "steps": [{"weight": 50, "pause": "60s"}, {"weight": 100}],
                **({"analysis": analysis} if analysis else {}),
            },
        )
        ended = mr.until_status(canary["id"], *TERMINAL, timeout=120)
    assert ended["status"] == "RolledBack", (ended, mr.events(canary["id"]))
    assert set(traffic.statuses.get("2.0", [])) == {400}, "the candidate refused every call"
    assert set(traffic.statuses["1.0"]) == {200}
    failed = [v for v in verdicts(mr, canary["id"]) if v["details"]["outcome"] == "fail"]
    gate = failed[-1]["details"]["gates"][0]
    assert gate["type"] == ("prometheus" if analysis else "direct")
    assert gate["candidate4xxShare"] == 1.0
    assert gate["stable4xxShare"] == 0.0
    assert gate["stableRequests"] >= 20, "the stable version's own requests, in the same window"
    assert "4xx share" in failed[-1]["reason"]
    mr.settled_weights(model, {"1.0": 100}, environment=ENV)


def test_prometheus_error_rate_gate_rolls_a_failing_candidate_back(
    stack: tuple[Modelreg, Prometheus],
) -> None:
    mr, prometheus = stack
    model = "prom-errors"
    setup_model(mr, model, reshape_model())  # batch 2 → onnxruntime fails → 500
    with Traffic(mr, model, batch=2) as traffic:
        canary = mr.deploy(
            model,
            "2.0",
            environment=ENV,
            strategyParams={
                "steps": [{"weight": 50, "pause": "60s"}, {"weight": 100}],
                "analysis": {
                    "gates": [
                        {
                            "type": "prometheus",
                            "template": "error-rate",
                            "success": {"max": 0.05},
                            "failure": {"min": 0.2},
                        }
                    ]
                },
            },
        )
        ended = mr.until_status(canary["id"], *TERMINAL, timeout=120)
    assert ended["status"] == "RolledBack", ended
    assert 500 in traffic.statuses.get("2.0", []), "the candidate did answer errors"
    assert set(traffic.statuses["1.0"]) == {200}
    failed = [v for v in verdicts(mr, canary["id"]) if v["details"]["outcome"] == "fail"]
    gate = failed[-1]["details"]["gates"][0]
    assert gate["type"] == "prometheus"
    assert 'version="2.0"' in gate["query"]
    assert gate["value"] >= 0.2
    assert gate["failure"] == {"min": 0.2}
    mr.settled_weights(model, {"1.0": 100}, environment=ENV)
    assert prometheus.value(f'modelreg_model_server_ready{{model="{model}",version="1.0"}}') == 1


def test_feedback_gate_rolls_back_a_badly_rated_candidate(
    stack: tuple[Modelreg, Prometheus],
) -> None:
    mr, _ = stack
    model = "feedback-bad"
    setup_model(mr, model, add_model(constant=2.0))
    canary = mr.deploy(
        model,
        "2.0",
        environment=ENV,
        strategyParams={
            "steps": [{"weight": 50, "pause": "5s"}, {"weight": 100}],
            "maxHold": "2m",
            "analysis": {
                "gates": [{"type": "feedback", "minRatings": 10, "maxDrop": 0.5, "on": "mean"}]
            },
        },
    )
    mr.until_weights(model, {"1.0": 50, "2.0": 50}, environment=ENV)

    def analysis() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in mr.deployment(canary["id"])["conditions"]}
        found = conditions.get("Analysis")
        return found if found and "fewer than 10" in found["message"] else None

    held = wait_for(analysis, what="an inconclusive verdict (too few ratings)")
    assert held["reason"] == "inconclusive"
    # One key, 30 ratings of each version: still one rater, fewer than 10.
    items = [{"model": model, "versionNumber": v, "rating": 1} for v in ("1.0", "2.0")] * 30
    posted = mr.api.post("/api/v1/feedback", json={"items": items})
    assert posted.status_code == 200, posted.text
    time.sleep(6)  # longer than the step's pause: a passing verdict would have moved on
    state = mr.deployment(canary["id"])
    assert state["status"] == "Deploying"
    assert state["progress"]["stepIndex"] == 0, "the step holds"
    message = {c["type"]: c for c in state["conditions"]}["Analysis"]["message"]
    assert "1 rater(s) of the candidate in this step (30 rating(s)), fewer than 10" in message
    people = raters(mr, 12, prefix="bad-rating")
    rate(mr, people, model, "1.0", 5)
    rate(mr, people, model, "2.0", 1)
    ended = mr.until_status(canary["id"], *TERMINAL, timeout=60)
    assert ended["status"] == "RolledBack", ended
    failed = [v for v in verdicts(mr, canary["id"]) if v["details"]["outcome"] == "fail"][-1]
    gate = failed["details"]["gates"][0]
    # The gate may fail as soon as 10 people (the admin counts as one) have rated 2.0.
    assert 10 <= gate["candidateRaters"] <= 13
    assert gate["candidateRatings"] >= 30 + 9, "the admin key's 30 ratings and 9 people's"
    assert gate["candidateMean"] == 1.0
    assert gate["stableMean"] == pytest.approx((12 * 5 + 1) / 13), "the admin: one vote"


def test_a_healthy_well_rated_candidate_is_promoted(stack: tuple[Modelreg, Prometheus]) -> None:
    mr, _ = stack
    model = "all-good"
    setup_model(mr, model, add_model(constant=2.0))
    with Traffic(mr, model, batch=1) as traffic:
        canary = mr.deploy(
            model,
            "2.0",
            environment=ENV,
            strategyParams={
                "steps": [{"weight": 50, "pause": "8s"}, {"weight": 100}],
                "analysis": {
                    "gates": [
                        {"type": "prometheus", "template": "error-rate"},
                        {"type": "feedback", "minRatings": 5, "maxDrop": 0.5},
                    ]
                },
            },
        )
        mr.until_weights(model, {"1.0": 50, "2.0": 50}, environment=ENV)
        people = raters(mr, 6, prefix="good-rating")
        for number in ("1.0", "2.0"):
            rate(mr, people, model, number, 5)
        ended = mr.until_status(canary["id"], *TERMINAL, timeout=120)
    assert ended["status"] == "Active", (ended, mr.events(canary["id"]))
    assert set(traffic.statuses.get("2.0", [])) == {200}
    listed = subprocess.run(
        [sys.executable, "-m", "api.cli", "prometheus-targets", "--api"],
        env={**mr.env, "COLUMNS": "200"},  # the real port comes from the running server
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    groups = json.loads(listed.stdout)
    ours = ("modelreg-api", "modelreg-controller")
    served = {t for g in groups for t in g["targets"] if g["labels"]["job"] not in ours}
    written = json.loads((mr.home / "data" / "servers" / "prometheus-targets.json").read_text())
    assert served == {t for g in written for t in g["targets"]}
    assert {"targets": [f"127.0.0.1:{mr.port}"], "labels": {"job": "modelreg-api"}} in groups
    controller = [g["targets"] for g in groups if g["labels"]["job"] == "modelreg-controller"]
    assert controller == [[f"127.0.0.1:{mr.env['MODELREG_CONTROLLER_METRICS_PORT']}"]], groups
    passed = [v for v in verdicts(mr, canary["id"]) if v["details"]["outcome"] == "pass"][-1]
    by_name = {g["name"]: g for g in passed["details"]["gates"]}
    assert by_name["error-rate"]["value"] == 0.0
    assert by_name["feedback"]["candidateRaters"] >= 5


def test_prometheus_outage_holds_the_step_and_never_promotes(
    stack: tuple[Modelreg, Prometheus],
) -> None:
    mr, prometheus = stack
    model = "prom-outage"
    setup_model(mr, model, add_model(constant=2.0))
    prometheus.stop()
    try:
        canary = mr.deploy(
            model,
            "2.0",
            environment=ENV,
            strategyParams={
                "steps": [{"weight": 30, "pause": "1s"}, {"weight": 100}],
                "maxHold": "1h",
                "onHoldTimeout": "pass",
                "analysis": {"gates": [{"type": "prometheus", "template": "error-rate"}]},
            },
        )
        mr.until_weights(model, {"1.0": 70, "2.0": 30}, environment=ENV)
        erred = wait_for(
            lambda: next(
                (v for v in verdicts(mr, canary["id"]) if v["details"]["outcome"] == "error"),
                None,
            ),
            what="an error verdict",
        )
        assert "unreachable" in erred["reason"]
        time.sleep(6)  # many passes, each of which would have promoted with a passing verdict
        state = mr.deployment(canary["id"])
        assert state["status"] == "Deploying"
        assert state["progress"]["stepIndex"] == 0
        assert mr.weights(model, ENV) == {"1.0": 70, "2.0": 30}
        analysis = {c["type"]: c for c in state["conditions"]}["Analysis"]
        assert analysis["reason"] == "error"
    finally:
        prometheus.start()
    aborted = mr.api.post(f"/api/v1/deployments/{canary['id']}/abort")
    assert aborted.status_code == 202
    assert mr.until_status(canary["id"], *TERMINAL)["status"] == "RolledBack"
