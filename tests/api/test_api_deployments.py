"""The deployments API: what it accepts, what it refuses, and what it records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from registry.services import Registry
from tests.support.fakes import FakeDeployer
from tests.support.helpers import (
    assert_problem,
    audit_rows,
    make_model,
    make_version,
    pass_validation,
    upload,
)

T0 = datetime.now(UTC).replace(microsecond=0)


def ready_version(
    http: httpx.Client, registry: Registry, number: str, *, passed: bool = True
) -> None:
    make_version(http, "text2img", number)
    assert upload(http, "text2img", number, f"weights {number}".encode()).status_code == 201
    pass_validation(registry, functional="Passed" if passed else "Failed")


def post(http: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"model": "text2img", "environment": "production", **body}
    return http.post("/api/v1/deployments", json=payload)


@pytest.fixture
def controller(registry: Registry) -> Controller:
    return Controller(
        registry.deployments,
        deployers={"local": FakeDeployer()},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="api-test",
    )


@pytest.fixture
def model(http: httpx.Client) -> None:
    make_model(http, "text2img")


@pytest.mark.usefixtures("model")
def test_create_answers_202_with_the_initiated_deployment(
    http: httpx.Client, registry: Registry
) -> None:
    ready_version(http, registry, "1.0")
    response = post(
        http,
        versionNumber="1.0",
        deploymentStrategy="canary",
        strategyParams={"steps": [{"weight": 10, "pause": "1m"}, {"weight": 100}]},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/api/v1/deployments/{body['id']}"
    assert body["status"] == "Initiated"
    assert body["versionNumber"] == "1.0"
    assert body["model"] == "text2img"
    assert body["target"] == "local"
    assert body["progress"] == {
        "stepIndex": 0,
        "stepCount": 2,
        "stepStartedAt": None,
        "trafficWeight": 0,
        "paused": False,
        "holdSince": None,
    }
    assert len(body["specHash"]) == 64
    assert [
        (r.details or {}).get("deploymentId") for r in audit_rows(registry, "deployment_created")
    ] == [body["id"]]
    shown = http.get(f"/api/v1/deployments/{body['id']}").json()
    assert shown["id"] == body["id"]
    events = http.get(f"/api/v1/deployments/{body['id']}/events").json()
    assert [e["kind"] for e in events] == ["created"]
    assert events[0]["actor"].startswith("key:bootstrap-admin")


@pytest.mark.usefixtures("model")
def test_production_needs_a_passed_validation(http: httpx.Client, registry: Registry) -> None:
    ready_version(http, registry, "1.0", passed=False)
    body = assert_problem(post(http, versionNumber="1.0"), 409, "cannot be deployed to production")
    assert any("functionalStatus: Failed" in c for c in body["failedChecks"])
    staging = post(http, versionNumber="1.0", environment="staging")
    assert staging.status_code == 202, "the gate guards production only"


@pytest.mark.usefixtures("model")
def test_a_version_without_an_artifact_cannot_be_deployed(http: httpx.Client) -> None:
    make_version(http, "text2img", "1.0")
    assert_problem(post(http, versionNumber="1.0", environment="staging"), 409, "no artifact")


@pytest.mark.usefixtures("model")
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        pytest.param({"strategyParams": {"steps": []}}, 422, "steps", id="empty-steps"),
        pytest.param(
            {"strategyParams": {"steps": [{"weight": 50}, {"weight": 10}]}},
            422,
            "steps[1].weight",
            id="decreasing-weights",
        ),
        pytest.param({"strategyParams": {"replicas": 0}}, 422, "replicas", id="no-replicas"),
        pytest.param({"strategyParams": {"colour": "red"}}, 422, "colour", id="unknown-param"),
        pytest.param(
            {"deploymentStrategy": "blue_green", "strategyParams": {"previewDuration": "soon"}},
            422,
            "previewDuration",
            id="bad-duration",
        ),
        pytest.param({"target": "kubernetes"}, 422, "not available", id="kubernetes-not-yet"),
        pytest.param(
            {"strategyParams": {"analysis": {"gates": [{"type": "prometheus"}]}}},
            422,
            "analysis.gates[0]",
            id="bad-analysis-gate",
        ),
        pytest.param({"versionNumber": "9.9"}, 404, "no version", id="unknown-version"),
        pytest.param({"environment": "moon"}, 422, "", id="unknown-environment"),
        pytest.param({"deploymentStrategy": "yolo"}, 422, "", id="unknown-strategy"),
        pytest.param({"surprise": 1}, 422, "", id="unknown-field"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(
    http: httpx.Client, registry: Registry, body: dict[str, Any], status: int, needle: str
) -> None:
    ready_version(http, registry, "1.0")
    assert_problem(post(http, **{"versionNumber": "1.0", **body}), status, needle)
    assert http.get("/api/v1/deployments").json()["items"] == []


@pytest.mark.usefixtures("model")
def test_one_rollout_at_a_time(http: httpx.Client, registry: Registry) -> None:
    ready_version(http, registry, "1.0")
    ready_version(http, registry, "2.0")
    first = post(http, versionNumber="1.0").json()
    body = assert_problem(post(http, versionNumber="2.0"), 409, "already in progress")
    assert body["deploymentId"] == first["id"]
    assert post(http, versionNumber="2.0", environment="staging").status_code == 202


@pytest.mark.usefixtures("model")
def test_actions_follow_the_status(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    ready_version(http, registry, "1.0")
    dep = post(http, versionNumber="1.0").json()
    assert_problem(http.post(f"/api/v1/deployments/{dep['id']}/undeploy"), 409, "Initiated")
    paused = http.post(f"/api/v1/deployments/{dep['id']}/pause", json={"reason": "wait"})
    assert paused.status_code == 202
    assert paused.json()["progress"]["paused"] is True
    resumed = http.post(f"/api/v1/deployments/{dep['id']}/resume")
    assert resumed.json()["progress"]["paused"] is False
    promoted = http.post(f"/api/v1/deployments/{dep['id']}/promote", json={"reason": "ship"})
    assert promoted.json()["requestedAction"]["action"] == "promote"
    assert promoted.json()["requestedAction"]["reason"] == "ship"
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=i))
    active = http.get(f"/api/v1/deployments/{dep['id']}").json()
    assert active["status"] == "Active"
    assert active["requestedAction"] is None
    assert active["endpoint"].startswith("http://127.0.0.1:")
    conditions = {c["type"]: c for c in active["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert active["observedState"]["workload"]["readyReplicas"] == 1
    assert_problem(http.post(f"/api/v1/deployments/{dep['id']}/abort"), 409, "Active")
    assert_problem(http.post(f"/api/v1/deployments/{dep['id']}/explode"), 422, "")
    assert [r.action_type for r in audit_rows(registry, "deployment_promote")] == [
        "deployment_promote"
    ]
    assert http.post(f"/api/v1/deployments/{dep['id']}/undeploy").status_code == 202


@pytest.mark.usefixtures("model")
def test_unknown_and_malformed_ids(http: httpx.Client) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(http.get(f"/api/v1/deployments/{missing}"), 404, "no deployment")
    assert_problem(http.get(f"/api/v1/deployments/{missing}/events"), 404, "no deployment")
    assert_problem(http.post(f"/api/v1/deployments/{missing}/abort"), 404, "no deployment")
    assert_problem(http.get("/api/v1/deployments/not-a-uuid"), 422, "")


@pytest.mark.usefixtures("model")
def test_list_filters_and_pages(http: httpx.Client, registry: Registry) -> None:
    ready_version(http, registry, "1.0")
    ids = [
        post(http, versionNumber="1.0", environment=env).json()["id"]
        for env in ("staging", "testing", "production")
    ]
    everything = http.get("/api/v1/deployments", params={"model": "text2img"}).json()
    assert [d["id"] for d in everything["items"]] == ids[::-1]
    staging = http.get("/api/v1/deployments", params={"environment": "staging"}).json()
    assert [d["id"] for d in staging["items"]] == [ids[0]]
    first = http.get("/api/v1/deployments", params={"limit": 2}).json()
    rest = http.get("/api/v1/deployments", params={"cursor": first["nextCursor"]}).json()
    assert [d["id"] for d in first["items"] + rest["items"]] == ids[::-1]
    assert rest["nextCursor"] is None
    none = http.get("/api/v1/deployments", params={"status": "Active"}).json()
    assert none["items"] == []
    assert_problem(http.get("/api/v1/deployments", params={"status": "Sleeping"}), 422, "")
    assert_problem(http.get("/api/v1/deployments", params={"model": "nope"}), 404, "nope")


@pytest.mark.usefixtures("model")
def test_rollback_and_history(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    assert_problem(http.post("/api/v1/models/text2img/rollback"), 409, "nothing serves")
    ready_version(http, registry, "1.0")
    ready_version(http, registry, "2.0")
    post(http, versionNumber="1.0")
    controller.run_pass(now=T0)
    controller.run_pass(now=T0 + timedelta(seconds=1))
    assert_problem(http.post("/api/v1/models/text2img/rollback"), 409, "no previous")
    second = post(http, versionNumber="2.0", strategyParams={"steps": [{"weight": 100}]}).json()
    controller.run_pass(now=T0 + timedelta(seconds=2))
    controller.run_pass(now=T0 + timedelta(seconds=3))
    between = datetime.now(UTC)
    back = http.post("/api/v1/models/text2img/rollback", json={"reason": "regression"})
    assert back.status_code == 202, back.text
    assert back.json()["versionNumber"] == "1.0"
    assert back.json()["status"] == "Active"
    assert http.get(f"/api/v1/deployments/{second['id']}").json()["status"] == "Inactive"
    history = http.get(
        "/api/v1/models/text2img/history",
        params={"environment": "production", "at": between.isoformat()},
    ).json()
    assert [(r["versionNumber"], r["weight"]) for r in history["servingAt"]] == [("2.0", 100)]
    kinds = [e["kind"] for e in history["events"]]
    assert kinds.count("promoted") == 2
    now = http.get("/api/v1/models/text2img/history").json()
    assert now["servingAt"] is None
    assert now["events"][-1]["kind"] == "rolled_back"
    assert "regression" in now["events"][-1]["reason"]
    naive = http.get(
        "/api/v1/models/text2img/history",
        params={"at": datetime.now(UTC).replace(tzinfo=None).isoformat()},
    ).json()
    assert [(r["versionNumber"], r["weight"]) for r in naive["servingAt"]] == [("1.0", 100)]
    assert [
        (r.details or {}).get("instant") for r in audit_rows(registry, "deployment_rollback")
    ] == [True]


@pytest.mark.usefixtures("model")
def test_rollback_takes_the_environment_in_the_body_like_a_deploy(
    http: httpx.Client, registry: Registry, controller: Controller
) -> None:
    ready_version(http, registry, "1.0")
    ready_version(http, registry, "2.0")
    post(http, versionNumber="1.0", environment="staging")
    controller.run_pass(now=T0)
    controller.run_pass(now=T0 + timedelta(seconds=1))
    post(
        http,
        versionNumber="2.0",
        environment="staging",
        strategyParams={"steps": [{"weight": 100}]},
    )
    controller.run_pass(now=T0 + timedelta(seconds=2))
    controller.run_pass(now=T0 + timedelta(seconds=3))
    assert_problem(
        http.post(
            "/api/v1/models/text2img/rollback",
            params={"environment": "production"},
            json={"environment": "staging"},
        ),
        422,
        "give it once",
    )
    assert_problem(http.post("/api/v1/models/text2img/rollback", json={"environment": "prod"}), 422)
    back = http.post("/api/v1/models/text2img/rollback", json={"environment": "staging"})
    assert back.status_code == 202, back.text
    assert (back.json()["versionNumber"], back.json()["environment"]) == ("1.0", "staging")
