"""helm/dashboards/modelreg.json: a Grafana dashboard whose PromQL names only metrics that
modelreg exports (the API's, the database collector's, the controller's and the model
servers')."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric
from sqlalchemy.orm import sessionmaker

from deployers.model_server.metrics import ServerMetrics as _Metrics
from registry.metrics import METRICS, DatabaseCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "dashboards" / "modelreg.json"

#: Gauges not yet defined where this test can read them. Keep this list empty: an entry is
#: a metric the dashboard shows but nothing exports yet.
PENDING_METRICS: set[str] = set()

#: PromQL functions, aggregations and keywords: never metric names.
PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "limitk", "limit_ratio", "by", "without",
    # binary-operator keywords and modifiers
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "atan2", "inf", "nan",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "histogram_count", "histogram_sum", "histogram_avg",
    "histogram_fraction", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "label_values", "ln", "log2", "log10", "minute", "month",
    "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
    "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time",
    "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
    # label names that appear outside braces in the expressions
    "le",
}  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*(?:([\w:]+)\s*,\s*)?\w+\s*\)")
#: An identifier not preceded by a name or number character, followed by ``{``, ``[``,
#: ``)``, ``,``, whitespace, an operator or the end: a metric name or a keyword. A name
#: followed by ``(`` is a function call.
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?=[{\[),\s+\-*/%^=!<>]|$)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values`` query) reads."""
    text = _VARIABLE.sub(" ", _STRING.sub('""', expr))
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    # label_values(metric, label) reads metric; label_values(label) names no metric
    text = _LABEL_VALUES.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _RANGE.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_WORDS}


