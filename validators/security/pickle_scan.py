"""The pickle scanner: it reads pickle opcodes as data and never unpickles.

``scan_pickle`` emulates what an unpickler would do (its stack, its mark stack and its memo)
with inert values, so that a global is named by the bytes that would name it whatever route
leads there: ``GLOBAL`` and ``INST`` lines, ``STACK_GLOBAL`` operands pushed as any string
opcode or fetched back from the memo, and so on. Every import is classified by the
``SecurityPolicy`` (see ``validators.security.policy`` for the severity mapping). The stream
is read in chunks and large byte blobs are skipped with ``seek`` rather than read, so memory
stays bounded whatever the file size (the memo keeps only what a later step can read back).
Every pickle concatenated in the stream is scanned. The raw array bytes joblib writes after a
``NumpyArrayWrapper`` are stepped over, as ``joblib.load`` does; the same bytes are also read
as plain ``pickle.load`` would read them (as opcodes), so a payload disguised as array data is
seen too. Constant pickles handed to ``pickle.loads`` and the like are scanned as well.

Malformed input never raises: the emulator tolerates stack and memo errors (a LOW finding,
and values it cannot know become "computed", which makes a later ``STACK_GLOBAL`` HIGH), and a
parse error ends the scan with a finding (HIGH when an import came before it).

``check_torch_zip`` checks the member layout of a PyTorch zip checkpoint.

Rule ids: ``pickle.dangerous-global`` (CRITICAL), ``pickle.suspicious-global``,
``pickle.unresolved-global``, ``pickle.parse-error-after-import``, ``pickle.limits``,
``pickle.joblib-unverified``, ``scanner.error`` (HIGH), ``pickle.unknown-global``,
``pickle.indirect-call``, ``pickle.extension-code`` (MEDIUM), ``pickle.parse-error``,
``pickle.malformed``, ``pickle.trailing-data`` (LOW); ``torch.layout`` (LOW to HIGH) and
``torch.torchscript`` (MEDIUM) for zip layouts. One finding per rule and global: repeats are
counted in its message, and a call on a flagged global adds nothing to the global's finding.
"""

from __future__ import annotations

import _compat_pickle
import ast
import io
import pickletools
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import BinaryIO

from validators.report import Finding, Severity
from validators.security.policy import DEFAULT_POLICY, SecurityPolicy

_CHUNK = 1 << 20
_DISCARD_CHUNK = 1 << 22
_MAX_LINE = 1 << 16  # protocol-0 lines longer than this are skipped, not held
_TRIAL_OPCODES = 8
_MAX_NAME = 4096

#: globals whose first argument, when it is a constant, is itself a pickle to scan
_LOADERS = frozenset(
    {
        "pickle.loads", "pickle.load", "pickle._loads", "pickle._load", "_pickle.loads",
        "_pickle.load", "dill.loads", "dill.load", "cloudpickle.loads", "cloudpickle.load",
        "numpy.loads", "torch.load", "torch.serialization.load", "joblib.load",
        "joblib.numpy_pickle.load", "pickle.Unpickler", "_pickle.Unpickler",
    }
)  # fmt: skip
_BYTES_IO = frozenset({"io.BytesIO", "_io.BytesIO"})
_JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
_IDENTIFIER = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*\Z")
_DTYPE_SIZE = re.compile(r"[<>|=]?[a-zA-Z?](\d+)")


class PickleError(Exception):
    """The bytes are not a valid pickle at this point."""


class _LimitExceeded(Exception):
    pass


# -- values the emulator puts on its stack ----------------------------------------------------


