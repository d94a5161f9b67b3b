"""The orphan sweep: workloads a deployer runs that no deployment row owns (the row is gone,
or it is retired and finished) are stopped.

The deployers are listed first and the rows read after, by the ids found: a workload exists
only once its row did, so one of a deployment created after the pass read its worklist is
seen as owned and kept. Only the lease holder sweeps.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

from deployers.base import Deployer
from registry import metrics
from registry.services.deployment_views import DeploymentView
from registry.vocabulary import DeploymentStatus

log = logging.getLogger("modelreg.controller")

SWEEP_BATCH = 500
"""Deployment ids per query of the sweep (SQLite limits the parameters of one statement)."""


def sweep_orphans(
    deployers: Mapping[str, Deployer],
    *,
    load: Callable[[Sequence[uuid.UUID]], list[DeploymentView]],
) -> int:
    """Stop, and forget, every workload no deployment row owns; one log line each. ``load``
    reads the rows of the ids given. Returns how many were stopped."""
    stopped = 0
    for kind, deployer in deployers.items():
        try:
            found = deployer.owned()
        except Exception as exc:  # the next sweep tries again
            metrics.CONTROLLER_ERRORS.labels("temporary").inc()
            log.warning("orphan sweep: cannot list the %s workloads: %s", kind, exc)
            continue
        if not found:
            continue
        # The rows are read after the listing, never before: see the module docstring.
        ids = [w.deployment_id for w in found]
        rows = {
            v.id: v
            for start in range(0, len(ids), SWEEP_BATCH)
            for v in load(ids[start : start + SWEEP_BATCH])
        }
        for workload in found:
            why = orphaned_because(rows.get(workload.deployment_id), kind=kind)
            if why is None:
                continue
            try:
                deployer.remove(workload)
            except Exception as exc:
                metrics.CONTROLLER_ERRORS.labels("temporary").inc()
                log.warning(
                    "orphan sweep: cannot stop %s (%s): %s; the next sweep retries",
                    workload.describe(),
                    why,
                    exc,
                )
                continue
            stopped += 1
            log.warning("stopped orphaned workload %s, because %s", workload.describe(), why)
    return stopped


def orphaned_because(row: DeploymentView | None, *, kind: str) -> str | None:
    """Why no deployment row owns a workload that the deployer of target ``kind`` runs
    (``row`` is the one its deployment id names, if any), or ``None`` when a live row owns
    it."""
    if row is None:
        return "no deployment row has its id (the row is gone)"
    if row.finished_at is not None and not row.in_rollout and row.status != DeploymentStatus.ACTIVE:
        return (
            f"its deployment is {row.status} and finished at {row.finished_at.isoformat()} "
            "(its servers were due to stop then)"
        )
    if row.target != kind:
        return f"its deployment runs on target {row.target!r}, not {kind!r}"
    # A live row owns every workload of its id on its target, whatever model or environment
    # the workload's labels claim: removing by id would take the row's own servers too.
    return None
