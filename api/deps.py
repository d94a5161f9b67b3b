"""Request dependencies: the registry, and the caller's identity checked against a scope.

FastAPI runs a synchronous dependency in the thread pool, one hop each, before the hop of a
synchronous route. The routes therefore depend on the ``async`` forms, :func:`registry` and
:func:`authorize`, so that a request whose token this process verified recently makes one hop:
the route's own. :func:`require` is the same check, synchronous, for callers that run it
themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from registry.auth import Principal, Scope
from registry.errors import Forbidden, Unauthorized
from registry.services import Registry

_bearer = HTTPBearer(auto_error=False, description="`<apiKey>.<secret>`")


def get_registry(request: Request) -> Registry:
    registry = request.app.state.registry
    assert isinstance(registry, Registry)
    return registry


async def app_registry(request: Request) -> Registry:
    """:func:`get_registry` as a dependency that stays on the event loop."""
    return get_registry(request)


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency that authenticates the bearer token and demands ``scope`` (or admin)."""

    def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        if credentials is None:
            raise Unauthorized(
                "missing bearer token: send 'Authorization: Bearer <apiKey>.<secret>'"
            )
        principal = get_registry(request).keys.authenticate(
            credentials.credentials, client=request.client.host if request.client else None
        )
        return _admit(request, principal, scope)

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency


def authorize(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """:func:`require` as an ``async`` dependency. It checks on the event loop when the key
    cache knows the token (``KeyService.cached``: no I/O), and in the thread pool
    otherwise: a first sight, an unknown or a wrong token may query the database, and must not
    block the loop. Same answers either way (401, 403, 429)."""
    check = require(scope)

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        if credentials is not None:
            principal = get_registry(request).keys.cached(credentials.credentials)
            if principal is not None:
                return _admit(request, principal, scope)
        return await run_in_threadpool(check, request, credentials)

    dependency.__name__ = f"authorize_{scope.name.lower()}"
    return dependency


def _admit(request: Request, principal: Principal, scope: Scope) -> Principal:
    if not principal.allows(scope):
        raise Forbidden(
            f"this key lacks the {scope.value!r} scope",
            requiredScope=scope.value,
            grantedScopes=sorted(principal.scopes),
        )
    request.state.principal = principal
    return principal