class _Opaque:
    """A value the scanner does not track (a float, a list, the result of a call)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<value>"


_OPAQUE = _Opaque()


@dataclass(eq=False)
class _Blob:
    """A string or bytes constant too large to hold; only its size is kept."""

    size: int


@dataclass(eq=False)
class _Global:
    module: str
    name: str
    qualified: str
    severity: Severity | None


@dataclass(eq=False)
class _Call:
    """The result of calling ``func`` (REDUCE, NEWOBJ, OBJ, INST); BUILD sets ``state``."""

    func: object
    args: object
    state: object = None


@dataclass(eq=False)
class _ListValue:
    pass


@dataclass
class _Hit:
    severity: Severity
    rule_id: str
    subject: str
    message: str
    offset: int
    count: int = 1


# -- classification ---------------------------------------------------------------------------


def _matches(qualified: str, entries: frozenset[str]) -> bool:
    """Whether ``module.name`` falls under an entry: the entry itself or anything below it."""
    if qualified in entries:
        return True
    dot = qualified.rfind(".")
    while dot > 0:
        prefix = qualified[:dot]
        if prefix in entries or prefix + ".*" in entries:
            return True
        dot = qualified.rfind(".", 0, dot)
    return False


def _candidate_names(module: str, name: str) -> list[str]:
    """Every ``module.name`` spelling the unpickler could resolve these strings to."""
    pairs = {(module, name)}
    for mod, nam in list(pairs):
        cleaned = (
            unicodedata.normalize("NFKC", mod).strip(),
            unicodedata.normalize("NFKC", nam).strip(),
        )
        pairs.add(cleaned)
    for mod, nam in list(pairs):
        if (mod, nam) in _compat_pickle.NAME_MAPPING:
            pairs.add(_compat_pickle.NAME_MAPPING[(mod, nam)])
        if mod in _compat_pickle.IMPORT_MAPPING:
            pairs.add((_compat_pickle.IMPORT_MAPPING[mod], nam))
    names: list[str] = []
    for mod, nam in pairs:
        names.append(f"{mod}.{nam}")
        parts = nam.split(".")
        # a dotted name is an attribute path: ``posixpath`` + ``os.system`` is os.system
        names.extend(".".join(parts[i:]) for i in range(len(parts) - 1))
    return names


def classify_global(module: str, name: str, *, policy: SecurityPolicy) -> Severity | None:
    """The severity of importing ``module.name``; ``None`` when the policy allows it."""
    if len(module) + len(name) > _MAX_NAME:
        # no importable name is this long: judge the module alone, and refuse the rest
        if len(module) <= _MAX_NAME and _matches(
            module.strip() + ".", policy.pickle_dangerous_globals
        ):
            return Severity.CRITICAL
        return Severity.HIGH
    candidates = _candidate_names(module, name)
    if any(_matches(c, policy.pickle_dangerous_globals) for c in candidates):
        return Severity.CRITICAL
    if any(p.startswith("__") and p.endswith("__") for p in name.split(".")) and name not in (
        "__newobj__",
        "__newobj_ex__",
        "__randomstate_ctor",
        "__bit_generator_ctor",
        "__generator_ctor",
    ):
        return Severity.CRITICAL
    qualified = f"{module}.{name}"
    normal = _normalise(module, name)
    for spelled in (qualified, normal):
        if spelled in policy.pickle_safe_globals or any(
            spelled.startswith(p) for p in policy.pickle_safe_prefixes
        ):
            return None
    if any(_matches(c, policy.pickle_suspicious_globals) for c in candidates):
        return Severity.HIGH
    if "." in name.strip():
        # an attribute path reaches through whatever the module imported (``_sys.modules``)
        return Severity.HIGH
    return Severity.MEDIUM


def _normalise(module: str, name: str) -> str:
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


# -- the buffered reader ----------------------------------------------------------------------


class _Reader:
    """A window on the stream: ``buf[pos:]`` is unread; ``base`` is the offset of ``buf[0]``."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buf = b""
        self.pos = 0
        self.base = 0
        self.eof = False
        #: where the stream stood when scanning began: offsets are counted from here
        self.origin = 0
        try:
            self.seekable = bool(stream.seekable())
            if self.seekable:
                self.origin = stream.tell()
        except (AttributeError, OSError, ValueError):
            self.seekable = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available; False at end of stream."""
        avail = len(self.buf) - self.pos
        if avail >= need:
            return True
        parts = [self.buf[self.pos :]]
        self.base += self.pos
        self.pos = 0
        while avail < need and not self.eof:
            data = self.stream.read(max(need - avail, _CHUNK))
            if not data:
                self.eof = True
                break
            parts.append(data)
            avail += len(data)
        self.buf = b"".join(parts)
        return avail >= need

    def at_end(self) -> bool:
        return not self.fill(1)

    def take(self, n: int) -> bytes:
        if not self.fill(n):
            raise PickleError("truncated pickle")
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        """Step over ``n`` bytes without holding them."""
        avail = len(self.buf) - self.pos
        if n <= avail:
            self.pos += n
            return
        remaining = n - avail
        self.base += len(self.buf)
        self.buf = b""
        self.pos = 0
        if self.seekable:
            # seeking past the end is allowed: the next read then finds the stream truncated
            try:
                self.stream.seek(remaining, io.SEEK_CUR)
            except (OSError, ValueError):
                self.seekable = False
            else:
                self.base += remaining
                return
        while remaining:
            data = self.stream.read(min(remaining, _DISCARD_CHUNK))
            if not data:
                self.eof = True
                raise PickleError("truncated pickle")
            remaining -= len(data)
            self.base += len(data)

    def line(self) -> bytes | None:
        """Read through the next newline; None (after skipping it) when the line is huge."""
        start = self.pos
        while True:
            nl = self.buf.find(b"\n", start)
            if nl >= 0:
                data = self.buf[self.pos : nl]
                self.pos = nl + 1
                return data
            if len(self.buf) - self.pos > _MAX_LINE:
                break
            start = len(self.buf)
            before = len(self.buf) - self.pos
            if not self.fill(before + 1):
                raise PickleError("truncated pickle line")
            start = self.pos + before
        # a huge line: discard chunks until the newline
        self.base += len(self.buf)
        self.buf = b""
        self.pos = 0
        while True:
            data = self.stream.read(_CHUNK)
            if not data:
                self.eof = True
                raise PickleError("truncated pickle line")
            nl = data.find(b"\n")
            if nl >= 0:
                self.buf = data
                self.pos = nl + 1
                return None
            self.base += len(data)


# -- the emulator -----------------------------------------------------------------------------

_OP = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}


@dataclass
class _Scan:
    location: str
    policy: SecurityPolicy
    depth: int = 0
    strict: bool = False
    #: read as ``pickle.load`` would: joblib's inline array bytes are not stepped over
    plain: bool = False
    opcodes: int = 0
    hits: dict[tuple[str, str], _Hit] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)
    known: dict[tuple[str, str], Severity | None] = field(default_factory=dict)

    def report(
        self, severity: Severity, rule_id: str, subject: str, message: str, offset: int
    ) -> None:
        if self.strict:
            return
        key = (rule_id, subject)
        hit = self.hits.get(key)
        if hit is None:
            self.hits[key] = _Hit(severity, rule_id, subject, message, offset)
            self.order.append(key)
        else:
            hit.count += 1
            hit.severity = max(hit.severity, severity)

    def classify(self, module: str, name: str) -> Severity | None:
        key = (module, name)
        try:
            return self.known[key]
        except KeyError:
            severity = classify_global(module, name, policy=self.policy)
            if len(self.known) < 10_000:
                self.known[key] = severity
            return severity

    def findings(self) -> list[Finding]:
        out = []
        for key in self.order:
            hit = self.hits[key]
            message = hit.message if hit.count == 1 else f"{hit.message} ({hit.count} times)"
            out.append(Finding(hit.severity, hit.rule_id, message, f"{self.location}@{hit.offset}"))
        return out


_MEMO_TEXT = 1024  # longer strings are remembered by size only (a name is never that long)
_MEMO_TEXT_BUDGET = 48 * 1024 * 1024  # bytes of strings the memo holds, all together
_FORGOTTEN = _Blob(-1)  # a string the memo did not keep: a name built from it is unresolved
#: dict keys kept while emulating: what joblib's array wrapper state needs
_STATE_KEYS = frozenset(
    {"shape", "dtype", "order", "numpy_array_alignment_bytes", "allow_mmap", "subclass"}
)


class _Memo:
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
        if isinstance(value, dict | _ListValue):
            value = _OPAQUE
        elif isinstance(value, str):
            self.budget -= len(value) + 50
            if len(value) > _MEMO_TEXT or self.budget < 0:
                value = _FORGOTTEN
        dense = self.dense
        if self.sparse is None:
            if key == len(dense):
                if key >= self.limit:
                    raise _LimitExceeded(f"more than {self.limit} memo entries")
                dense.append(value)
                return
            if 0 <= key < len(dense):
                dense[key] = value
                return
            self.sparse = dict(enumerate(dense))
            self.dense = []
        if key not in self.sparse and len(self.sparse) >= self.limit:
            raise _LimitExceeded(f"more than {self.limit} memo entries")
        self.sparse[key] = value

    def copy(self) -> _Memo:
        twin = _Memo(self.limit)
        twin.budget = self.budget
        twin.dense = list(self.dense)
        twin.sparse = None if self.sparse is None else dict(self.sparse)
        return twin


class _Pickle:
    """One pickle: from its first opcode through STOP."""

    def __init__(self, scan: _Scan, reader: _Reader, *, trial: int = 0) -> None:
        self.scan = scan
        self.trial = trial
        self.count = 0
        self.r = reader
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo = _Memo(scan.policy.pickle_max_memo)
        self.imported = False
        self.proto = 0

    # stack helpers that tolerate malformed pickles (unless strict) so scanning continues
    def malformed(self, what: str, offset: int) -> None:
        if self.scan.strict:
            raise PickleError(what)
        self.scan.report(
            Severity.LOW, "pickle.malformed", what, f"malformed pickle: {what}", offset
        )

    def pop(self, offset: int) -> object:
        if self.stack:
            return self.stack.pop()
        self.malformed("stack underflow", offset)
        return _OPAQUE

    def pop_mark(self, offset: int) -> list[object]:
        items = self.stack
        if self.metastack:
            self.stack = self.metastack.pop()
        else:
            self.malformed("MARK missing", offset)
            self.stack = []
        return items

    def memo_get(self, key: int, offset: int) -> object:
        try:
            return self.memo.get(key)
        except KeyError:
            self.malformed("memo key missing", offset)
            return _OPAQUE

    def memo_put(self, key: int, offset: int) -> None:
        self.memo.put(key, self.stack[-1] if self.stack else self.pop(offset))

    # imports and calls
    def import_global(self, module: object, name: object, *, route: str, offset: int) -> object:
        self.imported = True
        scan = self.scan
        if not isinstance(module, str) or not isinstance(name, str):
            shown = _shorten(f"{_describe(module)}.{_describe(name)}")
            scan.report(
                Severity.HIGH,
                "pickle.unresolved-global",
                shown,
                f"{route} imports a global whose name is computed at load time ({shown})",
                offset,
            )
            return _OPAQUE
        if scan.strict and not (
            _IDENTIFIER.match(module.strip()) and _IDENTIFIER.match(name.strip())
        ):
            raise PickleError("not a module name")
        severity = scan.classify(module, name)
        qualified = _shorten(f"{module}.{name}")
        if severity is not None:
            if severity >= Severity.CRITICAL:
                rule, what = "pickle.dangerous-global", "dangerous global"
            elif severity >= Severity.HIGH:
                rule, what = "pickle.suspicious-global", "suspicious global"
            else:
                rule, what = "pickle.unknown-global", "global not in the allowlist"
            scan.report(
                severity, rule, qualified, f"{what} {qualified!r} imported via {route}", offset
            )
        return _Global(module, name, _normalise(module, name), severity)

    def call(self, func: object, args: object, *, route: str, offset: int) -> object:
        if isinstance(func, _Global):
            result = _Call(func, args)
            if func.qualified == "_codecs.encode":
                return _encode_constant(args, result)
            if func.qualified in _LOADERS or func.qualified in _BYTES_IO:
                payload = _first_bytes(args)
                if payload is not None and func.qualified in _LOADERS:
                    self.scan_embedded(payload, offset)
            return result
        if func is _OPAQUE or isinstance(func, _Call | _Global):
            self.scan.report(
                Severity.MEDIUM,
                "pickle.indirect-call",
                route,
                f"{route} calls a value computed at load time",
                offset,
            )
        return _Call(func, args)

    def scan_embedded(self, payload: bytes, offset: int) -> None:
        scan = self.scan
        if scan.depth >= scan.policy.pickle_max_nesting:
            scan.report(
                Severity.HIGH,
                "pickle.limits",
                "nesting",
                "embedded pickles nested too deeply",
                offset,
            )
            return
        inner = _Scan(f"{scan.location}@{offset}>embedded", scan.policy, depth=scan.depth + 1)
        _scan_stream(inner, io.BytesIO(payload))
        for finding in inner.findings():
            scan.report(
                finding.severity,
                finding.rule_id,
                finding.location,
                f"in an embedded pickle ({finding.location}): {finding.message}",
                offset,
            )

    def build(self, offset: int) -> None:
        state = self.pop(offset)
        obj = self.stack[-1] if self.stack else self.pop(offset)
        if isinstance(obj, _Call):
            obj.state = state
            if (
                isinstance(obj.func, _Global)
                and obj.func.qualified == _JOBLIB_WRAPPER
                and not self.scan.plain
            ):
                self.skip_joblib_array(state, offset)

    def check_plain_reading(self, offset: int) -> None:
        """Read on from here as plain ``pickle.load`` would, which does not know that joblib
        writes raw array bytes next: a payload hidden in "array bytes" must not go unseen.

        Only imports of dangerous or suspicious globals count from this reading (array bytes
        read as opcodes are noise), plus unknown and unresolved globals when the reading
        reaches a clean STOP.
        """
        scan = self.scan
        if scan.strict:
            return
        r = self.r
        shadow = _Scan(scan.location, scan.policy, depth=scan.depth, plain=True)
        outcome = self.run_shadow(shadow, io.BytesIO(r.buf[r.pos :]), base=r.offset)
        if outcome == "truncated" and not r.eof:
            if r.seekable:
                shadow = _Scan(scan.location, scan.policy, depth=scan.depth, plain=True)
                here = r.stream.tell()
                r.stream.seek(r.origin + r.offset)
                try:
                    outcome = self.run_shadow(shadow, r.stream, base=r.offset)
                finally:
                    r.stream.seek(here)
            else:
                scan.report(
                    Severity.HIGH,
                    "pickle.joblib-unverified",
                    "plain",
                    "the bytes after a joblib array wrapper could not be read as plain pickle "
                    "opcodes (stream not seekable)",
                    offset,
                )
        kept = {"pickle.dangerous-global", "pickle.suspicious-global"}
        if outcome == "stopped":
            kept |= {"pickle.unknown-global", "pickle.unresolved-global", "pickle.extension-code"}
        for key in shadow.order:
            hit = shadow.hits[key]
            if hit.rule_id in kept:
                scan.report(
                    hit.severity,
                    hit.rule_id,
                    hit.subject,
                    f"{hit.message}, when read with plain pickle.load",
                    hit.offset,
                )

    def run_shadow(self, shadow: _Scan, stream: BinaryIO, *, base: int) -> str:
        reader = _Reader(stream)
        reader.base = base
        reader.seekable = False  # never move the stream the main reading shares
        twin = _Pickle(shadow, reader)
        twin.stack = list(self.stack)
        twin.metastack = [list(level) for level in self.metastack]
        twin.memo = self.memo.copy()
        twin.proto = self.proto
        try:
            twin.run()
        except PickleError as exc:
            return "truncated" if "truncated" in str(exc) else "error"
        except (_LimitExceeded, MemoryError, RecursionError, OverflowError):
            return "error"
        return "stopped"

    def skip_joblib_array(self, state: object, offset: int) -> None:
        """Step over the array bytes joblib writes right after a NumpyArrayWrapper."""
        if not isinstance(state, dict):
            raise PickleError("joblib array wrapper without a readable state")
        dtype = state.get("dtype")
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise PickleError("joblib array wrapper with an unreadable shape")
        itemsize = _dtype_itemsize(dtype)
        if itemsize is None:  # an object array is written as a nested protocol-5 pickle
            nested = _Pickle(self.scan, self.r)
            nested.run()
            self.imported = self.imported or nested.imported
            return
        self.check_plain_reading(offset)
        count = 1
        for n in shape:
            count *= n
        if count > self.scan.policy.max_tensor_elements:
            raise _LimitExceeded(f"joblib array of {count} elements")
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.r.take(1)[0]
            self.r.skip(padding)
        self.r.skip(count * itemsize)

    # the opcode loop
    def run(self) -> bool:
        """Emulate one pickle through STOP. False when the stream has ended before it."""
        r = self.r
        scan = self.scan
        max_opcodes = scan.policy.pickle_max_opcodes
        max_stack = scan.policy.pickle_max_stack
        max_inline = scan.policy.pickle_max_inline_bytes
        memo = self.memo
        unpack_i = struct.Struct("<i").unpack_from
        unpack_I = struct.Struct("<I").unpack_from
        unpack_H = struct.Struct("<H").unpack_from
        opaque = _OPAQUE
        if not r.fill(1):
            return False
        buf = r.buf
        pos = r.pos
        buflen = len(buf)
        count = 0
        check_every = self.trial or 65536
        first = True
        try:
            while True:
                if pos + 9 > buflen:
                    r.pos = pos
                    r.fill(9)
                    buf = r.buf
                    pos = r.pos
                    buflen = len(buf)
                    if pos >= buflen:
                        raise PickleError("truncated pickle: no STOP")
                count += 1
                if count > check_every:
                    if self.trial:
                        raise _TrialDone
                    scan.opcodes += count
                    count = 0
                    if scan.opcodes > max_opcodes:
                        raise _LimitExceeded(f"more than {max_opcodes} opcodes")
                    if len(self.stack) + len(self.metastack) > max_stack:
                        raise _LimitExceeded(f"stack deeper than {max_stack}")
                op = buf[pos]
                start = pos
                # hot opcodes first
                if op == 0x47:  # BINFLOAT, in runs
                    stack = self.stack
                    n = 0
                    while pos + 9 <= buflen and buf[pos] == 0x47:
                        pos += 9
                        n += 1
                    if not n:
                        raise PickleError("truncated pickle: cut inside BINFLOAT")
                    count += n - 1
                    stack.extend([opaque] * n)
                    continue
                if op == 0x94:  # MEMOIZE
                    pos += 1
                    if self.stack:
                        memo.put(len(memo), self.stack[-1])
                    else:
                        self.malformed("MEMOIZE on an empty stack", r.base + start)
                    continue
                if op == 0x8C:  # SHORT_BINUNICODE
                    n = buf[pos + 1]
                    if pos + 2 + n > buflen:
                        r.pos = pos
                        if not r.fill(2 + n):
                            raise PickleError("truncated pickle")
                        buf = r.buf
                        pos = r.pos
                        buflen = len(buf)
                    self.stack.append(buf[pos + 2 : pos + 2 + n].decode("utf-8", "surrogatepass"))
                    pos += 2 + n
                    continue
                if op == 0x4B:  # BININT1
                    self.stack.append(buf[pos + 1])
                    pos += 2
                    continue
                if op == 0x71:  # BINPUT
                    pos += 2
                    self.memo_put(buf[pos - 1], r.base + start)
                    continue
                if op == 0x68:  # BINGET
                    pos += 2
                    self.stack.append(self.memo_get(buf[pos - 1], r.base + start))
                    continue
                if op == 0x28:  # MARK
                    pos += 1
                    self.metastack.append(self.stack)
                    self.stack = []
                    continue
                if op == 0x65:  # APPENDS
                    pos += 1
                    self.pop_mark(r.base + start)
                    continue
                if op == 0x75:  # SETITEMS
                    pos += 1
                    items = self.pop_mark(r.base + start)
                    target = self.stack[-1] if self.stack else None
                    if isinstance(target, dict) and len(target) < 64:
                        for i in range(0, len(items) - 1, 2):
                            _set_item(target, items[i], items[i + 1])
                    continue
                if op == 0x4A:  # BININT
                    self.stack.append(unpack_i(buf, pos + 1)[0])
                    pos += 5
                    continue
                if op == 0x4D:  # BININT2
                    self.stack.append(unpack_H(buf, pos + 1)[0])
                    pos += 3
                    continue
                if op == 0x6A:  # LONG_BINGET
                    pos += 5
                    self.stack.append(self.memo_get(unpack_I(buf, pos - 4)[0], r.base + start))
                    continue
                if op == 0x72:  # LONG_BINPUT
                    pos += 5
                    self.memo_put(unpack_I(buf, pos - 4)[0], r.base + start)
                    continue
                if op == 0x4E:  # NONE
                    pos += 1
                    self.stack.append(None)
                    continue
                if op == 0x61:  # APPEND
                    pos += 1
                    self.pop(r.base + start)
                    continue
                if op == 0x73:  # SETITEM
                    pos += 1
                    value = self.pop(r.base + start)
                    key = self.pop(r.base + start)
                    target = self.stack[-1] if self.stack else None
                    if isinstance(target, dict) and len(target) < 64:
                        _set_item(target, key, value)
                    continue
                if op == 0x5D:  # EMPTY_LIST
                    pos += 1
                    self.stack.append(_ListValue())
                    continue
                if op == 0x7D:  # EMPTY_DICT
                    pos += 1
                    self.stack.append({})
                    continue
                if op == 0x29:  # EMPTY_TUPLE
                    pos += 1
                    self.stack.append(())
                    continue
                if op in (0x85, 0x86, 0x87):  # TUPLE1..3
                    pos += 1
                    n = op - 0x84
                    stack = self.stack
                    if len(stack) >= n:
                        items = stack[-n:]
                        del stack[-n:]
                    else:
                        items = [self.pop(r.base + start) for _ in range(n)][::-1]
                    stack.append(tuple(items))
                    continue
                if op == 0x74:  # TUPLE
                    pos += 1
                    items = self.pop_mark(r.base + start)
                    self.stack.append(tuple(items))
                    continue
                if op in (0x88, 0x89):  # NEWTRUE, NEWFALSE
                    pos += 1
                    self.stack.append(op == 0x88)
                    continue
                if op == 0x2E:  # STOP
                    r.pos = pos + 1
                    scan.opcodes += count
                    self.pop(r.base + start)
                    return True
                if op == 0x95:  # FRAME: the frame's opcodes follow inline
                    pos += 9
                    continue
                if op == 0x80:  # PROTO
                    proto = buf[pos + 1]
                    if proto > 5:
                        raise PickleError(f"unsupported pickle protocol {proto}")
                    if scan.strict and not first:
                        raise PickleError("PROTO in the middle of a pickle")
                    self.proto = proto
                    pos += 2
                    first = False
                    continue
                first = False
                # everything else goes through the generic path
                r.pos = pos
                self.dispatch_rare(op, max_inline)
                buf = r.buf
                pos = r.pos
                buflen = len(buf)
        except (IndexError, struct.error) as exc:
            raise PickleError(f"truncated pickle ({exc})") from None
        except UnicodeDecodeError as exc:
            raise PickleError(f"invalid UTF-8 in a string ({exc.reason})") from None
        finally:
            scan.opcodes += count
            self.count = count

    def dispatch_rare(self, op: int, max_inline: int) -> None:
        r = self.r
        start = r.offset
        opcode = _OP.get(op)
        if opcode is None:
            raise PickleError(f"invalid opcode {op:#04x}")
        r.pos += 1
        name = opcode.name
        if name in ("BINUNICODE", "BINUNICODE8", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
                    "SHORT_BINBYTES", "SHORT_BINSTRING", "BINSTRING"):  # fmt: skip
            width = {"SHORT_BINBYTES": 1, "SHORT_BINSTRING": 1, "BINUNICODE": 4,
                     "BINBYTES": 4, "BINSTRING": 4}.get(name, 8)  # fmt: skip
            raw = r.take(width)
            size = int.from_bytes(raw, "little", signed=(name == "BINSTRING"))
            if size < 0:
                raise PickleError("negative string length")
            if size > max_inline:
                r.skip(size)
                self.stack.append(_Blob(size))
                return
            data = r.take(size)
            if name.startswith("BINUNICODE"):
                self.stack.append(data.decode("utf-8", "surrogatepass"))
            elif name in ("SHORT_BINSTRING", "BINSTRING"):
                # a str, as with the unpickler's default encoding (latin-1 covers them all)
                self.stack.append(data.decode("latin-1"))
            else:
                self.stack.append(data)
            return
        if name in ("EMPTY_SET", "FROZENSET"):
            if name == "FROZENSET":
                self.pop_mark(start)
            self.stack.append(_OPAQUE)
            return
        if name == "ADDITEMS":
            self.pop_mark(start)
            return
        if name in ("LIST", "DICT"):
            items = self.pop_mark(start)
            if name == "DICT":
                value: dict[object, object] = {}
                for i in range(0, min(len(items), 128) - 1, 2):
                    _set_item(value, items[i], items[i + 1])
                self.stack.append(value)
            else:
                self.stack.append(_ListValue())
            return
        if name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark(start)
            return
        if name == "POP_MARK":
            self.pop_mark(start)
            return
        if name == "DUP":
            self.stack.append(self.stack[-1] if self.stack else self.pop(start))
            return
        if name == "GLOBAL":
            module = r.line()
            qual = r.line()
            self.stack.append(
                self.import_global(
                    _line_text(module), _line_text(qual), route="GLOBAL", offset=start
                )
            )
            return
        if name == "STACK_GLOBAL":
            top = self.pop(start)
            below = self.pop(start)
            self.stack.append(self.import_global(below, top, route="STACK_GLOBAL", offset=start))
            return
        if name == "INST":
            module = r.line()
            qual = r.line()
            cls = self.import_global(
                _line_text(module), _line_text(qual), route="INST", offset=start
            )
            items = self.pop_mark(start)
            self.stack.append(self.call(cls, tuple(items), route="INST", offset=start))
            return
        if name == "OBJ":
            items = self.pop_mark(start)
            cls = items[0] if items else _OPAQUE
            self.stack.append(self.call(cls, tuple(items[1:]), route="OBJ", offset=start))
            return
        if name == "REDUCE":
            arguments = self.pop(start)
            func = self.pop(start)
            self.stack.append(self.call(func, arguments, route="REDUCE", offset=start))
            return
        if name == "NEWOBJ":
            arguments = self.pop(start)
            func = self.pop(start)
            self.stack.append(self.call(func, arguments, route="NEWOBJ", offset=start))
            return
        if name == "NEWOBJ_EX":
            kwargs = self.pop(start)
            arguments = self.pop(start)
            func = self.pop(start)
            self.stack.append(self.call(func, (arguments, kwargs), route="NEWOBJ_EX", offset=start))
            return
        if name == "BUILD":
            self.build(start)
            return
        if name in ("EXT1", "EXT2", "EXT4"):
            width = {"EXT1": 1, "EXT2": 2, "EXT4": 4}[name]
            code = int.from_bytes(r.take(width), "little")
            self.imported = True
            self.scan.report(
                Severity.MEDIUM,
                "pickle.extension-code",
                str(code),
                f"{name} imports the object registered as copyreg extension code {code}",
                start,
            )
            self.stack.append(_Global("<extension>", str(code), "<extension>", Severity.MEDIUM))
            return
        if name in ("PERSID", "BINPERSID"):
            if name == "PERSID":
                r.line()
            else:
                self.pop(start)
            self.stack.append(_OPAQUE)
            return
        if name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            if name == "NEXT_BUFFER":
                self.stack.append(_OPAQUE)
            return
        if name in ("LONG1", "LONG4"):
            width = 1 if name == "LONG1" else 4
            size = int.from_bytes(r.take(width), "little", signed=(name == "LONG4"))
            if size < 0:
                raise PickleError("negative LONG4 length")
            if size > 64:
                r.skip(size)
                self.stack.append(_OPAQUE)
            else:
                self.stack.append(int.from_bytes(r.take(size), "little", signed=True))
            return
        if name in ("GET", "PUT"):
            line = r.line()
            try:
                key = int(line or b"")
            except ValueError:
                raise PickleError(f"bad {name} argument") from None
            if name == "GET":
                self.stack.append(self.memo_get(key, start))
            else:
                self.memo_put(key, start)
            return
        if name in ("INT", "LONG", "FLOAT", "STRING", "UNICODE"):
            line = r.line()
            self.stack.append(_decode_line(name, line))
            return
        raise PickleError(f"unsupported opcode {name}")


def _set_item(target: dict[object, object], key: object, value: object) -> None:
    if isinstance(key, str) and key in _STATE_KEYS:
        target[key] = value


def _line_text(line: bytes | None) -> object:
    if line is None:
        return _Blob(_MAX_LINE)
    return line.decode("utf-8", "replace")


def _decode_line(name: str, line: bytes | None) -> object:
    if line is None:
        return _Blob(_MAX_LINE)
    try:
        if name == "INT":
            if line in (b"00", b"01"):
                return line == b"01"
            return int(line)
        if name == "LONG":
            return int(line.rstrip(b"L"))
        if name == "FLOAT":
            return _OPAQUE
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


def _shorten(text: str, limit: int = 200) -> str:
    """Names in messages are cut: a finding must not carry a megabyte of attacker text."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def _describe(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _Global):
        return f"<{value.qualified}>"
    if isinstance(value, _Call) and isinstance(value.func, _Global):
        return f"<result of {value.func.qualified}>"
    return "<computed>"


