"""/api/v1/models/{name}/versions: create, list, show, change, and the lifecycle."""

from __future__ import annotations

import uuid

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


def test_list_newest_first_with_status_filter_and_cursor(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    for i in range(5):
        make_version(http, model, f"{i}.0")
    upload(http, model, "1.0", b"a")
    pass_validation(registry)
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
    pass_validation(registry)
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
    http: httpx.Client, model: str, registry: Registry, moves: list[str], refused: str
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    pass_validation(registry)
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


def test_production_gate_needs_a_passed_validation_of_the_current_digest(
    server: LiveServer, http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    path = f"/api/v1/models/{model}/versions/1.0/transitions"
    problem = assert_problem(http.post(path, json={"status": "Production"}), 409, "validation")
    assert "no validation of the current artifact" in problem["failedChecks"][0]

    assert pass_validation(registry, security="Failed", functional="Skipped") == 1
    problem = assert_problem(http.post(path, json={"status": "Production"}), 409)
    assert [c.split(" (")[0] for c in problem["failedChecks"]] == [
        "securityScanStatus: Failed",
        "functionalStatus: Skipped",
    ]

    writer = http.post("/api/v1/keys", json={"name": "w", "scopes": ["models:write"]}).json()
    forced = httpx.post(
        server.url + path,
        json={"status": "Production", "force": True, "reason": "trust me"},
        headers={"Authorization": f"Bearer {writer['token']}"},
    )
    assert_problem(forced, 403, "admin")
    assert_problem(http.post(path, json={"status": "Production", "force": True}), 422, "reason")
    assert http.get(f"/api/v1/models/{model}/versions/1.0").json()["status"] == "Staged"

    rerun = http.post(f"/api/v1/models/{model}/versions/1.0/validations")
    assert rerun.status_code == 202
    assert rerun.json()["status"] == "Queued"
    assert pass_validation(registry) == 1
    assert http.post(path, json={"status": "Production"}).status_code == 200


def test_admin_can_force_a_closed_gate_and_it_is_audited(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    response = http.post(
        f"/api/v1/models/{model}/versions/1.0/transitions",
        json={"status": "Production", "force": True, "reason": "hotfix, validated by hand"},
    )
    assert response.status_code == 200
    (row,) = audit_rows(registry, "version_transitioned")
    assert row.details is not None
    assert row.details["reason"] == "hotfix, validated by hand"
    assert row.details["forced"] is True
    assert "no validation" in row.details["overriddenChecks"][0]


def test_validation_runs_are_listed_and_bound_to_the_digest(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    uploaded = upload(http, model, "1.0", b"weights").json()
    runs = http.get(f"/api/v1/models/{model}/versions/1.0/validations").json()
    assert [(r["status"], r["sha256"], r["result"]) for r in runs] == [
        ("Queued", uploaded["sha256"], None)
    ]
    pass_validation(registry)
    (run,) = http.get(f"/api/v1/models/{model}/versions/1.0/validations").json()
    assert run["status"] == "Done"
    assert run["result"]["artifactSha256"] == uploaded["sha256"]
    assert run["result"]["securityScanStatus"] == "Passed"
    version = http.get(f"/api/v1/models/{model}/versions/1.0").json()
    assert version["validationResultId"] == run["result"]["id"]
    by_run = http.get(f"/api/v1/validations/{run['id']}").json()
    by_result = http.get(f"/api/v1/validations/{run['result']['id']}").json()
    assert by_run == by_result == run
    assert_problem(http.get(f"/api/v1/validations/{uuid.uuid4()}"), 404)
    assert "version_validated" in audit_actions(registry)


def test_versions_carry_the_current_artifacts_validation_summary(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "0.1", format="API", parameters={"endpoint": "https://x.test/"})
    assert http.get(f"/api/v1/models/{model}/versions/0.1").json()["validation"] is None
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"weights")
    queued = http.get(f"/api/v1/models/{model}/versions/1.0").json()["validation"]
    assert queued == {
        "validationId": None,
        "securityScanStatus": None,
        "functionalStatus": None,
        "pending": "Queued",
    }

    assert pass_validation(registry, functional="Skipped") == 1
    (run,) = http.get(f"/api/v1/models/{model}/versions/1.0/validations").json()
    done = {
        "validationId": run["id"],
        "securityScanStatus": "Passed",
        "functionalStatus": "Skipped",
        "pending": None,
    }
    assert http.get(f"/api/v1/models/{model}/versions/1.0").json()["validation"] == done
    listed = http.get(f"/api/v1/models/{model}/versions").json()["items"]
    assert {v["versionNumber"]: v["validation"] for v in listed} == {"1.0": done, "0.1": None}

    http.post(f"/api/v1/models/{model}/versions/1.0/validations")
    again = http.get(f"/api/v1/models/{model}/versions/1.0").json()["validation"]
    assert again == {**done, "pending": "Queued"}


def test_listing_versions_reads_their_summaries_in_the_same_query(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    from sqlalchemy import event

    def statements_to_list() -> int:
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(registry.engine, "before_cursor_execute", count)
        try:
            assert http.get(f"/api/v1/models/{model}/versions").status_code == 200
        finally:
            event.remove(registry.engine, "before_cursor_execute", count)
        return len([s for s in seen if "ai_model_version" in s])

    for number in ("1.0", "2.0"):
        make_version(http, model, number)
        upload(http, model, number, b"weights " + number.encode())
    pass_validation(registry)
    few = statements_to_list()
    assert few >= 1
    for number in ("3.0", "4.0", "5.0"):
        make_version(http, model, number)
        upload(http, model, number, b"weights " + number.encode())
    pass_validation(registry)

    assert statements_to_list() == few
