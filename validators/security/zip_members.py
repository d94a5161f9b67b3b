"""A zip member's content, streamed as the readers that load models read it.

:func:`open_member` gives a :class:`MemberReader`, which reads a member from the data after
its local header, stored, deflated, bzip2 or LZMA, with the output bounded by the declared
size, whatever the CRC and the general-purpose flags say. It never raises for bad data: what
a reader would refuse the member for is a :class:`~validators.security.zip_entries.Note`
(``irregular`` when readers read past it, ``corrupt`` when none does, ``encrypted`` when the
content really is), and the content ends there.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import zlib
from typing import IO, TYPE_CHECKING

from registry.formats import DECODER_MEMORY_LIMIT
from validators.security.compression import CODEC_ERRORS, Decoder, ZlibDecoder
from validators.security.zip_entries import (
    BZIP2,
    CHUNK,
    DEFLATED,
    FLAG_ENCRYPTED,
    LZMA,
    METHOD_NAMES,
    STORED,
    Entry,
    Note,
    NoteKind,
    read_at,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["MAX_LZMA_DICTIONARY", "MemberReader", "open_member"]

#: An LZMA member's dictionary size is what liblzma allocates: larger ones are refused.
MAX_LZMA_DICTIONARY = DECODER_MEMORY_LIMIT


class MemberReader(io.RawIOBase):
    """One member's content, decompressed as it is read, at most its declared size (more
    for a stored member whose two sizes differ: the larger, which covers every reader).

    It never raises for bad data: what a reader would refuse it for is noted in ``notes``
    when it is found (a CRC mismatch once the content was read to its end), and the content
    ends there.
    """

    def __init__(self, fh: IO[bytes], entry: Entry) -> None:
        self._fh = fh
        self.entry = entry
        self.notes: list[Note] = []
        self._crc = 0
        self._out = 0
        self._done = False
        self._decoder: Decoder | None = None
        self._stored = entry.method == STORED
        self._input_left = max(entry.compressed, entry.size) if self._stored else entry.compressed
        self._output_left = self._input_left if self._stored else entry.size
        self._pos = entry.data_offset or 0
        if entry.data_offset is None:
            self._done = True  # no local header: the listing noted it, no reader reads it
        elif not self._stored:
            self._decoder = self._open_decoder()
        if self._stored and entry.compressed != entry.size:
            self._note(
                "irregular",
                f"stored member declares {entry.compressed} compressed and {entry.size} "
                "uncompressed bytes",
            )

    def _note(self, kind: NoteKind, message: str) -> None:
        self.notes.append(Note(kind, message, self.entry.name))

    def _fail(self, kind: NoteKind, message: str) -> None:
        self._note(kind, message)
        self._done = True

    def _open_decoder(self) -> Decoder | None:
        method = self.entry.method
        if method == DEFLATED:
            return ZlibDecoder(-15)  # raw deflate
        if method == BZIP2:
            return bz2.BZ2Decompressor()
        if method == LZMA:
            return self._lzma_decoder()
        self._fail(
            "corrupt", f"compression method {method} is not supported: the content is unread"
        )
        return None

    def _lzma_decoder(self) -> Decoder | None:
        # zip's LZMA: a version (2 bytes), the properties' length (2), the properties
        head = self._read_input(4)
        (length,) = struct.unpack("<H", head[2:4]) if len(head) == 4 else (0,)
        props = self._read_input(length)
        if len(props) < 5:
            self._fail("corrupt", "LZMA member without its properties")
            return None
        (dictionary,) = struct.unpack("<I", props[1:5])
        if props[0] >= 9 * 5 * 5 or dictionary > MAX_LZMA_DICTIONARY:
            self._fail("corrupt", f"LZMA properties refused (dictionary of {dictionary} bytes)")
            return None
        lc, lp, pb = props[0] % 9, props[0] // 9 % 5, props[0] // 45
        lzma_filter = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb}
        lzma_filter["dict_size"] = max(dictionary, 4096)
        try:
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
        except lzma.LZMAError as exc:
            self._fail("corrupt", f"LZMA properties refused: {exc}")
            return None

    def _read_input(self, n: int) -> bytes:
        n = min(n, self._input_left)
        if n <= 0:
            return b""
        data = read_at(self._fh, self._pos, n)
        self._pos += len(data)
        self._input_left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._done or not len(view):
            return 0
        want = min(len(view), self._output_left)
        data = self._next(want) if want > 0 else b""
        if not data:
            self._finish()
            return 0
        view[: len(data)] = data
        self._crc = zlib.crc32(data, self._crc)
        self._out += len(data)
        self._output_left -= len(data)
        return len(data)

    def _next(self, n: int) -> bytes:
        if self._decoder is None:
            return self._read_input(n)
        try:
            return self._decompress(self._decoder, n)
        except CODEC_ERRORS as exc:
            self._unreadable(f"{METHOD_NAMES[self.entry.method]} data is broken ({exc})")
            return b""

    def _decompress(self, decoder: Decoder, n: int) -> bytes:
        """Up to ``n`` bytes more; b"" once the stream or its input ends."""
        stalled = 0
        while not decoder.eof and stalled < 3:
            data = self._read_input(CHUNK) if decoder.needs_input else b""
            out = decoder.decompress(data, n)
            if out:
                return out
            if not data and decoder.needs_input:
                break  # no input left
            stalled = 0 if data else stalled + 1
        return b""

    def _has_more(self) -> bool:
        """Whether the compressed data goes on past the declared size (an LZMA member may
        have no end marker: it is not asked)."""
        if self._decoder is None or self._decoder.eof or self.entry.method == LZMA:
            return False
        try:
            return bool(self._decompress(self._decoder, 1))
        except CODEC_ERRORS:
            return False

    def _unreadable(self, message: str) -> None:
        if self.entry.flags & FLAG_ENCRYPTED:
            self._fail(
                "encrypted",
                "flag 0x1 (encrypted) is set and the data does not decompress: it is "
                "encrypted and cannot be scanned",
            )
        else:
            self._fail("corrupt", message)

    def _finish(self) -> None:
        """The content ended (or its declared size was reached): check it as a reader would."""
        if self._done:
            return
        self._done = True
        entry = self.entry
        if self._output_left > 0:
            if entry.flags & FLAG_ENCRYPTED:
                self._unreadable("")
            else:
                self._note(
                    "corrupt",
                    f"the member holds {self._out} bytes of the {entry.size} it declares: "
                    "no reader loads it",
                )
            return
        if self._has_more():
            self._note(
                "irregular",
                f"the {METHOD_NAMES[entry.method]} data holds more than the {entry.size} bytes "
                "declared; readers stop there",
            )
        encrypted = bool(entry.flags & FLAG_ENCRYPTED)
        if self._crc != entry.crc and encrypted:
            self._unreadable("")
            return
        if self._crc != entry.crc:
            self._note(
                "irregular",
                f"CRC mismatch: the content's CRC-32 is {self._crc:#010x}, the header says "
                f"{entry.crc:#010x} (torch.load does not check it; zipfile refuses it)",
            )
        elif encrypted:
            self._note(
                "irregular",
                "flag 0x1 (encrypted) is set but the data is readable as is (its CRC "
                "matches): zipfile and torch.load refuse the member, other readers read it",
            )


def open_member(fh: IO[bytes], entry: Entry) -> MemberReader:
    """A stream of the member's content (see :class:`MemberReader`)."""
    return MemberReader(fh, entry)
