""".npy arrays: an array of objects is a pickle after its header, and ``numpy.load`` unpickles
it. Which arrays hold objects is decided by the dtype numpy would build from the header's
``descr``, whatever its spelling (``holds_objects``), never by a letter in the header text.
``.npz`` files are zips of ``.npy`` members, streamed through the archive scanner.
"""

from __future__ import annotations

import ast
import struct
from typing import BinaryIO

from registry.formats import read_head
from validators.report import Finding, Severity
from validators.security.pickle import scan_pickle
from validators.security.policy import SecurityPolicy

__all__ = ["holds_objects", "scan_npy"]


def scan_npy(stream: BinaryIO, *, location: str, policy: SecurityPolicy) -> list[Finding]:
    """A ``.npy`` array of dtype object is a pickle after its header: scan that pickle."""
    prefix = read_head(stream, 10)
    if len(prefix) < 10:
        return [Finding(Severity.MEDIUM, "npy.header", "truncated .npy header", location)]
    if prefix[6] == 1:
        (length,) = struct.unpack("<H", prefix[8:10])
    else:
        (length,) = struct.unpack("<I", prefix[8:10] + read_head(stream, 2))
    if length > 1024 * 1024:
        return [Finding(Severity.HIGH, "npy.header", f"header of {length} bytes", location)]
    text = read_head(stream, length)
    try:
        header = ast.literal_eval(text.decode("latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return [Finding(Severity.MEDIUM, "npy.header", "unreadable .npy header", location)]
    if holds_objects(descr):
        return scan_pickle(stream, location=f"{location}#object-array", policy=policy)
    return []


#: How deep a structured dtype may nest before the scanner stops looking and assumes objects.
_MAX_DTYPE_DEPTH = 32


def holds_objects(descr: object, *, depth: int = 0) -> bool:
    """Whether the dtype ``numpy.lib.format.descr_to_dtype`` builds from a ``.npy`` header's
    ``descr`` (a literal) could hold Python objects, whose array body ``numpy.load`` unpickles.

    The walk follows ``descr_to_dtype`` without calling numpy on the attacker's text: a string
    is a type (``'O'``, ``'|O8'``, ``'object'``, ``'f4,O'``, ``'(2,)O'``, and ``'T'``, numpy 2's
    ``StringDType``, which is saved as objects); a tuple is ``(base, shape)``; anything else is
    iterated as a structured dtype's fields, each ``(name, descr[, shape])``, where only the
    second item is a type (a field *named* ``"O"`` is no object field). It errs towards yes: a
    type string numpy would refuse, but that names objects, counts, and so does a dtype nested
    deeper than ``_MAX_DTYPE_DEPTH``.
    """
    if depth > _MAX_DTYPE_DEPTH:
        return True
    if isinstance(descr, str):
        return "O" in descr or "object" in descr or "T" in descr
    if isinstance(descr, tuple):
        return bool(descr) and holds_objects(descr[0], depth=depth + 1)
    if not isinstance(descr, list | dict | set | frozenset):
        return False  # bytes, numbers, None: descr_to_dtype fails on them
    for entry in descr:
        if isinstance(entry, set | frozenset):
            # unpacked in an order of its own: any member may be the type
            types: list[object] = list(entry)
        elif isinstance(entry, str | tuple | list | dict):
            items = list(entry)
            types = [items[1]] if len(items) in (2, 3) else []
        else:
            types = []
        if any(holds_objects(t, depth=depth + 1) for t in types):
            return True
    return False