def _first_bytes(args: object) -> bytes | None:
    """The constant bytes passed as the first argument, through an ``io.BytesIO`` if any."""
    if not isinstance(args, tuple) or not args:
        return None
    first = args[0]
    if isinstance(first, _Call) and isinstance(first.func, _Global):
        if first.func.qualified in _BYTES_IO:
            return _first_bytes(first.args)
        if first.func.qualified == "_codecs.encode":
            first = _encode_constant(first.args, _OPAQUE)
    if isinstance(first, bytes):
        return first
    if isinstance(first, str):
        return first.encode("latin-1", "replace")
    return None


def _encode_constant(args: object, fallback: object) -> object:
    """``_codecs.encode(text, "latin1")``: how protocol 2 spells bytes."""
    if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
        try:
            return args[0].encode(args[1] if isinstance(args[1], str) else "utf-8")
        except (LookupError, UnicodeError, ValueError, TypeError):
            return fallback
    return fallback


def _dtype_itemsize(dtype: object) -> int | None:
    """The item size of a pickled ``numpy.dtype``; None for object dtypes."""
    if not (isinstance(dtype, _Call) and isinstance(dtype.args, tuple) and dtype.args):
        raise PickleError("joblib array wrapper without a readable dtype")
    descr = dtype.args[0]
    if not isinstance(descr, str):
        raise PickleError("joblib array wrapper without a readable dtype")
    if descr.startswith("O"):
        return None
    state = dtype.state
    if isinstance(state, tuple) and len(state) >= 6:
        fields, elsize = state[4], state[5]
        # a structured dtype holding objects is pickled, not written raw
        if fields is not None and _has_object_field(fields):
            return None
        if isinstance(elsize, int) and elsize > 0:
            return elsize
    match = _DTYPE_SIZE.fullmatch(descr)
    if match is None:
        raise PickleError(f"joblib array wrapper with dtype {descr!r}")
    return int(match.group(1))


