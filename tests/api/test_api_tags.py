"""Tags on models and versions over HTTP: set, replace, delete, 404s, audit, scopes, and
that a tag changes on any status without touching what the version serves."""

from __future__ import annotations

import httpx
import pytest

from registry.services import Registry
from tests.support.helpers import (
    assert_problem,
    audit_actions,
    audit_rows,
    make_model,
    make_version,
    pass_validation,
    upload,
)
from tests.support.live_server import LiveServer


@pytest.fixture
def model(http: httpx.Client) -> str:
    make_model(http, "text2img")
    return "text2img"


def test_model_tag_set_replace_delete_and_audit(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    url = f"/api/v1/models/{model}/tags/stage"
    first = http.put(url, json={"value": "candidate"})
    assert first.status_code == 200, first.text
    assert first.json()["tags"] == {"stage": "candidate"}
    assert http.put(url, json={"value": "candidate"}).status_code == 200  # idempotent
    assert [a for a in audit_actions(registry) if a.startswith("model_tag")] == ["model_tag_set"]

    replaced = http.put(url, json={"value": "prod"}).json()
    assert replaced["tags"] == {"stage": "prod"}
    http.put(f"/api/v1/models/{model}/tags/team/vision", json={"value": "a"})
    assert http.get(f"/api/v1/models/{model}").json()["tags"] == {
        "stage": "prod",
        "team/vision": "a",
    }
    assert http.get("/api/v1/models").json()["items"][0]["tags"]["stage"] == "prod"

    assert http.delete(url).status_code == 204
    assert_problem(http.delete(url), 404, "stage")
    assert http.get(f"/api/v1/models/{model}").json()["tags"] == {"team/vision": "a"}
    rows = audit_rows(registry, "model_tag_set")
    assert [r.details["value"] for r in rows if r.details] == ["candidate", "prod", "a"]
    (deleted,) = audit_rows(registry, "model_tag_deleted")
    assert deleted.details == {
        "modelId": first.json()["id"],
        "name": model,
        "key": "stage",
        "value": "prod",
    }


def test_version_tags_change_on_archived_and_never_touch_what_serves(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    assert upload(http, model, "1.0", b"weights").status_code == 201
    pass_validation(registry)
    served = http.get(f"/api/v1/models/{model}/versions/1.0").json()
    moved = http.post(
        f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": "Archived"}
    )
    assert moved.status_code == 200, moved.text
    before = http.get(f"/api/v1/models/{model}/versions/1.0").json()

    url = f"/api/v1/models/{model}/versions/1.0/tags/stage"
    tagged = http.put(url, json={"value": "retired"})
    assert tagged.status_code == 200, tagged.text
    after = tagged.json()
    assert after["tags"] == {"stage": "retired"}
    assert after["status"] == "Archived"
    for field in ("sha256", "validationResultId", "sizeBytes", "sourcePath", "signature"):
        assert after[field] == before[field] == served[field], field
    assert served["validationResultId"] is not None
    assert after["updatedAt"] == before["updatedAt"]  # the version's row is not touched
    listed = http.get(f"/api/v1/models/{model}/versions").json()["items"]
    assert listed[0]["tags"] == {"stage": "retired"}

    assert http.delete(url).status_code == 204
    assert_problem(http.delete(url), 404, "stage", "1.0")
    assert audit_actions(registry)[-2:] == ["version_tag_set", "version_tag_deleted"]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        pytest.param("a b", "x", "a tag key is 1 to 63 characters", id="space"),
        pytest.param("x" * 64, "x", "a tag key is 1 to 63 characters", id="key-64"),
        pytest.param("stage", "v" * 5001, "at most 5000 characters", id="value-5001"),
        pytest.param("é", "x", "a tag key", id="non-ascii-key"),
    ],
)
def test_bad_tags_are_422_with_a_sentence(
    http: httpx.Client, model: str, key: str, value: str, fragment: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    for url in (
        f"/api/v1/models/{model}/tags/{key}",
        f"/api/v1/models/{model}/versions/1.0/tags/{key}",
    ):
        assert_problem(http.put(url, json={"value": value}), 422, fragment)
    assert not [a for a in audit_actions(registry) if "tag" in a]


def test_limits_are_inclusive_and_empty_key_is_422(http: httpx.Client, model: str) -> None:
    ok = http.put(f"/api/v1/models/{model}/tags/{'k' * 63}", json={"value": "v" * 5000})
    assert ok.status_code == 200, ok.text
    assert_problem(http.put(f"/api/v1/models/{model}/tags/", json={"value": "x"}), 422, "tag key")
    assert_problem(http.put(f"/api/v1/models/{model}/tags/k", json={}), 422, "value")


def test_tags_of_what_does_not_exist_are_404(http: httpx.Client, model: str) -> None:
    assert_problem(http.put("/api/v1/models/ghost/tags/k", json={"value": "x"}), 404, "ghost")
    assert_problem(
        http.put(f"/api/v1/models/{model}/versions/9.9/tags/k", json={"value": "x"}), 404, "9.9"
    )
    assert_problem(http.delete(f"/api/v1/models/{model}/tags/k"), 404, "no tag 'k'")


def test_tags_need_models_write(http: httpx.Client, model: str, server: LiveServer) -> None:
    reader = http.post("/api/v1/keys", json={"name": "r", "scopes": ["models:read"]}).json()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {reader['token']}"}
    ) as as_reader:
        url = f"/api/v1/models/{model}/tags/k"
        assert_problem(as_reader.put(url, json={"value": "x"}), 403, "models:write")
        http.put(url, json={"value": "x"})
        assert_problem(as_reader.delete(url), 403, "models:write")
        assert as_reader.get(f"/api/v1/models/{model}").json()["tags"] == {"k": "x"}


def test_deleting_a_model_takes_its_tags(http: httpx.Client, model: str) -> None:
    make_version(http, model, "1.0")
    http.put(f"/api/v1/models/{model}/tags/k", json={"value": "x"})
    http.put(f"/api/v1/models/{model}/versions/1.0/tags/k", json={"value": "x"})
    assert http.delete(f"/api/v1/models/{model}").status_code == 204
    make_model(http, model)
    assert http.get(f"/api/v1/models/{model}").json()["tags"] == {}
