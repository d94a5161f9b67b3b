"""Careless and hostile clients: values no database stores, repeated validation requests, and
uploads that stall. Every test runs on SQLite and on PostgreSQL, against a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from registry.models import AIModelFeedback, AIModelVersion
from registry.services import Registry
from tests.helpers import assert_problem, make_model, make_version

NUL = "\u0000"


def _post_json(http: httpx.Client, path: str, text: str, method: str = "POST") -> httpx.Response:
    """Send ``text`` as the JSON body, as written: httpx would refuse NaN or re-encode it."""
    return http.request(
        method, path, content=text.encode(), headers={"Content-Type": "application/json"}
    )


# -- NUL characters -------------------------------------------------------------------------

NUL_BODIES = [
    pytest.param(
        "POST",
        "/api/v1/models",
        {"name": "m2", "taskType": "ImageGeneration", "provider": "Internal", "description": NUL},
        "description",
        id="model-description",
    ),
    pytest.param(
        "PATCH", "/api/v1/models/m", {"provider": f"In{NUL}ternal"}, "provider", id="model-provider"
    ),
    pytest.param(
        "POST",
        "/api/v1/models/m/versions",
        {"versionNumber": "2.0", "releaseNotes": f"notes{NUL}"},
        "releaseNotes",
        id="release-notes",
    ),
    pytest.param(
        "POST",
        "/api/v1/models/m/versions",
        {"versionNumber": "2.0", "parameters": {"prompt": {"prefix": f"a{NUL}b"}}},
        "parameters.prompt.prefix",
        id="nested-parameter-value",
    ),
    pytest.param(
        "POST",
        "/api/v1/models/m/versions",
        {"versionNumber": "2.0", "parameters": {f"k{NUL}": 1}},
        "parameters",
        id="parameter-key",
    ),
    pytest.param(
        "PATCH",
        "/api/v1/models/m/versions/1.0",
        {"parameters": {"stops": ["a", NUL]}},
        "parameters.stops[1]",
        id="patch-parameters-list",
    ),
    pytest.param(
        "POST",
        "/api/v1/models/m/versions/1.0/transitions",
        {"status": "Archived", "reason": NUL},
        "reason",
        id="transition-reason",
    ),
    pytest.param(
        "POST",
        "/api/v1/deployments",
        {"model": "m", "versionNumber": "1.0", "strategyParams": {"note": NUL}},
        "strategyParams.note",
        id="strategy-params",
    ),
    pytest.param(
        "POST", "/api/v1/keys", {"name": f"ci{NUL}", "scopes": ["models:read"]}, "name", id="key"
    ),
    pytest.param(
        "POST",
        "/api/v1/feedback",
        {"model": "m", "versionNumber": "1.0", "rating": 4, "comment": f"ok{NUL}"},
        "comment",
        id="feedback-item",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), NUL_BODIES)
def test_a_nul_character_in_a_json_body_is_a_422_naming_the_field(
    http: httpx.Client, registry: Registry, method: str, path: str, body: Any, field: str
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    response = http.request(method, path, json=body)
    problem = assert_problem(response, 422, field, "NUL")
    assert any(field.split(".")[0].split("[")[0] in e["loc"] for e in problem["errors"]), problem
    # Nothing was written, and the server still works.
    assert http.get("/api/v1/models/m").json()["provider"] == "Internal"
    assert http.get("/api/v1/models/m/versions/1.0").json()["status"] == "Staged"
    with registry.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AIModelVersion)) == 1
        assert s.scalar(select(func.count()).select_from(AIModelFeedback)) == 0


@pytest.mark.parametrize(
    ("path", "params", "where"),
    [
        pytest.param("/api/v1/models", {"provider": NUL}, "query provider", id="filter"),
        pytest.param("/api/v1/models", {"q": f"x{NUL}"}, "query q", id="search"),
        pytest.param("/api/v1/deployments", {"model": NUL}, "query model", id="deployments"),
        pytest.param(
            "/api/v1/models/m/versions/1.0/feedback", {"cursor": NUL}, "query cursor", id="cursor"
        ),
        pytest.param("/api/v1/models/m%00x", {}, "path", id="path"),
        pytest.param("/api/v1/models/m/endpoint", {"key": NUL}, "query key", id="endpoint-key"),
    ],
)
def test_a_nul_character_in_the_path_or_the_query_is_a_422(
    http: httpx.Client, path: str, params: dict[str, str], where: str
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    assert_problem(http.get(path, params=params), 422, where, "NUL")


def test_one_nul_in_a_batch_rejects_that_item_and_keeps_the_others(
    http: httpx.Client, registry: Registry
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    items = [
        {"model": "m", "versionNumber": "1.0", "rating": 5, "comment": "fine"},
        {"model": "m", "versionNumber": "1.0", "rating": 1, "comment": f"bad{NUL}"},
        {"model": "m", "versionNumber": "1.0", "details": {f"k{NUL}": "v"}},
        {"model": "m", "versionNumber": f"1.0{NUL}"},
        {"model": "m", "versionNumber": "1.0", "rating": 4},
    ]
    response = http.post("/api/v1/feedback", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [k["index"] for k in body["kept"]] == [0, 4]
    rejected = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(rejected) == {1, 2, 3}
    for index, field in ((1, "comment"), (2, "details"), (3, "versionNumber")):
        assert field in rejected[index], rejected
        assert "NUL" in rejected[index], rejected
    with registry.sessions() as s:
        comments = sorted(str(c) for c in s.scalars(select(AIModelFeedback.comment)))
    assert comments == ["None", "fine"]


# -- numbers JSON cannot hold ---------------------------------------------------------------

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize(
    ("method", "path", "template", "field"),
    [
        pytest.param(
            "POST",
            "/api/v1/models/m/versions",
            '{"versionNumber": "2.0", "parameters": {"temperature": %s}}',
            "parameters.temperature",
            id="version-parameters",
        ),
        pytest.param(
            "PATCH",
            "/api/v1/models/m/versions/1.0",
            '{"parameters": {"scales": [1, {"x": %s}]}}',
            "parameters.scales[1].x",
            id="patch-parameters",
        ),
        pytest.param(
            "POST",
            "/api/v1/deployments",
            '{"model": "m", "versionNumber": "1.0", "strategyParams": {"replicas": %s}}',
            "strategyParams.replicas",
            id="strategy-params",
        ),
        pytest.param(
            "POST",
            "/api/v1/feedback",
            '{"model": "m", "versionNumber": "1.0", "details": {"score": %s}}',
            "details.score",
            id="feedback-details",
        ),
    ],
)
def test_a_number_json_cannot_hold_is_a_422_not_a_stored_null(
    http: httpx.Client,
    registry: Registry,
    method: str,
    path: str,
    template: str,
    field: str,
    number: str,
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0", parameters={"temperature": 0.5})
    response = _post_json(http, path, template % number, method=method)
    assert_problem(response, 422, field)
    assert http.get("/api/v1/models/m/versions/2.0").status_code == 404
    assert http.get("/api/v1/models/m/versions/1.0").json()["parameters"] == {"temperature": 0.5}
    with registry.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AIModelFeedback)) == 0


def test_a_batch_rejects_the_item_with_a_non_finite_number_and_keeps_the_others(
    http: httpx.Client,
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    text = (
        '{"items": [{"model": "m", "versionNumber": "1.0", "rating": 5},'
        ' {"model": "m", "versionNumber": "1.0", "details": {"latency": [1.5, NaN]}},'
        ' {"model": "m", "versionNumber": "1.0", "details": {"latency": 1e999}}]}'
    )
    response = _post_json(http, "/api/v1/feedback", text)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [k["index"] for k in body["kept"]] == [0]
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert "details.latency[1]" in reasons[1]
    assert "details.latency" in reasons[2]
    stored = http.get("/api/v1/models/m/versions/1.0/feedback").json()["items"]
    assert [item["rating"] for item in stored] == [5]


def test_finite_numbers_and_ordinary_strings_still_pass(http: httpx.Client) -> None:
    make_model(http, "m")
    params = {"t": 1e308, "n": -0.0, "s": "tab\tand unicode é \u2028", "deep": [[{"x": 1}]]}
    version = make_version(http, "m", "1.0", parameters=params)
    assert version["parameters"] == json.loads(json.dumps(params))
