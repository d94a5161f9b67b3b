"""Careless and hostile clients: values no database stores, repeated validation requests, and
uploads that stall. Every test runs on SQLite and on PostgreSQL, against a real server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from registry.models import AIModelFeedback, AIModelVersion, ArtifactUpload, ValidationRequest
from registry.services import Registry
from registry.settings import Settings
from tests.support.helpers import (
    RawUpload,
    assert_problem,
    make_model,
    make_version,
    pass_validation,
    upload,
)
from tests.support.live_server import LiveServer

NUL = "\u0000"


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings, with a test's changes (``parametrize("settings", ..., indirect)``)."""
    return settings.model_copy(update=getattr(request, "param", {}))


def tuned(**changes: Any) -> pytest.MarkDecorator:
    """Run the test with these settings changed."""
    return pytest.mark.parametrize(
        "settings", [pytest.param(changes, id="-".join(map(str, changes.values())))], indirect=True
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until the server got there (the bound only keeps a bug from hanging the run)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"the server never got there: {what}")
        time.sleep(0.02)


def other_key(http: httpx.Client, email: str) -> str:
    """A models key of another user (budgets are per user)."""
    response = http.post(
        "/api/v1/keys",
        json={"name": email, "scopes": ["models:read", "models:write"], "user": email},
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


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


# -- the validation queue -------------------------------------------------------------------


def _pending(registry: Registry) -> list[ValidationRequest]:
    with registry.sessions() as s:
        return list(s.scalars(select(ValidationRequest).where(ValidationRequest.status != "Done")))


def _together(count: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """``count`` calls at once, each from its own thread and connection."""
    start = threading.Barrier(count)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        response = call()
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_a_repeated_validation_request_returns_the_pending_run(
    http: httpx.Client, registry: Registry
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    assert upload(http, "m", "1.0", b"weights").status_code == 201
    (queued,) = _pending(registry)  # the upload queued one
    path = "/api/v1/models/m/versions/1.0/validations"
    again = http.post(path)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == str(queued.id)
    assert again.headers["Location"] == f"/api/v1/validations/{queued.id}"
    assert len(_pending(registry)) == 1
    # Once that run is done, a request queues a new one.
    pass_validation(registry)
    fresh = http.post(path)
    assert fresh.status_code == 202, fresh.text
    assert fresh.json()["id"] != str(queued.id)
    assert [str(r.id) for r in _pending(registry)] == [fresh.json()["id"]]


def test_concurrent_validation_requests_queue_one_run(
    server: LiveServer, admin_token: str, http: httpx.Client, registry: Registry
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1.0")
    assert upload(http, "m", "1.0", b"weights").status_code == 201
    pass_validation(registry)  # nothing pending: the requests below race to queue the run

    def request() -> httpx.Response:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
        ) as own:
            return own.post("/api/v1/models/m/versions/1.0/validations")

    answers = _together(8, request)
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(_pending(registry)) == 1


@tuned(validations_per_key=3)
def test_a_key_over_its_validation_budget_gets_429(
    server: LiveServer, admin_token: str, http: httpx.Client, registry: Registry
) -> None:
    make_model(http, "m")
    for n in range(5):
        make_version(http, "m", f"{n}.0")
        assert upload(http, "m", f"{n}.0", f"w{n}".encode()).status_code == 201
    pass_validation(registry)

    def request(n: int) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
            ) as own:
                return own.post(f"/api/v1/models/m/versions/{n}.0/validations")

        return call

    calls = iter([request(n) for n in range(5)])
    answers = _together(5, lambda: next(calls)())
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 202, 202, 429, 429], [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 429):
        problem = assert_problem(refused, 429, "MODELREG_VALIDATIONS_PER_KEY")
        assert int(refused.headers["Retry-After"]) > 0
        assert problem["limit"] == 3
    pending = {r.model_version_id for r in _pending(registry)}
    assert len(pending) == 3
    numbers = {
        n: http.get(f"/api/v1/models/m/versions/{n}.0").json()["id"] in map(str, pending)
        for n in range(5)
    }
    # A repeat of a pending run queues nothing, so it is answered, not refused.
    waiting = next(n for n, is_pending in numbers.items() if is_pending)
    assert http.post(f"/api/v1/models/m/versions/{waiting}.0/validations").status_code == 200
    # Another user's key has a budget of its own.
    refused = next(n for n, is_pending in numbers.items() if not is_pending)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other_key(http, 'b@x.io')}"}
    ) as b:
        assert b.post(f"/api/v1/models/m/versions/{refused}.0/validations").status_code == 202
    assert len(_pending(registry)) == 4


