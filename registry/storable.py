"""What the databases refuse to store, found before a statement reaches them.

PostgreSQL refuses a NUL character (``\\u0000``) in text and in ``jsonb``, and answers with an
error the API would turn into a 500; SQLite keeps it and hands it back cut short. JSON has no
``NaN`` or ``Infinity``, yet Python's parser accepts ``NaN``, ``Infinity`` and ``-Infinity``
literals and reads ``1e999`` as infinity; stored in a JSON column they come back as ``null``
(or not at all). Both are refused up front, with the path of the offending value, so that the
client learns which field to fix.
"""

from __future__ import annotations

import math
from typing import Any

NUL = "\x00"


def unstorable(value: Any, path: str) -> str | None:
    """Why ``value`` (a JSON value, found at ``path``) cannot be stored; None when it can.

    Strings (object keys included) may not hold NUL, and numbers must be finite. The reason
    names the path of the first offending value, e.g. ``parameters.layers[2]``.
    """
    if isinstance(value, str):
        return (
            f"{path} contains a NUL character (\\u0000), which cannot be stored"
            if (NUL in value)
            else None
        )
    if isinstance(value, float):
        return (
            None
            if math.isfinite(value)
            else f"{path} is {value!r}, which JSON cannot hold: send a finite number"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"
            if isinstance(key, str) and NUL in key:
                return f"a key in {path} contains a NUL character (\\u0000), which cannot be stored"
            reason = unstorable(item, inner)
            if reason is not None:
                return reason
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            reason = unstorable(item, f"{path}[{index}]")
            if reason is not None:
                return reason
    return None
