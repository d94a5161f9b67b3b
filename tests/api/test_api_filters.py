"""``filter``, ``orderBy`` and the cursor on GET /models and GET /models/{name}/versions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from registry.models import AIModel, AIModelVersion, UsageLog, model_tags, version_tags
from registry.services import Registry
from tests.support.helpers import (
    assert_problem,
    make_model,
    make_version,
    pass_validation,
    upload,
)

VERSIONS = "/api/v1/models/m/versions"


def _names(response: httpx.Response, key: str = "versionNumber") -> list[str]:
    assert response.status_code == 200, response.text
    return [item[key] for item in response.json()["items"]]


def _versions(http: httpx.Client, flt: str, **params: Any) -> list[str]:
    return _names(http.get(VERSIONS, params={"filter": flt, **params}))


@pytest.fixture
def catalog(http: httpx.Client, registry: Registry) -> dict[str, Any]:
    """m: 1.0 Passed and Production (stage=prod); 1.1 Failed (stage=candidate); 1.2 queued,
    Pending (stage=candidate, team=a); 2.0 an API version, never validated (None)."""
    make_model(http, "m")
    created = {}
    for number, security in (("1.0", "Passed"), ("1.1", "Failed")):
        created[number] = make_version(http, "m", number)["createdAt"]
        assert upload(http, "m", number, number.encode()).status_code == 201
        pass_validation(registry, security=security)
    created["1.2"] = make_version(http, "m", "1.2")["createdAt"]
    assert upload(http, "m", "1.2", b"1.2").status_code == 201
    created["2.0"] = make_version(
        http, "m", "2.0", format="API", parameters={"endpoint": "https://example.com/m"}
    )["createdAt"]
    promoted = http.post(f"{VERSIONS}/1.0/transitions", json={"status": "Production"})
    assert promoted.status_code == 200, promoted.text
    for number, key, value in (
        ("1.0", "stage", "prod"),
        ("1.1", "stage", "candidate"),
        ("1.2", "stage", "candidate"),
        ("1.2", "team", "a"),
    ):
        assert http.put(f"{VERSIONS}/{number}/tags/{key}", json={"value": value}).is_success
    return created


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        pytest.param("tag.stage = 'candidate'", ["1.2", "1.1"], id="tag-eq"),
        pytest.param("tags.stage='candidate'", ["1.2", "1.1"], id="mlflow-tags-prefix"),
        pytest.param("tag.stage != 'candidate'", ["1.0"], id="tag-ne-needs-the-tag"),
        pytest.param("NOT tag.stage = 'candidate'", ["2.0", "1.0"], id="not-tag"),
        pytest.param("tag.stage IN ('prod', \"candidate\")", ["1.2", "1.1", "1.0"], id="tag-in"),
        pytest.param("tag.nope = 'x'", [], id="absent-tag"),
        pytest.param("status = 'Production'", ["1.0"], id="status"),
        pytest.param("status = Staged", ["2.0", "1.2", "1.1"], id="status-bare"),
        pytest.param("status != Staged", ["1.0"], id="status-ne"),
        pytest.param("format = API", ["2.0"], id="format"),
        pytest.param("format = 'ONNX'", ["1.2", "1.1", "1.0"], id="format-quoted"),
        pytest.param("validation = Passed", ["1.0"], id="validation-passed"),
        pytest.param("validation = Failed", ["1.1"], id="validation-failed"),
        pytest.param("validation = Pending", ["1.2"], id="validation-pending"),
        pytest.param("validation = None", ["2.0"], id="validation-none"),
        pytest.param("validation NOT IN (Passed, Failed)", ["2.0", "1.2"], id="not-in"),
        pytest.param("version = '1.1'", ["1.1"], id="version"),
        pytest.param(
            "tag.stage = 'candidate' AND validation = Pending AND tag.team = 'a'",
            ["1.2"],
            id="and",
        ),
        pytest.param("status = Production or validation = None", ["2.0", "1.0"], id="or-lower"),
    ],
)
def test_version_filters(
    http: httpx.Client, catalog: dict[str, Any], flt: str, expected: list[str]
) -> None:
    assert _versions(http, flt) == expected


def test_created_at_comparisons(http: httpx.Client, catalog: dict[str, Any]) -> None:
    at = catalog["1.1"]
    assert _versions(http, f"createdAt >= '{at}'") == ["2.0", "1.2", "1.1"]
    assert _versions(http, f"createdAt > '{at}'") == ["2.0", "1.2"]
    assert _versions(http, f'createdAt <= "{at}"') == ["1.1", "1.0"]
    assert _versions(http, f"createdAt < '{at}'") == ["1.0"]
    assert _versions(http, f"createdAt = '{at}'") == ["1.1"]
    assert _versions(http, "createdAt > 2000-01-01") == ["2.0", "1.2", "1.1", "1.0"]
    assert _versions(http, "createdAt < '2000-01-01T00:00:00+02:00'") == []
    assert_problem(
        http.get(VERSIONS, params={"filter": "createdAt > 'yesterday'"}), 422, "ISO 8601"
    )
    assert_problem(http.get(VERSIONS, params={"filter": "status > Staged"}), 422, "status takes")


def test_and_binds_tighter_than_or_and_parentheses_override(
    http: httpx.Client, catalog: dict[str, Any]
) -> None:
    # status = Production OR (tag.stage = candidate AND validation = Failed)
    loose = "status = Production OR tag.stage = 'candidate' AND validation = Failed"
    assert _versions(http, loose) == ["1.1", "1.0"]
    grouped = "(status = Production OR tag.stage = 'candidate') AND validation = Failed"
    assert _versions(http, grouped) == ["1.1"]
    assert _versions(http, "((validation = Pending) or (validation = None)) and format = API") == [
        "2.0"
    ]


def test_filter_keeps_status_and_sorting(http: httpx.Client, catalog: dict[str, Any]) -> None:
    both = http.get(VERSIONS, params={"filter": "tag.stage = 'candidate'", "status": "Staged"})
    assert _names(both) == ["1.2", "1.1"]
    ordered = http.get(VERSIONS, params={"filter": "format = ONNX", "orderBy": "version asc"})
    assert _names(ordered) == ["1.0", "1.1", "1.2"]


@pytest.mark.parametrize(
    ("url", "flt", "field", "listed"),
    [
        pytest.param("/api/v1/models", "team = 'vision'", "team", "provider", id="model-team"),
        pytest.param("/api/v1/models", "status = Staged", "status", "task", id="model-status"),
        pytest.param(VERSIONS, "provider = 'x'", "provider", "validation", id="version-provider"),
        pytest.param(VERSIONS, "1=1", "1", "status", id="number-as-field"),
    ],
)
def test_unknown_field_is_422_naming_it_and_the_valid_ones(
    http: httpx.Client, catalog: dict[str, Any], url: str, flt: str, field: str, listed: str
) -> None:
    body = assert_problem(
        http.get(url, params={"filter": flt}), 422, f"unknown field {field!r}", listed
    )
    assert body["field"] == field
    assert "tag.<key>" in body["validFields"]
    assert body["position"] == 0


@pytest.mark.parametrize(
    ("flt", "position", "expected"),
    [
        pytest.param("status = ", 9, "expected a value", id="missing-value"),
        pytest.param("status = Staged AND", 19, "a field name", id="dangling-and"),
        pytest.param("(status = Staged", 16, "')'", id="unclosed-paren"),
        pytest.param("status Staged", 7, "an operator", id="missing-operator"),
        pytest.param("status = 'Staged", 9, "unterminated string", id="unterminated"),
        pytest.param("status = Staged)", 15, "AND, OR or the end", id="extra-paren"),
        pytest.param("tag.x = 'a\\qb'", 10, "unknown escape", id="bad-escape"),
        pytest.param("status IN ()", 11, "a value", id="empty-in"),
        pytest.param("status = Bogus", 9, "status is one of", id="enum-value"),
        pytest.param("tag.a b = 'x'", 6, "an operator", id="key-with-space"),
        pytest.param("   ", 0, "empty filter", id="blank"),
        pytest.param("(" * 40 + "status = Staged" + ")" * 40, 32, "nested", id="too-deep"),
    ],
)
def test_malformed_filter_is_422_saying_where_and_what(
    http: httpx.Client, catalog: dict[str, Any], flt: str, position: int, expected: str
) -> None:
    body = assert_problem(
        http.get(VERSIONS, params={"filter": flt}), 422, expected, f"position {position}"
    )
    assert body["position"] == position
    assert body["title"] == "Invalid filter"


def _counts(registry: Registry) -> tuple[int, ...]:
    with registry.sessions() as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (AIModel, AIModelVersion, model_tags, version_tags, UsageLog)
        )


INJECTIONS = [
    "tag.x = '' OR 1=1 --'",
    "status = 'Staged'; DROP TABLE ai_model",
    "status = 'Staged' OR '1'='1'",
    "tag.stage = 'candidate'' OR ''1''=''1'",
    "tag.stage = 'x\\' OR 1=1 --'",
    'tag.stage = "candidate\\" OR tag.stage = \\"prod"',
    "tag.stage = 'candidate' UNION SELECT * FROM user",
    "tag.stage = '%' OR tag.stage = '_'",
    "tag.stage = 'cand%'",
    "version = '1.0' /* comment */",
    "tag.stage = 'candidate\x00'",
    "tag.`stage` = 'x'",
    "status = Staged AND (SELECT 1)",
    "tag.stage = 'ü🙂' OR tag.stage = 'ß'",
]


@pytest.mark.parametrize("flt", INJECTIONS)
def test_injection_attempts_are_422_or_literal_and_change_nothing(
    http: httpx.Client, registry: Registry, catalog: dict[str, Any], flt: str
) -> None:
    before = _counts(registry)
    for url in ("/api/v1/models", VERSIONS):
        response = http.get(url, params={"filter": flt})
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            # Matched literally: no stored value is any of these strings.
            assert response.json()["items"] == []
    assert _counts(registry) == before


def test_quotes_and_unicode_inside_values_match_literally(
    http: httpx.Client, catalog: dict[str, Any]
) -> None:
    hostile = 'it\'s "quoted" \\ back, 100% _x_ 🙂 ü'
    assert http.put(f"{VERSIONS}/1.1/tags/note", json={"value": hostile}).is_success
    escaped = hostile.replace("\\", "\\\\").replace("'", "\\'")
    assert _versions(http, f"tag.note = '{escaped}'") == ["1.1"]
    doubled = hostile.replace("\\", "\\\\").replace('"', '""')
    assert _versions(http, f'tag.note = "{doubled}"') == ["1.1"]
    assert _versions(http, "tag.note = 'it''s'") == []


@pytest.fixture
def models(http: httpx.Client) -> list[str]:
    names = []
    for i, (task, provider) in enumerate(
        [("ImageGeneration", "Internal"), ("TextGeneration", "OpenAI")] * 4
        + [("StyleTransfer", "Internal")]
    ):
        name = f"model-{i}"
        make_model(http, name, taskType=task, provider=provider, description=f"number {i}")
        if i % 3 != 2:
            http.put(f"/api/v1/models/{name}/tags/stage", json={"value": "candidate"})
        names.append(name)
    return names


def test_model_filters(http: httpx.Client, models: list[str]) -> None:
    def find(flt: str, **params: Any) -> list[str]:
        return _names(http.get("/api/v1/models", params={"filter": flt, **params}), "name")

    assert find("task = TextGeneration") == ["model-1", "model-3", "model-5", "model-7"]
    assert find("taskType = StyleTransfer") == ["model-8"]
    assert find("provider = 'OpenAI' AND tag.stage = candidate") == [
        "model-1",
        "model-3",
        "model-7",
    ]
    assert find("name IN ('model-0', 'model-8') OR provider = nobody") == ["model-0", "model-8"]
    assert find("createdAt > 2000-01-01 AND NOT tag.stage = candidate") == [
        "model-2",
        "model-5",
        "model-8",
    ]
    assert find("tag.stage = candidate", q="number 6") == ["model-6"]  # q still works


@pytest.mark.parametrize(
    ("order", "key"),
    [
        pytest.param("createdAt desc", lambda i: -i, id="created-desc"),
        pytest.param("createdAt", lambda i: i, id="created-asc"),
        pytest.param("name DESC", lambda i: -i, id="name-desc"),
        pytest.param(None, lambda i: i, id="default-name"),
    ],
)
def test_sorting_and_cursor_over_several_pages_with_a_filter(
    http: httpx.Client, models: list[str], order: str | None, key: Any
) -> None:
    flt = "tag.stage = 'candidate' OR task = StyleTransfer"
    # The filter keeps the tagged models (i % 3 != 2) and model-8, the StyleTransfer one.
    kept = [i for i in range(len(models)) if i % 3 != 2 or i == 8]
    expected = [models[i] for i in sorted(kept, key=key)]
    seen: list[str] = []
    params: dict[str, Any] = {"filter": flt, "limit": 2}
    if order:
        params["orderBy"] = order
    pages = 0
    while True:
        page = http.get("/api/v1/models", params=params).json()
        seen += [m["name"] for m in page["items"]]
        pages += 1
        if not page["nextCursor"]:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == expected
    assert pages == 4


def test_version_pages_and_cursor_of_another_order(
    http: httpx.Client, catalog: dict[str, Any]
) -> None:
    params: dict[str, Any] = {"orderBy": "version desc", "limit": 1, "filter": "format = ONNX"}
    seen = []
    while True:
        page = http.get(VERSIONS, params=params).json()
        seen += [v["versionNumber"] for v in page["items"]]
        if not page["nextCursor"]:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == ["1.2", "1.1", "1.0"]
    first = http.get(VERSIONS, params={"orderBy": "version desc", "limit": 1}).json()
    assert_problem(
        http.get(VERSIONS, params={"orderBy": "createdAt", "cursor": first["nextCursor"]}),
        422,
        "cursor",
    )
    assert_problem(http.get(VERSIONS, params={"orderBy": "sha256"}), 422, "orderBy", "createdAt")
    assert_problem(http.get(VERSIONS, params={"orderBy": "version sideways"}), 422, "orderBy")
