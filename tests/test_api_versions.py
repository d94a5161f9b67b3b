"""/api/v1/models/{name}/versions: create, list, show, change, and the lifecycle."""

from __future__ import annotations

import httpx
import pytest

from registry.services import Registry
from tests.helpers import (
    assert_problem,
    audit_actions,
    audit_rows,
    make_model,
    make_version,
    upload,
)


@pytest.fixture
def model(http: httpx.Client) -> str:
    make_model(http, "text2img")
    return "text2img"


def test_create_version_defaults(http: httpx.Client, model: str, registry: Registry) -> None:
    v = make_version(http, model, "1.0", releaseNotes="first", parameters={"steps": 30})
    assert v["status"] == "Staged"
    assert v["format"] == "ONNX"
    assert v["sourcePath"] is None
    assert v["sha256"] is None
    assert v["sizeBytes"] is None
    assert v["parameters"] == {"steps": 30}
    assert v["createdByUserId"] is not None
    assert http.get(f"/api/v1/models/{model}/versions/1.0").json() == v
    assert audit_actions(registry)[-1] == "version_created"


@pytest.mark.parametrize(
    ("version", "status"),
    [
        pytest.param("DALL-E 3", 201, id="seed-example-with-space"),
        pytest.param("2023-10-26", 201, id="seed-example-date"),
        pytest.param("x" * 50, 201, id="fifty-chars"),
        pytest.param("x" * 51, 422, id="over-seed-size"),
        pytest.param("a/b", 422, id="slash"),
        pytest.param(" 1", 422, id="leading-space"),
        pytest.param("", 422, id="empty"),
    ],
)
def test_version_numbers_follow_seed_sizes(
    http: httpx.Client, model: str, version: str, status: int
) -> None:
    response = http.post(f"/api/v1/models/{model}/versions", json={"versionNumber": version})
    assert response.status_code == status, response.text
    if status == 201:
        assert http.get(f"/api/v1/models/{model}/versions/{version}").status_code == 200


def test_duplicate_and_missing(http: httpx.Client, model: str) -> None:
    make_version(http, model, "1.0")
    assert_problem(
        http.post(f"/api/v1/models/{model}/versions", json={"versionNumber": "1.0"}), 409, "1.0"
    )
    assert_problem(
        http.post("/api/v1/models/ghost/versions", json={"versionNumber": "1"}), 404, "ghost"
    )
    assert_problem(http.get(f"/api/v1/models/{model}/versions/9.9"), 404, "9.9")
    assert_problem(
        http.post(
            f"/api/v1/models/{model}/versions", json={"versionNumber": "2", "format": "Keras"}
        ),
        422,
        "format",
    )


@pytest.mark.parametrize(
    ("parameters", "ok"),
    [
        pytest.param({"endpoint": "https://api.openai.com/v1/images"}, True, id="https"),
        pytest.param({"endpoint": "http://10.0.0.5:8080/gen"}, True, id="http"),
        pytest.param({"endpoint": "ftp://example.com/x"}, False, id="ftp-refused"),
        pytest.param({"endpoint": "javascript:alert(1)"}, False, id="js-refused"),
        pytest.param({}, False, id="missing-endpoint"),
        pytest.param(None, False, id="no-parameters"),
    ],
)
def test_api_format_versions_need_an_http_endpoint(
    http: httpx.Client, model: str, parameters: dict[str, str] | None, ok: bool
) -> None:
    response = http.post(
        f"/api/v1/models/{model}/versions",
        json={"versionNumber": "ext", "format": "API", "parameters": parameters},
    )
    if ok:
        assert response.status_code == 201
        assert_problem(upload(http, model, "ext", b"data"), 409, "format API")
        assert_problem(
            http.get(f"/api/v1/models/{model}/versions/ext/artifact"), 404, "no artifact"
        )
    else:
        assert_problem(response, 422, "endpoint")


