"""What a file claims to be, by its name or by the version's declared format.

Formats are told from content (``registry.formats.sniff``), never from names. But a file that
*claims* a format and does not parse as it is not merely "unknown": a safetensors header
that declares 2^40 bytes in a 200-byte file, or a truncated ONNX model, is a loader's input
all the same, and the loader will read it as what it claims. ``claimed_format`` says what a
name or a declared format claims; the scanner then reads such a file as the claimed format
anyway (the format's own scanner reports what is wrong, at least ``HIGH``), where it would
otherwise note a ``LOW`` ``format.unknown``. Content with no claim stays ``LOW`` and is
still checked for pickles.
"""

from __future__ import annotations

import posixpath

from registry.formats import Format

#: file name endings and the format each one claims (``.bin`` claims nothing: it is a
#: PyTorch checkpoint as often as raw tensor bytes)
_BY_SUFFIX: dict[str, Format] = {
    ".safetensors": Format.SAFETENSORS,
    ".onnx": Format.ONNX,
    ".pkl": Format.PICKLE,
    ".pickle": Format.PICKLE,
    ".joblib": Format.PICKLE,
    ".pt": Format.PICKLE,
    ".pth": Format.PICKLE,
    ".ckpt": Format.PICKLE,
    ".npy": Format.NPY,
}

#: declared artifact formats (``registry.vocabulary.ArtifactFormat`` values) and what a
#: single-file artifact of that format claims to be
_BY_DECLARED: dict[str, Format] = {
    "ONNX": Format.ONNX,
    "SAFETENSORS": Format.SAFETENSORS,
    "PICKLE": Format.PICKLE,
    "JOBLIB": Format.PICKLE,
    "PYTORCH": Format.PICKLE,
    "TENSORFLOW_SAVEDMODEL": Format.SAVED_MODEL,
}


def claimed_format(name: str, *, declared: str | None = None) -> Format | None:
    """The format a file named ``name`` claims, by its declared format (for a single-file
    artifact) or else by its name's ending; ``None`` when it claims nothing."""
    if declared is not None:
        by_declared = _BY_DECLARED.get(declared.upper().replace(" ", "_"))
        if by_declared is not None:
            return by_declared
    if posixpath.basename(name) == "saved_model.pb":
        return Format.SAVED_MODEL
    suffix = posixpath.splitext(name.lower())[1]
    return _BY_SUFFIX.get(suffix)


def describe_claim(name: str, *, declared: str | None) -> str:
    """How a finding names the claim: "declared Pickle" or "named *.onnx"."""
    if declared is not None and declared.upper().replace(" ", "_") in _BY_DECLARED:
        return f"declared {declared}"
    if posixpath.basename(name) == "saved_model.pb":
        return "named saved_model.pb"
    return f"named *{posixpath.splitext(name.lower())[1]}"
