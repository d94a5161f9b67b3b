"""Feedback: batches keep good items and reject bad ones, summaries count in SQL, compare
reads the current rollout window. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from controller.analysis import FeedbackGate, GateContext, StepAnalysis
from controller.reconcile import Controller
from controller.strategies.base import Outcome
from registry.analysis_spec import parse_analysis
from registry.auth import Principal
from registry.errors import Invalid
from registry.metrics import METRICS
from registry.models import AIModelFeedback
from registry.services import Registry
from registry.services.deployments import DeploymentView, VersionInfo
from registry.services.feedback_summary import wilson_interval
from tests.support.deployment_views import view as analysis_view
from tests.support.deployment_views import workload as analysis_workload
from tests.support.fakes import FakeDeployer
from tests.support.helpers import (
    assert_problem,
    audit_rows,
    make_model,
    make_version,
    pass_validation,
    upload,
)

MODEL = "text2img"


@pytest.fixture
def actor(registry: Registry, admin_token: str) -> Principal:
    return registry.keys.authenticate(admin_token)


@pytest.fixture
def versions(registry: Registry, actor: Principal) -> dict[str, uuid.UUID]:
    registry.models.create(actor, name=MODEL, provider="Internal", task_type="ImageGeneration")
    return {
        number: registry.versions.create(actor, MODEL, version_number=number).id
        for number in ("1.0", "2.0")
    }


def _set_times(registry: Registry, times: dict[uuid.UUID, datetime]) -> None:
    with registry.sessions.begin() as s:
        for fid, at in times.items():
            s.execute(
                update(AIModelFeedback)
                .where(AIModelFeedback.id == fid)
                .values(feedback_timestamp=at)
            )


# -- the service ------------------------------------------------------------------------------


def test_a_batch_keeps_good_items_and_rejects_bad_ones_one_by_one(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    kept_before = METRICS.get_sample_value("modelreg_feedback_items_total", {"result": "kept"})
    items: list[Any] = [
        {"modelVersionId": str(versions["1.0"]), "rating": 5, "comment": "great"},
        {"model": MODEL, "versionNumber": "2.0", "rating": 0},
        {"model": MODEL, "versionNumber": "2.0", "rating": 3, "details": {"seed": 7}},
        {"modelVersionId": str(uuid.uuid4()), "rating": 4},
        {"model": MODEL, "versionNumber": "9.9"},
        {"modelVersionId": str(versions["1.0"]), "model": MODEL, "versionNumber": "1.0"},
        {"rating": 4},
        {"model": MODEL, "versionNumber": "1.0", "rating": "5"},
        {"model": MODEL, "versionNumber": "1.0", "rating": True},
        {"model": MODEL, "versionNumber": "1.0", "comment": "x" * 10_001},
        {"model": MODEL, "versionNumber": "1.0", "details": [1, 2]},
        {"model": MODEL, "versionNumber": "1.0", "generationRequestId": "nope"},
        {"model": MODEL, "versionNumber": "1.0", "colour": "red"},
        "not an object",
        {
            "model": MODEL,
            "versionNumber": "1.0",
            "generationRequestId": str(uuid.uuid4()),
            "comment": "no rating",
        },
    ]
    result = registry.feedback.submit(actor, items)
    assert [k.index for k in result.kept] == [0, 2, 14]
    reasons = {r.index: r.reason for r in result.rejected}
    assert sorted(reasons) == [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert "from 1 to 5" in reasons[1]
    assert "no model version with id" in reasons[3]
    assert "has no version '9.9'" in reasons[4]
    assert "exactly one of" in reasons[5]
    assert "exactly one of" in reasons[6]
    assert "integer" in reasons[7]
    assert "integer" in reasons[8]
    assert "10000" in reasons[9]
    assert "details" in reasons[10]
    assert "generationRequestId" in reasons[11]
    assert "colour" in reasons[12]
    assert "object" in reasons[13]
    page = registry.feedback.list(MODEL, "1.0")
    assert {i.id for i in page.items} == {result.kept[0].id, result.kept[2].id}
    assert all(i.user_id == actor.user_id for i in page.items)
    (row,) = audit_rows(registry, "feedback_submitted")
    assert row.details is not None
    assert (row.details["items"], row.details["kept"], row.details["rejected"]) == (15, 3, 12)
    kept_after = METRICS.get_sample_value("modelreg_feedback_items_total", {"result": "kept"})
    assert (kept_after or 0) - (kept_before or 0) == 3


def test_every_field_of_a_kept_item_reads_back_as_sent(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    """A batch is written as one statement of arrays on PostgreSQL and as rows elsewhere: each
    field, its nulls, and nested or non-ASCII details come back the same on both."""
    generation = uuid.uuid4()
    items: list[Any] = [
        {
            "modelVersionId": str(versions["1.0"]),
            "generationRequestId": str(generation),
            "rating": 4,
            "comment": "ça va, 画像 \U0001f600",
            "details": {"seed": 7, "tags": ["a", "é"], "nested": {"x": None, "y": 1.5}},
        },
        {"model": MODEL, "versionNumber": "1.0"},  # every optional field absent
        {"model": MODEL, "versionNumber": "1.0", "rating": 1, "details": {}},
    ]
    result = registry.feedback.submit(actor, items)
    assert [k.index for k in result.kept] == [0, 1, 2]
    assert not result.rejected
    by_id = {i.id: i for i in registry.feedback.list(MODEL, "1.0").items}
    first, bare, third = (by_id[k.id] for k in result.kept)
    assert (first.generation_request_id, first.rating, first.comment, first.details) == (
        generation,
        4,
        items[0]["comment"],
        items[0]["details"],
    )
    assert first.model_version_id == versions["1.0"]
    assert first.user_id == actor.user_id
    assert (bare.generation_request_id, bare.rating, bare.comment, bare.details) == (
        None,
        None,
        None,
        None,
    )
    assert (third.rating, third.details) == (1, {})
    assert first.feedback_timestamp == bare.feedback_timestamp  # one batch, one time
    assert first.feedback_timestamp.tzinfo is not None


def test_batch_limits(registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]) -> None:
    with pytest.raises(Invalid, match="at most 1000"):
        registry.feedback.submit(actor, [{"model": MODEL, "versionNumber": "1.0"}] * 1001)
    with pytest.raises(Invalid, match="no items"):
        registry.feedback.submit(actor, [])


@pytest.mark.parametrize("rating", [0, 6, -1])
def test_the_database_refuses_an_out_of_range_rating(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID], rating: int
) -> None:
    with pytest.raises(IntegrityError), registry.sessions.begin() as s:
        s.execute(
            insert(AIModelFeedback).values(
                id=uuid.uuid4(),
                user_id=actor.user_id,
                model_version_id=versions["1.0"],
                rating=rating,
                feedback_timestamp=datetime.now(UTC),
                created_at=datetime.now(UTC),
            )
        )


def test_summary_counts_in_sql_with_a_wilson_interval(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    empty = registry.feedback.summary(versions["1.0"])
    assert (empty.count, empty.rated, empty.mean, empty.positive_share) == (0, 0, None, None)
    assert empty.distribution == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert empty.positive_low is None
    assert empty.positive_high is None
    ratings: list[int | None] = [5, 5, 4, 3, 1, 4, 2, 5, None, None]
    registry.feedback.submit(
        actor,
        [{"modelVersionId": str(versions["1.0"]), "rating": r} for r in ratings]
        + [{"modelVersionId": str(versions["2.0"]), "rating": 1}],
    )
    summary = registry.feedback.summary(versions["1.0"])
    assert (summary.count, summary.rated) == (10, 8)
    assert summary.mean == pytest.approx(29 / 8)
    assert summary.distribution == {1: 1, 2: 1, 3: 1, 4: 2, 5: 3}
    assert summary.positive_share == pytest.approx(5 / 8)
    # By hand: p = 5/8, n = 8, z = 1.96: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    assert summary.positive_low == pytest.approx(0.30574, abs=1e-4)
    assert summary.positive_high == pytest.approx(0.86316, abs=1e-4)


def _people(registry: Registry, actor: Principal, count: int) -> list[Principal]:
    """``count`` users, each with a ``feedback:write`` key of their own."""
    return [
        registry.keys.authenticate(
            registry.keys.create(
                actor, name=f"rater-{i}", scopes=["feedback:write"], user_email=f"r{i}@example.com"
            ).token
        )
        for i in range(count)
    ]


def _rate_as(registry: Registry, who: Principal, version_id: uuid.UUID, *ratings: int) -> None:
    registry.feedback.submit(
        who, [{"modelVersionId": str(version_id), "rating": r} for r in ratings]
    )


def test_raters_are_people_each_with_one_vote(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    empty = registry.feedback.rater_summary(versions["2.0"])
    assert (empty.raters, empty.rated, empty.mean, empty.positive_low) == (0, 0, None, None)
    spammer, *others = _people(registry, actor, 5)
    _rate_as(registry, spammer, versions["2.0"], *[1] * 30)
    second_key = registry.keys.authenticate(
        registry.keys.create(
            actor, name="rater-0-again", scopes=["feedback:write"], user_email="r0@example.com"
        ).token
    )
    _rate_as(registry, second_key, versions["2.0"], 1, 1)  # the same person, another key
    registry.feedback.submit(spammer, [{"modelVersionId": str(versions["2.0"])}])  # no rating
    alone = registry.feedback.rater_summary(versions["2.0"])
    assert (alone.raters, alone.rated, alone.mean) == (1, 32, 1.0)
    for person, rating in zip(others, (4, 4, 5, 3), strict=True):
        _rate_as(registry, person, versions["2.0"], rating, rating)
    five = registry.feedback.rater_summary(versions["2.0"])
    assert (five.raters, five.rated) == (5, 40)
    assert five.mean == pytest.approx((1 + 4 + 4 + 5 + 3) / 5), "the mean of each rater's mean"
    assert five.positive_share == pytest.approx(3 / 5)
    assert five.positive_low == pytest.approx(wilson_interval(3, 5)[0])  # type: ignore[index]
    rows = registry.feedback.summary(versions["2.0"])
    assert rows.mean == pytest.approx((32 + 32) / 40), "the public summary still counts rows"


def _gate_context(versions: dict[str, uuid.UUID], *, since: datetime, now: datetime) -> GateContext:
    def dep(number: str) -> DeploymentView:
        info = VersionInfo(versions[number], number, "ONNX", "Staged", "0" * 64, "k", None)
        return replace(analysis_view(number), version=info)

    return GateContext(
        deployment=dep("2.0"),
        candidate=analysis_workload("http://c"),
        stable=dep("1.0"),
        stable_workload=analysis_workload("http://s"),
        window_start=since,
        now=now,
    )


def test_the_feedback_gate_counts_people_not_rows(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    spec = parse_analysis(
        {"gates": [{"type": "feedback", "minRatings": 5, "maxDrop": 1.0, "on": "mean"}]}
    ).gates[0]
    gate = FeedbackGate(spec, source=registry.feedback)
    since = datetime.now(UTC) - timedelta(minutes=1)
    people = _people(registry, actor, 5)
    for person in people:
        _rate_as(registry, person, versions["1.0"], 4)
    spammer = people[0]
    _rate_as(registry, spammer, versions["2.0"], *[1] * 30)
    held = gate.evaluate(_gate_context(versions, since=since, now=datetime.now(UTC)))
    assert held.outcome is Outcome.INCONCLUSIVE, "30 ratings from one key: one rater"
    assert "1 rater(s) of the candidate in this step (30 rating(s)), fewer than 5" in held.reason
    for person in people[1:]:
        _rate_as(registry, person, versions["2.0"], 4)
    judged = gate.evaluate(_gate_context(versions, since=since, now=datetime.now(UTC)))
    # By rows the candidate's mean would be (30 + 16) / 34 = 1.35, a drop of 2.65: one key
    # would roll it back alone. By people it is (1 + 4 * 4) / 5 = 3.4, a drop of 0.6.
    assert judged.outcome is Outcome.PASSED, judged
    assert judged.inputs["candidateRaters"] == 5
    assert judged.inputs["candidateRatings"] == 34
    assert judged.inputs["candidateMean"] == pytest.approx(3.4)
    assert judged.inputs["stableMean"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("positive", "total", "low", "high"),
    [
        pytest.param(0, 10, 0.0, 0.27753, id="none-positive"),
        pytest.param(10, 10, 0.72247, 1.0, id="all-positive"),
        pytest.param(50, 100, 0.40383, 0.59617, id="half"),
    ],
)
def test_wilson_interval(positive: int, total: int, low: float, high: float) -> None:
    interval = wilson_interval(positive, total)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=1e-4)
    assert interval[1] == pytest.approx(high, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_since_until_windows_and_pages(
    registry: Registry, actor: Principal, versions: dict[str, uuid.UUID]
) -> None:
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    result = registry.feedback.submit(
        actor, [{"modelVersionId": str(versions["1.0"]), "rating": r} for r in (1, 2, 3, 4, 5)]
    )
    ids = [k.id for k in result.kept]
    _set_times(registry, {fid: t0 + timedelta(hours=i) for i, fid in enumerate(ids)})
    window = registry.feedback.summary(
        versions["1.0"], since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=4)
    )
    assert window.distribution == {1: 0, 2: 1, 3: 1, 4: 1, 5: 0}
    assert (window.since, window.until) == (t0 + timedelta(hours=1), t0 + timedelta(hours=4))
    assert registry.feedback.summary(versions["1.0"], since=t0 + timedelta(hours=4)).count == 1
    with pytest.raises(Invalid, match="before until"):
        registry.feedback.summary(versions["1.0"], since=t0, until=t0)
    with pytest.raises(Invalid, match="time zone"):
        registry.feedback.summary(versions["1.0"], since=datetime(2026, 1, 1))

    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(5):
        page = registry.feedback.list(MODEL, "1.0", limit=2, cursor=cursor)
        seen += [i.id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1], "newest first, every item once"
    windowed = registry.feedback.list(
        MODEL, "1.0", since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=3)
    )
    assert [i.id for i in windowed.items] == [ids[2], ids[1]]
    with pytest.raises(Invalid, match="cursor"):
        registry.feedback.list(MODEL, "1.0", cursor="garbage")


# -- the API ----------------------------------------------------------------------------------


@pytest.fixture
def model(http: httpx.Client) -> None:
    make_model(http, MODEL)


@pytest.mark.usefixtures("model")
def test_post_one_item_or_a_batch(http: httpx.Client, registry: Registry) -> None:
    version = make_version(http, MODEL, "1.0")
    one = http.post(
        "/api/v1/feedback", json={"modelVersionId": version["id"], "rating": 4, "comment": "ok"}
    )
    assert one.status_code == 200, one.text
    assert [k["index"] for k in one.json()["kept"]] == [0]
    body = assert_problem(
        http.post("/api/v1/feedback", json={"model": MODEL, "versionNumber": "1.0", "rating": 6}),
        422,
        "rating",
    )
    assert body["errors"]
    assert_problem(
        http.post("/api/v1/feedback", json={"model": MODEL, "versionNumber": "7.0", "rating": 3}),
        422,
        "has no version '7.0'",
    )
    batch = http.post(
        "/api/v1/feedback",
        json={
            "items": [
                {"model": MODEL, "versionNumber": "1.0", "rating": 5},
                {"model": MODEL, "versionNumber": "1.0", "rating": 9},
                {"modelVersionId": version["id"], "comment": "meh", "details": {"k": 1}},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    answer = batch.json()
    assert [k["index"] for k in answer["kept"]] == [0, 2]
    assert [r["index"] for r in answer["rejected"]] == [1]
    assert "from 1 to 5" in answer["rejected"][0]["reason"]
    failed = assert_problem(
        http.post("/api/v1/feedback", json={"items": [{"rating": 1}, {"model": MODEL}]}),
        422,
        "all 2 items were rejected",
    )
    assert failed["kept"] == []
    assert [r["index"] for r in failed["rejected"]] == [0, 1]
    too_many = {"items": [{"model": MODEL, "versionNumber": "1.0"}] * 1001}
    assert_problem(http.post("/api/v1/feedback", json=too_many), 413, "at most 1000")
    assert len(audit_rows(registry, "feedback_submitted")) == 2, "only requests that kept items"
    listed = http.get(f"/api/v1/models/{MODEL}/versions/1.0/feedback", params={"limit": 2}).json()
    assert len(listed["items"]) == 2
    assert listed["nextCursor"]
    rest = http.get(
        f"/api/v1/models/{MODEL}/versions/1.0/feedback", params={"cursor": listed["nextCursor"]}
    ).json()
    assert rest["nextCursor"] is None
    assert len(listed["items"] + rest["items"]) == 3
    assert {i["generationRequestId"] for i in rest["items"] + listed["items"]} == {None}
    summary = http.get(f"/api/v1/models/{MODEL}/versions/1.0/feedback/summary").json()
    assert summary["count"] == 3
    assert summary["rated"] == 2
    assert summary["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}
    assert summary["positiveShare"] == 1.0
    assert math.isclose(summary["positiveLow"], wilson_interval(2, 2)[0])  # type: ignore[index]
    assert_problem(http.get(f"/api/v1/models/{MODEL}/versions/9/feedback/summary"), 404, "9")
    assert_problem(
        http.get(
            f"/api/v1/models/{MODEL}/versions/1.0/feedback/summary",
            params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        ),
        422,
        "before until",
    )
    assert_problem(http.get(f"/api/v1/models/{MODEL}/feedback/compare?environment=moon"), 422, "")


@pytest.mark.usefixtures("model")
def test_at_most_two_batches_are_written_at_once_and_the_rest_wait(
    http: httpx.Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of feedback must not take every thread of the API process (and the interpreter
    lock away from endpoint resolution): the writes are bounded (``MODELREG_FEEDBACK_WRITERS``,
    2), the requests beyond the bound wait, and all are answered."""
    make_version(http, MODEL, "1.0")
    submit = registry.feedback.submit
    lock = threading.Lock()
    running, most = 0, 0

    def counted(actor: Principal, items: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return submit(actor, items)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(registry.feedback, "submit", counted)
    batch = {"items": [{"model": MODEL, "versionNumber": "1.0", "rating": 3}] * 10}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http.post("/api/v1/feedback", json=batch), range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    assert registry.settings.feedback_writers == 2
    assert most == 2
    assert registry.feedback.version_summary(MODEL, "1.0").count == 160


def _ready(http: httpx.Client, registry: Registry, number: str) -> None:
    make_version(http, MODEL, number)
    assert upload(http, MODEL, number, f"weights {number}".encode()).status_code == 201
    pass_validation(registry)


def _rate(http: httpx.Client, number: str, *ratings: int) -> None:
    items = [{"model": MODEL, "versionNumber": number, "rating": r} for r in ratings]
    assert http.post("/api/v1/feedback", json={"items": items}).status_code == 200


@pytest.mark.usefixtures("model")
def test_compare_summarizes_serving_versions_over_the_current_window(
    http: httpx.Client, registry: Registry
) -> None:
    controller = Controller(
        registry.deployments,
        deployers={"local": FakeDeployer()},
        analysis=StepAnalysis(scrape=lambda _url: ""),
        holder="feedback-test",
    )
    _ready(http, registry, "1.0")
    _ready(http, registry, "2.0")
    nothing = http.get(f"/api/v1/models/{MODEL}/feedback/compare").json()
    assert (nothing["versions"], nothing["windowSource"], nothing["windowStart"]) == (
        [],
        "all time",
        None,
    )
    first = http.post("/api/v1/deployments", json={"model": MODEL, "versionNumber": "1.0"}).json()
    for _ in range(5):
        controller.run_pass(now=datetime.now(UTC))
        if registry.deployments.get(uuid.UUID(first["id"])).status == "Active":
            break
    _rate(http, "1.0", 1, 1)
    stable = http.get(f"/api/v1/models/{MODEL}/feedback/compare").json()
    assert stable["windowSource"] == "traffic change"
    assert [(v["versionNumber"], v["weight"]) for v in stable["versions"]] == [("1.0", 100)]
    assert stable["versions"][0]["summary"]["rated"] == 2

    second = http.post(
        "/api/v1/deployments",
        json={
            "model": MODEL,
            "versionNumber": "2.0",
            "strategyParams": {"steps": [{"weight": 10, "pause": "1h"}, {"weight": 100}]},
        },
    ).json()
    for _ in range(5):
        controller.run_pass(now=datetime.now(UTC))
        if registry.deployments.get(uuid.UUID(second["id"])).traffic_weight == 10:
            break
    rollout = registry.deployments.get(uuid.UUID(second["id"]))
    assert rollout.status == "Deploying"
    assert rollout.step_started_at is not None
    _rate(http, "1.0", 5, 4, 3)
    _rate(http, "2.0", 5, 5)
    canary = http.get(
        f"/api/v1/models/{MODEL}/feedback/compare", params={"environment": "production"}
    ).json()
    assert canary["windowSource"] == "rollout step"
    assert datetime.fromisoformat(canary["windowStart"]) == rollout.step_started_at
    by_version = {v["versionNumber"]: v for v in canary["versions"]}
    assert {k: v["weight"] for k, v in by_version.items()} == {"1.0": 90, "2.0": 10}
    assert by_version["1.0"]["summary"]["rated"] == 3, "the ratings before the step are left out"
    assert by_version["1.0"]["summary"]["mean"] == pytest.approx(4.0)
    assert by_version["2.0"]["summary"]["positiveShare"] == 1.0
    assert by_version["2.0"]["summary"]["since"] is not None