def _has_object_field(fields: object) -> bool:
    if isinstance(fields, dict):
        return any(_has_object_field(v) for v in fields.values())
    if isinstance(fields, tuple):
        return any(_has_object_field(v) for v in fields)
    if isinstance(fields, _Call) and isinstance(fields.args, tuple) and fields.args:
        return isinstance(fields.args[0], str) and fields.args[0].startswith("O")
    return False


def _scan_stream(scan: _Scan, stream: BinaryIO) -> None:
    reader = _Reader(stream)
    policy = scan.policy
    index = 0
    while True:
        start = reader.offset
        if reader.at_end():
            return
        reader.fill(256)
        if index > 0 and not looks_like_pickle(reader.buf[reader.pos : reader.pos + 256]):
            scan.report(
                Severity.LOW,
                "pickle.trailing-data",
                "trailing",
                "data that is not a pickle follows the last pickle",
                start,
            )
            return
        one = _Pickle(scan, reader)
        try:
            if not one.run():
                return
        except PickleError as exc:
            if one.imported:
                scan.report(
                    Severity.HIGH,
                    "pickle.parse-error-after-import",
                    "parse",
                    f"pickle is invalid after it imports a global: {exc}",
                    reader.offset,
                )
            else:
                scan.report(
                    Severity.LOW,
                    "pickle.parse-error",
                    "parse",
                    f"invalid pickle: {exc}",
                    reader.offset,
                )
            return
        except _LimitExceeded as exc:
            scan.report(
                Severity.HIGH,
                "pickle.limits",
                "limits",
                f"scan limit exceeded: {exc}",
                reader.offset,
            )
            return
        except (MemoryError, RecursionError, OverflowError) as exc:
            scan.report(
                Severity.HIGH,
                "pickle.limits",
                "limits",
                f"scan limit exceeded: {exc!r}",
                reader.offset,
            )
            return
        index += 1
        if scan.opcodes > policy.pickle_max_opcodes:
            scan.report(Severity.HIGH, "pickle.limits", "limits", "too many opcodes", reader.offset)
            return


