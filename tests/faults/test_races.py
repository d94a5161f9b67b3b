"""Races are settled by the database: real concurrent clients (threads, each with its own
HTTP connection, released together by a barrier) against the real app, on SQLite and
PostgreSQL. Exactly one wins; the others get 409, never a 500."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from registry.models import AIModel, AIModelDeployment
from registry.services import Registry
from tests.support.fakes import FakeDeployer
from tests.support.helpers import audit_actions, make_model, make_version, pass_validation, upload
from tests.support.live_server import LiveServer

MODEL = "raced"
T0 = datetime.now(UTC).replace(microsecond=0)

Call = Callable[[httpx.Client], httpx.Response]


def race(server: LiveServer, token: str, calls: list[Call]) -> list[httpx.Response]:
    """Run every call on its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(i: int, call: Call) -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            c.get("/api/v1/models")  # connect before the barrier
            barrier.wait()
            try:
                results[i] = call(c)
            except BaseException as exc:
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    responses = []
    for r in results:
        assert isinstance(r, httpx.Response), r
        assert r.status_code < 500, r.text
        responses.append(r)
    return responses


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def deploy(number: str, environment: str = "staging") -> Call:
    body = {"model": MODEL, "versionNumber": number, "environment": environment}
    return lambda c: c.post("/api/v1/deployments", json=body)


def ready(http: httpx.Client, registry: Registry, *numbers: str) -> None:
    for number in numbers:
        make_version(http, MODEL, number)
        assert upload(http, MODEL, number, f"weights {number}".encode()).status_code == 201
    pass_validation(registry)


def test_one_rollout_per_model_and_environment(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str
) -> None:
    make_model(http, MODEL)
    numbers = [f"{i}.0" for i in range(8)]
    ready(http, registry, *numbers)
    responses = race(server, admin_token, [deploy(n) for n in numbers])
    assert statuses(responses) == Counter({202: 1, 409: 7}), [r.text for r in responses]
    with registry.sessions() as s:
        rows = s.scalar(select(func.count()).select_from(AIModelDeployment))
    assert rows == 1


def test_conflicting_lifecycle_moves(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str
) -> None:
    """Staged→Production and Staged→Failed: whichever goes second finds the other's state,
    from which its move is not allowed."""
    make_model(http, MODEL)
    ready(http, registry, "1.0")
    path = f"/api/v1/models/{MODEL}/versions/1.0/transitions"
    responses = race(
        server,
        admin_token,
        [
            lambda c: c.post(path, json={"status": "Production"}),
            lambda c: c.post(path, json={"status": "Failed"}),
        ],
    )
    assert statuses(responses) == Counter({200: 1, 409: 1}), [r.text for r in responses]
    (won,) = [r for r in responses if r.status_code == 200]
    (lost,) = [r for r in responses if r.status_code == 409]
    assert lost.json()["currentStatus"] == won.json()["status"]
    final = http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()["status"]
    assert final == won.json()["status"]


def test_archived_is_never_left_by_a_racing_move(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str
) -> None:
    """Staged→Archived and Staged→Failed: Failed then Archived is a legal sequence (both
    200); Archived then Failed is not (409). Either way the version ends Archived if the
    Archived move succeeded."""
    make_model(http, MODEL)
    make_version(http, MODEL, "1.0")
    path = f"/api/v1/models/{MODEL}/versions/1.0/transitions"
    responses = race(
        server,
        admin_token,
        [
            lambda c: c.post(path, json={"status": "Archived"}),
            lambda c: c.post(path, json={"status": "Failed"}),
        ],
    )
    archived, failed = responses
    assert archived.status_code == 200, archived.text
    final = http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()["status"]
    assert final == "Archived"
    if failed.status_code == 409:
        assert failed.json()["currentStatus"] == "Archived"
    else:
        assert failed.status_code == 200, failed.text


@pytest.mark.parametrize("round_", range(3))
def test_deleting_a_model_while_it_is_deployed(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str, round_: int
) -> None:
    make_model(http, MODEL)
    ready(http, registry, "1.0")

    def deleting(c: httpx.Client) -> httpx.Response:
        return c.delete(f"/api/v1/models/{MODEL}")

    calls = [deploy("1.0"), deleting] if round_ % 2 else [deleting, deploy("1.0")]
    responses = race(server, admin_token, calls)
    by_kind = {r.request.method: r.status_code for r in responses}
    with registry.sessions() as s:
        model_left = s.scalar(select(func.count()).select_from(AIModel))
        deployments = s.scalar(select(func.count()).select_from(AIModelDeployment))
    if by_kind["POST"] == 202:
        assert by_kind["DELETE"] == 409, "a deployed model keeps its history"
        assert (model_left, deployments) == (1, 1)
    else:
        # 409 when the deploy read the model before the deletion committed, 404 when after.
        assert by_kind["DELETE"] == 204, [r.text for r in responses]
        assert by_kind["POST"] in (404, 409), [r.text for r in responses]
        assert (model_left, deployments) == (0, 0)


