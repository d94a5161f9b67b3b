"""The unpickler's state, emulated: its stack, mark stack and memo, and what one scan found.

``Machine`` holds one pickle's stack, mark stack and memo with the helpers every opcode uses:
they tolerate malformed pickles (a LOW finding, and an opaque value in place of the missing
one) unless the scan is strict, so that scanning continues. It also judges the two things a
pickle can do: import a global (``import_global``) and call a value (``call``). ``Scan``
collects the findings: one per rule and subject, with repeats counted in its message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from validators.report import Finding, Severity
from validators.security.pickle.classification import (
    BYTES_IO,
    IDENTIFIER,
    LOADER_ARGUMENT,
    LOADERS,
    RECONSTRUCTORS,
    classify_global,
    describe,
    normalise,
    rule_of,
    shorten,
)
from validators.security.pickle.reader import PickleError, Reader
from validators.security.pickle.values import OPAQUE, Call, Global, Memo
from validators.security.policy import SecurityPolicy


@dataclass
class Hit:
    severity: Severity
    rule_id: str
    subject: str
    message: str
    offset: int
    count: int = 1


@dataclass
class Scan:
    location: str
    policy: SecurityPolicy
    depth: int = 0
    strict: bool = False
    #: read as ``pickle.load`` would: joblib's inline array bytes are not stepped over
    plain: bool = False
    opcodes: int = 0
    hits: dict[tuple[str, str], Hit] = field(default_factory=dict)
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
            self.hits[key] = Hit(severity, rule_id, subject, message, offset)
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


class Machine(ABC):
    """One pickle's emulated state. ``scan_embedded`` and ``build`` are the emulator's: they
    start another reading (of an embedded pickle, or of what follows a joblib array)."""

    def __init__(self, scan: Scan, reader: Reader, *, trial: int = 0) -> None:
        self.scan = scan
        self.trial = trial
        self.count = 0
        self.r = reader
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo = Memo(scan.policy.pickle_max_memo)
        self.imported = False
        self.proto = 0
        #: True until PROTO or an opcode off the hot path is read; a strict reading (the
        #: head trial) refuses a PROTO after that
        self.first = True

    @abstractmethod
    def scan_embedded(self, payload: bytes, offset: int) -> None:
        """Scan ``payload``, a constant pickle handed to a loader, into this scan."""

    @abstractmethod
    def build(self, offset: int) -> None:
        """BUILD: set the state of the object below it on the stack."""

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
        return OPAQUE

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
            return OPAQUE

    def memo_put(self, key: int, offset: int) -> None:
        self.memo.put(key, self.stack[-1] if self.stack else self.pop(offset))

    # imports and calls
    def import_global(self, module: object, name: object, *, route: str, offset: int) -> object:
        scan = self.scan
        if not isinstance(module, str) or not isinstance(name, str):
            self.imported = True
            shown = shorten(f"{describe(module)}.{describe(name)}")
            scan.report(
                Severity.HIGH,
                "pickle.unresolved-global",
                shown,
                f"{route} imports a global whose name is computed at load time ({shown})",
                offset,
            )
            return OPAQUE
        importable = bool(IDENTIFIER.match(module.strip()) and IDENTIFIER.match(name.strip()))
        if scan.strict and not importable:
            raise PickleError("not a module name")
        severity = scan.classify(module, name)
        qualified = shorten(f"{module}.{name}")
        if not importable and (severity is None or severity < Severity.CRITICAL):
            # no module path is spelled so: the import fails, and the load with it
            severity = Severity.LOW
            scan.report(
                severity,
                "pickle.unimportable-global",
                qualified,
                f"{route} names {qualified!r}, which no module path spells (the import fails)",
                offset,
            )
        elif severity is not None:
            rule, what = rule_of(severity)
            scan.report(
                severity, rule, qualified, f"{what} {qualified!r} imported via {route}", offset
            )
        # only an import that can succeed can run anything before a later parse error
        self.imported = self.imported or importable
        return Global(module, name, normalise(module, name), severity)

    def call(self, func: object, args: object, *, route: str, offset: int) -> object:
        if isinstance(func, Global):
            result = Call(func, args)
            if func.qualified == "_codecs.encode":
                return _encode_constant(args, result)
            if func.qualified in LOADERS or func.qualified in BYTES_IO:
                payload = _first_bytes(args, LOADER_ARGUMENT.get(func.qualified, 0))
                if payload is not None and func.qualified in LOADERS:
                    self.scan_embedded(payload, offset)
            elif func.severity is Severity.MEDIUM:
                self.report_unknown_call(func, f"{route} calls", offset)
            return result
        if func is OPAQUE or isinstance(func, Call | Global):
            self.scan.report(
                Severity.MEDIUM,
                "pickle.indirect-call",
                route,
                f"{route} calls a value computed at load time",
                offset,
            )
        return Call(func, args)

    def report_unknown_call(self, func: Global, what: str, offset: int) -> None:
        """A callable off the allow-list runs: at least HIGH, whatever it is (a deny-list is
        always one gadget behind)."""
        qualified = shorten(func.qualified)
        self.scan.report(
            Severity.HIGH,
            "pickle.unknown-callable",
            qualified,
            f"{what} {qualified!r}, which is not on the allow-list of callables",
            offset,
        )

    def check_build(self, obj: object, offset: int) -> None:
        """BUILD runs the target's ``__setstate__`` (or sets its attributes): the class of an
        object built off the allow-list is a call, and BUILD on an imported object itself
        rewrites that object (a class, a function, a module-level instance)."""
        if isinstance(obj, Global):
            qualified = shorten(obj.qualified)
            self.scan.report(
                Severity.HIGH,
                "pickle.build-on-global",
                qualified,
                f"BUILD sets the state of the imported object {qualified!r} itself",
                offset,
            )
            return
        if not isinstance(obj, Call) or not isinstance(obj.func, Global):
            return
        cls: object = obj.func
        if obj.func.qualified in RECONSTRUCTORS and isinstance(obj.args, tuple) and obj.args:
            cls = obj.args[0]  # copyreg._reconstructor(cls, base, state): an instance of cls
        if isinstance(cls, Global) and cls.severity is Severity.MEDIUM:
            self.report_unknown_call(cls, "BUILD runs __setstate__ of", offset)


def _first_bytes(args: object, index: int = 0) -> bytes | None:
    """The constant bytes passed as argument ``index`` (the first by default), through an
    ``io.BytesIO`` if any."""
    if not isinstance(args, tuple) or len(args) <= index:
        return None
    first = args[index]
    if isinstance(first, Call) and isinstance(first.func, Global):
        if first.func.qualified in BYTES_IO:
            return _first_bytes(first.args)
        if first.func.qualified == "_codecs.encode":
            first = _encode_constant(first.args, OPAQUE)
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