# -- public API -------------------------------------------------------------------------------


def looks_like_pickle(head: bytes) -> bool:
    """Whether these first bytes of a file could be read by an unpickler.

    Protocol 2-5 pickles start with PROTO. Protocol 0 and 1 pickles have no header, so the
    first few opcodes are emulated: they must be valid and must not underflow the stack, and
    any imported module must be spelled like one.
    """
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) >= 2 and 2 <= head[1] <= 5
    if head[0] not in _OP:
        return False
    scan = _Scan("<head>", DEFAULT_POLICY, strict=True)
    one = _Pickle(scan, _Reader(io.BytesIO(head)), trial=_TRIAL_OPCODES)
    try:
        one.run()
    except _TrialDone:
        return True
    except PickleError as exc:
        # running out of head bytes is fine once an opcode has been read whole
        return "truncated" in str(exc) and one.count > 1
    except (_LimitExceeded, ValueError, IndexError, struct.error, OverflowError):
        return False
    return True


class _TrialDone(Exception):
    pass


def scan_pickle(stream: BinaryIO, *, location: str, policy: SecurityPolicy) -> list[Finding]:
    """Scan every pickle in ``stream`` (from its current position to EOF) without loading it.

    Each finding's location is ``{location}@{offset}``, the offset of the opcode that caused it.
    Never raises on malformed input: a parse error is itself a finding.
    """
    scan = _Scan(location, policy)
    try:
        _scan_stream(scan, stream)
    except Exception as exc:
        scan.report(
            Severity.HIGH,
            "scanner.error",
            "error",
            f"the pickle scanner failed: {type(exc).__name__}: {exc}",
            0,
        )
    return scan.findings()


