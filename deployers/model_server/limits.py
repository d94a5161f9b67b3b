"""What a model server refuses for its size: a body over ``max_body_bytes`` (413, as
problem+json with ``error`` too), or one nesting arrays and objects deeper than
``MAX_JSON_DEPTH`` (found before the body is parsed). Memory stays bounded on the way: bodies
stream in and are scanned a ``CHUNK`` at a time.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import JSONResponse

__all__ = [
    "CHUNK",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "PROBLEM",
    "BodyTooLarge",
    "json_depth",
    "read_body",
    "refuse_body_too_large",
]

CHUNK = 1024 * 1024

#: The default cap on an inference request's body (``serve-model --max-body-bytes``).
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: Deepest nesting of arrays and objects a request may have: a rank-8 tensor as nested lists
#: inside ``{"inputs": [{"data": ...}]}`` is 11 levels deep.
MAX_JSON_DEPTH = 64
PROBLEM = "application/problem+json"

#: A JSON string (escapes included), and every byte that is not a bracket or a brace.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``body``, counted without parsing
    it and without recursion: strings are cut out, then the brackets that remain are summed."""
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), CHUNK):  # a chunk at a time: memory stays bounded
        codes = np.frombuffer(brackets, dtype=np.uint8, count=-1, offset=start)[:CHUNK]
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refused (:class:`BodyTooLarge`) as soon as it is known to be over
    ``limit`` bytes: from its Content-Length, or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def refuse_body_too_large(limit: int) -> JSONResponse:
    """The 413 answer to a body over ``limit`` bytes: problem+json, with ``error`` too."""
    message = f"the request body is larger than the limit of {limit} bytes"
    problem = {
        "type": "about:blank",
        "title": "Request body too large",
        "status": 413,
        "detail": message,
        "error": message,
    }
    return JSONResponse(problem, status_code=413, media_type=PROBLEM)
