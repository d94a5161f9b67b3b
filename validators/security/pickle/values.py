"""The inert values the emulator puts on its stack, and the memo that remembers them.

Nothing here is ever a real object from the pickle: a string is a string, a small int is an
int, and everything the scanner does not need to track is one shared ``OPAQUE`` placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass

from validators.report import Severity
from validators.security.pickle.reader import LimitExceeded


class Opaque:
    """A value the scanner does not track (a float, a list, the result of a call)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<value>"


OPAQUE = Opaque()


@dataclass(eq=False)
class Blob:
    """A string or bytes constant too large to hold; only its size is kept."""

    size: int


@dataclass(eq=False)
class Global:
    module: str
    name: str
    qualified: str
    severity: Severity | None


@dataclass(eq=False)
class Call:
    """The result of calling ``func`` (REDUCE, NEWOBJ, OBJ, INST); BUILD sets ``state``."""

    func: object
    args: object
    state: object = None


@dataclass(eq=False)
class ListValue:
    pass


_MEMO_TEXT = 1024  # longer strings are remembered by size only (a name is never that long)
_MEMO_TEXT_BUDGET = 48 * 1024 * 1024  # bytes of strings the memo holds, all together
_FORGOTTEN = Blob(-1)  # a string the memo did not keep: a name built from it is unresolved
#: dict keys kept while emulating: what joblib's array wrapper state needs
_STATE_KEYS = frozenset(
    {"shape", "dtype", "order", "numpy_array_alignment_bytes", "allow_mmap", "subclass"}
)


def set_item(target: dict[object, object], key: object, value: object) -> None:
    """``target[key] = value`` for the keys an emulation step reads back; others are dropped."""
    if isinstance(key, str) and key in _STATE_KEYS:
        target[key] = value


class Memo:
    """The unpickler's memo. Keys are usually dense (0, 1, 2...), so a list holds them until a
    pickle uses sparse keys. Values no emulation step reads back are stored as one shared
    placeholder, so a memo of millions of entries stays small."""

    __slots__ = ("budget", "dense", "limit", "sparse")

    def __init__(self, limit: int) -> None:
        self.budget = _MEMO_TEXT_BUDGET
        self.dense: list[object] = []
        self.sparse: dict[int, object] | None = None
        self.limit = limit

    def __len__(self) -> int:
        return len(self.dense) if self.sparse is None else len(self.sparse)

    def get(self, key: int) -> object:
        if self.sparse is not None:
            return self.sparse[key]
        if 0 <= key < len(self.dense):
            return self.dense[key]
        raise KeyError(key)

    def put(self, key: int, value: object) -> None:
        if isinstance(value, dict | ListValue):
            value = OPAQUE
        elif isinstance(value, str):
            self.budget -= len(value) + 50
            if len(value) > _MEMO_TEXT or self.budget < 0:
                value = _FORGOTTEN
        dense = self.dense
        if self.sparse is None:
            if key == len(dense):
                if key >= self.limit:
                    raise LimitExceeded(f"more than {self.limit} memo entries")
                dense.append(value)
                return
            if 0 <= key < len(dense):
                dense[key] = value
                return
            self.sparse = dict(enumerate(dense))
            self.dense = []
        if key not in self.sparse and len(self.sparse) >= self.limit:
            raise LimitExceeded(f"more than {self.limit} memo entries")
        self.sparse[key] = value

    def copy(self) -> Memo:
        twin = Memo(self.limit)
        twin.budget = self.budget
        twin.dense = list(self.dense)
        twin.sparse = None if self.sparse is None else dict(self.sparse)
        return twin