# -- slow and greedy uploaders --------------------------------------------------------------


def _leases(registry: Registry) -> list[ArtifactUpload]:
    with registry.sessions() as s:
        return list(s.scalars(select(ArtifactUpload)))


def _stored(registry: Registry) -> list[str]:
    """Every object the (local) store holds, finished or not."""
    root = registry.settings.artifact_root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def stall(server: LiveServer) -> Iterator[Callable[..., RawUpload]]:
    """Start a PUT of ``length`` bytes, send ``sent`` of them, and stop there."""
    opened: list[RawUpload] = []

    def start(token: str, path: str, *, sent: int, length: int = 1 << 20) -> RawUpload:
        sender = RawUpload(server.port, token, length=length, path=path)
        opened.append(sender)
        if sent:
            sender.send(b"x" * sent)
        return sender

    yield start
    for sender in opened:
        sender.close()


@tuned(upload_idle_timeout=1.0)
def test_a_stalled_upload_ends_with_408_and_leaves_nothing(
    http: httpx.Client, registry: Registry, admin_token: str, stall: Callable[..., RawUpload]
) -> None:
    make_model(http, "m")
    for n in range(4):
        make_version(http, "m", f"{n}.0")
    # Three stop mid-body, one never sends a byte of it.
    senders = [
        stall(admin_token, f"/api/v1/models/m/versions/{n}.0/artifact", sent=sent)
        for n, sent in enumerate((64 * 1024, 1, 300_000, 0))
    ]
    for sender in senders:
        status, headers, raw = sender.response()
        assert status == 408, raw
        assert headers["content-type"].startswith("application/problem+json")
        assert "MODELREG_UPLOAD_IDLE_TIMEOUT" in json.loads(raw)["detail"]
    wait_until(lambda: _leases(registry) == [], "every lease is released")
    assert _stored(registry) == []
    for n in range(4):
        version = http.get(f"/api/v1/models/m/versions/{n}.0").json()
        assert version["sourcePath"] is None
        assert version["sha256"] is None
    assert _pending(registry) == []
    # The key's places are free again, and the versions take an upload.
    for n in range(4):
        assert upload(http, "m", f"{n}.0", f"w{n}".encode()).status_code == 201


def test_one_key_holds_at_most_four_uploads_and_another_key_still_uploads(
    http: httpx.Client,
    server: LiveServer,
    registry: Registry,
    admin_token: str,
    stall: Callable[..., RawUpload],
) -> None:
    """16 stalled PUTs from one key once took all 16 upload threads, for ever."""
    make_model(http, "m")
    for n in range(17):
        make_version(http, "m", f"{n}.0")
    senders = [
        stall(admin_token, f"/api/v1/models/m/versions/{n}.0/artifact", sent=4096)
        for n in range(16)
    ]
    answers: dict[int, tuple[int, dict[str, str], bytes]] = {}

    def read(n: int) -> None:
        with contextlib.suppress(OSError):  # the test closes the held ones below
            answers[n] = senders[n].response()

    readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(16)]
    for reader in readers:
        reader.start()
    wait_until(lambda: len(answers) == 12, "12 of the 16 uploads are refused")
    assert len(_leases(registry)) == 4
    for status, headers, raw in answers.values():
        assert status == 429, raw
        assert int(headers["retry-after"]) > 0
        assert "MODELREG_UPLOADS_PER_KEY" in json.loads(raw)["detail"]
    # Another key (another user) uploads meanwhile.
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {other_key(http, 'b@x.io')}"},
        timeout=60,
    ) as b:
        done = upload(b, "m", "16.0", b"weights of b")
        assert done.status_code == 201, done.text
    # The four held are still running; when their clients go, their places are freed.
    held = [n for n in range(16) if n not in answers]
    assert len(held) == 4
    for n in held:  # shut down: a reader thread still holds the socket open
        senders[n].sock.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: _leases(registry) == [], "the held uploads release their leases")
    assert _stored(registry) == [done.json()["sourcePath"]]
    assert upload(http, "m", f"{held[0]}.0", b"weights").status_code == 201
