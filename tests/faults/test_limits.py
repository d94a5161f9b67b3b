"""JSON request bodies are capped before anything parses them; artifact uploads are not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from registry.settings import Settings
from tests.support.helpers import assert_problem, make_model, make_version, upload

LIMIT = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_json_body_bytes": LIMIT})


def _model_body(description_bytes: int) -> dict[str, str]:
    return {
        "name": "big",
        "taskType": "ImageGeneration",
        "provider": "Internal",
        "description": "d" * description_bytes,
    }


def test_a_declared_length_over_the_cap_is_refused_unread(http: httpx.Client) -> None:
    body = json.dumps(_model_body(LIMIT)).encode()
    response = http.post(
        "/api/v1/models", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "MODELREG_MAX_JSON_BODY_BYTES")
    assert http.get("/api/v1/models/big").status_code == 404


def test_a_chunked_body_is_counted_as_it_arrives(http: httpx.Client) -> None:
    piece = b" " * 8192

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "taskType": "ImageGeneration", "provider": "Internal"'
        for _ in range(2 * LIMIT // len(piece)):
            yield piece
        yield b"}"

    response = http.post(
        "/api/v1/models", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, f"larger than {LIMIT} bytes")
    assert http.get("/api/v1/models/big").status_code == 404


def test_a_body_under_the_cap_is_served(http: httpx.Client) -> None:
    make_model(http, "m")
    notes = "n" * (LIMIT - 1024)
    response = http.post(
        "/api/v1/models/m/versions", json={"versionNumber": "1", "releaseNotes": notes}
    )
    assert response.status_code == 201, response.text
    assert len(response.request.content) > LIMIT // 2


def test_a_feedback_batch_over_the_cap_keeps_nothing(http: httpx.Client) -> None:
    make_model(http, "m")
    make_version(http, "m", "1")
    item = {"model": "m", "versionNumber": "1", "rating": 5, "comment": "c" * 1000}
    response = http.post("/api/v1/feedback", json={"items": [item] * 100})
    assert_problem(response, 413, "smaller feedback batches")
    summary = http.get("/api/v1/models/m/versions/1/feedback/summary")
    assert summary.status_code == 200, summary.text
    assert summary.json()["count"] == 0


def test_artifact_uploads_are_not_held_to_the_json_cap(http: httpx.Client) -> None:
    make_model(http, "m")
    make_version(http, "m", "1")
    response = upload(http, "m", "1", b"\x00" * (4 * LIMIT))
    assert response.status_code == 201, response.text


def test_every_operation_with_a_body_declares_413(tmp_path: Path) -> None:
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    with_body = [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    ]
    assert len(with_body) >= 8
    for method, path, op in with_body:
        assert "413" in op["responses"], (method, path)
