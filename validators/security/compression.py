"""Compressed single files: the content of a zlib, gzip, bz2, lzma ("alone") or xz stream.

joblib writes its ``compress=`` containers as one compressed stream around the pickle (a
``.z`` file is a bare zlib stream; joblib before 0.10 wrote a ``ZF`` header first, which
``joblib.load`` still reads), and ``joblib.load`` decompresses whatever it detects by the
first bytes. The scanner reads the content the same way, as a stream that is decompressed
as it is read and never held whole in memory, and scans it like any other file
(``archives.scan_stream``): a pickle, a nested archive, another compressed stream.

Like the readers (``BZ2File``, ``LZMAFile``, joblib's ``BinaryZlibFile``), several streams
back to back are one content, read on; data after the last stream that is no stream of the
same kind ends the content, as it ends theirs. The output is bounded: at most ``limit`` bytes
are handed out, and ``over_limit`` says that there was more.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import IO, TYPE_CHECKING, Protocol

from registry.formats import DECODER_MEMORY_LIMIT, ZFILE_HEADER, Format, is_memory_limit

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "CODEC_ERRORS",
    "DECODER_MEMORY_LIMIT",
    "Decoder",
    "Decompressed",
    "ZlibDecoder",
    "codec_name",
]

#: Errors a decompressor raises on data that is not (or no longer) a stream of its kind.
CODEC_ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, MemoryError)

_INPUT_CHUNK = 64 * 1024

_NAMES = {
    Format.ZLIB: "zlib",
    Format.JOBLIB_ZFILE: "zfile",
    Format.GZIP: "gzip",
    Format.BZIP2: "bz2",
    Format.LZMA: "lzma",
    Format.XZ: "xz",
}


class Decoder(Protocol):
    """What ``bz2.BZ2Decompressor`` and ``lzma.LZMADecompressor`` share."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: ReadableBuffer, max_length: int = -1) -> bytes: ...


class ZlibDecoder:
    """``zlib.decompressobj`` behind the interface of the bz2 and lzma decompressors: input
    that could not be used yet is kept (``unconsumed_tail``) and fed again. ``wbits`` picks
    the framing: zlib's, gzip's (``16 + MAX_WBITS``) or none (``-15``, a zip member's raw
    deflate). ``decompress`` gives at most ``max_length`` bytes and asks for at least one:
    zlib reads 0 as no limit, which would let one call inflate a bomb whole."""

    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._tail

    def decompress(self, data: ReadableBuffer, max_length: int = -1) -> bytes:
        out = self._obj.decompress(self._tail + bytes(data), max(max_length, 1))
        self._tail = self._obj.unconsumed_tail
        return out


def codec_name(fmt: Format) -> str:
    return _NAMES[fmt]


def _decoder(fmt: Format) -> Decoder:
    if fmt in (Format.ZLIB, Format.JOBLIB_ZFILE):
        return ZlibDecoder(zlib.MAX_WBITS)
    if fmt is Format.GZIP:
        return ZlibDecoder(16 + zlib.MAX_WBITS)
    if fmt is Format.BZIP2:
        return bz2.BZ2Decompressor()
    if fmt is Format.LZMA:
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=DECODER_MEMORY_LIMIT)
    if fmt is Format.XZ:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=DECODER_MEMORY_LIMIT)
    raise ValueError(f"{fmt} is not a compressed-stream format")


class Decompressed(io.RawIOBase):
    """The content of the compressed stream(s) read from ``raw``, at most ``limit`` bytes.

    It never raises for bad data: a decompression error ends the content and is kept in
    ``error``; data after the last stream that no decompressor takes is counted in
    ``trailing`` (at least that many bytes). ``over_limit`` is set when the content holds more
    than ``limit`` bytes.
    """

    def __init__(self, raw: IO[bytes], fmt: Format, *, limit: int) -> None:
        self._raw = raw
        self._fmt = fmt
        self._limit = limit
        self._decoder = _decoder(fmt)
        self._pending = b""
        if fmt is Format.JOBLIB_ZFILE:
            # joblib's ``read_zfile``: the header, then a space or the first byte of zlib's
            raw.read(ZFILE_HEADER)
            after = raw.read(1)
            self._pending = b"" if after == b" " else after
        self._stream_output = 0
        self._done = False
        self.produced = 0
        self.streams = 1
        self.over_limit = False
        self.trailing = 0
        self.error: str | None = None
        #: liblzma refused the stream for the memory its header asks for
        self.memory_limited = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._done or not len(view):
            return 0
        room = self._limit - self.produced
        if room <= 0:
            # one byte more tells a content of exactly ``limit`` bytes from a larger one
            if self._next(1):
                self.over_limit = True
            self._done = True
            return 0
        data = self._next(min(len(view), room))
        view[: len(data)] = data
        self.produced += len(data)
        return len(data)

    def _next(self, n: int) -> bytes:
        """Up to ``n`` bytes of content; b"" at its end."""
        stalled = 0
        while not self._done:
            decoder = self._decoder
            if decoder.eof:
                if not self._start_next_stream():
                    self._done = True
                continue
            at_end = False
            if decoder.needs_input and not self._pending:
                self._pending = self._raw.read(_INPUT_CHUNK)
                at_end = not self._pending
            data, self._pending = self._pending, b""
            try:
                out = decoder.decompress(data, max(n, 1))
            except CODEC_ERRORS as exc:
                if isinstance(exc, lzma.LZMAError) and is_memory_limit(exc):
                    self.memory_limited = True
                self._end(f"{codec_name(self._fmt)}: {exc}", len(data))
                break
            if out:
                self._stream_output += len(out)
                return out
            stalled = stalled + 1 if not data else 0
            if decoder.eof:
                continue
            if at_end or stalled > 2:
                self._end(f"the {codec_name(self._fmt)} stream ends before its end marker", 0)
        return b""

    def _end(self, error: str, unread: int) -> None:
        """The content ends on data no decompressor takes: after a complete stream that is
        trailing data (it ends ``BZ2File``'s and ``LZMAFile``'s content too), else an error."""
        if self.streams > 1 and not self._stream_output:
            self.trailing = max(self.trailing, unread, 1)
            self.streams -= 1
        else:
            self.error = error
        self._done = True

    def _start_next_stream(self) -> bool:
        rest = self._decoder.unused_data + self._pending
        self._pending = b""
        if not rest:
            rest = self._raw.read(_INPUT_CHUNK)
        if self._fmt is Format.GZIP:
            # zero padding after a gzip member is allowed (gzip.GzipFile skips it)
            rest = rest.lstrip(b"\0")
            if not rest:
                return self._skip_zeros()
        if not rest:
            return False
        self._begin(rest)
        return True

    def _begin(self, data: bytes) -> None:
        self._decoder = _decoder(self._fmt)
        self._pending = data
        self._stream_output = 0
        self.streams += 1

    def _skip_zeros(self) -> bool:
        """Reads on past gzip's zero padding; whether another member follows it."""
        while True:
            chunk = self._raw.read(_INPUT_CHUNK)
            if not chunk:
                return False
            rest = chunk.lstrip(b"\0")
            if rest:
                self._begin(rest)
                return True
