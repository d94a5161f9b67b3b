"""/metrics on the API: request counts by route template, uploads, validations, endpoint-cache
outcomes, the database-backed deployment and queue gauges, and the naming conventions.

Counters are process-wide (every test's server in this process shares them), so the tests read
a value before acting and assert on the change.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from registry.metrics import METRICS, DatabaseCollector
from registry.models import AIModel, AIModelDeployment
from registry.services import Registry, build_registry
from registry.services.routing import RouteEntry, set_routes
from tests.support.fakes import FakeDeployer
from tests.support.helpers import assert_problem, make_model, make_version, pass_validation, upload
from tests.support.live_server import LiveServer

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
MODEL_TEMPLATE = "/api/v1/models/{name}"
ENDPOINT_TEMPLATE = "/api/v1/models/{name}/endpoint"


class Scrape:
    """One parsed scrape of /metrics."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: list[Sample] = [s for f in self.families for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when it is absent (a label child not created yet)."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
        return 0.0

    def has(self, name: str, **labels: str) -> bool:
        return any(
            s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            for s in self.samples
        )


def scrape(server: LiveServer) -> Scrape:
    response = httpx.get(f"{server.url}/metrics", timeout=30)  # no key: Prometheus has none
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def eventually(server: LiveServer, check: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until ``check`` holds (a request is counted just after its answer is sent)."""
    deadline = time.monotonic() + 5
    while True:
        current = scrape(server)
        if check(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.02)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the API's own requests -------------------------------------------------------------------


def test_requests_are_counted_by_route_template_and_status(
    http: httpx.Client, server: LiveServer
) -> None:
    raw = f"no-such-model-{uuid.uuid4().hex[:8]}"
    before = scrape(server)
    assert http.get(f"/api/v1/models/{raw}").status_code == 404
    assert http.get(f"/no/such/path/{raw}").status_code == 404
    assert http.get("/healthz").status_code == 200

    labels = {"route": MODEL_TEMPLATE, "method": "GET", "status": "404"}
    name = "modelreg_http_requests_total"
    after = eventually(server, lambda s: s.value(name, **labels) > before.value(name, **labels))
    assert after.value(name, **labels) - before.value(name, **labels) == 1
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert after.value(name, **unmatched) - before.value(name, **unmatched) == 1
    ok = {"route": "/healthz", "method": "GET", "status": "200"}
    assert after.value(name, **ok) - before.value(name, **ok) == 1

    # the latency histogram, by template and method
    count = "modelreg_http_request_duration_seconds_count"
    timed = {"route": MODEL_TEMPLATE, "method": "GET"}
    assert after.value(count, **timed) - before.value(count, **timed) == 1
    assert after.has("modelreg_http_request_duration_seconds_bucket", le="+Inf", **timed)
    assert after.value("modelreg_http_request_duration_seconds_sum", **timed) > 0

    # never a raw path in a label
    assert raw not in after.text
    for sample in after.samples:
        assert not any(raw in value for value in sample.labels.values()), sample


def test_metrics_needs_no_key_and_is_not_in_the_openapi_document(
    http: httpx.Client, server: LiveServer
) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert "/metrics" not in http.get("/openapi.json").json()["paths"]


def test_metrics_token_when_set_is_demanded_as_a_bearer_token(registry: Registry) -> None:
    settings = registry.settings.model_copy(update={"metrics_token": SecretStr("scrape-s3cret")})
    guarded = build_registry(settings)
    try:
        with LiveServer(guarded) as server:
            url = f"{server.url}/metrics"
            refused = [
                httpx.get(url, timeout=30),
                httpx.get(url, headers={"Authorization": "Bearer scrape-s3cre"}, timeout=30),
                httpx.get(url, headers={"Authorization": "Bearer scrape-s3cretX"}, timeout=30),
                httpx.get(url, headers={"Authorization": "Basic scrape-s3cret"}, timeout=30),
            ]
            for answer in refused:
                assert_problem(answer, 401, "MODELREG_METRICS_TOKEN")
                assert answer.headers["WWW-Authenticate"] == "Bearer"
                assert "scrape-s3cret" not in answer.text
            good = {"Authorization": "Bearer scrape-s3cret"}
            scraped = httpx.get(url, headers=good, timeout=30)
            assert scraped.status_code == 200
            assert "modelreg_http_requests_total" in scraped.text
            assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    finally:
        guarded.close()


# -- uploads and validations --------------------------------------------------------------------


def test_upload_counters_move_on_completed_and_failed_uploads(
    http: httpx.Client, server: LiveServer
) -> None:
    make_model(http, "counted")
    make_version(http, "counted", "1.0")
    make_version(http, "counted", "1.1")
    total = "modelreg_artifact_uploads_total"
    size = "modelreg_artifact_upload_bytes_total"
    data = b"onnx-ish bytes " * 100

    before = scrape(server)
    assert upload(http, "counted", "1.0", data).status_code == 201
    after = scrape(server)
    assert after.value(total, result="completed") - before.value(total, result="completed") == 1
    assert after.value(total, result="failed") == before.value(total, result="failed")
    assert after.value(size) - before.value(size) == len(data)

    wrong = sha(b"something else")
    response = http.put(
        "/api/v1/models/counted/versions/1.1/artifact",
        content=data,
        headers={"X-Checksum-Sha256": wrong},
    )
    assert response.status_code == 400, response.text
    failed = scrape(server)
    assert failed.value(total, result="failed") - after.value(total, result="failed") == 1
    assert failed.value(total, result="completed") == after.value(total, result="completed")
    assert failed.value(size) == after.value(size)  # bytes count stored artifacts only


def test_validation_counters_and_queue_depth(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    make_model(http, "checked")
    for v in ("1.0", "1.1"):
        make_version(http, "checked", v)
    total = "modelreg_validations_total"
    count = "modelreg_validation_duration_seconds_count"
    depth = "modelreg_validation_queue_depth"
    before = scrape(server)
    assert before.value(depth) == 0  # a database of its own: an absolute value

    assert upload(http, "checked", "1.0", b"first").status_code == 201
    assert scrape(server).value(depth) == 1
    assert pass_validation(registry) == 1
    passed = scrape(server)
    assert passed.value(depth) == 0
    assert passed.value(total, result="passed") - before.value(total, result="passed") == 1
    assert passed.value(total, result="failed") == before.value(total, result="failed")
    assert passed.value(count) - before.value(count) == 1

    assert upload(http, "checked", "1.1", b"second").status_code == 201
    assert pass_validation(registry, functional="Failed") == 1
    failed = scrape(server)
    assert failed.value(total, result="failed") - passed.value(total, result="failed") == 1
    assert failed.value(total, result="passed") == passed.value(total, result="passed")
    assert failed.value(count) - passed.value(count) == 1


# -- deployments and endpoint resolution ----------------------------------------------------------


def deploy_canary(http: httpx.Client, registry: Registry, model: str) -> None:
    """1.0 Active (stable, 90) and 1.1 Deploying at step index 1 (canary, 10), routed."""
    make_model(http, model)
    ids = {v: uuid.UUID(make_version(http, model, v)["id"]) for v in ("1.0", "1.1", "2.0")}
    with registry.sessions.begin() as s:
        model_id = s.scalar(select(AIModel.id).where(AIModel.name == model))
        assert model_id is not None
        stable = AIModelDeployment(
            model_version_id=ids["1.0"], environment="production", status="Active"
        )
        candidate = AIModelDeployment(
            model_version_id=ids["1.1"],
            environment="production",
            status="Deploying",
            deployment_strategy="canary",
            step_index=1,
            traffic_weight=10,
        )
        failed = AIModelDeployment(
            model_version_id=ids["2.0"], environment="staging", status="Failed"
        )
        s.add_all([stable, candidate, failed])
        s.flush()
        set_routes(
            s,
            model_id=model_id,
            environment="production",
            routes=[
                RouteEntry(stable.id, ids["1.0"], "1.0", "http://127.0.0.1:9101", 90, "stable"),
                RouteEntry(candidate.id, ids["1.1"], "1.1", "http://127.0.0.1:9102", 10, "canary"),
            ],
            deployment_id=candidate.id,
            actor="test-controller",
            reason="test",
        )


def test_deployment_gauges_read_the_database(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    empty = scrape(server)
    assert empty.value("modelreg_deployments", status="Active") == 0
    assert empty.has("modelreg_deployments", status="RolledBack")  # every status, zeros too
    assert not empty.has("modelreg_deployment_traffic_weight")

    deploy_canary(http, registry, "rolled")
    now = scrape(server)
    assert now.value("modelreg_deployments", status="Active") == 1
    assert now.value("modelreg_deployments", status="Deploying") == 1
    assert now.value("modelreg_deployments", status="Failed") == 1
    assert now.value("modelreg_deployments", status="Initiated") == 0
    where = {"model": "rolled", "environment": "production"}
    weight = "modelreg_deployment_traffic_weight"
    assert now.value(weight, version="1.0", **where) == 90
    assert now.value(weight, version="1.1", **where) == 10
    step = "modelreg_deployment_step"
    assert now.value(step, version="1.1", **where) == 2  # step_index 1 is the second step
    assert not now.has(step, version="1.0")  # Active: no rollout in progress
    assert not now.has(step, version="2.0")  # Failed: none either


def test_endpoint_resolutions_count_cache_hits_and_misses(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    deploy_canary(http, registry, "resolved")
    path = "/api/v1/models/resolved/endpoint"
    deadline = time.monotonic() + 10
    while http.get(path).status_code != 200:  # the server sees the routes once it polled
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.6)  # past the poller's first reads, which drop the cache once

    name = "modelreg_endpoint_resolutions_total"
    where = {"model": "resolved", "environment": "production"}
    before = scrape(server)
    registry.endpoints.invalidate()
    assert http.get(path).status_code == 200  # a miss: resolved from the database
    missed = scrape(server)
    assert (
        missed.value(name, cache="miss", **where) - before.value(name, cache="miss", **where) == 1
    )
    assert missed.value(name, cache="hit", **where) == before.value(name, cache="hit", **where)
    for _ in range(3):
        assert http.get(path, params={"key": "user-7"}).status_code == 200
    hit = scrape(server)
    assert hit.value(name, cache="hit", **where) - missed.value(name, cache="hit", **where) == 3
    assert hit.value(name, cache="miss", **where) == missed.value(name, cache="miss", **where)

    # An unknown model is a 404, counted by route template but never as a model label.
    unknown = f"made-up-{uuid.uuid4().hex[:8]}"
    assert http.get(f"/api/v1/models/{unknown}/endpoint").status_code == 404
    after = eventually(
        server,
        lambda s: (
            s.value(
                "modelreg_http_requests_total", route=ENDPOINT_TEMPLATE, method="GET", status="404"
            )
            > 0
        ),
    )
    assert unknown not in after.text


# -- conventions ------------------------------------------------------------------------------


def test_names_and_labels_follow_the_conventions(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    deploy_canary(http, registry, "named")
    assert upload(http, "named", "1.0", b"bytes").status_code == 201
    pass_validation(registry)
    http.get("/api/v1/models/named/endpoint")
    current = scrape(server)
    # prometheus_client also writes a histogram's ``_created`` timestamps as a gauge family
    ours = [
        f
        for f in current.families
        if f.name.startswith("modelreg_") and not f.name.endswith("_created")
    ]
    assert {f.name for f in ours} >= {
        "modelreg_http_requests",
        "modelreg_http_request_duration_seconds",
        "modelreg_deployments",
        "modelreg_deployment_traffic_weight",
        "modelreg_validation_queue_depth",
        "modelreg_metrics_collect_errors",
    }
    for family in ours:
        assert family.type in ("counter", "gauge", "histogram"), family
        if family.type == "counter":
            assert f"# TYPE {family.name}_total counter" in current.text, family.name
            for sample in family.samples:
                assert sample.name.endswith(("_total", "_created")), sample
        if "duration" in family.name or "latency" in family.name:
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert not UUID_RE.search(value), (sample.name, label, value)


def test_every_gauge_is_summed_across_processes_without_a_pid_label() -> None:
    """Under ``modelreg serve`` the processes' metrics are summed (PROMETHEUS_MULTIPROC_DIR):
    a gauge in the default mode (``all``) would gain a ``pid`` label, one series per process,
    and keep a dead process's value."""
    from prometheus_client import Gauge

    from registry import metrics

    gauges = [g for g in vars(metrics).values() if isinstance(g, Gauge)]
    assert gauges, "modelreg_controller_leader at least"
    for gauge in gauges:
        assert gauge._multiprocess_mode.startswith("live"), gauge


_FORKED_COUNTS = """
import os, sys
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from registry import metrics

counter = metrics.FEEDBACK_ITEMS.labels("kept")
calls = []
def watch(_frame, event, fn):
    if event == "c_call" and fn is os.getpid:
        calls.append(fn)
sys.setprofile(watch)
counter.inc(3)
sys.setprofile(None)
assert not calls, "an update asked the kernel for the pid"
child = os.fork()
if child == 0:  # the child's updates go to a file of its own, not into the parent's
    metrics.FEEDBACK_ITEMS.labels("kept").inc(4)
    os._exit(0)
os.waitpid(child, 0)
metrics.FEEDBACK_ITEMS.labels("kept").inc(5)
summed = CollectorRegistry()
MultiProcessCollector(summed, os.environ["PROMETHEUS_MULTIPROC_DIR"])
print(summed.get_sample_value("modelreg_feedback_items_total", {"result": "kept"}))
print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
print(os.getpid(), child)
"""


def test_multiprocess_values_know_their_pid_without_asking_and_a_fork_writes_its_own_file(
    tmp_path: Path,
) -> None:
    """Under ``modelreg serve`` every update of a value in multiprocess mode checked the pid
    with a system call; ``registry.metrics`` keeps it instead, renewed in a forked child."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_COUNTS], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    total, files, pids = done.stdout.splitlines()
    assert float(total) == 12.0
    parent, child = pids.split()
    assert f"counter_{parent}.db" in files
    assert f"counter_{child}.db" in files


# -- the collector when the database is down -------------------------------------------------------


def test_collector_emits_nothing_and_counts_an_error_when_the_database_is_down(
    tmp_path: Path,
) -> None:
    missing = f"sqlite:///{tmp_path}/no-such-dir/modelreg.db"
    engine = create_engine(missing)
    try:
        collector = DatabaseCollector(sessionmaker(engine))
        scraped = CollectorRegistry()
        scraped.register(collector)  # registering does not touch the database
        errors = "modelreg_metrics_collect_errors_total"
        before = Scrape(generate_latest(METRICS).decode()).value(errors)
        text = generate_latest(scraped).decode()  # does not raise
        assert not Scrape(text).samples
        after = Scrape(generate_latest(METRICS).decode()).value(errors)
        assert after - before == 1
    finally:
        engine.dispose()


def test_mean_rating_of_serving_versions_over_the_current_window(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    deploy_canary(http, registry, "rated")
    before = scrape(server).value("modelreg_feedback_rating_count", model="rated", version="1.1")
    items = [
        {"model": "rated", "versionNumber": "1.1", "rating": 2},
        {"model": "rated", "versionNumber": "1.1", "rating": 4},
        {"model": "rated", "versionNumber": "1.0", "rating": 5},
        {"model": "rated", "versionNumber": "2.0", "rating": 1},  # not serving: no gauge
    ]
    assert http.post("/api/v1/feedback", json={"items": items}).status_code == 200
    now = scrape(server)
    where = {"model": "rated", "environment": "production"}
    assert now.value("modelreg_feedback_mean_rating", version="1.1", **where) == 3.0
    assert now.value("modelreg_feedback_mean_rating", version="1.0", **where) == 5.0
    assert not now.has("modelreg_feedback_mean_rating", version="2.0")
    count = now.value("modelreg_feedback_rating_count", model="rated", version="1.1")
    assert count - before == 2  # counters are process-wide: compare deltas


def test_rollout_outcomes_are_counted(
    http: httpx.Client, server: LiveServer, registry: Registry
) -> None:
    """A controller promotion, an automatic rollback and a manual rollback, in the counter."""
    deployer = FakeDeployer()
    controller = Controller(
        registry.deployments,
        deployers={"local": deployer},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="metrics-test",
    )
    clock = iter(datetime.now(UTC) + timedelta(seconds=i) for i in range(100))
    make_model(http, "counted")
    for number in ("1.0", "2.0", "3.0"):
        make_version(http, "counted", number)
        assert upload(http, "counted", number, number.encode()).status_code == 201
    pass_validation(registry)
    outcome = "modelreg_deployment_outcomes_total"
    labels = {"model": "counted", "environment": "production", "strategy": "canary"}
    before = {
        o: scrape(server).value(outcome, outcome=o, **labels)
        for o in ("promoted", "rolled_back", "manual_rollback")
    }

    def deploy(number: str) -> None:
        body = {
            "model": "counted",
            "versionNumber": number,
            "strategyParams": {"steps": [{"weight": 100}]},
        }
        assert http.post("/api/v1/deployments", json=body).status_code == 202
        for _ in range(3):
            controller.run_pass(now=next(clock))

    deploy("1.0")
    deploy("2.0")
    deployer.fail_versions["3.0"] = "crashed"
    deploy("3.0")
    assert http.post("/api/v1/models/counted/rollback").status_code == 202
    after = scrape(server)
    delta = {o: after.value(outcome, outcome=o, **labels) - before[o] for o in before}
    assert delta == {"promoted": 2, "rolled_back": 1, "manual_rollback": 1}
