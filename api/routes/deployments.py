"""/api/v1/deployments, and the per-model rollback and history.

The API writes desired state only: a deployment row, or a request on one. The controller's
next pass carries it out; poll ``GET /deployments/{id}`` (or its events) to follow it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Response, status

from api.answers import answer, deployment_out
from api.deps import app_registry, authorize
from api.routes import BAD_BODY
from api.schemas import (
    ActionIn,
    DeploymentCreate,
    DeploymentEventOut,
    DeploymentOut,
    DeploymentPage,
    DeploymentStatus,
    Environment,
    HistoryOut,
    IdOrPrefix,
    ModelName,
    RollbackIn,
)
from registry import vocabulary
from registry.auth import Principal, Scope
from registry.errors import Invalid
from registry.pagination import MAX_LIMIT
from registry.services import Registry

router = APIRouter(tags=["deployments"])

Reader = Annotated[Principal, Depends(authorize(Scope.MODELS_READ))]
Operator = Annotated[Principal, Depends(authorize(Scope.DEPLOYMENTS_WRITE))]
Reg = Annotated[Registry, Depends(app_registry)]
Action = Literal["promote", "pause", "resume", "abort", "undeploy"]

ACTION_HELP = {
    "promote": "Complete the remaining steps now: all traffic to the candidate.",
    "pause": "Hold the rollout at its current step (a failed verdict still rolls back).",
    "resume": "Let a paused rollout go on.",
    "abort": "All traffic back to the stable version; the candidate is stopped (RolledBack).",
    "undeploy": "Take an Active deployment out of service (Inactive); its servers stop.",
}

#: Event ids are 64-bit; a larger `after` is a 422, not a database overflow (500).
MAX_EVENT_ID = 2**63 - 1


@router.post(
    "/deployments",
    responses=BAD_BODY,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    summary="Roll a version out to an environment",
    description="Creates the deployment (status Initiated); the controller rolls it out. "
    "The deployability check runs first: 422 when the target cannot serve the version's "
    "format; 409 with `failedChecks` when the version is Archived or Failed, has no artifact, "
    "failed its security scan, (production) has no passed validation, or its signature "
    "differs from the stable version's (`signatureDiff`; `strategyParams.allowSignatureChange` "
    "overrides). One rollout per model and environment at a time.",
)
def create_deployment(body: DeploymentCreate, actor: Operator, reg: Reg) -> Response:
    dep = reg.deployments.create(
        actor,
        model_name=body.model,
        version_number=body.version_number,
        model_version_id=body.model_version_id,
        environment=body.environment,
        strategy=body.deployment_strategy,
        params=body.strategy_params,
        target=body.target,
    )
    return answer(
        deployment_out(dep),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/v1/deployments/{dep.id}"},
    )


@router.get("/deployments", response_model=DeploymentPage, summary="List deployments, newest first")
def list_deployments(
    _: Reader,
    reg: Reg,
    model: Annotated[str | None, Query(max_length=100)] = None,
    environment: Environment | None = None,
    status_: Annotated[DeploymentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> DeploymentPage:
    page = reg.deployments.find(
        model_name=model, environment=environment, status=status_, limit=limit, cursor=cursor
    )
    return DeploymentPage(
        items=[DeploymentOut.of(v) for v in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/deployments/{deployment_id}",
    response_model=DeploymentOut,
    summary="A deployment: status, step, weight, conditions, desired and observed state",
)
def get_deployment(deployment_id: IdOrPrefix, _: Reader, reg: Reg) -> DeploymentOut:
    return DeploymentOut.of(reg.deployments.get(deployment_id))


@router.get(
    "/deployments/{deployment_id}/events",
    response_model=list[DeploymentEventOut],
    summary="The deployment's ledger: steps, verdicts, promotions, aborts, rollbacks",
)
def deployment_events(
    deployment_id: IdOrPrefix,
    _: Reader,
    reg: Reg,
    after: Annotated[
        int, Query(ge=0, le=MAX_EVENT_ID, description="Only events with a larger id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
) -> list[DeploymentEventOut]:
    return [
        DeploymentEventOut.model_validate(e)
        for e in reg.deployments.events(deployment_id, after=after, limit=limit)
    ]


@router.post(
    "/deployments/{deployment_id}/{action}",
    responses=BAD_BODY,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    summary="Promote, pause, resume, abort or undeploy",
    description=" ".join(f"**{k}**: {v}" for k, v in ACTION_HELP.items())
    + " The controller carries the request out on its next pass. 409 while another promote, "
    "abort or undeploy is pending, and for promote and resume when the candidate fails the "
    "deployability check.",
)
def deployment_action(
    deployment_id: IdOrPrefix,
    action: Action,
    actor: Operator,
    reg: Reg,
    body: Annotated[ActionIn | None, Body()] = None,
) -> Response:
    dep = reg.deployments.request(
        actor, deployment_id, action, reason=body.reason if body else None
    )
    return answer(deployment_out(dep), status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/models/{name}/rollback",
    responses=BAD_BODY,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    summary="Serve the previous Active version again",
    description="Instant while the previous version's servers are still up (inside its "
    "scaleDownDelay): the routes switch in this request. Otherwise a blue-green rollout of "
    "the previous version starts. Returns the deployment that will serve. Either way the "
    "previous version passes the deployability check first (409 with `failedChecks`).",
)
def rollback(
    name: ModelName,
    actor: Operator,
    reg: Reg,
    environment: Environment | None = None,
    body: Annotated[RollbackIn | None, Body()] = None,
) -> Response:
    chosen = body.environment if body is not None else None
    if chosen is not None and environment is not None and chosen != environment:
        raise Invalid(
            f"environment is {chosen!r} in the body but {environment!r} in the query: give it once"
        )
    dep = reg.deployments.rollback(
        actor,
        name,
        chosen or environment or vocabulary.Environment.PRODUCTION.value,
        reason=body.reason if body else None,
    )
    return answer(deployment_out(dep), status_code=status.HTTP_202_ACCEPTED)


@router.get(
    "/models/{name}/history",
    response_model=HistoryOut,
    summary="What served the model in an environment, and when",
    description="The ledger of every deployment of the model in the environment, oldest "
    "first. With `at`, `servingAt` lists the endpoints and weights that served at that time.",
)
def history(
    name: ModelName,
    _: Reader,
    reg: Reg,
    environment: Environment = vocabulary.Environment.PRODUCTION.value,
    at: Annotated[
        datetime | None, Query(description="ISO 8601; without an offset it is read as UTC")
    ] = None,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
) -> HistoryOut:
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # a time without an offset is read as UTC
    events, serving = reg.deployments.history(name, environment, at=at, after=after, limit=limit)
    return HistoryOut(
        model=name,
        environment=environment,
        events=[DeploymentEventOut.model_validate(e) for e in events],
        serving_at=serving,
    )
