"""modelreg's Python client: the HTTP API (``Client``) and endpoint resolution for generation
services (``Resolver``, ``AsyncResolver``). It needs httpx and nothing of the server.

    pip install "modelreg-client @ git+<repository URL>#subdirectory=api/python-client"

Names are imported on first use, so that ``import modelreg_client`` (and the vocabulary, or
the picking code, alone) does not load httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelreg_client.client import ChecksumMismatch, Client, ModelregError
    from modelreg_client.resolver import AsyncResolver, Resolver, Unresolved

__all__ = [
    "AsyncResolver",
    "ChecksumMismatch",
    "Client",
    "ModelregError",
    "Resolver",
    "Unresolved",
]

_WHERE = {
    "Client": "modelreg_client.client",
    "ModelregError": "modelreg_client.client",
    "ChecksumMismatch": "modelreg_client.client",
    "Resolver": "modelreg_client.resolver",
    "AsyncResolver": "modelreg_client.resolver",
    "Unresolved": "modelreg_client.resolver",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'modelreg_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
