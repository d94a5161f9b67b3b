"""Liveness and readiness probes. They need no key, so that orchestrators can call them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.deps import get_registry
from api.schemas import Health
from registry.errors import RegistryError
from registry.services import Registry

router = APIRouter(tags=["health"])
log = logging.getLogger("modelreg.api")


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


class ReadinessLog:
    """Logs what a dependency's readiness check said when its state changes (ok to unavailable,
    with the reason, and back), not on every probe: the probe answer itself names nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, bool] = {}

    def record(self, dependency: str, failure: BaseException | None) -> None:
        with self._lock:
            was_down = self._down.get(dependency, False)
            self._down[dependency] = failure is not None
        if failure is not None and not was_down:
            reason = failure.detail if isinstance(failure, RegistryError) else _first_line(failure)
            log.warning("not ready: the %s is unavailable: %s", dependency, reason)
        elif failure is None and was_down:
            log.info("ready again: the %s answers", dependency)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0][:300]}" if text else repr(exc)


_CHECKS: tuple[tuple[str, str, Callable[[Registry], None]], ...] = (
    ("database", "database", lambda reg: reg.check_database()),
    ("store", "artifact store", lambda reg: reg.store.check()),
)


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="The database and the artifact store answer (and the store takes writes)",
)
def readyz(request: Request, reg: Annotated[Registry, Depends(get_registry)]) -> JSONResponse:
    readiness: ReadinessLog = request.app.state.readiness
    checks: dict[str, str] = {}
    for name, dependency, check in _CHECKS:
        try:
            check(reg)
        except Exception as exc:  # whatever it is, the answer is "unavailable"; the log says why
            readiness.record(dependency, exc)
            checks[name] = "unavailable"
        else:
            readiness.record(dependency, None)
            checks[name] = "ok"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
