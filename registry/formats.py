"""Which format a file is, told from its content: never from its name.

The scanner sniffs every file and archive member with this; the upload refuses an artifact
whose content plainly contradicts its declared format (:func:`contradiction`).

A file's first bytes are enough for archives and safetensors, which carry magic numbers. ONNX
has none: a model is a bare protobuf ``ModelProto``, so the head is walked as protobuf and
accepted only when every field in it is a ``ModelProto`` field with the right wire type and
the lengths fit in the file.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from pathlib import Path
from typing import IO

from registry.vocabulary import ArtifactFormat

#: How many bytes of a file the sniffers look at.
HEAD_BYTES = 4096

#: A safetensors header longer than this is not believed (the reference reader caps it too).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class Format(StrEnum):
    ONNX = "onnx"
    PICKLE = "pickle"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    SAFETENSORS = "safetensors"
    NPY = "npy"
    UNKNOWN = "unknown"


#: Formats that are bundles: unpacked (after the scan) before the model in them is loaded.
BUNDLE_FORMATS = frozenset({Format.ZIP, Format.TAR, Format.GZIP})


# ModelProto's fields (onnx.proto3) and their wire types: 0 varint, 2 length-delimited.
_MODEL_FIELDS: dict[int, int] = {
    1: 0,  # ir_version
    2: 2,  # producer_name
    3: 2,  # producer_version
    4: 2,  # domain
    5: 0,  # model_version
    6: 2,  # doc_string
    7: 2,  # graph
    8: 2,  # opset_import
    14: 2,  # metadata_props
    20: 2,  # training_info
    25: 2,  # functions
    26: 2,  # configuration
}


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """The varint at ``pos`` and the position after it; None when it runs off the buffer."""
    value = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def looks_like_onnx(head: bytes, *, size: int) -> bool:
    """Whether ``head`` (the start of a ``size``-byte file) reads as a protobuf ModelProto.

    Every complete field in the head must be a ModelProto field of the right wire type whose
    length fits in the file, and a model's first field is small metadata or the graph.
    """
    pos = fields = 0
    while pos < len(head):
        tag = _varint(head, pos)
        if tag is None:
            break
        key, pos = tag
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire:
            return False
        value = _varint(head, pos)
        if value is None:
            break
        length, pos = value
        fields += 1
        if wire == 2:
            if pos + length > size:
                return False
            pos += length
    return fields > 0


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object. A length that does not fit
    the file still counts, so that the safetensors scanner reports it."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 1 << 40 and head[8:9] == b"{"


def sniff(head: bytes, *, size: int) -> Format:
    """The format of a ``size``-byte file (or archive member) that starts with ``head``.

    Pickles are not decided here: the caller runs ``looks_like_pickle`` on every head
    whatever this returns, so a pickle under any name or format is still scanned.
    """
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return Format.ZIP
    if head[:2] == b"\x1f\x8b":
        return Format.GZIP
    if head[257:262] == b"ustar":
        return Format.TAR
    if head[:6] == b"\x93NUMPY":
        return Format.NPY
    if looks_like_safetensors(head):
        return Format.SAFETENSORS
    if looks_like_onnx(head, size=size):
        return Format.ONNX
    return Format.UNKNOWN


def read_head(stream: IO[bytes], limit: int = HEAD_BYTES) -> bytes:
    """Up to ``limit`` bytes from the stream's current position (short reads retried)."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def detect_format(path: Path) -> Format:
    """The format of the file at ``path``, from its first bytes."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        return sniff(read_head(fh), size=size)


def _torch_zip(head: bytes) -> bool:
    """Whether a zip's first member, named in its local header, is a ``torch.save`` pickle
    (``<archive>/data.pkl``, which torch writes first)."""
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return False
    (name_length,) = struct.unpack("<H", head[26:28])
    name = head[30 : 30 + name_length]
    return name.endswith(b"data.pkl") and name.count(b"/") == 1


def _what_it_is(head: bytes, *, size: int) -> str | None:
    """What the content plainly is, when it is one thing that decides a format (an archive
    decides nothing: a bundle may hold any model); ``None`` when it says nothing certain."""
    if _torch_zip(head):
        return "a PyTorch file (a torch.save zip)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle"
    found = sniff(head, size=size)
    return {
        Format.ONNX: "an ONNX model",
        Format.SAFETENSORS: "a SafeTensors file",
        Format.NPY: "a NumPy array (.npy)",
    }.get(found)


# What each declared format may plainly be. A bundle (zip, tar, gzip) and anything the
# sniffers cannot name are left to validation, which reports what it finds.
_MAY_BE: dict[ArtifactFormat, frozenset[str]] = {
    ArtifactFormat.ONNX: frozenset({"an ONNX model"}),
    ArtifactFormat.SAFETENSORS: frozenset({"a SafeTensors file"}),
    ArtifactFormat.PYTORCH: frozenset({"a PyTorch file (a torch.save zip)", "a pickle"}),
    ArtifactFormat.PICKLE: frozenset({"a pickle", "a NumPy array (.npy)"}),
    ArtifactFormat.JOBLIB: frozenset({"a pickle", "a NumPy array (.npy)"}),
    ArtifactFormat.TF_SAVEDMODEL: frozenset(),
}


def contradiction(declared: str, head: bytes, *, size: int) -> str | None:
    """Why an artifact starting with ``head`` cannot be a ``declared`` one, or ``None``.

    Only a plain contradiction counts: the head is certainly something (an ONNX model, a
    SafeTensors file, a torch.save zip, a pickle, a .npy) that the declared format never is.
    """
    try:
        allowed = _MAY_BE[ArtifactFormat(declared)]
    except (KeyError, ValueError):
        return None
    found = _what_it_is(head, size=size)
    if found is None or found in allowed:
        return None
    return f"the artifact is {found}, but the version declares format {declared}"
