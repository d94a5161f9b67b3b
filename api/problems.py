"""Every error leaves the API as ``application/problem+json`` (RFC 9457), mapped in one place."""

from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.db import DB_UNAVAILABLE_ERRORS, db_unavailable
from registry.errors import RegistryError, TooManyRequests, Unauthorized
from registry.storage import StoreUnavailable, UploadAborted

log = logging.getLogger("modelreg.api")

PROBLEM = "application/problem+json"
#: What a 503 (the database or the artifact store unavailable) tells the client to wait, in
#: seconds.
RETRY_AFTER_SECONDS = 5


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for ``codes``."""
    from api.schemas import Problem

    return {
        code: {
            "model": Problem,
            "description": HTTPStatus(code).phrase,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


#: What any authenticated route may answer besides its success.
COMMON_ERRORS = (401, 403, 404, 409, 422, 429, 503)


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


#: What a 503 body says. What failed in detail (a host, a bucket, a path, an object key, the
#: library's message) goes to the server log only: it maps the deployment for anyone.
STORE_UNAVAILABLE = "the artifact store is unavailable; retry later"
DEPENDENCY_UNAVAILABLE = "a service this request needs is unavailable; retry later"
DATABASE_UNAVAILABLE = "the database is unavailable; retry later"


class OutageLog:
    """Logs the 503s of an outage without a line per request: the first at once, then at most
    one line every ``every`` seconds, with how many were answered since."""

    def __init__(self, every: float = 30.0, *, what: str = "database") -> None:
        self.every = every
        self.what = what
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._suppressed = 0

    def answered(self, method: str, path: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        more = f" ({suppressed} more answered 503 since the last report)" if suppressed else ""
        detail = _describe(exc)
        if isinstance(exc, RegistryError):
            cause = exc.__cause__
            detail = exc.detail
            if cause is not None and str(cause) not in detail:
                detail += f" ({_describe(cause)})"
        log.error(
            "%s unavailable during %s %s: %s; answering 503 with Retry-After: %d%s",
            self.what,
            method,
            path,
            detail,
            RETRY_AFTER_SECONDS,
            more,
        )


def _describe(exc: BaseException) -> str:
    """The error's class and first line; never statement parameters (the engine hides them)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {first[:200]}" if first else exc.__class__.__name__


def _rule(error: Any) -> str | None:
    """The rule a name or version number broke, in words (api/schemas.py PATTERN_RULES), for
    a 422 that says it instead of the regex; None for any other error."""
    from api.schemas import PATTERN_RULES

    if error.get("type") != "string_pattern_mismatch":
        return None
    return PATTERN_RULES.get((error.get("ctx") or {}).get("pattern", ""))


def install_problem_handlers(app: FastAPI) -> None:
    outage = OutageLog()
    store_outage = OutageLog(what="artifact store")
    other_outage = OutageLog(what="a dependency")

    async def on_registry_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RegistryError)
        if exc.status == 503:
            return on_unavailable(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.detail)
        return problem(
            exc.status,
            exc.detail,
            title=exc.title,
            instance=request.url.path,
            headers=headers,
            **exc.extra,
        )

    def on_unavailable(request: Request, exc: RegistryError) -> JSONResponse:
        """The detail (and any extra member) goes to the log, the client gets a sentence."""
        if isinstance(exc, StoreUnavailable):
            log_to, detail = store_outage, STORE_UNAVAILABLE
        elif exc.detail == DATABASE_UNAVAILABLE:
            log_to, detail = outage, DATABASE_UNAVAILABLE
        else:
            log_to, detail = other_outage, DEPENDENCY_UNAVAILABLE
        log_to.answered(request.method, request.url.path, exc)
        return problem(
            503,
            detail,
            title=exc.title,
            instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors, lines = [], []
        for e in exc.errors():
            loc, rule = [str(p) for p in e.get("loc", ())], _rule(e)
            errors.append({"loc": loc, "msg": rule or e.get("msg", ""), "type": e.get("type", "")})
            # "name must start with …" for a broken rule; "query.limit: Input should be …" else.
            lines.append(
                f"{loc[-1]} {rule}" if rule and loc else f"{'.'.join(loc)}: {errors[-1]['msg']}"
            )
        summary = "; ".join(lines[:5])
        return problem(
            422,
            summary or "invalid request",
            title="Invalid request",
            instance=request.url.path,
            errors=errors,
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem(
            exc.status_code,
            str(exc.detail),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def on_db_down(request: Request, exc: Exception) -> JSONResponse:
        outage.answered(request.method, request.url.path, exc)
        return problem(
            503,
            DATABASE_UNAVAILABLE,
            instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def on_aborted(request: Request, exc: Exception) -> JSONResponse:
        log.info(
            "%s %s: client went away mid-upload; nothing was kept", request.method, request.url.path
        )
        return problem(400, str(exc), title="Upload aborted", instance=request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        if db_unavailable(exc):  # a database error another layer wrapped or chained
            return await on_db_down(request, exc)
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem(
            500, "internal error; the server log has the details", instance=request.url.path
        )

    app.add_exception_handler(RegistryError, on_registry_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for exc_type in DB_UNAVAILABLE_ERRORS:
        app.add_exception_handler(exc_type, on_db_down)
    app.add_exception_handler(UploadAborted, on_aborted)
    app.add_exception_handler(Exception, on_unexpected)
