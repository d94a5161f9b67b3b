"""The ceiling for ``bench.resolve``: a bare ASGI app that answers every request with the bytes
modelreg's resolve route answers (status, headers, body), read once from
``BENCH_BARE_ANSWER`` (a JSON file: ``{"headers": [[name, value], ...], "body": "..."}``).
Served by the same uvicorn, loop and HTTP parser as modelreg, it is what this stack can do
with no routing, no auth and no lookup at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_answer = json.loads(Path(os.environ["BENCH_BARE_ANSWER"]).read_text())
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(k.encode(), v.encode()) for k, v in _answer["headers"]],
}
_BODY = {"type": "http.response.body", "body": _answer["body"].encode()}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)
