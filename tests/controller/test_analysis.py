"""The analysis gates, one at a time, and how their results combine into a step's verdict.

The Prometheus gate against a real Prometheus is in tests/e2e/test_prometheus_rollouts.py; here it
meets an address where nothing listens (an outage), and its query templates are checked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from controller.analysis import (
    DirectGate,
    FeedbackGate,
    GateContext,
    GateResult,
    PrometheusClient,
    PrometheusGate,
    StepAnalysis,
    combine,
)
from controller.analysis.prometheus import render
from controller.records import observed_state as _observed_state
from controller.strategies import parse_spec, plan
from controller.strategies.base import Observed, Outcome, Progress, SlotState, Verdict
from deployers.base import WorkloadStatus
from deployers.model_server.metrics import ServerMetrics as _Metrics
from registry.analysis_spec import GateSpec, Range, parse_analysis
from registry.errors import SpecError
from registry.services.deployments import DeploymentView
from tests.support.deployment_views import NOW, STEP_START, view, workload
from tests.support.ports import free_port


def exposition(
    *, ok: int = 0, errors: int = 0, latency: float = 0.01, client_errors: int = 0
) -> str:
    """A model server's /metrics after ``ok`` good, ``errors`` failed (500) and
    ``client_errors`` refused (400) inference calls."""
    metrics = _Metrics(model="text2img", version="x")
    for _ in range(ok):
        metrics.count_request("/v2/models/{name}/infer", 200)
        metrics.duration.observe(latency)
    for _ in range(errors):
        metrics.count_request("/v2/models/{name}/infer", 500)
    for _ in range(client_errors):
        metrics.count_request("/v2/models/{name}/infer", 400)
    metrics.count_request("/v2/health/ready", 200)  # not inference: never counted
    return generate_latest(metrics.registry).decode()


def context(
    candidate: WorkloadStatus,
    *,
    stable: WorkloadStatus | None = None,
    dep: DeploymentView | None = None,
) -> GateContext:
    return GateContext(
        deployment=dep or view(),
        candidate=candidate,
        stable=view("1.0") if stable is not None else None,
        stable_workload=stable,
        window_start=STEP_START,
        now=NOW,
    )


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        pytest.param({"gates": {}}, "must be a list", id="gates-not-a-list"),
        pytest.param({"gates": [{"type": "magic"}]}, "gates[0].type", id="unknown-type"),
        pytest.param(
            {"gates": [{"type": "prometheus", "success": {"max": 1}}]},
            "exactly one of 'template' or 'query'",
            id="no-query",
        ),
        pytest.param(
            {"gates": [{"type": "prometheus", "query": "up"}]},
            "'success' or a 'failure' range",
            id="query-without-ranges",
        ),
        pytest.param(
            {"gates": [{"type": "prometheus", "template": "latency"}]},
            "gates[0].template",
            id="unknown-template",
        ),
        pytest.param(
            {"gates": [{"type": "direct", "check": "error-rate", "success": {"max": "low"}}]},
            "gates[0].success.max",
            id="range-not-a-number",
        ),
        pytest.param(
            {"gates": [{"type": "direct", "failure": {"min": 2, "max": 1}}]},
            "min is larger than max",
            id="empty-range",
        ),
        pytest.param(
            {"gates": [{"type": "feedback", "minRatings": 0}]},
            "gates[0].minRatings",
            id="no-ratings-needed",
        ),
        pytest.param({"gates": [{"type": "feedback", "on": "median"}]}, "gates[0].on", id="on"),
        pytest.param(
            {"gates": [{"type": "feedback"}, {"type": "feedback"}]},
            "distinct name",
            id="same-name-twice",
        ),
        pytest.param({"failureLimit": 0}, "failureLimit", id="failure-limit-zero"),
        pytest.param({"errorLimit": True}, "errorLimit", id="error-limit-bool"),
        pytest.param({"colour": "red"}, "unknown field", id="unknown-field"),
        pytest.param({"max4xxIncrease": 2}, "max4xxIncrease", id="4xx-increase-above-1"),
        pytest.param(
            {"gates": [{"type": "direct", "max4xxIncrease": -0.1}]},
            "gates[0].max4xxIncrease",
            id="4xx-increase-negative",
        ),
        pytest.param(
            {
                "gates": [
                    {"type": "prometheus", "query": "up", "failure": {"min": 1}, "minRequests": 5}
                ]
            },
            "built-in templates only",
            id="min-requests-on-a-custom-query",
        ),
        pytest.param({"requireTraffic": "yes"}, "requireTraffic", id="require-traffic-not-bool"),
    ],
)
def test_bad_analysis_specs_name_the_field(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        parse_analysis(raw)
    assert needle in str(caught.value)


def test_defaults() -> None:
    legacy = parse_analysis({"maxErrorRate": 0.1, "minRequests": 5})
    (gate,) = legacy.gates
    assert (gate.type, gate.check, gate.min_requests) == ("direct", "error-rate", 5)
    assert gate.success == Range(max=0.1)
    assert gate.failure is not None
    assert gate.failure.contains(0.1000001)
    assert not gate.failure.contains(0.1)
    templated = parse_analysis({"gates": [{"type": "prometheus", "template": "error-rate"}]})
    assert templated.gates[0].success == Range(max=0.05)
    assert templated.gates[0].failure == Range(min=0.1)
    assert (templated.failure_limit, templated.error_limit) == (1, None)
    assert (gate.max_4xx_increase, templated.gates[0].max_4xx_increase) == (0.05, 0.05)
    assert templated.gates[0].min_requests == 20


@pytest.mark.parametrize(
    ("raw", "environment", "required"),
    [
        pytest.param({}, "production", True, id="production-requires-traffic"),
        pytest.param({}, "staging", False, id="staging-does-not"),
        pytest.param({}, "development", False, id="development-does-not"),
        pytest.param({}, None, False, id="no-environment-as-before"),
        pytest.param({"requireTraffic": False}, "production", False, id="production-opts-out"),
        pytest.param({"requireTraffic": True}, "staging", True, id="staging-opts-in"),
    ],
)
def test_require_traffic_defaults_to_true_in_production(
    raw: dict[str, Any], environment: str | None, required: bool
) -> None:
    assert parse_analysis(raw, environment=environment).require_traffic is required


# -- combining ---------------------------------------------------------------------------------


def result(outcome: Outcome, name: str = "g") -> GateResult:
    return GateResult(name, "direct", outcome, f"{name} says {outcome.value}")


@pytest.mark.parametrize(
    ("outcomes", "limits", "previous", "expected", "counters"),
    [
        pytest.param([Outcome.PASSED], {}, {}, Outcome.PASSED, (0, 0), id="pass"),
        pytest.param(
            [Outcome.PASSED, Outcome.INCONCLUSIVE], {}, {}, Outcome.INCONCLUSIVE, (0, 0),
            id="any-inconclusive-holds",
        ),
        pytest.param(
            [Outcome.INCONCLUSIVE, Outcome.ERROR], {}, {}, Outcome.ERROR, (0, 1),
            id="an-error-beats-inconclusive",
        ),
        pytest.param(
            [Outcome.ERROR, Outcome.FAILED], {}, {}, Outcome.FAILED, (1, 0),
            id="a-failure-beats-an-error",
        ),
        pytest.param(
            [Outcome.FAILED], {"failureLimit": 2}, {}, Outcome.INCONCLUSIVE, (1, 0),
            id="first-failure-under-the-limit-holds",
        ),
        pytest.param(
            [Outcome.FAILED], {"failureLimit": 2}, {"consecutiveFailures": 1}, Outcome.FAILED,
            (2, 0), id="second-consecutive-failure-fails",
        ),
        pytest.param(
            [Outcome.ERROR], {"errorLimit": 3}, {"consecutiveErrors": 1}, Outcome.ERROR, (0, 2),
            id="errors-under-the-limit-hold",
        ),
        pytest.param(
            [Outcome.ERROR], {"errorLimit": 3}, {"consecutiveErrors": 2}, Outcome.FAILED, (0, 3),
            id="too-many-errors-fail",
        ),
        pytest.param(
            [Outcome.PASSED], {"failureLimit": 2}, {"consecutiveFailures": 1}, Outcome.PASSED,
            (0, 0), id="a-pass-resets-the-counts",
        ),
    ],
)  # fmt: skip
def test_combine(
    outcomes: list[Outcome],
    limits: dict[str, int],
    previous: dict[str, int],
    expected: Outcome,
    counters: tuple[int, int],
) -> None:
    spec = parse_analysis({"gates": [], **limits})
    verdict = combine(
        [result(o, f"g{i}") for i, o in enumerate(outcomes)], spec=spec, previous=previous
    )
    assert verdict.outcome is expected
    assert (
        verdict.details["counters"]["consecutiveFailures"],
        verdict.details["counters"]["consecutiveErrors"],
    ) == counters
    assert [g["name"] for g in verdict.details["gates"]] == [f"g{i}" for i in range(len(outcomes))]


def test_an_error_holds_and_is_never_promoted_by_a_hold_timeout() -> None:
    spec = parse_spec(
        "canary",
        {"steps": [{"weight": 10}, {"weight": 100}], "maxHold": "1m", "onHoldTimeout": "pass"},
    )
    progress = Progress(
        status="Deploying",
        step_started_at=NOW - timedelta(minutes=5),
        weight=10,
        hold_since=NOW - timedelta(minutes=2),
    )
    observed = Observed(candidate=SlotState(1, 1), has_stable=True, stable_replicas=1)
    inconclusive = plan(
        spec,
        observed=observed,
        progress=progress,
        verdict=Verdict(Outcome.INCONCLUSIVE, "no data"),
        now=NOW,
    )
    assert inconclusive.progress.status == "Active", "onHoldTimeout pass: it goes on"
    error = plan(
        spec,
        observed=observed,
        progress=progress,
        verdict=Verdict(Outcome.ERROR, "Prometheus is unreachable"),
        now=NOW,
    )
    assert error.progress.status == "RolledBack", "an outage never promotes"
    within = plan(
        spec,
        observed=observed,
        progress=replace(progress, hold_since=NOW),
        verdict=Verdict(Outcome.ERROR, "Prometheus is unreachable"),
        now=NOW,
    )
    assert within.progress.status == "Deploying"
    assert within.progress.weight == 10
    assert within.progress.hold_since == NOW


# -- the direct gate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "errors", "require", "expected"),
    [
        pytest.param(100, 0, False, Outcome.PASSED, id="no-errors"),
        pytest.param(95, 5, False, Outcome.PASSED, id="at-the-limit"),
        pytest.param(90, 10, False, Outcome.FAILED, id="over-the-limit"),
        pytest.param(3, 3, False, Outcome.PASSED, id="too-few-to-judge"),
        pytest.param(3, 3, True, Outcome.INCONCLUSIVE, id="too-few-with-require-traffic"),
    ],
)
def test_direct_error_rate(ok: int, errors: int, require: bool, expected: Outcome) -> None:
    text = {
        "http://a": exposition(ok=ok // 2, errors=errors),
        "http://b": exposition(ok=ok - ok // 2),
    }
    spec = parse_analysis({"maxErrorRate": 0.05, "minRequests": 20})
    gate = DirectGate(spec.gates[0], scrape=text.__getitem__, require_traffic=require)
    outcome = gate.evaluate(context(workload("http://a", "http://b")))
    assert outcome.outcome is expected, outcome
    assert outcome.inputs["requests"] == ok + errors  # both servers, inference only


@pytest.mark.parametrize(
    ("candidate_latency", "expected"),
    [
        pytest.param(0.01, Outcome.PASSED, id="as-fast"),
        pytest.param(0.05, Outcome.FAILED, id="five-times-slower"),
    ],
)
def test_direct_p95_latency_against_stable(candidate_latency: float, expected: Outcome) -> None:
    text = {
        "http://candidate": exposition(ok=50, latency=candidate_latency),
        "http://stable": exposition(ok=50, latency=0.01),
    }
    spec = parse_analysis({"gates": [{"type": "direct", "check": "p95-latency-vs-stable"}]})
    gate = DirectGate(spec.gates[0], scrape=text.__getitem__)
    outcome = gate.evaluate(context(workload("http://candidate"), stable=workload("http://stable")))
    assert outcome.outcome is expected, outcome
    assert outcome.inputs["stableP95"] > 0


def test_direct_gate_without_metrics_is_inconclusive() -> None:
    port = free_port()  # nothing listens there
    spec = parse_analysis({})
    outcome = StepAnalysis().judge(view(), workload=workload(f"http://127.0.0.1:{port}"), now=NOW)
    assert outcome.outcome is Outcome.INCONCLUSIVE
    assert "cannot read metrics" in outcome.reason
    assert spec.gates[0].type == "direct"


# -- the 4xx rule ------------------------------------------------------------------------------


class Servers:
    """The analysis' scrape: each server's /metrics as the test last set it."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}

    def set(self, url: str, **counts: int) -> None:
        self.text[url] = exposition(**counts)

    def __call__(self, url: str) -> str:
        return self.text[url]


