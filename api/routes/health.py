"""Liveness and readiness probes. They need no key, so that orchestrators can call them."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import get_registry
from api.schemas import Health
from registry.services import Registry

router = APIRouter(tags=["health"])
log = logging.getLogger("modelreg.api")


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="The database and the artifact store answer",
)
def readyz(reg: Annotated[Registry, Depends(get_registry)]) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        reg.check_database()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    try:
        reg.store.check()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: {exc}"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        log.warning("not ready: %s", checks)
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