#: members a PyTorch zip checkpoint holds, below its single top-level folder
_TORCH_FILES = frozenset(
    {"data.pkl", "version", ".data/version", "byteorder", ".data/serialization_id",
     "constants.pkl", ".format_version", ".storage_alignment"}
)  # fmt: skip
_TORCH_FOLDERS = ("data/", "code/", "constants/", ".data/", "extra/")


def check_torch_zip(names: list[str], *, location: str) -> list[Finding]:
    """Check that zip member names follow the PyTorch checkpoint layout.

    The layout is one top-level folder holding ``data.pkl``, ``version`` (or
    ``.data/version``), storages under ``data/`` and optionally ``byteorder``,
    ``.data/serialization_id``, ``constants.pkl`` and TorchScript ``code/``. Storage names are
    not checked: the archive scanner reads every member that looks like a pickle anyway.
    """
    findings: list[Finding] = []
    files = [n for n in names if not n.endswith("/")]
    prefixes = {n.split("/", 1)[0] for n in files if "/" in n}
    top_level = [n for n in files if "/" not in n]
    for name in top_level:
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"member {name!r} is outside the checkpoint folder",
                f"{location}:{name}",
            )
        )
    if len(prefixes) != 1:
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"expected one top-level folder, found {len(prefixes)}",
                location,
            )
        )
        if not prefixes:
            return findings
    prefix = sorted(prefixes)[0]
    inner = {n.split("/", 1)[1] for n in files if n.startswith(prefix + "/")}
    for name in sorted(n for n in files if "/" in n and n.split("/", 1)[0] != prefix):
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"member {name!r} is outside {prefix}/",
                f"{location}:{name}",
            )
        )
    if "data.pkl" not in inner:
        findings.append(
            Finding(Severity.MEDIUM, "torch.layout", f"{prefix}/data.pkl is missing", location)
        )
    if "version" not in inner and ".data/version" not in inner:
        findings.append(
            Finding(Severity.LOW, "torch.layout", f"{prefix}/version is missing", location)
        )
    code_seen = False
    for name in sorted(inner):
        member = f"{location}:{prefix}/{name}"
        if ".." in name.split("/") or name.startswith("/") or "\\" in name:
            findings.append(
                Finding(
                    Severity.HIGH,
                    "torch.layout",
                    f"member path {name!r} escapes the folder",
                    member,
                )
            )
        elif name.startswith("code/"):
            code_seen = True
        elif name in _TORCH_FILES or name.startswith(_TORCH_FOLDERS):
            continue
        elif name.endswith(".pkl"):
            findings.append(
                Finding(
                    Severity.MEDIUM, "torch.layout", f"unexpected pickle member {name!r}", member
                )
            )
        else:
            findings.append(
                Finding(Severity.LOW, "torch.layout", f"unexpected member {name!r}", member)
            )
    if code_seen:
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.torchscript",
                "the checkpoint holds TorchScript code (code/), which runs when it is loaded "
                "with torch.jit.load",
                f"{location}:{prefix}/code/",
            )
        )
    return findings