def judge_passes(
    servers: Servers,
    passes: list[dict[str, dict[str, int]]],
    *,
    analysis: dict[str, Any] | None = None,
    environment: str = "staging",
    feedback: Any = None,
) -> Verdict:
    """One controller pass per entry (each server's lifetime counters at that pass), the
    gates' state kept between passes as the controller keeps it, in the deployment's
    observed state. The last pass's verdict."""
    dep = replace(view("2.0", **(analysis or {})), environment=environment)
    stable = view("1.0")
    verdict = Verdict(Outcome.INCONCLUSIVE, "not judged")
    for counts in passes:
        for url, c in counts.items():
            servers.set(url, **c)
        candidate = workload(*(u for u in counts if u.startswith("http://c")))
        stable_servers = workload(*(u for u in counts if u.startswith("http://s")))
        verdict = StepAnalysis(scrape=servers, feedback=feedback).judge(
            dep, workload=candidate, now=NOW, stable=stable, stable_workload=stable_servers
        )
        observed = {stable.id: stable_servers}
        dep = replace(dep, observed_state=_observed_state(observed, dep, stable, verdict=verdict))
    return verdict


# The stable server has served 10,000 requests, none refused, before the rollout; the candidate
# starts at zero. Each case: its counters at the first pass, then at the second.
LONG_LIFE = {"ok": 10_000}
TWO_REFUSED = {"ok": 10_098, "client_errors": 2}  # 100 more, 2 of them refused
HALF_REFUSED = {"ok": 10_050, "client_errors": 50}
THIRTY = {"ok": 30}


