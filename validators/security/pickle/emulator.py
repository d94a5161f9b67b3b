"""The emulator: it runs a pickle's opcodes on inert values, as an unpickler would, and never
unpickles.

``Pickle.run`` is the opcode loop for one pickle, through STOP; what each opcode does is in
``opcodes``. ``scan_stream`` runs it over every pickle concatenated in a stream. The raw
array bytes joblib writes after a ``NumpyArrayWrapper`` are stepped over, as ``joblib.load``
does; the same bytes are also read as plain ``pickle.load`` would read them (as opcodes), so
a payload disguised as array data is seen too. Constant pickles handed to ``pickle.loads``
and the like are scanned as well (``scan_embedded``).

Malformed input never raises: the emulator tolerates stack and memo errors (a LOW finding,
and values it cannot know become "computed", which makes a later ``STACK_GLOBAL`` HIGH), and a
parse error ends the scan with a finding (HIGH when an import came before it).
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
from typing import BinaryIO

from validators.report import Finding, Severity
from validators.security.pickle.classification import JOBLIB_WRAPPER
from validators.security.pickle.machine import Machine, Scan
from validators.security.pickle.opcodes import HOT, dispatch_rare
from validators.security.pickle.reader import OPCODES, LimitExceeded, PickleError, Reader
from validators.security.pickle.values import OPAQUE, Call, Global
from validators.security.policy import DEFAULT_POLICY, SecurityPolicy

_TRIAL_OPCODES = 8
#: how much of what follows a pickle is read to tell whether another pickle starts there
_NEXT_HEAD = 4096
_DTYPE_SIZE = re.compile(r"[<>|=]?[a-zA-Z?](\d+)")


class _TrialDone(Exception):
    pass


class Pickle(Machine):
    """One pickle: from its first opcode through STOP."""

    # the opcode loop
    def run(self) -> bool:
        """Emulate one pickle through STOP. False when the stream has ended before it."""
        r = self.r
        scan = self.scan
        hot = HOT
        if not r.fill(1):
            return False
        buf = r.buf
        pos = r.pos
        buflen = len(buf)
        count = 0
        check_every = self.trial or 65536
        self.first = True
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
                    self.check_limits()
                op = buf[pos]
                handler = hot[op]
                if handler is not None:
                    pos = handler(self, buf, pos)
                    if pos < 0:  # the handler refilled the window
                        pos = ~pos
                        buf = r.buf
                        buflen = len(buf)
                    continue
                if op == 0x47:  # BINFLOAT, in runs
                    end = _binfloat_run(buf, pos, buflen)
                    n = (end - pos) // 9
                    count += n - 1
                    self.stack.extend([OPAQUE] * n)
                    pos = end
                    continue
                if op == 0x2E:  # STOP
                    r.pos = pos + 1
                    scan.opcodes += count
                    self.pop(r.base + pos)
                    return True
                # everything else goes through the generic path
                self.first = False
                r.pos = pos
                dispatch_rare(self, op)
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

    def check_limits(self) -> None:
        policy = self.scan.policy
        if self.scan.opcodes > policy.pickle_max_opcodes:
            raise LimitExceeded(f"more than {policy.pickle_max_opcodes} opcodes")
        if len(self.stack) + len(self.metastack) > policy.pickle_max_stack:
            raise LimitExceeded(f"stack deeper than {policy.pickle_max_stack}")

    # readings the loop starts
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
        inner = Scan(f"{scan.location}@{offset}>embedded", scan.policy, depth=scan.depth + 1)
        scan_stream(inner, io.BytesIO(payload))
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
        self.check_build(obj, offset)
        if isinstance(obj, Call):
            obj.state = state
            if (
                isinstance(obj.func, Global)
                and obj.func.qualified == JOBLIB_WRAPPER
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
        shadow = Scan(scan.location, scan.policy, depth=scan.depth, plain=True)
        outcome = self.run_shadow(shadow, io.BytesIO(r.buf[r.pos :]), base=r.offset)
        if outcome == "truncated" and not r.eof:
            if r.seekable:
                shadow = Scan(scan.location, scan.policy, depth=scan.depth, plain=True)
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

    def run_shadow(self, shadow: Scan, stream: BinaryIO, *, base: int) -> str:
        reader = Reader(stream)
        reader.base = base
        reader.seekable = False  # never move the stream the main reading shares
        twin = Pickle(shadow, reader)
        twin.stack = list(self.stack)
        twin.metastack = [list(level) for level in self.metastack]
        twin.memo = self.memo.copy()
        twin.proto = self.proto
        try:
            twin.run()
        except PickleError as exc:
            return "truncated" if "truncated" in str(exc) else "error"
        except (LimitExceeded, MemoryError, RecursionError, OverflowError):
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
            nested = Pickle(self.scan, self.r)
            nested.run()
            self.imported = self.imported or nested.imported
            return
        self.check_plain_reading(offset)
        count = 1
        for n in shape:
            count *= n
        if count > self.scan.policy.max_tensor_elements:
            raise LimitExceeded(f"joblib array of {count} elements")
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.r.take(1)[0]
            self.r.skip(padding)
        self.r.skip(count * itemsize)


def _binfloat_run(buf: bytes, pos: int, buflen: int) -> int:
    """The end of the run of whole BINFLOAT opcodes at ``pos`` (floats come in long lists)."""
    end = pos
    while end + 9 <= buflen and buf[end] == 0x47:
        end += 9
    if end == pos:
        raise PickleError("truncated pickle: cut inside BINFLOAT")
    return end


def _dtype_itemsize(dtype: object) -> int | None:
    """The item size of a pickled ``numpy.dtype``; None for object dtypes."""
    if not (isinstance(dtype, Call) and isinstance(dtype.args, tuple) and dtype.args):
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
    if isinstance(fields, Call) and isinstance(fields.args, tuple) and fields.args:
        return isinstance(fields.args[0], str) and fields.args[0].startswith("O")
    return False


def scan_stream(scan: Scan, stream: BinaryIO) -> None:
    """Emulate every pickle in ``stream``, one after the other, into ``scan``."""
    reader = Reader(stream)
    policy = scan.policy
    index = 0
    while True:
        start = reader.offset
        if reader.at_end():
            return
        reader.fill(_NEXT_HEAD)
        if index > 0 and not looks_like_pickle(reader.buf[reader.pos : reader.pos + _NEXT_HEAD]):
            scan.report(
                Severity.LOW,
                "pickle.trailing-data",
                "trailing",
                "data that is not a pickle follows the last pickle",
                start,
            )
            return
        one = Pickle(scan, reader)
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
        except LimitExceeded as exc:
            _report_limit(scan, f"scan limit exceeded: {exc}", reader.offset)
            return
        except (MemoryError, RecursionError, OverflowError) as exc:
            _report_limit(scan, f"scan limit exceeded: {exc!r}", reader.offset)
            return
        index += 1
        if scan.opcodes > policy.pickle_max_opcodes:
            _report_limit(scan, "too many opcodes", reader.offset)
            return


def _report_limit(scan: Scan, message: str, offset: int) -> None:
    scan.report(Severity.HIGH, "pickle.limits", "limits", message, offset)


def looks_like_pickle(head: bytes, *, size: int | None = None) -> bool:
    """Whether these first bytes of a file (of ``size`` bytes, when known) could be read by an
    unpickler: the test follows what CPython's unpickler accepts, not what typical files
    look like.

    - A PROTO header of any protocol CPython reads, 0 to 5 (``torch.load`` reads them too).
    - No header (protocols 0 and 1 need none): the first few opcodes are emulated. They must
      be valid, must not underflow the stack, and any imported module must be spelled like
      one. A PROTO may come anywhere, as the unpickler allows.
    - A first opcode whose argument runs past the head (a 5 kB string, then the payload) is
      accepted when its declared length fits in the file: the unpickler reads it whole.
    """
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) >= 2 and head[1] <= 5
    if head[0] not in OPCODES:
        return False
    scan = Scan("<head>", DEFAULT_POLICY, strict=True)
    one = Pickle(scan, Reader(io.BytesIO(head)), trial=_TRIAL_OPCODES)
    try:
        one.run()
    except _TrialDone:
        return True
    except PickleError as exc:
        # running out of head bytes is fine once an opcode has been read whole
        if "truncated" not in str(exc):
            return False
        return one.count > 1 or _first_opcode_overruns(head, size)
    except (LimitExceeded, ValueError, IndexError, struct.error, OverflowError):
        return False
    return True


_LENGTH_WIDTHS = {
    pickletools.TAKEN_FROM_ARGUMENT1: 1,
    pickletools.TAKEN_FROM_ARGUMENT4: 4,
    pickletools.TAKEN_FROM_ARGUMENT4U: 4,
    pickletools.TAKEN_FROM_ARGUMENT8U: 8,
}


def _first_opcode_overruns(head: bytes, size: int | None) -> bool:
    """Whether the head's first opcode is cut short by the end of the head, and would fit in
    a file of ``size`` bytes: a line with no newline in the head, or a counted string whose
    length runs past the head but not past the file."""
    arg = OPCODES[head[0]].arg
    if arg is None:
        return False
    if arg.n == pickletools.UP_TO_NEWLINE:
        # a long text constant; no module name or number is 4 kB long
        text = head[0] == 0x56 or (head[0] == 0x53 and head[1:2] in (b"'", b'"'))
        return text and b"\n" not in head
    width = _LENGTH_WIDTHS.get(arg.n)
    if width is None or len(head) < 1 + width:
        return False
    length = int.from_bytes(
        head[1 : 1 + width], "little", signed=arg.n == pickletools.TAKEN_FROM_ARGUMENT4
    )
    end = 1 + width + length
    return length >= 0 and end > len(head) and (size is None or end <= size)


def scan_pickle(stream: BinaryIO, *, location: str, policy: SecurityPolicy) -> list[Finding]:
    """Scan every pickle in ``stream`` (from its current position to EOF) without loading it.

    Each finding's location is ``{location}@{offset}``, the offset of the opcode that caused it.
    Never raises on malformed input: a parse error is itself a finding.
    """
    scan = Scan(location, policy)
    try:
        scan_stream(scan, stream)
    except Exception as exc:
        scan.report(
            Severity.HIGH,
            "scanner.error",
            "error",
            f"the pickle scanner failed: {type(exc).__name__}: {exc}",
            0,
        )
    return scan.findings()
