"""A model's input and output signature, and how two of them are compared.

A signature is what the functional check found in an ONNX model::

    {"inputs": [{"name": "x", "type": "tensor(float)", "shape": [1, 4]}, ...], "outputs": [...]}

``type`` is onnxruntime's ``NodeArg.type``; ``shape`` is a list of int (a fixed dimension),
str (a symbolic one, such as ``"batch"``) or None (unknown). A candidate is compatible with the
stable version when every input and output keeps its name and element type, and its shape
keeps its rank with every fixed dimension equal; a symbolic or unknown dimension on either side
matches anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_SIDES = (("inputs", "input"), ("outputs", "output"))


def normalize_signature(raw: Any) -> dict[str, Any] | None:
    """``raw`` in the shape above, or None when it is not one (nothing is stored then)."""
    if not isinstance(raw, Mapping):
        return None
    result: dict[str, Any] = {}
    for key, _ in _SIDES:
        entries = raw.get(key)
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            return None
        clean = []
        for e in entries:
            if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
                return None
            kind, shape = e.get("type"), e.get("shape")
            if kind is not None and not isinstance(kind, str):
                return None
            if shape is not None and (
                not isinstance(shape, Sequence)
                or isinstance(shape, str)
                or not all(
                    d is None
                    or isinstance(d, str)
                    or (isinstance(d, int) and not isinstance(d, bool))
                    for d in shape
                )
            ):
                return None
            clean.append(
                {
                    "name": e["name"],
                    "type": kind,
                    "shape": list(shape) if shape is not None else None,
                }
            )
        result[key] = clean
    return result


def describe_signature(signature: Mapping[str, Any]) -> list[str]:
    """One line per input and output: ``input 'x' tensor(float) [1, 4]``."""
    return [
        f"{word} {e.get('name')!r} {e.get('type')} {format_shape(e.get('shape'))}"
        for key, word in _SIDES
        for e in signature.get(key) or []
    ]


def format_shape(shape: Any) -> str:
    if not isinstance(shape, (list, tuple)):
        return "[?]" if shape is None else str(shape)
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def shapes_compatible(old: Any, new: Any) -> bool:
    if not isinstance(old, (list, tuple)) or not isinstance(new, (list, tuple)):
        return old is None or new is None  # an unknown rank matches anything
    if len(old) != len(new):
        return False
    return all(
        not isinstance(a, int) or not isinstance(b, int) or a == b
        for a, b in zip(old, new, strict=True)
    )


def _by_name(entries: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(entries, Sequence):
        return {}
    return {
        str(e.get("name")): e
        for e in entries
        if isinstance(e, Mapping) and e.get("name") is not None
    }


def signature_diff(stable: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """What a client of ``stable`` would notice in ``candidate``, one readable line each;
    empty when the candidate is compatible."""
    diff: list[str] = []
    for key, word in _SIDES:
        old, new = _by_name(stable.get(key)), _by_name(candidate.get(key))
        for name in old:
            if name not in new:
                diff.append(f"{word} {name!r} is gone")
        for name, entry in new.items():
            if name not in old:
                diff.append(
                    f"new {word} {name!r} {entry.get('type')} {format_shape(entry.get('shape'))}"
                )
                continue
            before = old[name]
            if before.get("type") != entry.get("type"):
                diff.append(f"{word} {name!r} type {before.get('type')} is now {entry.get('type')}")
            if not shapes_compatible(before.get("shape"), entry.get("shape")):
                diff.append(
                    f"{word} {name!r} shape {format_shape(before.get('shape'))} is now "
                    f"{format_shape(entry.get('shape'))}"
                )
    return diff