@pytest.mark.parametrize(
    ("passes", "expected", "needle"),
    [
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"client_errors": 100}, "http://s": {"ok": 10_100}},
            ],
            Outcome.FAILED,
            "4xx share 1 is 1 above the stable version's 0",
            id="renamed-input-every-call-refused",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"ok": 92, "client_errors": 8}, "http://s": TWO_REFUSED},
            ],
            Outcome.FAILED,
            "(more than 0.05)",
            id="eight-percent-against-two",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"ok": 96, "client_errors": 4}, "http://s": TWO_REFUSED},
            ],
            Outcome.PASSED,
            "4xx share 0.04 against the stable version's 0.02",
            id="within-the-allowed-increase",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"ok": 50, "client_errors": 50}, "http://s": HALF_REFUSED},
            ],
            Outcome.PASSED,
            "4xx share 0.5 against the stable version's 0.5",
            id="same-window-not-the-stable-lifetime",
        ),
        pytest.param(
            [{"http://c": {"client_errors": 100}, "http://s": LONG_LIFE}],
            Outcome.INCONCLUSIVE,
            "the stable version served 0 of 20 requests in the same window",
            id="no-stable-window-yet",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"client_errors": 100}, "http://s": {"ok": 10_005}},
            ],
            Outcome.INCONCLUSIVE,
            "the stable version served 5 of 20 requests",
            id="too-few-stable-requests-in-the-window",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"client_errors": 100}, "http://s": {"ok": 40}},
            ],
            Outcome.FAILED,
            "above the stable version's 0",
            id="a-restarted-stable-server-counts-in-full",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"client_errors": 100}, "http://s": LONG_LIFE, "http://s2": THIRTY},
            ],
            Outcome.FAILED,
            "above the stable version's 0",
            id="a-new-stable-server-counts-in-full",
        ),
        pytest.param(
            [
                {"http://c": {}, "http://s": LONG_LIFE},
                {"http://c": {"client_errors": 5}, "http://s": {"ok": 10_100}},
            ],
            Outcome.PASSED,
            "too few to judge the error rates",
            id="too-few-candidate-requests-outside-production",
        ),
    ],
)  # fmt: skip
def test_direct_4xx_share_against_the_stable_over_the_same_window(
    passes: list[dict[str, dict[str, int]]], expected: Outcome, needle: str
) -> None:
    verdict = judge_passes(Servers(), passes)
    assert verdict.outcome is expected, verdict
    assert needle in verdict.reason, verdict.reason


