"""The mutating routes answer with bytes FastAPI would have written, without validating again.

``api/answers.py`` builds a route's output model with ``model_construct`` and serializes it
itself. ``GET`` of the same object still goes through FastAPI's ``response_model`` validation
and serialization, so each answer here is compared, byte for byte, with a ``GET`` of the same
state right after it.
"""

from __future__ import annotations

import httpx
import pytest

from registry.services import Registry
from tests.support.helpers import audit_rows, make_model, pass_validation, upload

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
