"""A cap on request bodies, enforced before anything parses them.

FastAPI reads a JSON body whole into memory before validating it, so without a cap one request
could ask the API to hold gigabytes. Every request but an artifact upload (which streams to the
store, and has its own limit, ``max_artifact_bytes``) may send at most ``limit`` bytes:

- a declared ``Content-Length`` above it is refused at once, without reading the body;
- a body sent without one (chunked) is counted as it arrives, and refused once it passes it.

Both answer 413 problem+json.

It also holds :class:`NulMiddleware`: a NUL character in the path or the query string, which
PostgreSQL would refuse mid-query (a 500), answers 422 before any route runs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

#: The one route whose body is not JSON: it streams bytes to the artifact store.
ARTIFACT_UPLOAD = re.compile(r"^/api/v1/models/[^/]+/versions/[^/]+/artifact/?$")
#: No route reads a body on these; skipping them keeps the hot path (a GET) untouched.
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


def too_large_detail(limit: int) -> str:
    return (
        f"the request body is larger than {limit} bytes (MODELREG_MAX_JSON_BODY_BYTES); "
        "send less per request, e.g. smaller feedback batches"
    )


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413 (artifact uploads excepted)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in BODYLESS
            or (scope["method"] in ("PUT", "POST") and ARTIFACT_UPLOAD.match(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            response = problem(413, too_large_detail(self.limit), instance=scope["path"])
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI lets an HTTPException from reading the body through unchanged;
                    # the problem handlers turn it into 413 problem+json.
                    raise HTTPException(413, too_large_detail(self.limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class NulMiddleware:
    """Refuse a request whose path or query string holds a NUL character, with 422.

    No database stores one in text (PostgreSQL refuses it; SQLite cuts the string short), so a
    model name, a cursor or a filter with one could only fail deeper down. The check costs two
    substring searches when there is none, so the hot path keeps its pace. JSON bodies are
    checked by the request schemas (``InBody``), which name the field.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                detail = f"{where} contains a NUL character (\\u0000), which cannot be stored"
                response = problem(
                    422,
                    detail,
                    title="Invalid request",
                    instance=scope["path"].replace("\x00", "%00"),
                    errors=[{"loc": where.split(" ", 1), "msg": detail, "type": "nul"}],
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    """``path`` or ``query <name>`` when it holds a NUL character, else None."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name:
            return "query"
        if "\x00" in value:
            return f"query {name}"
    return None
