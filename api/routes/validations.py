"""Validation runs: request one, list a version's runs, show one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.deps import app_registry, authorize
from api.schemas import IdOrPrefix, ModelName, ValidationRunOut, VersionNumber
from registry.auth import Principal, Scope
from registry.services import Registry

router = APIRouter(tags=["validations"])

Reader = Annotated[Principal, Depends(authorize(Scope.MODELS_READ))]
Writer = Annotated[Principal, Depends(authorize(Scope.MODELS_WRITE))]
Reg = Annotated[Registry, Depends(app_registry)]


@router.post(
    "/models/{name}/versions/{version}/validations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ValidationRunOut,
    responses={
        200: {
            "model": ValidationRunOut,
            "description": "A run of this artifact was already waiting or running: that run",
        }
    },
    summary="Validate the version's current artifact again",
    description="Queues a run (202); a worker scans, loads, runs and benchmarks the artifact. "
    "Poll `GET /validations/{id}` until its status is Done. While a run of the same artifact "
    "is still queued or running, the request answers 200 with that run instead of queueing "
    "another. A key with `MODELREG_VALIDATIONS_PER_KEY` runs pending gets 429 with "
    "Retry-After.",
)
def request_validation(
    name: ModelName, version: VersionNumber, actor: Writer, reg: Reg, response: Response
) -> ValidationRunOut:
    run = reg.validations.request(actor, name, version)
    response.headers["Location"] = f"/api/v1/validations/{run.request.id}"
    if not run.created:
        response.status_code = status.HTTP_200_OK
    return ValidationRunOut.of(run)


@router.get(
    "/models/{name}/versions/{version}/validations",
    response_model=list[ValidationRunOut],
    summary="A version's validation runs, newest first",
)
def list_validations(
    name: ModelName, version: VersionNumber, _: Reader, reg: Reg
) -> list[ValidationRunOut]:
    return [ValidationRunOut.of(run) for run in reg.validations.list_runs(name, version)]


@router.get(
    "/validations/{validation_id}",
    response_model=ValidationRunOut,
    summary="One validation run, by its id",
    description="A run's id is also its result's id. While the run is Running, `phase` says "
    "what the worker is doing (fetch, scan, load, run, benchmark). A result stored before "
    "results took their run's id is also found by its own id.",
)
def get_validation(validation_id: IdOrPrefix, _: Reader, reg: Reg) -> ValidationRunOut:
    return ValidationRunOut.of(reg.validations.get_run(validation_id))