def test_the_4xx_rule_applies_to_the_default_gate_and_to_a_configured_one() -> None:
    renamed = [
        {"http://c": {}, "http://s": LONG_LIFE},
        {"http://c": {"client_errors": 100}, "http://s": {"ok": 10_100}},
    ]
    lenient = {"max4xxIncrease": 1.0}
    assert judge_passes(Servers(), renamed).outcome is Outcome.FAILED
    assert judge_passes(Servers(), renamed, analysis=lenient).outcome is Outcome.PASSED
    gate = {"gates": [{"type": "direct", "check": "error-rate"}]}
    failed = judge_passes(Servers(), renamed, analysis=gate)
    assert failed.outcome is Outcome.FAILED
    (result,) = failed.details["gates"]
    assert (result["candidate4xxShare"], result["stable4xxShare"]) == (1.0, 0.0)
    assert result["stableRequests"] == 100


# -- production needs traffic -----------------------------------------------------------------

BEFORE = {"http://c": {}, "http://s": LONG_LIFE}
THREE = [BEFORE, {"http://c": {"ok": 3}, "http://s": {"ok": 10_030}}]
PLENTY = [BEFORE, {"http://c": {"ok": 30}, "http://s": {"ok": 10_030}}]
FEEDBACK_ONLY = {"gates": [{"type": "feedback", "minRatings": 1}]}


