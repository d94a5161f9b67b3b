"""A steady pass skips building the conditions and observed state of a deployment whose
observation did not change: the shortcuts must answer exactly what building and comparing
would (``same_as`` is ``to_dict() ==``, ``merges_to_same`` is ``merge_conditions(...) ==``),
and the record must be the one the long way builds."""

from __future__ import annotations

import copy
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controller.records import build_record
from controller.strategies.base import Progress
from controller.strategies.steady import plan_active, plan_retired
from deployers.base import Instance, WorkloadStatus
from registry.conditions import condition, merge_conditions, merges_to_same
from registry.rollout_spec import RolloutSpec
from registry.services.deployment_views import DeploymentView
from tests.support.deployment_views import NOW, view

URL = "http://127.0.0.1:9100"


def statuses() -> list[WorkloadStatus]:
    dep, ver = uuid.uuid4(), uuid.uuid4()
    base = WorkloadStatus(dep, ver, replicas=2, ready_replicas=2, url=URL)
    two = (Instance(url=URL, ready=True, pid=41, port=9100), Instance(url=URL, ready=False))
    return [
        base,
        replace(base, instances=two),
        replace(base, instances=(Instance(url=URL, ready=True, started_at=NOW, name="p"),)),
        replace(base, ready_replicas=1, failure="crash loop", restarts=3, url=None),
        replace(base, details={"namespace": "ns", "pods": 2}),
    ]


def variants(recorded: dict[str, Any]) -> list[Any]:
    """``recorded``, and each way of changing it by one key or one value."""
    out: list[Any] = [recorded, dict(recorded), None, [], {**recorded, "extra": 1}]
    for key, value in recorded.items():
        out.append({k: v for k, v in recorded.items() if k != key})
        for other in (None, 0, 1, True, "x", [], {}, f"{value}x"):
            out.append({**recorded, key: other})
        if isinstance(value, list):
            out.append({**recorded, key: tuple(value)})
            for i, item in enumerate(value):
                for changed in variants(item):
                    out.append({**recorded, key: [*value[:i], changed, *value[i + 1 :]]})
    return out


@pytest.mark.parametrize("status", statuses(), ids=range(5))
def test_same_as_answers_what_comparing_to_dict_would(status: WorkloadStatus) -> None:
    recorded = status.to_dict()
    if status.details:
        recorded_details = {**recorded, "details": {"namespace": "other", "pods": 2}}
        assert not status.same_as(recorded_details)
    for candidate in variants(copy.deepcopy(recorded)):
        assert status.same_as(candidate) == (status.to_dict() == candidate), candidate


UPDATES = [("Ready", True, "Ready", "2/2 replicas ready"), ("ReconcileError", False, "None", "")]


def conditions_cases() -> list[list[dict[str, Any]]]:
    built = merge_conditions([], [condition(*u, NOW) for u in UPDATES])
    other = condition("Progressing", False, "Active", "done", NOW - timedelta(hours=1))
    cases: list[list[dict[str, Any]]] = [[], built, [other, *built], [*built, other]]
    cases.append([*built, built[0]])  # a type twice: merging collapses it
    cases.append(built[:1])  # a type missing: merging adds it
    for i, c in enumerate(built):
        for key in c:
            cases.append([*built[:i], {k: v for k, v in c.items() if k != key}, *built[i + 1 :]])
            cases.append([*built[:i], {**c, key: "changed"}, *built[i + 1 :]])
        cases.append([*built[:i], {**c, "extra": 1}, *built[i + 1 :]])
    return cases


@pytest.mark.parametrize("current", conditions_cases())
def test_merges_to_same_answers_what_merging_and_comparing_would(
    current: list[dict[str, Any]],
) -> None:
    try:
        merged = merge_conditions(current, [condition(*u, NOW) for u in UPDATES])
    except KeyError:
        with pytest.raises(KeyError):
            merges_to_same(current, UPDATES)
        return
    assert merges_to_same(current, UPDATES) == (merged == list(current))


SPEC = RolloutSpec(strategy="canary", replicas=2)


def active(**changes: Any) -> DeploymentView:
    return replace(view("1.0"), status="Active", traffic_weight=100, endpoint=URL, **changes)


def status_for(dep: DeploymentView, *, ready: int = 2) -> WorkloadStatus:
    instances = tuple(Instance(url=URL, ready=i < ready, pid=40 + i) for i in range(2))
    return WorkloadStatus(dep.id, dep.version.id, 2, ready, URL, instances)


def recorded(dep: DeploymentView, status: WorkloadStatus) -> DeploymentView:
    """``dep`` as the row reads after a pass recorded what it observed of ``status``."""
    plan = plan_active(SPEC, _progress(dep), action=None, now=NOW)
    earlier = NOW - timedelta(minutes=5)
    record = build_record(
        dep, plan, observed={dep.id: status}, stable=None, verdict=None, now=earlier
    )
    return replace(dep, conditions=record.conditions, observed_state=record.observed_state)


def _progress(dep: DeploymentView) -> Progress:
    return Progress(
        status=dep.status,
        step_index=dep.step_index,
        step_started_at=dep.step_started_at,
        weight=dep.traffic_weight,
        hold_since=dep.hold_since,
    )


def test_a_steady_pass_that_observes_nothing_new_reuses_the_row_and_changes_nothing() -> None:
    dep = active()
    row = recorded(dep, status_for(dep))
    plan = plan_active(SPEC, _progress(row), action=None, now=NOW)
    record = build_record(
        row, plan, observed={row.id: status_for(row)}, stable=None, verdict=None, now=NOW
    )
    assert record.conditions is row.conditions
    assert record.observed_state is row.observed_state
    assert record.changes_nothing(row)


@pytest.mark.parametrize("ready", [0, 1])
def test_a_steady_pass_that_observes_a_change_records_it(ready: int) -> None:
    dep = active()
    row = recorded(dep, status_for(dep))
    plan = plan_active(SPEC, _progress(row), action=None, now=NOW)
    status = status_for(row, ready=ready)
    record = build_record(row, plan, observed={row.id: status}, stable=None, verdict=None, now=NOW)
    assert not record.changes_nothing(row)
    assert record.observed_state == {"workload": status.to_dict()}
    ready_condition = next(c for c in record.conditions if c["type"] == "Ready")
    assert ready_condition["status"] == "False"
    assert ready_condition["lastTransitionTime"] == NOW.isoformat()


def test_a_retired_deployment_whose_servers_went_records_it() -> None:
    dep = replace(active(), status="Inactive", traffic_weight=0, scale_down_at=NOW)
    row = recorded(dep, status_for(dep))
    plan = plan_retired(SPEC, _progress(row), observed=None, scale_down_at=NOW, now=NOW)
    record = build_record(row, plan, observed={}, stable=None, verdict=None, now=NOW)
    assert record.observed_state == {"workload": None}
    assert not record.changes_nothing(row)