def test_promote_against_abort(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str
) -> None:
    make_model(http, MODEL)
    ready(http, registry, "1.0", "2.0")
    controller = Controller(
        registry.deployments,
        deployers={"local": FakeDeployer()},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="race-test",
    )
    first = http.post(
        "/api/v1/deployments",
        json={
            "model": MODEL,
            "versionNumber": "1.0",
            "environment": "staging",
            "strategyParams": {"steps": [{"weight": 100}]},
        },
    )
    assert first.status_code == 202, first.text
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=i))
    steps = [{"weight": 10, "pause": "1h"}, {"weight": 100}]
    candidate = http.post(
        "/api/v1/deployments",
        json={
            "model": MODEL,
            "versionNumber": "2.0",
            "environment": "staging",
            "strategyParams": {"steps": steps},
        },
    ).json()
    controller.run_pass(now=T0 + timedelta(seconds=10))
    base = f"/api/v1/deployments/{candidate['id']}"
    responses = race(
        server,
        admin_token,
        [lambda c: c.post(f"{base}/promote"), lambda c: c.post(f"{base}/abort")],
    )
    # Whichever comes first, the abort wins: it supersedes a pending promote, and a promote
    # after a pending abort gets 409.
    assert http.get(base).json()["requestedAction"]["action"] == "abort"
    by_action = {r.request.url.path.rsplit("/", 1)[-1]: r for r in responses}
    assert by_action["abort"].status_code == 202, by_action["abort"].text
    promote = by_action["promote"]
    assert promote.status_code in (202, 409), promote.text
    if promote.status_code == 409:
        assert promote.json()["pendingAction"] == "abort"
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=20 + i))
    assert http.get(base).json()["status"] == "RolledBack"


def test_an_abort_supersedes_a_pending_promote_and_not_the_reverse(
    http: httpx.Client, registry: Registry
) -> None:
    make_model(http, MODEL)
    ready(http, registry, "1.0", "2.0")
    fake = FakeDeployer()
    controller = Controller(
        registry.deployments,
        deployers={"local": fake},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="race-test",
    )
    body = {"model": MODEL, "environment": "staging"}
    steps = {"strategyParams": {"steps": [{"weight": 100}]}}
    first = http.post("/api/v1/deployments", json={**body, "versionNumber": "1.0", **steps})
    assert first.status_code == 202, first.text
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=i))
    fake.ready_after = 1000  # the candidate never gets ready
    canary = {"strategyParams": {"steps": [{"weight": 10, "pause": "1h"}, {"weight": 100}]}}
    candidate = http.post("/api/v1/deployments", json={**body, "versionNumber": "2.0", **canary})
    base = f"/api/v1/deployments/{candidate.json()['id']}"
    assert http.post(f"{base}/promote").status_code == 202
    controller.run_pass(now=T0 + timedelta(seconds=10))  # the promote waits for readiness
    assert http.post(f"{base}/abort", json={"reason": "bad canary"}).status_code == 202
    refused = http.post(f"{base}/promote")
    assert refused.status_code == 409
    assert refused.json()["pendingAction"] == "abort"
    events = http.get(f"{base}/events").json()
    assert any("supersedes the pending promote" in (e["reason"] or "") for e in events)
    for i in range(3):
        controller.run_pass(now=T0 + timedelta(seconds=20 + i))
    assert http.get(base).json()["status"] == "RolledBack"


def test_patching_parameters_while_deploying(
    http: httpx.Client, registry: Registry, server: LiveServer, admin_token: str
) -> None:
    """A deploy and a PATCH of an API version's endpoint: either the PATCH went first (and
    the deployment serves the new endpoint, decided on it) or it is refused."""
    make_model(http, MODEL)
    make_version(http, MODEL, "api", format="API", parameters={"endpoint": "https://a.example"})

    def patch(c: httpx.Client) -> httpx.Response:
        return c.patch(
            f"/api/v1/models/{MODEL}/versions/api",
            json={"parameters": {"endpoint": "https://b.example"}},
        )

    responses = race(server, admin_token, [deploy("api"), patch])
    by_kind = {r.request.method: r.status_code for r in responses}
    assert by_kind["POST"] == 202
    assert by_kind["PATCH"] in (200, 409)
    if by_kind["PATCH"] == 200:
        actions = audit_actions(registry)
        assert actions.index("version_updated") < actions.index("deployment_created"), (
            "a PATCH that succeeded came before the deploy was decided"
        )
