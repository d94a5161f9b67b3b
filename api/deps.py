"""Request dependencies: the registry, and the caller's identity checked against a scope."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from registry.auth import Principal, Scope
from registry.errors import Forbidden, Unauthorized
from registry.services import Registry

_bearer = HTTPBearer(auto_error=False, description="`<apiKey>.<secret>`")


def get_registry(request: Request) -> Registry:
    registry = request.app.state.registry
    assert isinstance(registry, Registry)
    return registry


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
        if not principal.allows(scope):
            raise Forbidden(
                f"this key lacks the {scope.value!r} scope",
                requiredScope=scope.value,
                grantedScopes=sorted(principal.scopes),
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency
