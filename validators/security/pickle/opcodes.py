"""What each opcode does to the emulated stack, memo and mark stack, one handler per family.

``HOT`` holds the opcodes a model's pickle is mostly made of, by byte, as handlers that work
on the reader's window directly: ``handler(machine, buf, pos)`` runs the opcode at
``buf[pos]`` and returns the position after it. A handler that had to refill the window
returns ``~pos`` (a negative number), the position in the new window, and leaves the reader
at the opcode's start. Every other opcode goes through ``dispatch_rare``, which reads its
arguments through the reader. BINFLOAT (read in runs) and STOP are the emulator loop's own.
"""

from __future__ import annotations

import ast
import struct
from collections.abc import Callable

from validators.report import Severity
from validators.security.pickle.machine import Machine
from validators.security.pickle.reader import MAX_LINE, OPCODES, PickleError
from validators.security.pickle.values import OPAQUE, Blob, Global, ListValue, set_item

_UNPACK_I = struct.Struct("<i").unpack_from
_UNPACK_UI = struct.Struct("<I").unpack_from
_UNPACK_H = struct.Struct("<H").unpack_from

HotHandler = Callable[[Machine, bytes, int], int]
#: values that are known not to be strings: a STACK_GLOBAL on one fails in the unpickler
_NOT_STR = (int, float, bytes, tuple, dict, ListValue, Global, type(None))
RareHandler = Callable[[Machine, str, int], None]


# -- the hot opcodes: constants -----------------------------------------------------------------


def _short_binunicode(m: Machine, buf: bytes, pos: int) -> int:
    n = buf[pos + 1]
    if pos + 2 + n <= len(buf):
        m.stack.append(buf[pos + 2 : pos + 2 + n].decode("utf-8", "surrogatepass"))
        return pos + 2 + n
    r = m.r
    r.pos = pos
    if not r.fill(2 + n):
        raise PickleError("truncated pickle")
    pos = r.pos
    m.stack.append(r.buf[pos + 2 : pos + 2 + n].decode("utf-8", "surrogatepass"))
    return ~(pos + 2 + n)


def _binint1(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(buf[pos + 1])
    return pos + 2


def _binint(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(_UNPACK_I(buf, pos + 1)[0])
    return pos + 5


def _binint2(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(_UNPACK_H(buf, pos + 1)[0])
    return pos + 3


def _none(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(None)
    return pos + 1


def _bool(m: Machine, buf: bytes, pos: int) -> int:  # NEWTRUE, NEWFALSE
    m.stack.append(buf[pos] == 0x88)
    return pos + 1


# -- the hot opcodes: the memo ------------------------------------------------------------------


def _memoize(m: Machine, buf: bytes, pos: int) -> int:
    if m.stack:
        m.memo.put(len(m.memo), m.stack[-1])
    else:
        m.malformed("MEMOIZE on an empty stack", m.r.base + pos)
    return pos + 1


def _binput(m: Machine, buf: bytes, pos: int) -> int:
    m.memo_put(buf[pos + 1], m.r.base + pos)
    return pos + 2


def _long_binput(m: Machine, buf: bytes, pos: int) -> int:
    m.memo_put(_UNPACK_UI(buf, pos + 1)[0], m.r.base + pos)
    return pos + 5


def _binget(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(m.memo_get(buf[pos + 1], m.r.base + pos))
    return pos + 2


def _long_binget(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(m.memo_get(_UNPACK_UI(buf, pos + 1)[0], m.r.base + pos))
    return pos + 5


# -- the hot opcodes: containers and marks ------------------------------------------------------


def _mark(m: Machine, buf: bytes, pos: int) -> int:
    m.metastack.append(m.stack)
    m.stack = []
    return pos + 1


def _empty_list(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(ListValue())
    return pos + 1


def _empty_dict(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append({})
    return pos + 1


def _empty_tuple(m: Machine, buf: bytes, pos: int) -> int:
    m.stack.append(())
    return pos + 1


def _append(m: Machine, buf: bytes, pos: int) -> int:
    m.pop(m.r.base + pos)
    return pos + 1


def _appends(m: Machine, buf: bytes, pos: int) -> int:
    m.pop_mark(m.r.base + pos)
    return pos + 1


def _setitem(m: Machine, buf: bytes, pos: int) -> int:
    value = m.pop(m.r.base + pos)
    key = m.pop(m.r.base + pos)
    target = m.stack[-1] if m.stack else None
    if isinstance(target, dict) and len(target) < 64:
        set_item(target, key, value)
    return pos + 1


def _setitems(m: Machine, buf: bytes, pos: int) -> int:
    items = m.pop_mark(m.r.base + pos)
    target = m.stack[-1] if m.stack else None
    if isinstance(target, dict) and len(target) < 64:
        for i in range(0, len(items) - 1, 2):
            set_item(target, items[i], items[i + 1])
    return pos + 1


def _small_tuple(m: Machine, buf: bytes, pos: int) -> int:  # TUPLE1, TUPLE2, TUPLE3
    n = buf[pos] - 0x84
    stack = m.stack
    if len(stack) >= n:
        items = stack[-n:]
        del stack[-n:]
    else:
        items = [m.pop(m.r.base + pos) for _ in range(n)][::-1]
    stack.append(tuple(items))
    return pos + 1


def _tuple(m: Machine, buf: bytes, pos: int) -> int:
    items = m.pop_mark(m.r.base + pos)
    m.stack.append(tuple(items))
    return pos + 1


# -- the hot opcodes: framing -------------------------------------------------------------------


def _frame(m: Machine, buf: bytes, pos: int) -> int:
    return pos + 9  # the frame's opcodes follow inline


def _proto(m: Machine, buf: bytes, pos: int) -> int:
    proto = buf[pos + 1]
    if proto > 5:
        raise PickleError(f"unsupported pickle protocol {proto}")
    if m.scan.strict and not m.first:
        raise PickleError("PROTO in the middle of a pickle")
    m.proto = proto
    m.first = False
    return pos + 2


def _hot_table() -> list[HotHandler | None]:
    table: list[HotHandler | None] = [None] * 256
    handlers: dict[int, HotHandler] = {
        0x94: _memoize, 0x8C: _short_binunicode, 0x4B: _binint1, 0x71: _binput,
        0x68: _binget, 0x28: _mark, 0x65: _appends, 0x75: _setitems, 0x4A: _binint,
        0x4D: _binint2, 0x6A: _long_binget, 0x72: _long_binput, 0x4E: _none, 0x61: _append,
        0x73: _setitem, 0x5D: _empty_list, 0x7D: _empty_dict, 0x29: _empty_tuple,
        0x85: _small_tuple, 0x86: _small_tuple, 0x87: _small_tuple, 0x74: _tuple,
        0x88: _bool, 0x89: _bool, 0x95: _frame, 0x80: _proto,
    }  # fmt: skip
    for op, handler in handlers.items():
        table[op] = handler
    return table


#: the hot opcodes' handlers, by byte (None: not a hot opcode)
HOT = _hot_table()


# -- the rare opcodes: constants ----------------------------------------------------------------

_COUNTED = ("BINUNICODE", "BINUNICODE8", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
            "SHORT_BINBYTES", "SHORT_BINSTRING", "BINSTRING")  # fmt: skip
_COUNT_WIDTHS = {"SHORT_BINBYTES": 1, "SHORT_BINSTRING": 1, "BINUNICODE": 4,
                 "BINBYTES": 4, "BINSTRING": 4}  # fmt: skip


def _counted(m: Machine, name: str, start: int) -> None:
    """A string or bytes constant after its length; one over the policy's limit is skipped."""
    r = m.r
    raw = r.take(_COUNT_WIDTHS.get(name, 8))
    size = int.from_bytes(raw, "little", signed=(name == "BINSTRING"))
    if size < 0:
        raise PickleError("negative string length")
    if size > m.scan.policy.pickle_max_inline_bytes:
        r.skip(size)
        m.stack.append(Blob(size))
        return
    data = r.take(size)
    if name.startswith("BINUNICODE"):
        m.stack.append(data.decode("utf-8", "surrogatepass"))
    elif name in ("SHORT_BINSTRING", "BINSTRING"):
        # a str, as with the unpickler's default encoding (latin-1 covers them all)
        m.stack.append(data.decode("latin-1"))
    else:
        m.stack.append(data)


def _long(m: Machine, name: str, start: int) -> None:  # LONG1, LONG4
    r = m.r
    width = 1 if name == "LONG1" else 4
    size = int.from_bytes(r.take(width), "little", signed=(name == "LONG4"))
    if size < 0:
        raise PickleError("negative LONG4 length")
    if size > 64:
        r.skip(size)
        m.stack.append(OPAQUE)
    else:
        m.stack.append(int.from_bytes(r.take(size), "little", signed=True))


def _line_value(m: Machine, name: str, start: int) -> None:  # INT, LONG, FLOAT, STRING, UNICODE
    m.stack.append(_decode_line(name, m.r.line()))


def _line_text(line: bytes | None) -> object:
    if line is None:
        return Blob(MAX_LINE)
    return line.decode("utf-8", "replace")


def _decode_line(name: str, line: bytes | None) -> object:
    if line is None:
        return Blob(MAX_LINE)
    try:
        if name == "INT":
            if line in (b"00", b"01"):
                return line == b"01"
            return int(line)
        if name == "LONG":
            return int(line.rstrip(b"L"))
        if name == "FLOAT":
            return OPAQUE
        if name == "STRING":
            text = line.decode("latin-1")
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                value = ast.literal_eval("b" + text)
                if isinstance(value, bytes):
                    return value.decode("latin-1")
            raise PickleError("bad STRING argument")
        return line.decode("raw-unicode-escape")
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError) as exc:
        raise PickleError(f"bad {name} argument") from exc


# -- the rare opcodes: containers, the stack and the memo ---------------------------------------


def _set(m: Machine, name: str, start: int) -> None:  # EMPTY_SET, FROZENSET
    if name == "FROZENSET":
        m.pop_mark(start)
    m.stack.append(OPAQUE)


def _list_or_dict(m: Machine, name: str, start: int) -> None:  # LIST, DICT
    items = m.pop_mark(start)
    if name == "DICT":
        value: dict[object, object] = {}
        for i in range(0, min(len(items), 128) - 1, 2):
            set_item(value, items[i], items[i + 1])
        m.stack.append(value)
    else:
        m.stack.append(ListValue())


def _discard_mark(m: Machine, name: str, start: int) -> None:  # ADDITEMS, POP_MARK
    m.pop_mark(start)


def _pop(m: Machine, name: str, start: int) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark(start)


def _dup(m: Machine, name: str, start: int) -> None:
    m.stack.append(m.stack[-1] if m.stack else m.pop(start))


def _memo_line(m: Machine, name: str, start: int) -> None:  # GET, PUT
    line = m.r.line()
    try:
        key = int(line or b"")
    except ValueError:
        raise PickleError(f"bad {name} argument") from None
    if name == "GET":
        m.stack.append(m.memo_get(key, start))
    else:
        m.memo_put(key, start)


# -- the rare opcodes: imports, calls and outside objects ---------------------------------------


def _global(m: Machine, name: str, start: int) -> None:
    module = m.r.line()
    qual = m.r.line()
    m.stack.append(
        m.import_global(_line_text(module), _line_text(qual), route="GLOBAL", offset=start)
    )


def _stack_global(m: Machine, name: str, start: int) -> None:
    top = m.pop(start)
    below = m.pop(start)
    if isinstance(top, _NOT_STR) or isinstance(below, _NOT_STR):
        # the unpickler refuses these ("STACK_GLOBAL requires str"): nothing is imported
        raise PickleError("STACK_GLOBAL on a value that is not a string")
    m.stack.append(m.import_global(below, top, route="STACK_GLOBAL", offset=start))


def _inst(m: Machine, name: str, start: int) -> None:
    module = m.r.line()
    qual = m.r.line()
    cls = m.import_global(_line_text(module), _line_text(qual), route="INST", offset=start)
    items = m.pop_mark(start)
    m.stack.append(m.call(cls, tuple(items), route="INST", offset=start))


def _obj(m: Machine, name: str, start: int) -> None:
    items = m.pop_mark(start)
    cls = items[0] if items else OPAQUE
    m.stack.append(m.call(cls, tuple(items[1:]), route="OBJ", offset=start))


def _reduce(m: Machine, name: str, start: int) -> None:  # REDUCE, NEWOBJ
    arguments = m.pop(start)
    func = m.pop(start)
    m.stack.append(m.call(func, arguments, route=name, offset=start))


def _newobj_ex(m: Machine, name: str, start: int) -> None:
    kwargs = m.pop(start)
    arguments = m.pop(start)
    func = m.pop(start)
    m.stack.append(m.call(func, (arguments, kwargs), route="NEWOBJ_EX", offset=start))


def _build(m: Machine, name: str, start: int) -> None:
    m.build(start)


def _extension(m: Machine, name: str, start: int) -> None:  # EXT1, EXT2, EXT4
    width = {"EXT1": 1, "EXT2": 2, "EXT4": 4}[name]
    code = int.from_bytes(m.r.take(width), "little")
    # copyreg's extension registry is empty in a stock interpreter (a pickle that fills it
    # imports copyreg.add_extension, a dangerous global): only codes the loading program
    # registered itself resolve, so the code is noted and the object it names is trusted
    m.scan.report(
        Severity.LOW,
        "pickle.extension-code",
        str(code),
        f"{name} names copyreg extension code {code}, which resolves only if the loading "
        "program registered it",
        start,
    )
    m.stack.append(Global("<extension>", str(code), "<extension>", None))


def _persistent(m: Machine, name: str, start: int) -> None:  # PERSID, BINPERSID
    if name == "PERSID":
        m.r.line()
    else:
        m.pop(start)
    m.stack.append(OPAQUE)


def _buffer(m: Machine, name: str, start: int) -> None:  # NEXT_BUFFER, READONLY_BUFFER
    if name == "NEXT_BUFFER":
        m.stack.append(OPAQUE)


_RARE: dict[str, RareHandler] = {
    **dict.fromkeys(_COUNTED, _counted),
    "EMPTY_SET": _set, "FROZENSET": _set, "ADDITEMS": _discard_mark, "LIST": _list_or_dict,
    "DICT": _list_or_dict, "POP": _pop, "POP_MARK": _discard_mark, "DUP": _dup,
    "GLOBAL": _global, "STACK_GLOBAL": _stack_global, "INST": _inst, "OBJ": _obj,
    "REDUCE": _reduce, "NEWOBJ": _reduce, "NEWOBJ_EX": _newobj_ex, "BUILD": _build,
    "EXT1": _extension, "EXT2": _extension, "EXT4": _extension, "PERSID": _persistent,
    "BINPERSID": _persistent, "NEXT_BUFFER": _buffer, "READONLY_BUFFER": _buffer,
    "LONG1": _long, "LONG4": _long, "GET": _memo_line, "PUT": _memo_line,
    **dict.fromkeys(("INT", "LONG", "FLOAT", "STRING", "UNICODE"), _line_value),
}  # fmt: skip


def dispatch_rare(m: Machine, op: int) -> None:
    """Run the opcode ``op`` at the reader's position, which is left after it."""
    r = m.r
    start = r.offset
    opcode = OPCODES.get(op)
    if opcode is None:
        raise PickleError(f"invalid opcode {op:#04x}")
    r.pos += 1
    name = opcode.name
    handler = _RARE.get(name)
    if handler is None:
        raise PickleError(f"unsupported opcode {name}")
    handler(m, name, start)
