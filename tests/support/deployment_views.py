"""A deployment as the controller reads it (``DeploymentView``), at a fixed step start, and the
status a deployer reports for a workload: built in memory, for the analysis gates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from deployers.base import Instance, WorkloadStatus
from registry.services.deployments import DeploymentView, VersionInfo

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STEP_START = NOW - timedelta(minutes=2)


def version(number: str) -> VersionInfo:
    return VersionInfo(uuid.uuid4(), number, "ONNX", "Staged", "0" * 64, "k", None)


def view(number: str = "2.0", **analysis: Any) -> DeploymentView:
    return DeploymentView(
        id=uuid.uuid4(),
        model_id=uuid.uuid4(),
        model_name="text2img",
        environment="production",
        target="local",
        status="Deploying",
        strategy="canary",
        params={"analysis": analysis} if analysis else {},
        spec_hash=None,
        version=version(number),
        step_index=0,
        step_started_at=STEP_START,
        traffic_weight=10,
        hold_since=None,
        paused=False,
        requested_action=None,
        conditions=[],
        endpoint=None,
        stable_deployment_id=None,
        retry_count=0,
        scale_down_at=None,
        finished_at=None,
        created_at=STEP_START,
    )


def workload(*urls: str) -> WorkloadStatus:
    return WorkloadStatus(
        deployment_id=uuid.uuid4(),
        version_id=uuid.uuid4(),
        replicas=len(urls),
        ready_replicas=len(urls),
        url=urls[0],
        instances=tuple(Instance(url=u, ready=True) for u in urls),
    )
