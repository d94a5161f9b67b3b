"""Which format a file is, told from its content: never from its name.

The scanner sniffs every file and archive member with this; the upload refuses an artifact
whose content plainly contradicts its declared format (:func:`contradiction`).

A file's first bytes are enough for archives and safetensors, which carry magic numbers. ONNX
has none: a model is a bare protobuf ``ModelProto``, so the head is walked as protobuf and
accepted only when every field in it is a ``ModelProto`` field with the right wire type and
the lengths fit in the file.

Compressed single files (joblib's compressors: zlib, bz2, lzma, xz, and its legacy ``ZF``
z-file; gzip is sniffed with the bundles, as it may hold a tar) are told from their magic
bytes. zlib and the "alone" ``.lzma`` format have weak magics (two bytes; a properties byte),
so a head that carries one counts only when a decompressor accepts the start of it. 7z is an
archive, but no bundle: the model server does not unpack it.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from enum import StrEnum
from pathlib import Path
from typing import IO

from registry.vocabulary import ArtifactFormat

#: How many bytes of a file the sniffers look at.
HEAD_BYTES = 4096

#: liblzma allocates what an ``.lzma`` or ``.xz`` header asks for (the dictionary): a header
#: asking for more than this is refused. xz's and joblib's presets stay under 100 MiB.
DECODER_MEMORY_LIMIT = 1 << 28

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
    SEVEN_ZIP = "7z"
    ZLIB = "zlib"
    #: joblib's format before 0.10 (``ZF``, the length in hex, a zlib stream), which
    #: ``joblib.load`` still reads
    JOBLIB_ZFILE = "joblib-zfile"
    BZIP2 = "bz2"
    LZMA = "lzma"
    XZ = "xz"
    #: a TensorFlow SavedModel's ``saved_model.pb``
    SAVED_MODEL = "savedmodel"
    UNKNOWN = "unknown"


#: Formats that are bundles: unpacked (after the scan) before the model in them is loaded.
BUNDLE_FORMATS = frozenset({Format.ZIP, Format.TAR, Format.GZIP})

#: Formats the scanner unpacks member by member: the bundles, and 7z (which the model server
#: does not unpack: a 7z artifact is never served as a bundle).
ARCHIVE_FORMATS = BUNDLE_FORMATS | {Format.SEVEN_ZIP}

#: One compressed stream (joblib's ``compress=`` containers): read as the single file it holds,
#: by whatever loader decompresses it. Not bundles: the model server does not unpack them.
COMPRESSED_FORMATS = frozenset(
    {Format.ZLIB, Format.JOBLIB_ZFILE, Format.BZIP2, Format.LZMA, Format.XZ}
)
#: The header of joblib's z-file: ``ZF``, then the content's length in hex padded to 19 bytes
#: (joblib < 0.9.3 on Python 2 wrote one more byte: a space).
ZFILE_HEADER = 21

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
XZ_MAGIC = b"\xfd7zXZ\x00"
#: The HDF5 signature, at offset 0 or 512, 1024, 2048... (after a user block).
H5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: A bzip2 stream: ``BZh`` and a block size digit, then a block or the end-of-stream marker.
_BZ2_BLOCK = (b"1AY&SY", b"\x17\x72\x45\x38\x50\x90")


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


def looks_like_saved_model(head: bytes, *, size: int) -> bool:
    """Whether ``head`` (the start of a ``size``-byte file) reads as a ``SavedModel``.

    TensorFlow writes ``saved_model_schema_version: 1`` (field 1, a varint), then the meta
    graphs (field 2, length-delimited), each starting with one of ``MetaGraphDef``'s
    length-delimited fields (1 to 7). So the head must be: field 1 at most 1 (or absent),
    then a field 2 whose length fits in the file and whose first field is a
    ``MetaGraphDef`` field of length-delimited type that fits in the meta graph.

    An ONNX ``ModelProto`` has the same two first field numbers, and ``looks_like_onnx``
    accepts a SavedModel's head: check this first. ONNX's field 1 is ``ir_version``, 3 or
    more for any model ONNX has written since 2017, and its field 2 ``producer_name`` is a
    short name ("pytorch", "onnx.helper") whose first letter is not a protobuf tag of
    ``MetaGraphDef``; a model without a producer name goes on with field 7 or 8.
    """
    pos = 0
    while True:
        tag = _varint(head, pos)
        if tag is None:
            return False
        key, pos = tag
        value = _varint(head, pos)
        if value is None:
            return False
        number, pos = value
        if key == 0x08:  # field 1, varint: the schema version
            if number > 1:
                return False
            continue
        if key != 0x12 or pos + number > size:  # field 2, length-delimited: a meta graph
            return False
        inner = _varint(head, pos)
        if inner is None or inner[0] & 7 != 2 or not 1 <= inner[0] >> 3 <= 7:
            return False
        length = _varint(head, inner[1])
        return length is not None and length[1] + length[0] <= pos + number


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object. A length that does not fit
    the file still counts, so that the safetensors scanner reports it."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 1 << 40 and head[8:9] == b"{"


def looks_like_h5(head: bytes) -> bool:
    """An HDF5 file (a legacy Keras model): the HDF5 signature at offset 0, or 512, 1024,
    2048... as far as ``head`` reaches."""
    offset = 0
    while offset + len(H5_MAGIC) <= len(head):
        if head[offset : offset + len(H5_MAGIC)] == H5_MAGIC:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


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
    compressed = _compression_of(head)
    if compressed is not None:
        return compressed
    if looks_like_safetensors(head):
        return Format.SAFETENSORS
    # before ONNX: a SavedModel's head reads as a ModelProto's too
    if looks_like_saved_model(head, size=size):
        return Format.SAVED_MODEL
    if looks_like_onnx(head, size=size):
        return Format.ONNX
    return Format.UNKNOWN


def _compression_of(head: bytes) -> Format | None:
    """The archive or compressed-stream format whose magic ``head`` carries, if any."""
    if head[:6] == SEVEN_ZIP_MAGIC:
        return Format.SEVEN_ZIP
    if head[:6] == XZ_MAGIC:
        return Format.XZ
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return Format.BZIP2 if head[4:10] in _BZ2_BLOCK else None
    if looks_like_zlib(head):
        return Format.ZLIB
    if head[:4] == b"ZF0x" and looks_like_zlib(zfile_stream(head)):
        return Format.JOBLIB_ZFILE
    if looks_like_lzma_alone(head):
        return Format.LZMA
    return None


def looks_like_zlib(head: bytes) -> bool:
    """A zlib header (deflate, a window of at most 32 KiB, no preset dictionary, the header
    check) that a decompressor accepts. joblib's ``.z`` files start with ``0x78``; any window
    size counts, as ``zlib.decompress`` reads them all."""
    if len(head) < 2 or head[0] & 0x0F != 8 or head[0] >> 4 > 7 or head[1] & 0x20:
        return False
    if (head[0] << 8 | head[1]) % 31:
        return False
    return _decompresses(zlib.decompressobj(), head)


def zfile_stream(head: bytes) -> bytes:
    """The zlib stream in the head of a joblib z-file (after its header, and the space a
    Python 2 joblib added)."""
    rest = head[ZFILE_HEADER:]
    return rest[1:] if rest[:1] == b" " else rest


def looks_like_lzma_alone(head: bytes) -> bool:
    """The 13-byte header of the legacy ``.lzma`` ("alone") format that a decoder accepts.

    joblib writes it (``compress="lzma"``) and detects it by ``5d 00``; ``lzma.open`` takes
    any header liblzma's strict check allows: lc + lp at most 4, a dictionary size of 2^n or
    2^n + 2^(n-1) and an uncompressed size that is unknown or below 2^38.
    """
    if len(head) < 14 or head[0] >= 9 * 5 * 5:
        return False
    lc, rest = head[0] % 9, head[0] // 9
    if lc + rest % 5 > 4:
        return False
    (dictionary,) = struct.unpack("<I", head[1:5])
    (declared,) = struct.unpack("<Q", head[5:13])
    joblib = head[:2] == b"\x5d\x00"
    strict = _lzma_dictionary_size(dictionary) and (declared == 2**64 - 1 or declared < 2**38)
    if not (joblib or strict):
        return False
    # memlimit: a header's dictionary size is what the decoder allocates. A header asking
    # for more is still one (joblib reads it with no limit): the scan refuses it as too large
    decoder = lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=DECODER_MEMORY_LIMIT)
    return _decompresses(decoder, head)


def _lzma_dictionary_size(size: int) -> bool:
    if size == 0xFFFFFFFF:
        return True
    return any(size in (1 << n, (1 << n) | (1 << (n - 1))) for n in range(12, 32))


def _decompresses(decompressor: zlib._Decompress | lzma.LZMADecompressor, head: bytes) -> bool:
    """Whether the decompressor takes the start of ``head`` (at most a few output bytes are
    produced: this is a check, not a decompression)."""
    try:
        decompressor.decompress(head, 64)
    except lzma.LZMAError as exc:
        return is_memory_limit(exc)
    except (zlib.error, EOFError, ValueError, MemoryError):
        return False
    return True


def is_memory_limit(exc: lzma.LZMAError) -> bool:
    """Whether liblzma refused a stream for the memory its header asks for (not for its data)."""
    return "Memory usage limit" in str(exc)


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
        Format.SAVED_MODEL: "a TensorFlow SavedModel graph (saved_model.pb)",
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
    ArtifactFormat.TF_SAVEDMODEL: frozenset({"a TensorFlow SavedModel graph (saved_model.pb)"}),
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
