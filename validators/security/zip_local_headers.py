"""A zip's local headers, read as the readers that load models read them.

miniz (``torch.load``) finds a member through the central directory, then steps over the
local header by the local header's own name and extra-field lengths; streaming readers
(Java's ``ZipInputStream``, ``stream-unzip``, ...) walk the local headers and never see the
central directory. For :func:`validators.security.zip_raw.read_zip`:

- :func:`read_local_header` reads the local header at an offset, and
  :func:`with_local_header` gives a central directory entry where its data starts, noting
  what its local header says otherwise (flags, method, a differing name, kept beside the
  central one);
- :func:`walk_local_headers` walks the local headers as a streaming reader does, from
  :func:`first_local_header`: each header, its data, its data descriptor, then the next. A
  member only the walk sees, or that the walk reads differently (another method or size), is
  listed (``view="local"``); a member with a data descriptor and no size is measured by
  inflating it, as a streaming reader does.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace
from typing import IO

from validators.security.zip_entries import (
    CENTRAL,
    CHUNK,
    DEFLATED,
    DESCRIPTOR,
    END,
    END64,
    FLAG_DESCRIPTOR,
    FLAG_ENCRYPTED,
    LOCAL,
    REFUSED_FLAGS,
    Entry,
    Note,
    decode_name,
    read_at,
    zip64_values,
)

__all__ = [
    "LocalHeader",
    "first_local_header",
    "read_local_header",
    "walk_local_headers",
    "with_local_header",
]

_LOCAL = struct.Struct("<4s2B4HL2L2H")


@dataclass(frozen=True)
class LocalHeader:
    offset: int
    name: str
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    data_offset: int


def read_local_header(fh: IO[bytes], offset: int) -> LocalHeader | None:
    fixed = read_at(fh, offset, _LOCAL.size)
    if len(fixed) < _LOCAL.size or fixed[:4] != LOCAL:
        return None
    (_, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len) = _LOCAL.unpack(
        fixed
    )
    raw_name = fh.read(name_len)
    extra = fh.read(extra_len)
    size, compressed, _ = zip64_values(extra, size=size, compressed=compressed, offset=0)
    data_offset = offset + _LOCAL.size + name_len + extra_len
    return LocalHeader(
        offset, decode_name(raw_name, flags), flags, method, crc, compressed, size, data_offset
    )


def with_local_header(entry: Entry, local: LocalHeader | None, notes: list[Note]) -> Entry:
    """The central entry, with where its data is and what its local header says otherwise."""
    if local is None:
        notes.append(
            Note(
                "corrupt",
                f"no local header at offset {entry.header_offset}: no reader can read it",
                entry.name,
            )
        )
        return entry
    for bit, what in REFUSED_FLAGS.items():
        if local.flags & bit and not entry.flags & bit:
            notes.append(
                Note("irregular", f"the local header sets flag {bit:#x} ({what})", entry.name)
            )
        elif entry.flags & bit and bit != FLAG_ENCRYPTED:
            # flag 0x1 is judged once the content is read: plain data, or encrypted
            notes.append(
                Note(
                    "irregular",
                    f"flag {bit:#x} ({what}) is set: zipfile and torch.load refuse the "
                    "member, other readers read its data as it is",
                    entry.name,
                )
            )
    if local.method != entry.method:
        notes.append(
            Note(
                "irregular",
                f"the local header says compression method {local.method}, the central "
                f"directory {entry.method}",
                entry.name,
            )
        )
    local_name = None
    if local.name != entry.name:
        local_name = local.name
        notes.append(
            Note(
                "irregular",
                f"local name {local.name!r} differs from central name {entry.name!r}",
                entry.name,
            )
        )
    return replace(entry, data_offset=local.data_offset, local_name=local_name)


def walk_local_headers(
    fh: IO[bytes], start: int, *, size: int, known: dict[int, Entry] | None, max_entries: int,
    max_member_bytes: int, notes: list[Note],
) -> tuple[list[Entry], bool]:  # fmt: skip
    """The members a streaming reader finds from ``start``: each local header, its data, its
    data descriptor, then the next header. Those the central directory (``known``, by
    offset; None when there is none) lists and reads the same way are not repeated."""
    found: list[Entry] = []
    pos = start
    while pos + 4 <= size:
        if len(found) > max_entries:
            return found, True
        local = read_local_header(fh, pos)
        if local is None:
            if read_at(fh, pos, 4) not in (CENTRAL, END, END64, DESCRIPTOR) and known is None:
                notes.append(Note("corrupt", f"no zip header at offset {pos}: the rest is unread"))
            break
        central = known.get(pos) if known is not None else None
        compressed, length = local.compressed, local.compressed
        if local.flags & FLAG_DESCRIPTOR and not compressed:
            if central is not None:
                length = central.compressed  # trust the directory: no second decompression
            else:
                inflated = _deflated_length(fh, local, limit=max_member_bytes)
                if inflated is None:
                    notes.append(
                        Note(
                            "corrupt",
                            f"member at offset {pos} has a data descriptor and no size, and "
                            "its end cannot be found: the rest is unread",
                            local.name,
                        )
                    )
                    break
                length, produced = inflated
                if produced > max_member_bytes:
                    # a bomb: listed with what it gave so far, for the header checks to refuse
                    found.append(
                        Entry(
                            local.name,
                            local.method,
                            local.flags,
                            local.crc,
                            length,
                            produced,
                            pos,
                            local.data_offset,
                            view="local",
                        )
                    )
                    return found, False
                local = replace(local, size=produced)
            compressed = length
        end = local.data_offset + length
        if end > size:
            notes.append(
                Note("corrupt", f"member data at offset {pos} runs past the end", local.name)
            )
        crc, declared = local.crc, local.size
        if local.flags & FLAG_DESCRIPTOR:
            crc, declared = _descriptor(fh, end, crc=crc, size=declared)
        entry = Entry(
            local.name, local.method, local.flags, crc, compressed, declared,
            pos, local.data_offset, view="local",
        )  # fmt: skip
        if central is None:
            if known is not None:
                notes.append(
                    Note(
                        "irregular",
                        f"local header at offset {pos} is not in the central directory: "
                        "only streaming readers see it",
                        local.name,
                    )
                )
            found.append(entry)
        elif not local.flags & FLAG_DESCRIPTOR and (
            (local.method, local.compressed) != (central.method, central.compressed)
        ):
            notes.append(
                Note(
                    "irregular",
                    "the local header declares another method or size than the central "
                    "directory: streaming readers read other content",
                    central.name,
                )
            )
            found.append(entry)
        pos = end
        if local.flags & FLAG_DESCRIPTOR:
            pos += _descriptor_length(fh, pos)
    return found, False


def _descriptor(fh: IO[bytes], pos: int, *, crc: int, size: int) -> tuple[int, int]:
    """The CRC and uncompressed size a data descriptor at ``pos`` states (zip64's 8-byte
    sizes are told by the header that must follow)."""
    signed = 4 if read_at(fh, pos, 4) == DESCRIPTOR else 0
    record = read_at(fh, pos + signed, 20)
    if len(record) < 12:
        return crc, size
    if _descriptor_length(fh, pos) - signed == 20 and len(record) == 20:
        found_crc, _, found_size = struct.unpack("<LQQ", record)
    else:
        found_crc, _, found_size = struct.unpack("<LLL", record[:12])
    return int(found_crc), size or int(found_size)


def _descriptor_length(fh: IO[bytes], pos: int) -> int:
    """A data descriptor's length: crc and sizes (4 or 8 bytes each), after an optional
    signature."""
    head = read_at(fh, pos, 4)
    signed = 4 if head == DESCRIPTOR else 0
    after = read_at(fh, pos + signed + 12, 4)
    # zip64 sizes are 8 bytes: a header must follow the descriptor either way
    return signed + (12 if after[:2] == b"PK" or not after else 20)


def _deflated_length(fh: IO[bytes], local: LocalHeader, *, limit: int) -> tuple[int, int] | None:
    """How many bytes a deflate stream of unknown size takes and gives, found as a streaming
    reader finds it: by inflating it (the output is counted and dropped). Past ``limit``
    bytes of output it stops, with what it has; None when the stream is broken."""
    if local.method != DEFLATED:
        return None
    inflater = zlib.decompressobj(-15)
    consumed = produced = 0
    fh.seek(local.data_offset)
    while not inflater.eof:
        chunk = fh.read(CHUNK)
        if not chunk:
            return None
        try:
            produced += len(inflater.decompress(chunk, CHUNK))
            while inflater.unconsumed_tail and produced <= limit:
                produced += len(inflater.decompress(inflater.unconsumed_tail, CHUNK))
        except zlib.error:
            return None
        consumed += len(chunk) - len(inflater.unused_data) - len(inflater.unconsumed_tail)
        if produced > limit:
            break
    return consumed, produced


def first_local_header(fh: IO[bytes], size: int) -> int | None:
    head = read_at(fh, 0, min(size, 4))
    if head == LOCAL:
        return 0
    if head == DESCRIPTOR and read_at(fh, 4, 4) == LOCAL:
        return 4  # the "spanned archive" marker some writers put first
    return None
