"""Reading a pickle stream: a buffered window on it, opcodes and their line arguments.

The stream is read in chunks and large byte blobs are skipped with ``seek`` rather than read,
so memory stays bounded whatever the file size. Protocol-0 lines longer than ``MAX_LINE``
are stepped over, not held.
"""

from __future__ import annotations

import io
import pickletools
from typing import BinaryIO

_CHUNK = 1 << 20
_DISCARD_CHUNK = 1 << 22
MAX_LINE = 1 << 16  # protocol-0 lines longer than this are skipped, not held

#: every opcode the unpickler knows, by its byte
OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}


class PickleError(Exception):
    """The bytes are not a valid pickle at this point."""


class LimitExceeded(Exception):
    """A scan limit of the policy (opcodes, stack depth, memo size, ...) was hit."""


class Reader:
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
            if len(self.buf) - self.pos > MAX_LINE:
                break
            start = len(self.buf)
            before = len(self.buf) - self.pos
            if not self.fill(before + 1):
                raise PickleError("truncated pickle line")
            start = self.pos + before
        self._skip_huge_line()
        return None

    def _skip_huge_line(self) -> None:
        """Discard chunks through the newline that ends a line too long to hold."""
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
                return
            self.base += len(data)