class NoRatings:
    def rater_summary(self, *_: Any, **__: Any) -> Ratings:
        return Ratings(0, None)


@pytest.mark.parametrize(
    ("environment", "analysis", "counts", "outcome", "status", "needle"),
    [
        pytest.param(
            "production", {}, THREE, Outcome.INCONCLUSIVE, "Deploying",
            "waiting for traffic: 3 of 20 requests", id="production-holds-without-traffic",
        ),
        pytest.param(
            "production", {"minRequests": 5}, THREE, Outcome.INCONCLUSIVE, "Deploying",
            "waiting for traffic: 3 of 5 requests", id="production-own-min-requests",
        ),
        pytest.param(
            "production", {}, PLENTY, Outcome.PASSED, "Active", "",
            id="production-with-traffic-goes-on",
        ),
        pytest.param(
            "production", {"requireTraffic": False}, THREE, Outcome.PASSED, "Active",
            "too few to judge", id="production-opted-out",
        ),
        pytest.param(
            "staging", {}, THREE, Outcome.PASSED, "Active", "too few to judge",
            id="staging-passes-on-health-as-before",
        ),
        pytest.param(
            "staging", {"requireTraffic": True}, THREE, Outcome.INCONCLUSIVE, "Deploying",
            "waiting for traffic: 3 of 20 requests", id="staging-opted-in",
        ),
        pytest.param(
            "production", FEEDBACK_ONLY, THREE, Outcome.INCONCLUSIVE, "Deploying",
            "waiting for traffic: 3 of 20 requests", id="feedback-only-gets-a-traffic-check",
        ),
        pytest.param(
            "staging", FEEDBACK_ONLY, THREE, Outcome.INCONCLUSIVE, "Deploying",
            "0 rater(s)", id="feedback-only-outside-production-no-traffic-check",
        ),
        pytest.param(
            "production",
            {"gates": [{"type": "direct", "check": "p95-latency-vs-stable"}]},
            THREE, Outcome.INCONCLUSIVE, "Deploying",
            "waiting for traffic: 3 of 20 requests", id="latency-gate-waits-for-traffic",
        ),
    ],
)  # fmt: skip
def test_a_production_step_without_traffic_holds(
    environment: str,
    analysis: dict[str, Any],
    counts: list[dict[str, dict[str, int]]],
    outcome: Outcome,
    status: str,
    needle: str,
) -> None:
    verdict = judge_passes(
        Servers(), counts, analysis=analysis, environment=environment, feedback=NoRatings()
    )
    assert verdict.outcome is outcome, verdict
    assert needle in verdict.reason
    # The last step of a canary whose pause is over: only the verdict stands in the way.
    spec = parse_spec("canary", {"steps": [{"weight": 10, "pause": "1m"}, {"weight": 100}]})
    progress = Progress(status="Deploying", step_index=0, step_started_at=STEP_START, weight=10)
    observed = Observed(candidate=SlotState(1, 1), has_stable=True, stable_replicas=1)
    planned = plan(spec, observed=observed, progress=progress, verdict=verdict, now=NOW)
    assert planned.progress.status == status
    if status == "Deploying":
        assert planned.progress.weight == 10, "no more traffic to an unjudged candidate"
        assert planned.progress.hold_since == NOW
        assert planned.progress.reason is not None
        assert needle in planned.progress.reason, "the deployment's reason says why it holds"


