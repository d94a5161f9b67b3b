"""What the permissive zip reader finds, and the zip format it reads.

An :class:`Entry` is one member as a reader finds it (by the central directory, or by the
local headers); a :class:`Note` is one thing about the zip that ``zipfile`` would refuse it
for, or that no reader reads: ``irregular`` (MEDIUM) when a permissive reader reads past it,
``corrupt`` (HIGH) when no reader does, ``encrypted`` (HIGH) when the content really is.

Beside them are what the central directory reader (``validators.security.zip_raw``), the
local-header walk (``validators.security.zip_local_headers``) and the member decoder
(``validators.security.zip_members``) all read with: the records' signatures, the
general-purpose flags, the compression methods, the decoding of names and zip64 fields, and
:func:`read_at`.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import IO, Literal

__all__ = [
    "BZIP2",
    "CENTRAL",
    "CHUNK",
    "DEFLATED",
    "DESCRIPTOR",
    "END",
    "END64",
    "FLAG_DESCRIPTOR",
    "FLAG_ENCRYPTED",
    "FLAG_PATCHED",
    "FLAG_STRONG",
    "FLAG_UTF8",
    "LOCAL",
    "LOCATOR",
    "LZMA",
    "METHOD_NAMES",
    "REFUSED_FLAGS",
    "STORED",
    "Entry",
    "Note",
    "NoteKind",
    "Severity",
    "decode_name",
    "read_at",
    "zip64_values",
]

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
END = b"PK\x05\x06"
END64 = b"PK\x06\x06"
LOCATOR = b"PK\x06\x07"
DESCRIPTOR = b"PK\x07\x08"

FLAG_ENCRYPTED = 0x1
FLAG_DESCRIPTOR = 0x8
FLAG_PATCHED = 0x20
FLAG_STRONG = 0x40
FLAG_UTF8 = 0x800
#: Flags zipfile refuses a member for (or wants a password for); miniz refuses them too, but
#: only as the central directory states them, and other readers ignore them.
REFUSED_FLAGS = {
    FLAG_ENCRYPTED: "encrypted",
    FLAG_PATCHED: "compressed patched data",
    FLAG_STRONG: "strong encryption",
}

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
METHOD_NAMES = {STORED: "stored", DEFLATED: "deflate", BZIP2: "bzip2", LZMA: "lzma"}
CHUNK = 64 * 1024

Severity = Literal["MEDIUM", "HIGH"]
NoteKind = Literal["irregular", "corrupt", "encrypted"]


@dataclass(frozen=True)
class Note:
    """Something about a zip that ``zipfile`` would refuse it for, or that no reader reads."""

    kind: NoteKind
    message: str
    #: the member it is about, or "" for the whole archive
    name: str = ""

    @property
    def severity(self) -> Severity:
        return "MEDIUM" if self.kind == "irregular" else "HIGH"


@dataclass(frozen=True)
class Entry:
    """One member as a reader finds it."""

    name: str
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    header_offset: int
    #: where the member's data starts (after the local header); None without a local header
    data_offset: int | None
    external_attr: int = 0
    create_system: int = 0
    #: the local header's name when it differs from ``name`` (the central directory's)
    local_name: str | None = None
    #: "central": as the central directory says (miniz, zipfile); "local": as a streaming
    #: reader reads the local headers, where it reads something else
    view: Literal["central", "local"] = "central"

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a reader may know the member by."""
        return (self.name,) if self.local_name is None else (self.name, self.local_name)


def decode_name(raw: bytes, flags: int) -> str:
    # zipfile's decoding: UTF-8 when flagged, else cp437 (which decodes any byte)
    return raw.decode("utf-8", "replace") if flags & FLAG_UTF8 else raw.decode("cp437")


def zip64_values(extra: bytes, *, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """The sizes and offset, with the zip64 extra field's values where they are 0xFFFFFFFF
    (in zipfile's order: uncompressed size, compressed size, header offset)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[pos : pos + 4])
        data = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            values = [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return size, compressed, offset


def read_at(fh: IO[bytes], offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset``; fewer past the end, none at an offset no file has."""
    if not 0 <= offset < 1 << 62 or n <= 0:
        return b""
    try:
        fh.seek(offset)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return b""  # past what the file system allows: past the end of any file
        raise
    return fh.read(n)
