"""A permissive zip reader: a zip's members as the readers that load models find them.

Python's ``zipfile`` refuses zips that other readers load. ``torch.load`` reads a checkpoint
with miniz (caffe2's ``PyTorchStreamReader``), which finds a member through the central
directory, steps over the local header by the local header's own name and extra-field
lengths, never compares the local name with the central one, and is built without its CRC
checks (``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS``). Streaming readers (Java's
``ZipInputStream``, ``stream-unzip``, ...) walk the local headers instead, and never see the
central directory. A scanner that stops where ``zipfile`` does leaves those files unscanned.

So this module reads the zip itself:

- :func:`read_zip` lists the central directory (found as ``zipfile`` finds it, zip64
  included), reads each member's local header, and walks the local headers as a streaming
  reader does (``validators.security.zip_local_headers``). A member only the walk sees, or
  that the walk reads differently (another method or size), is listed too (``view="local"``);
  without a central directory the walk is the listing. A local name that differs from the
  central name is kept beside it.
- :func:`open_member` (``validators.security.zip_members``) streams a member's content as
  those readers do: from the data after the local header, stored, deflated, bzip2 or LZMA,
  with the output bounded by the declared size, whatever the CRC and the general-purpose
  flags say.

What they find, an :class:`Entry` per member and a :class:`Note` per irregularity, is
``validators.security.zip_entries``'s. Callers import all of these names from here.

Nothing here raises for what a permissive reader ignores: each such irregularity becomes a
:class:`Note` (``irregular``, MEDIUM), so that the scanner names it and still scans the
content. What no reader gets past (no local header where the directory points, data cut
short, an unknown compression method) is ``corrupt`` (HIGH); content that is really encrypted
is ``encrypted`` (HIGH).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO

from validators.security.zip_entries import (
    CENTRAL,
    END,
    END64,
    FLAG_ENCRYPTED,
    LOCATOR,
    Entry,
    Note,
    decode_name,
    read_at,
    zip64_values,
)
from validators.security.zip_local_headers import (
    first_local_header,
    read_local_header,
    walk_local_headers,
    with_local_header,
)
from validators.security.zip_members import MemberReader, open_member

__all__ = [
    "FLAG_ENCRYPTED",
    "Entry",
    "MemberReader",
    "Note",
    "RawZip",
    "ZipUnreadable",
    "open_member",
    "read_zip",
]

_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR = struct.Struct("<4sLQL")


class ZipUnreadable(ValueError):
    """Neither a central directory nor a local header: no reader loads this."""


@dataclass
class RawZip:
    entries: list[Entry]
    notes: list[Note] = field(default_factory=list)
    #: more entries than ``max_entries``: the listing stopped there
    truncated: bool = False
    #: whether a central directory was read (False: the local headers are the listing)
    central: bool = True
    #: the entry count the end record states, when it alone refused the zip (``truncated``)
    declared: int | None = None


# -- the central directory ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Directory:
    offset: int
    size: int
    entries: int
    #: added to every offset the directory states (zipfile's shift for a polyglot)
    base: int


def _find_directory(fh: IO[bytes], size: int, notes: list[Note]) -> _Directory | None:
    """Where the central directory is, found as ``zipfile`` finds it: an end record in the
    last 22 bytes, else the last one in the final 64 KiB; zip64 records before it."""
    end_at, record = -1, b""
    if size >= _END.size:
        tail = read_at(fh, size - _END.size, _END.size)
        if tail[:4] == END and tail[-2:] == b"\0\0":
            end_at, record = size - _END.size, tail
    if end_at < 0:
        start = max(0, size - (_END.size + 0xFFFF))
        tail = read_at(fh, start, size - start)
        at = tail.rfind(END)
        if at < 0 or len(tail) - at < _END.size:
            return None
        end_at, record = start + at, tail[at : at + _END.size]
    _, _, _, _, count, cd_size, cd_offset, _ = _END.unpack(record)
    end_of_directory = end_at
    locator = read_at(fh, end_at - _LOCATOR.size, _LOCATOR.size) if end_at >= 20 else b""
    if locator[:4] == LOCATOR:
        at = end_at - _LOCATOR.size - _END64.size
        end64 = read_at(fh, at, _END64.size) if at >= 0 else b""
        if end64[:4] == END64 and len(end64) == _END64.size:
            _, _, _, _, _, _, _, count, cd_size, cd_offset = _END64.unpack(end64)
            end_of_directory = at
        else:
            notes.append(Note("irregular", "a zip64 locator without its zip64 end record"))
    # zipfile's "concat": bytes before the archive (a polyglot) shift every offset
    concat = end_of_directory - cd_size - cd_offset
    for base in (concat, 0) if concat > 0 else (0,):
        if read_at(fh, cd_offset + base, 4) == CENTRAL or (count == 0 and cd_size == 0):
            return _Directory(cd_offset + base, cd_size, count, base)
    notes.append(Note("irregular", "the end record points at no central directory"))
    return None


def _central_entries(
    fh: IO[bytes], directory: _Directory, *, max_entries: int, notes: list[Note]
) -> tuple[list[Entry], bool]:
    entries: list[Entry] = []
    pos, end = directory.offset, directory.offset + directory.size
    while pos < end:
        if len(entries) > max_entries:
            return entries, True
        fixed = read_at(fh, pos, _CENTRAL.size)
        if len(fixed) < _CENTRAL.size or fixed[:4] != CENTRAL:
            notes.append(
                Note(
                    "irregular",
                    f"the central directory is broken at offset {pos}: "
                    "only its first entries were read",
                )
            )
            break
        (_, _, system, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len,
         comment_len, _, _, external, offset) = _CENTRAL.unpack(fixed)  # fmt: skip
        raw_name = fh.read(name_len)
        extra = fh.read(extra_len)
        size, compressed, offset = zip64_values(
            extra, size=size, compressed=compressed, offset=offset
        )
        entries.append(
            Entry(
                decode_name(raw_name, flags),
                method,
                flags,
                crc,
                compressed,
                size,
                offset + directory.base,
                None,
                external_attr=external,
                create_system=system,
            )
        )
        pos += _CENTRAL.size + name_len + extra_len + comment_len
    if len(entries) != directory.entries and directory.entries not in (0xFFFF, 0):
        notes.append(
            Note(
                "irregular",
                f"the end record counts {directory.entries} entries, the central directory "
                f"holds {len(entries)}",
            )
        )
    return entries, False


def read_zip(fh: IO[bytes], *, size: int, max_entries: int, max_member_bytes: int) -> RawZip:
    """The members of the zip read from ``fh`` (``size`` bytes), as the readers find them.

    At most ``max_entries`` + 1 entries are listed (then ``truncated``). Raises
    :class:`ZipUnreadable` when there is neither a central directory nor a local header.
    """
    notes: list[Note] = []
    directory = _find_directory(fh, size, notes)
    entries: list[Entry] = []
    truncated = False
    if directory is not None:
        if directory.entries > max_entries and directory.entries != 0xFFFF:
            # refused from the end record, before the central directory is read
            return RawZip([], notes, truncated=True, declared=directory.entries)
        entries, truncated = _central_entries(fh, directory, max_entries=max_entries, notes=notes)
        entries = [
            with_local_header(e, read_local_header(fh, e.header_offset), notes) for e in entries
        ]
    if truncated:
        return RawZip(entries, notes, truncated=True)
    known = {e.header_offset: e for e in entries if e.data_offset is not None}
    start = first_local_header(fh, size)
    if start is None:
        start = min(known, default=None)
    if directory is None and start is None:
        raise ZipUnreadable("neither a central directory nor a local header")
    walked: list[Entry] = []
    if start is not None:
        walked, truncated = walk_local_headers(
            fh,
            start,
            size=size,
            known=known if directory is not None else None,
            max_entries=max_entries - len(entries),
            max_member_bytes=max_member_bytes,
            notes=notes,
        )
    if directory is None and not walked:
        raise ZipUnreadable("neither a central directory nor a readable local header")
    if directory is None:
        notes.insert(
            0,
            Note(
                "irregular",
                "no central directory: the members were read from their local headers, as "
                "only streaming readers read them (torch.load and zipfile refuse this file)",
            ),
        )
    return RawZip(entries + walked, notes, truncated=truncated, central=directory is not None)