def _series_names(family: Metric) -> set[str]:
    """The series names Prometheus stores for one family of the text exposition."""
    if family.type == "counter":
        return {f"{family.name}_total", f"{family.name}_created"}
    if family.type == "histogram":
        return {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created")}
    if family.type == "summary":
        return {family.name, f"{family.name}_sum", f"{family.name}_count"}
    return {family.name}


def exported_metric_names() -> set[str]:
    """Every series name modelreg exports, from the code that defines the metrics."""
    families: list[Metric] = list(METRICS.collect())
    # The collector's families are described without querying its (here absent) database.
    families += DatabaseCollector(sessionmaker()).describe()
    model_server = _Metrics(model="m", version="1")
    families += list(model_server.registry.collect())
    names: set[str] = set(PENDING_METRICS)
    for family in families:
        names |= _series_names(family)
    return names


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query template variable."""
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query
            yield f"variable {variable['name']!r}", text


def unknown_metrics(dashboard: dict[str, Any], exported: set[str]) -> list[str]:
    """One line per query that names a metric modelreg does not export (or names none)."""
    problems = []
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: names no metric: {expr}")
        for name in sorted(names - exported):
            problems.append(f"{where}: {name} is not exported by modelreg: {expr}")
    return problems


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names()


# -- the tokenizer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        pytest.param("up", {"up"}, id="bare-name"),
        pytest.param(
            'sum by (status) (rate(modelreg_http_requests_total{route="/a/{name}/b"}[5m]))',
            {"modelreg_http_requests_total"},
            id="braces-inside-a-label-value",
        ),
        pytest.param(
            "histogram_quantile(0.95, sum by (le, model) (rate(x_bucket[$__rate_interval])))",
            {"x_bucket"},
            id="quantile-with-grouping-and-variable",
        ),
        pytest.param(
            "sum(rate(a_sum[5m])) / sum(rate(a_count[5m]))", {"a_sum", "a_count"}, id="ratio"
        ),
        pytest.param("a_total/b_total", {"a_total", "b_total"}, id="no-spaces"),
        pytest.param("sum(rate(a_total[5m])) by (kind)", {"a_total"}, id="trailing-by"),
        pytest.param("max(g offset 1h) > bool 0", {"g"}, id="offset-and-bool"),
        pytest.param('label_values(w{model=~"$model"}, environment)', {"w"}, id="label-values"),
        pytest.param("label_values(w, model)", {"w"}, id="label-values-bare"),
        pytest.param("sum without (instance) (g) and on (model) h", {"g", "h"}, id="set-ops"),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# -- the dashboard ----------------------------------------------------------------------------


def test_every_query_names_only_exported_metrics(
    dashboard: dict[str, Any], exported: set[str]
) -> None:
    assert list(queries(dashboard)), "the dashboard has no queries"
    assert unknown_metrics(dashboard, exported) == []


def test_a_dashboard_naming_a_missing_metric_fails(exported: set[str]) -> None:
    synthetic = {
        "panels": [
            {"title": "fine", "targets": [{"refId": "A", "expr": "sum(modelreg_deployments)"}]},
            {
                "type": "row",
                "panels": [
                    {
                        "title": "typo",
                        "targets": [
                            {"refId": "A", "expr": "rate(modelreg_http_requests[5m])"},
                            {"refId": "B", "expr": 'modelreg_no_such_metric{model="x"}'},
                        ],
                    }
                ],
            },
        ],
        "templating": {
            "list": [{"name": "m", "type": "query", "query": "label_values(nothing_here, model)"}]
        },
    }
    problems = unknown_metrics(synthetic, exported)
    assert len(problems) == 3, problems
    assert "modelreg_http_requests is not exported" in problems[0]  # counters end in _total
    assert "modelreg_no_such_metric is not exported" in problems[1]
    assert "nothing_here is not exported" in problems[2]


def test_exported_names_come_from_the_code(exported: set[str]) -> None:
    assert {
        "modelreg_http_requests_total",
        "modelreg_http_request_duration_seconds_bucket",
        "modelreg_deployment_traffic_weight",
        "modelreg_validation_queue_depth",
        "modelreg_model_server_inference_duration_seconds_bucket",
        "modelreg_model_server_requests_total",
        "modelreg_feedback_rating_sum",
    } <= exported
    assert "modelreg_http_requests" not in exported  # a counter is stored as ..._total
    assert "modelreg_validation_duration_seconds" not in exported  # a histogram's base name


def test_the_dashboard_shows_what_the_issue_asks(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for _, expr in queries(dashboard):
        used |= metric_names(expr)
    assert {
        # rollouts in progress with their weights, and their outcomes
        "modelreg_deployment_traffic_weight",
        "modelreg_deployment_step",
        "modelreg_deployments",
        "modelreg_deployment_outcomes_total",
        # validations
        "modelreg_validations_total",
        "modelreg_validation_duration_seconds_bucket",
        "modelreg_validation_queue_depth",
        # endpoint resolution: rate, latency, cache
        "modelreg_http_requests_total",
        "modelreg_http_request_duration_seconds_bucket",
        "modelreg_endpoint_resolutions_total",
        # feedback per version
        "modelreg_feedback_rating_sum",
        "modelreg_feedback_rating_count",
        "modelreg_feedback_rating_bucket",
        "modelreg_feedback_mean_rating",
        # model servers
        "modelreg_model_server_requests_total",
        "modelreg_model_server_inference_errors_total",
        "modelreg_model_server_inference_duration_seconds_bucket",
        # the controller
        "modelreg_controller_pass_duration_seconds_bucket",
        "modelreg_controller_errors_total",
        "modelreg_controller_leader",
    } <= used
    endpoint_latency = [
        expr
        for _, expr in queries(dashboard)
        if "modelreg_http_request_duration_seconds_bucket" in expr
        and 'route="/api/v1/models/{name}/endpoint"' in expr
    ]
    assert endpoint_latency, "no latency panel for the endpoint-resolution route template"


def test_dashboard_is_importable_into_grafana(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"]
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "environment"):
        query = variables[name]["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert text.startswith("label_values("), text
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in iter_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
