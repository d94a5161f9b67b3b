"""The mutating routes answer with bytes FastAPI would have written, without validating again.

``api/answers.py`` builds a route's output model with ``model_construct`` and serializes it
itself. ``GET`` of the same object still goes through FastAPI's ``response_model`` validation
and serialization, so each answer here is compared, byte for byte, with a ``GET`` of the same
state right after it (an API key's, with its item in the listing; a feedback batch, which no
``GET`` answers with, with the JSON FastAPI renders for the ids the listing shows).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

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

MODEL = "answers"
#: JSON that serializers disagree on: non-ASCII, escapes, big ints and floats, nesting. The
#: keys are in JSONB's order (shorter first, then bytewise): PostgreSQL gives them back so,
#: while a write answers with the object as sent (as it always did); no float that JSONB
#: turns into an integer (1e20 comes back as 100000000000000000000).
PARAMETERS = {
    "big": 2**63,
    "tiny": 1.5e-7,
    "scale": 12345.678,
    "third": 1 / 3,
    "nested": {"list": [1, 2.0, None, True, {"x": []}], "empty": {}},
    "prompt": 'café "ß" \\ \n\t\u0001 😀 \u2028',
}


def _same_as_get(http: httpx.Client, answer: httpx.Response, path: str) -> None:
    assert answer.is_success, answer.text
    again = http.get(path)
    assert again.status_code == 200, again.text
    assert answer.content == again.content
    assert answer.headers["content-type"] == again.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.content))


def test_version_answers_are_the_bytes_of_a_get(http: httpx.Client, registry: Registry) -> None:
    make_model(http, MODEL)
    base = f"/api/v1/models/{MODEL}/versions"
    created = http.post(
        base, json={"versionNumber": "1.0", "releaseNotes": "ünï", "parameters": PARAMETERS}
    )
    assert created.status_code == 201
    assert created.headers["location"] == f"{base}/1.0"
    _same_as_get(http, created, f"{base}/1.0")
    changed = http.patch(f"{base}/1.0", json={"releaseNotes": "second", "parameters": {"a": 1}})
    _same_as_get(http, changed, f"{base}/1.0")
    tagged = http.put(f"{base}/1.0/tags/team/owner", json={"value": "vision ✓"})
    _same_as_get(http, tagged, f"{base}/1.0")
    # A version with an artifact, a validation and its signature: the nested objects.
    assert upload(http, MODEL, "1.0", b"\x08\x07onnx-ish").status_code == 201
    pass_validation(registry)
    moved = http.post(
        f"{base}/1.0/transitions", json={"status": "Production", "reason": "gate", "force": True}
    )
    _same_as_get(http, moved, f"{base}/1.0")
    assert moved.json()["validation"] is not None
    # The create's audit row, written in the same statement as the version where possible.
    (row,) = audit_rows(registry, "version_created")
    assert row.details == {
        "modelId": created.json()["modelId"],
        "modelVersionId": created.json()["id"],
        "versionNumber": "1.0",
        "format": "ONNX",
    }
    assert str(row.user_id) == created.json()["createdByUserId"]
    assert row.api_client_id is not None


def test_model_answers_are_the_bytes_of_a_get(http: httpx.Client) -> None:
    created = http.post(
        "/api/v1/models",
        json={
            "name": MODEL,
            "taskType": "ImageGeneration",
            "provider": "Intérnal",
            "description": "😀 \u2028",
        },
    )
    assert created.status_code == 201
    assert created.headers["location"] == f"/api/v1/models/{MODEL}"
    _same_as_get(http, created, f"/api/v1/models/{MODEL}")
    changed = http.patch(f"/api/v1/models/{MODEL}", json={"isActive": False})
    _same_as_get(http, changed, f"/api/v1/models/{MODEL}")
    tagged = http.put(f"/api/v1/models/{MODEL}/tags/stage", json={"value": "β"})
    _same_as_get(http, tagged, f"/api/v1/models/{MODEL}")


@pytest.mark.parametrize("model", ["missing", MODEL])
def test_a_refused_create_writes_no_audit_row(
    http: httpx.Client, registry: Registry, model: str
) -> None:
    make_model(http, MODEL)
    assert http.post(f"/api/v1/models/{MODEL}/versions", json={"versionNumber": "1"}).is_success
    again = http.post(f"/api/v1/models/{model}/versions", json={"versionNumber": "1"})
    assert again.status_code == (404 if model == "missing" else 409), again.text
    assert len(audit_rows(registry, "version_created")) == 1


def test_deployment_answers_are_the_bytes_of_a_get(http: httpx.Client, registry: Registry) -> None:
    controller = Controller(
        registry.deployments,
        deployers={"local": FakeDeployer()},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="answers-test",
    )
    t0 = datetime.now(UTC).replace(microsecond=0)
    make_model(http, MODEL)
    for number in ("1.0", "2.0"):
        make_version(http, MODEL, number)
        assert upload(http, MODEL, number, f"weights {number}".encode()).status_code == 201
        pass_validation(registry)
    params = {"steps": [{"weight": 100}], "replicas": 1}
    body = {"model": MODEL, "versionNumber": "1.0", "strategyParams": params}
    created = http.post("/api/v1/deployments", json=body)
    assert created.status_code == 202
    first = f"/api/v1/deployments/{created.json()['id']}"
    assert created.headers["location"] == first
    _same_as_get(http, created, first)
    paused = http.post(f"{first}/pause", json={"reason": "wait ✋ \u2028"})
    assert paused.status_code == 202
    _same_as_get(http, paused, first)
    _same_as_get(http, http.post(f"{first}/resume"), first)
    for i in range(2):
        controller.run_pass(now=t0 + timedelta(seconds=i))
    second = http.post("/api/v1/deployments", json={**body, "versionNumber": "2.0"})
    _same_as_get(http, second, f"/api/v1/deployments/{second.json()['id']}")
    for i in range(2, 4):
        controller.run_pass(now=t0 + timedelta(seconds=i))
    # Instant: the first deployment serves again, with its conditions and observed state.
    back = http.post(f"/api/v1/models/{MODEL}/rollback", json={"reason": "regression"})
    assert back.status_code == 202, back.text
    assert back.json()["id"] == created.json()["id"]
    assert back.json()["observedState"] is not None
    _same_as_get(http, back, first)
    undeployed = http.post(f"{first}/undeploy", json={"reason": "done"})
    assert undeployed.status_code == 202
    assert undeployed.json()["requestedAction"]["action"] == "undeploy"
    _same_as_get(http, undeployed, first)


def test_a_feedback_answer_is_what_fastapi_renders(http: httpx.Client) -> None:
    make_model(http, MODEL)
    make_version(http, MODEL, "1.0")
    item = {"model": MODEL, "versionNumber": "1.0", "rating": 5, "comment": "crisp ✓"}
    batch = {"items": [item, {**item, "versionNumber": "9.9"}, {**item, "rating": 4}]}
    for sent, kept_at in ((item, [0]), (batch, [0, 2])):
        answer = http.post("/api/v1/feedback", json=sent)
        assert answer.status_code == 200, answer.text
        listing = http.get(f"/api/v1/models/{MODEL}/versions/1.0/feedback", params={"limit": 2})
        newest = [i["id"] for i in listing.json()["items"]][: len(kept_at)]
        rejected = [{"index": r["index"], "reason": r["reason"]} for r in answer.json()["rejected"]]
        assert [r["index"] for r in rejected] == ([1] if sent is batch else [])
        # the listing orders the items of one batch (one created_at) by id, not by index
        kept = answer.json()["kept"]
        assert sorted(k["id"] for k in kept) == sorted(newest)
        expected = {
            "kept": [{"index": i, "id": k["id"]} for i, k in zip(kept_at, kept, strict=True)],
            "rejected": rejected,
        }
        # Starlette's JSONResponse.render, which FastAPI answers a response_model with.
        rendered = json.dumps(expected, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert answer.content == rendered.encode()
        assert answer.headers["content-type"] == "application/json"


def test_key_answers_are_the_bytes_of_the_listing(http: httpx.Client) -> None:
    created = http.post(
        "/api/v1/keys", json={"name": "ci ✓", "scopes": ["models:read", "feedback:write"]}
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    token = created.json()["token"]
    listing = http.get("/api/v1/keys").content
    without_token = created.content.removesuffix(b',"token":' + json.dumps(token).encode() + b"}")
    assert without_token != created.content
    assert without_token + b"}" in listing
    revoked = http.post(f"/api/v1/keys/{created.json()['apiKey']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["isActive"] is False
    assert revoked.content in http.get("/api/v1/keys").content
    assert_problem(http.post("/api/v1/keys/mr_nothing-like-it/revoke"), 404)