def test_list_newest_first_with_status_filter_and_cursor(http: httpx.Client, model: str) -> None:
    for i in range(5):
        make_version(http, model, f"{i}.0")
    upload(http, model, "1.0", b"a")
    http.post(f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": "Production"})
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        page = http.get(f"/api/v1/models/{model}/versions", params=params).json()
        seen += [v["versionNumber"] for v in page["items"]]
        if not page["nextCursor"]:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == ["4.0", "3.0", "2.0", "1.0", "0.0"]
    prod = http.get(f"/api/v1/models/{model}/versions", params={"status": "Production"}).json()
    assert [v["versionNumber"] for v in prod["items"]] == ["1.0"]
    assert_problem(http.get(f"/api/v1/models/{model}/versions", params={"status": "Live"}), 422)


def test_patch_notes_and_parameters(http: httpx.Client, model: str, registry: Registry) -> None:
    make_version(http, model, "1.0")
    v = http.patch(
        f"/api/v1/models/{model}/versions/1.0",
        json={"releaseNotes": "better", "parameters": {"steps": 50}},
    ).json()
    assert v["releaseNotes"] == "better"
    assert v["parameters"] == {"steps": 50}
    assert_problem(
        http.patch(f"/api/v1/models/{model}/versions/1.0", json={"status": "Failed"}), 422, "status"
    )
    assert_problem(
        http.patch(f"/api/v1/models/{model}/versions/1.0", json={"sourcePath": "/etc/passwd"}), 422
    )
    assert audit_rows(registry, "version_updated")[0].details == {
        "modelVersionId": v["id"],
        "fields": ["parameters", "release_notes"],
    }


LIFECYCLE = [
    pytest.param(["Production"], "Production", id="staged-to-production"),
    pytest.param(["Failed"], "Failed", id="staged-to-failed"),
    pytest.param(["Archived"], "Archived", id="staged-to-archived"),
    pytest.param(["Production", "Deprecated"], "Deprecated", id="production-to-deprecated"),
    pytest.param(
        ["Production", "Deprecated", "Production"], "Production", id="deprecated-back-to-production"
    ),
    pytest.param(["Production", "Deprecated", "Archived"], "Archived", id="deprecated-to-archived"),
    pytest.param(["Production", "Archived"], "Archived", id="production-to-archived"),
    pytest.param(["Failed", "Archived"], "Archived", id="failed-to-archived"),
]


@pytest.mark.parametrize(("moves", "final"), LIFECYCLE)
def test_allowed_transitions(
    http: httpx.Client, model: str, registry: Registry, moves: list[str], final: str
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    for status in moves:
        response = http.post(
            f"/api/v1/models/{model}/versions/1.0/transitions",
            json={"status": status, "reason": f"to {status}"},
        )
        assert response.status_code == 200, response.text
    assert http.get(f"/api/v1/models/{model}/versions/1.0").json()["status"] == final
    rows = audit_rows(registry, "version_transitioned")
    assert [r.details["toStatus"] for r in rows if r.details] == moves
    assert rows[-1].details is not None
    assert rows[-1].details["reason"] == f"to {moves[-1]}"


@pytest.mark.parametrize(
    ("moves", "refused"),
    [
        pytest.param([], "Deprecated", id="staged-to-deprecated"),
        pytest.param([], "Staged", id="staged-to-staged"),
        pytest.param(["Production"], "Staged", id="production-to-staged"),
        pytest.param(["Production"], "Failed", id="production-to-failed"),
        pytest.param(["Failed"], "Production", id="failed-to-production"),
        pytest.param(["Archived"], "Production", id="archived-to-production"),
        pytest.param(["Archived"], "Archived", id="archived-to-archived"),
    ],
)
def test_refused_transitions_list_the_allowed_moves(
    http: httpx.Client, model: str, moves: list[str], refused: str
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    for status in moves:
        http.post(f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": status})
    before = http.get(f"/api/v1/models/{model}/versions/1.0").json()
    response = http.post(
        f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": refused}
    )
    problem = assert_problem(response, 409, refused)
    assert problem["currentStatus"] == before["status"]
    assert isinstance(problem["allowedTransitions"], list)
    assert refused not in problem["allowedTransitions"]
    assert http.get(f"/api/v1/models/{model}/versions/1.0").json() == before


def test_production_gate_needs_an_artifact(http: httpx.Client, model: str) -> None:
    make_version(http, model, "1.0")
    problem = assert_problem(
        http.post(
            f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": "Production"}
        ),
        409,
        "artifact",
    )
    assert problem["failedChecks"] == ["artifact: no artifact has been uploaded to this version"]
    make_version(
        http, model, "ext", format="API", parameters={"endpoint": "https://example.com/v1"}
    )
    response = http.post(
        f"/api/v1/models/{model}/versions/ext/transitions", json={"status": "Production"}
    )
    assert response.status_code == 200