# -- the feedback gate -------------------------------------------------------------------------


@dataclass
class Ratings:
    raters: int
    mean: float | None
    positive_share: float | None = None
    positive_low: float | None = None

    @property
    def rated(self) -> int:
        return self.raters * 2  # each rater rated twice: rows are not what is counted


class FakeFeedback:
    """Stands in for the feedback service (our own interface)."""

    def __init__(self, windowed: dict[str, Ratings], all_time: dict[str, Ratings]) -> None:
        self.windowed, self.all_time = windowed, all_time
        self.numbers: dict[uuid.UUID, str] = {}

    def rater_summary(
        self,
        model_version_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Ratings:
        number = self.numbers[model_version_id]
        return (self.windowed if since is not None else self.all_time)[number]


@pytest.mark.parametrize(
    ("gate", "candidate", "stable", "stable_all_time", "expected"),
    [
        pytest.param(
            {}, Ratings(3, 1.0), Ratings(30, 5.0), None, Outcome.INCONCLUSIVE, id="too-few"
        ),
        pytest.param({}, Ratings(30, 4.0), Ratings(30, 4.2), None, Outcome.PASSED, id="small-drop"),
        pytest.param(
            {"maxDrop": 0.5},
            Ratings(30, 3.0),
            Ratings(30, 4.2),
            None,
            Outcome.FAILED,
            id="big-drop",
        ),
        pytest.param(
            {"maxDrop": 0.5},
            Ratings(30, 3.0),
            Ratings(2, 5.0),
            Ratings(100, 3.2),
            Outcome.PASSED,
            id="stable-judged-over-all-time-when-the-window-is-thin",
        ),
        pytest.param(
            {"on": "positive_low", "maxDrop": 0.1},
            Ratings(30, 4.0, 0.8, 0.62),
            Ratings(30, 4.0, 0.8, 0.7),
            None,
            Outcome.FAILED,
            id="positive-low-bound-too-far-below",
        ),
        pytest.param(
            {"on": "positive_low", "maxDrop": 0.2},
            Ratings(30, 4.0, 0.8, 0.62),
            Ratings(30, 4.0, 0.8, 0.7),
            None,
            Outcome.PASSED,
            id="positive-low-bound-close-enough",
        ),
    ],
)
def test_feedback_gate(
    gate: dict[str, Any],
    candidate: Ratings,
    stable: Ratings,
    stable_all_time: Ratings | None,
    expected: Outcome,
) -> None:
    spec = parse_analysis({"gates": [{"type": "feedback", "minRatings": 20, **gate}]}).gates[0]
    dep, stable_view = view("2.0"), view("1.0")
    source = FakeFeedback(
        {"2.0": candidate, "1.0": stable}, {"1.0": stable_all_time or stable, "2.0": candidate}
    )
    source.numbers = {dep.version.id: "2.0", stable_view.version.id: "1.0"}
    ctx = replace(
        context(workload("http://c"), dep=dep),
        stable=stable_view,
        stable_workload=workload("http://s"),
    )
    outcome = FeedbackGate(spec, source=source).evaluate(ctx)
    assert outcome.outcome is expected, outcome
    assert outcome.inputs["candidateRaters"] == candidate.raters
    assert outcome.inputs["candidateRatings"] == candidate.rated


# -- the Prometheus gate ---------------------------------------------------------------------------


def test_prometheus_templates_fill_in_the_rollout() -> None:
    dep = view("2.0")
    query = render(
        'rate(x{model="{{model}}",version="{{version}}"}[{{window}}])',
        context(workload("http://c"), dep=dep),
    )
    assert query == 'rate(x{model="text2img",version="2.0"}[120s])'


def test_an_unreachable_prometheus_is_an_error_not_a_failure() -> None:
    spec = GateSpec(
        type="prometheus", name="error-rate", template="error-rate", success=Range(max=0.05)
    )
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    outcome = PrometheusGate(spec, client=client).evaluate(context(workload("http://c")))
    assert outcome.outcome is Outcome.ERROR
    assert "unreachable" in outcome.reason
    unconfigured = PrometheusGate(spec, client=None).evaluate(context(workload("http://c")))
    assert unconfigured.outcome is Outcome.ERROR
    assert "MODELREG_PROMETHEUS_URL" in unconfigured.reason
