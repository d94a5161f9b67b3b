"""/api/v1/models: create, list with filters and cursors, show, change, delete."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from registry.models import AIModelDeployment
from registry.services import Registry
from tests.support.helpers import (
    assert_problem,
    audit_actions,
    audit_rows,
    make_model,
    make_version,
)


def test_create_and_show(http: httpx.Client, registry: Registry) -> None:
    created = make_model(http, "text2img", description="diffusion", provider="StabilityAI")
    assert created["name"] == "text2img"
    assert created["taskType"] == "ImageGeneration"
    assert created["isActive"] is True
    assert created["createdAt"].endswith("Z") or "+00:00" in created["createdAt"]
    shown = http.get("/api/v1/models/text2img").json()
    assert shown == created
    (row,) = audit_rows(registry, "model_created")
    assert row.details == {"modelId": created["id"], "name": "text2img"}
    assert row.api_client_id is not None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param(
            {"name": "-bad", "taskType": "ImageGeneration", "provider": "p"},
            "name",
            id="name-leading-dash",
        ),
        pytest.param(
            {"name": "a b", "taskType": "ImageGeneration", "provider": "p"}, "name", id="name-space"
        ),
        pytest.param(
            {"name": "x" * 101, "taskType": "ImageGeneration", "provider": "p"},
            "name",
            id="name-too-long",
        ),
        pytest.param(
            {"name": "ok", "taskType": "Poetry", "provider": "p"},
            "taskType",
            id="task-type-not-in-seed-list",
        ),
        pytest.param(
            {"name": "ok", "taskType": "ImageGeneration", "provider": "p" * 51},
            "provider",
            id="provider-too-long",
        ),
        pytest.param(
            {"name": "ok", "taskType": "ImageGeneration"}, "provider", id="provider-missing"
        ),
        pytest.param(
            {"name": "ok", "taskType": "ImageGeneration", "provider": "p", "colour": "red"},
            "colour",
            id="unknown-field",
        ),
    ],
)
def test_bad_model_bodies_are_422(
    http: httpx.Client, registry: Registry, body: dict[str, object], where: str
) -> None:
    response = http.post("/api/v1/models", json=body)
    problem = assert_problem(response, 422, where)
    assert problem["errors"]
    assert audit_actions(registry) == ["api_key_created"]  # only the bootstrap


def test_duplicate_name_is_409(http: httpx.Client) -> None:
    make_model(http, "dup")
    assert_problem(
        http.post(
            "/api/v1/models", json={"name": "dup", "taskType": "TextGeneration", "provider": "p"}
        ),
        409,
        "dup",
    )


def test_unknown_model_is_404_and_bad_name_is_422(http: httpx.Client) -> None:
    assert_problem(http.get("/api/v1/models/nope"), 404, "nope")
    assert_problem(http.get("/api/v1/models/bad%20name"), 422)
    assert_problem(http.get("/api/v1/nowhere"), 404)


def test_list_filters_and_cursor(http: httpx.Client) -> None:
    for i in range(7):
        make_model(
            http,
            f"m{i}",
            taskType="TextGeneration" if i % 2 else "ImageGeneration",
            provider="OpenAI" if i < 3 else "Internal",
            description=f"model number {i}" + (" with Snow" if i == 5 else ""),
        )
    http.patch("/api/v1/models/m6", json={"isActive": False})

    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/api/v1/models", params=params).json()
        names += [m["name"] for m in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert names == [f"m{i}" for i in range(7)]
    assert pages == 3

    def listed(**params: str) -> list[str]:
        return [m["name"] for m in http.get("/api/v1/models", params=params).json()["items"]]

    assert listed(taskType="TextGeneration") == ["m1", "m3", "m5"]
    assert listed(provider="OpenAI") == ["m0", "m1", "m2"]
    assert listed(provider="OpenAI", taskType="ImageGeneration") == ["m0", "m2"]
    assert listed(isActive="false") == ["m6"]
    assert listed(q="snow") == ["m5"]
    assert listed(q="%") == []
    assert_problem(http.get("/api/v1/models", params={"cursor": "garbage!"}), 422, "cursor")
    assert_problem(http.get("/api/v1/models", params={"limit": 0}), 422)
    assert_problem(http.get("/api/v1/models", params={"taskType": "Poetry"}), 422)


def test_patch_changes_and_audits(http: httpx.Client, registry: Registry) -> None:
    before = make_model(http, "m")
    after = http.patch("/api/v1/models/m", json={"description": "new", "isActive": False}).json()
    assert after["description"] == "new"
    assert after["isActive"] is False
    assert after["updatedAt"] > before["updatedAt"]
    (row,) = audit_rows(registry, "model_updated")
    assert row.details is not None
    assert row.details["changes"] == {"description": "new", "is_active": False}
    assert_problem(http.patch("/api/v1/models/m", json={"name": "renamed"}), 422, "name")
    assert_problem(http.patch("/api/v1/models/m", json={"provider": None}), 422, "provider")


def test_delete_removes_versions_and_artifacts(http: httpx.Client, registry: Registry) -> None:
    make_model(http, "gone")
    make_version(http, "gone", "1")
    response = http.put("/api/v1/models/gone/versions/1/artifact", content=b"onnx-bytes")
    assert response.status_code == 201
    assert list(registry.store.list_keys())
    assert http.delete("/api/v1/models/gone").status_code == 204
    assert_problem(http.get("/api/v1/models/gone"), 404)
    assert list(registry.store.list_keys()) == []
    assert "model_deleted" in audit_actions(registry)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param("Initiated", id="initiated-blocks"),
        pytest.param("Deploying", id="deploying-blocks"),
        pytest.param("Active", id="active-blocks"),
        pytest.param("Inactive", id="inactive-blocks"),
        pytest.param("RolledBack", id="rolledback-blocks"),
        pytest.param("Failed", id="failed-blocks"),
    ],
)
def test_delete_refused_once_deployed(http: httpx.Client, registry: Registry, status: str) -> None:
    """A model that ever had a deployment keeps its history: deleting it is refused, even
    when nothing serves it any more (the ledger says what served at any time)."""
    make_model(http, "live")
    version = make_version(http, "live", "1")
    with registry.sessions.begin() as s:
        s.add(
            AIModelDeployment(
                model_version_id=uuid.UUID(version["id"]), environment="production", status=status
            )
        )
    body = assert_problem(http.delete("/api/v1/models/live"), 409, "isActive")
    assert body["suggestion"] == {"isActive": False}
    assert http.get("/api/v1/models/live").status_code == 200
    with registry.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AIModelDeployment)) == 1
