"""Domain errors. They are raised below ``api/``; one handler there maps each to a status."""

from __future__ import annotations

import re
from typing import Any


class RegistryError(Exception):
    """Base class. ``extra`` members are added to the problem+json body."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(RegistryError):
    status = 404
    title = "Not found"


class Conflict(RegistryError):
    status = 409
    title = "Conflict"


class GateClosed(Conflict):
    """A lifecycle move was refused by a gate (for example, validation has not passed)."""

    title = "Gate closed"


class Invalid(RegistryError):
    status = 422
    title = "Invalid request"


class BadRequest(RegistryError):
    status = 400
    title = "Bad request"


class PayloadTooLarge(RegistryError):
    status = 413
    title = "Payload too large"


class Unavailable(RegistryError):
    """A dependency (database, artifact store) failed; the client may retry."""

    status = 503
    title = "Service unavailable"


class Unauthorized(RegistryError):
    status = 401
    title = "Unauthorized"


class Forbidden(RegistryError):
    status = 403
    title = "Forbidden"


class TooManyRequests(RegistryError):
    """Refused before any work: the caller failed too often; ``retry_after`` is in seconds."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retryAfterSeconds=retry_after, **extra)
        self.retry_after = retry_after


class SpecError(ValueError):
    """A rollout spec (``strategyParams``) that cannot be run; the message names the field.
    The deployment service turns it into :class:`Invalid` (422)."""

    def problem_errors(self) -> list[dict[str, Any]]:
        """The field as a 422's ``errors`` give it, ``[{loc, msg, type}]``, read from the
        message's start (``strategyParams.steps[1].weight must be …`` → ``loc``
        ``["body", "strategyParams", "steps", "1", "weight"]``, ``msg`` ``must be …``), so
        that a client can name its own option for it; empty when the message names none."""
        match = _SPEC_FIELD.match(str(self))
        if match is None:
            return []
        loc = ["body", *re.findall(r"[A-Za-z]+|\d+", match.group(1))]
        return [{"loc": loc, "msg": str(self)[match.end() :], "type": "value_error"}]


_SPEC_FIELD = re.compile(r"(strategyParams(?:\.[A-Za-z]+|\[\d+\])*)(?::\s*|\s+)")
