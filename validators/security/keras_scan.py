"""Keras models: the model config is read as JSON and checked; nothing is ever deserialized.

A Keras model file names the Python objects that loading it builds, and two kinds of entry
there run code: a ``Lambda`` layer (its ``function`` is marshalled Python bytecode, or a
reference to any function), and an object from a module outside Keras (loading imports that
module, or runs whatever was registered under the object's name). Two containers carry the
config:

- ``.keras`` (Keras 3): a zip with ``config.json``, ``metadata.json`` and
  ``model.weights.h5`` at its root (``is_keras_zip``). ``scan_keras_zip`` reads
  ``config.json`` (every root member of that name), bounded, from the zip: nothing is
  extracted to disk.
- legacy H5 (tf.keras, Keras 2, Keras 3's legacy saver): the root group's attributes
  ``model_config`` and ``training_config`` (compile arguments), JSON as a string.
  ``scan_h5`` opens the file with ``h5py``, read-only, and reads those attributes only. A file
  without ``model_config`` (a weights file) has nothing to deserialize and gives no finding.

The walk covers the whole JSON document, not just the layers: nested models
(``config.layers``), wrappers (``Bidirectional``, ``TimeDistributed``: ``config.layer``),
initializers, regularizers, activations, ``compile_config`` and ``training_config``
(optimizers, losses, metrics), node arguments. A *serialized object* is any JSON object with
a ``class_name`` key; it may also carry ``module``, ``registered_name`` and ``config``.

Rules (the same for both containers):

- ``keras.lambda`` (CRITICAL): a ``Lambda`` layer, reported once with what its function is;
  and a ``__lambda__`` object (marshalled bytecode) anywhere else, e.g. as an activation.
  Keras 3 refuses both with ``safe_mode`` on; Keras 2, tf.keras and older Keras 3 releases
  run them on load.
- ``keras.custom-object`` (HIGH): an object from outside the Keras built-ins, naming module
  and class. An object is built in when all of these hold:

  - its ``module`` is absent (the legacy format names classes only), or is ``keras``,
    ``tf_keras``, ``tensorflow.keras`` or ``tensorflow.python.keras``, or a submodule of one
    (``keras.src.backend.torch.optimizers.torch_sgd``); or it is ``builtins`` for a
    ``function`` whose name is not a Python built-in (Keras 3.6 and earlier saved built-in
    activations and losses so: ``builtins`` + ``function`` + ``"relu"``). An explicit
    ``"module": null`` is a class from the saving script's ``__main__``: custom;
  - its ``registered_name`` is absent, null, empty, the class name, ``"function"`` or the
    function's name for a ``function``, or ``keras>...``. Any other registered name is
    looked up among custom objects before Keras's own, so it can stand for outside code;
  - its class name (or a function's name) has no ``package>`` prefix other than ``keras>``
    (the legacy form of a registered custom class).

  A legacy config that names a custom class without a package (``"class_name": "MyLayer"``)
  cannot be told from a built-in by name; Keras loads it only from ``custom_objects`` the
  user passes, so it is not reported.
- ``keras.unsafe-api`` (CRITICAL): a Keras built-in that is no modelling object, such as
  ``keras.utils.get_file`` (downloads and writes files) or
  ``keras.config.enable_unsafe_deserialization`` (turns ``safe_mode`` off): Keras 3.11
  refuses these by name (``NON_MODELING_APIS``), earlier releases call them while loading.
- ``keras.malformed`` (HIGH): a config that is not UTF-8 JSON, not an object at its root,
  nests deeper than ``MAX_CONFIG_DEPTH``, or has a ``class_name``, ``module`` or
  ``registered_name`` that is not a string; an H5 config attribute that is not one string.
- ``keras.h5.malformed`` (HIGH): a file that ``h5py`` cannot open or whose attribute it
  cannot read; the message says what ``h5py`` said.
- ``limit.keras_config`` (HIGH): a config over ``MAX_CONFIG_BYTES``; it is not read.

At most ``MAX_FINDINGS_PER_RULE`` findings of one rule are listed per config, then one more
says how many were left out.

Locations: the config document, then ``#`` and the path of the object inside it:
``model.keras:config.json#layers[1](lambda)``,
``model.h5:model_config#layers[2](bidirectional)/layer(lstm)/kernel_initializer``,
``model.h5:training_config#optimizer_config``. A path step is a JSON key, ``[i]`` is an
index into a list, and ``(name)`` follows the step that reached a named object (a layer, a
metric). The ``config`` level of a serialized object is left out, and the root object has no
path (the location is the document alone). Keys and names are cut to 64 characters and
percent-encoded except for letters, digits and ``_.-~``.
"""

from __future__ import annotations

import builtins
import json
import lzma
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from registry.bundles import READ_ERRORS
from validators.report import Finding, Severity

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "is_keras_zip",
    "scan_h5",
    "scan_keras_config",
    "scan_keras_zip",
]

#: The largest config (``config.json``, an H5 attribute) that is read.
MAX_CONFIG_BYTES = 64 * 1024 * 1024

#: JSON nesting beyond this is refused; a model nested 20 deep needs about 70 levels.
MAX_CONFIG_DEPTH = 100

#: Findings of one rule listed per config; more are counted in one last finding.
MAX_FINDINGS_PER_RULE = 100

#: The root attributes of a legacy H5 file that Keras deserializes.
H5_CONFIG_ATTRIBUTES = ("model_config", "training_config")

KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")

#: Names of the built-ins Keras refuses to deserialize (``NON_MODELING_APIS`` in
#: ``keras.src.saving.serialization_lib``, Keras 3.11), matched under any Keras module.
UNSAFE_KERAS_FUNCTIONS = frozenset(
    {
        "audio_dataset_from_directory",
        "clear_session",
        "deserialize_keras_object",
        "enable_unsafe_deserialization",
        "get_file",
        "image_dataset_from_directory",
        "load_img",
        "load_model",
        "load_weights",
        "model_from_json",
        "register_keras_serializable",
        "save_img",
        "save_model",
        "save_weights",
        "serialize_keras_object",
        "text_dataset_from_directory",
    }
)

_CHUNK = 1024 * 1024
_SAFE_PATH_CHARS = "_.-~"
_MAX_SEGMENT = 64


# -- detection ---------------------------------------------------------------------------------


def is_keras_zip(names: list[str]) -> bool:
    """A zip is a Keras 3 model when ``config.json`` and ``metadata.json`` are at its root."""
    return "config.json" in names and "metadata.json" in names


# -- the config --------------------------------------------------------------------------------


def scan_keras_config(config: bytes, *, location: str) -> list[Finding]:
    """Findings for the JSON text of a Keras model config (``config.json``, ``model_config``,
    ``training_config``) at ``location``."""
    try:
        document = json.loads(config)
    except RecursionError:
        return [_malformed("the config nests too deep to parse", location)]
    except UnicodeDecodeError:
        return [_malformed("the config is not UTF-8 text", location)]
    except ValueError as exc:
        return [_malformed(f"the config is not valid JSON: {exc}", location)]
    walk = _Walk(location=location)
    if not isinstance(document, dict):
        walk.add(_malformed(f"the config is a JSON {_json_type(document)}, not an object", ""))
    walk.run(document)
    return walk.findings()


@dataclass
class _Walk:
    """One pass over a parsed config, iterative so that no nesting can exhaust the stack."""

    location: str
    listed: dict[str, list[Finding]] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
    too_deep: bool = False

    def add(self, finding: Finding) -> None:
        where = f"{self.location}#{finding.location}" if finding.location else self.location
        listed = self.listed.setdefault(finding.rule_id, [])
        if len(listed) < MAX_FINDINGS_PER_RULE:
            listed.append(Finding(finding.severity, finding.rule_id, finding.message, where))
        else:
            self.left_out[finding.rule_id] = self.left_out.get(finding.rule_id, 0) + 1

    def findings(self) -> list[Finding]:
        out = [f for listed in self.listed.values() for f in listed]
        for rule_id, count in self.left_out.items():
            first = self.listed[rule_id][0]
            out.append(
                Finding(
                    first.severity,
                    rule_id,
                    f"{count} more {rule_id} findings in this config, not listed",
                    self.location,
                )
            )
        return out

    def run(self, document: object) -> None:
        # (value, path, depth, inside a Lambda layer): children are pushed in reverse, so
        # findings come in document order
        stack: list[tuple[dict[str, Any] | list[Any], str, int, bool]] = []
        if isinstance(document, dict | list):
            stack.append((document, "", 1, False))
        while stack:
            value, path, depth, in_lambda = stack.pop()
            if depth > MAX_CONFIG_DEPTH:
                if not self.too_deep:
                    self.too_deep = True
                    self.add(
                        _malformed(
                            f"the config nests deeper than {MAX_CONFIG_DEPTH} levels; "
                            "what lies below was not checked",
                            path,
                        )
                    )
                continue
            children: list[tuple[dict[str, Any] | list[Any], str, int, bool]] = []
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict | list):  # scalars hold nothing to check
                        children.append((item, f"{path}[{i}]", depth + 1, in_lambda))
            else:
                if "class_name" in value:
                    path = _named(path, value)
                    in_lambda = self.check_object(value, path=path, in_lambda=in_lambda)
                for key, child in value.items():
                    if isinstance(child, dict | list):
                        own = key == "config" and "class_name" in value
                        children.append(
                            (child, path if own else _join(path, key), depth + 1, in_lambda)
                        )
            stack.extend(reversed(children))

    def check_object(self, obj: dict[str, Any], *, path: str, in_lambda: bool) -> bool:
        """Findings for one serialized object; whether its content is inside a Lambda."""
        class_name = obj["class_name"]
        module = obj.get("module")
        registered = obj.get("registered_name")
        if not isinstance(class_name, str):
            self.add(_malformed(f"class_name {_short(class_name)} is not a string", path))
            return in_lambda
        for key, item in (("module", module), ("registered_name", registered)):
            if item is not None and not isinstance(item, str):
                self.add(
                    _malformed(f"{key} {_short(item)} of {class_name!r} is not a string", path)
                )
                return in_lambda
        inner = obj.get("config")
        name = inner if class_name == "function" and isinstance(inner, str) else class_name
        if class_name == "Lambda":
            self.add(
                Finding(
                    Severity.CRITICAL,
                    "keras.lambda",
                    f"Lambda layer runs {_lambda_function(inner)} when the model is loaded "
                    "(Keras 2, tf.keras, older Keras 3; any Keras with safe_mode=False)",
                    path,
                )
            )
            in_lambda = True
        elif class_name == "__lambda__" and not in_lambda:
            self.add(
                Finding(
                    Severity.CRITICAL,
                    "keras.lambda",
                    "marshalled Python bytecode (__lambda__), run when the model is loaded "
                    "with safe_mode=False",
                    path,
                )
            )
        if class_name == "__typespec__" and isinstance(obj.get("spec_name"), str):
            name = obj["spec_name"]
        problem = _outside_keras(
            class_name, name=name, module=module, registered=registered, has_module="module" in obj
        )
        if problem:
            self.add(Finding(Severity.HIGH, "keras.custom-object", problem, path))
        elif name in UNSAFE_KERAS_FUNCTIONS and module is not None:
            self.add(
                Finding(
                    Severity.CRITICAL,
                    "keras.unsafe-api",
                    f"{module}.{name} is a Keras built-in that is no modelling object "
                    "(it reads, writes or downloads files, or changes how Keras loads); "
                    "Keras before 3.11 calls it while loading",
                    path,
                )
            )
        return in_lambda


def _outside_keras(
    class_name: str, *, name: str, module: str | None, registered: str | None, has_module: bool
) -> str | None:
    """Why the object is not a Keras built-in, or None when it is one."""
    what = f"{module}.{name}" if module else repr(name)
    if has_module and module is None:
        return f"{what} has module null: a class of the saving script's __main__, not Keras's"
    if module is not None and not _keras_module(module, class_name=class_name, name=name):
        registered_as = f" (registered as {registered!r})" if registered else ""
        return (
            f"{what}{registered_as} is not a Keras built-in: loading it imports module "
            f"{module!r} or runs code registered under that name"
        )
    package = _package(name)
    if package is not None:
        return f"{what} is registered by package {package!r}, not by Keras"
    allowed = {class_name, "function", name} if class_name == "function" else {class_name}
    if registered and registered not in allowed and not registered.startswith("keras>"):
        return (
            f"{what} has registered_name {registered!r}: Keras looks that name up among "
            "custom objects first, so it can stand for code outside Keras"
        )
    return None


def _keras_module(module: str, *, class_name: str, name: str) -> bool:
    if module == "builtins":
        return class_name == "function" and name not in vars(builtins)
    return any(module == root or module.startswith(root + ".") for root in KERAS_MODULES)


def _package(name: str) -> str | None:
    """The package of a ``package>Name`` registered name, unless it is Keras's."""
    if ">" not in name:
        return None
    package = name.split(">", 1)[0]
    return None if package == "keras" else package


def _lambda_function(config: object) -> str:
    """What a Lambda layer's config says its function is."""
    if not isinstance(config, dict):
        return "a function"
    function = config.get("function")
    if isinstance(function, dict):
        kind = function.get("class_name")
        if kind == "__lambda__":
            return "marshalled Python bytecode"
        if kind == "function" and isinstance(function.get("config"), str):
            module = function.get("module")
            prefix = f"{module}." if isinstance(module, str) else ""
            return f"the function {_short(prefix + function['config'])}"
    if config.get("function_type") == "lambda":
        return "marshalled Python bytecode (legacy format)"
    if config.get("function_type") == "function" and isinstance(function, str):
        module = config.get("module")
        prefix = f"{module}." if isinstance(module, str) else ""
        return f"the function {_short(prefix + function)}"
    return "a function"


def _named(path: str, obj: dict[str, Any]) -> str:
    """``path`` with the object's name, if it has one and is not the root."""
    if not path:
        return path
    inner = obj.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str):
        name = obj.get("name")
    return f"{path}({_segment(name)})" if isinstance(name, str) and name else path


def _join(path: str, key: str) -> str:
    return f"{path}/{_segment(key)}" if path else _segment(key)


def _segment(text: str) -> str:
    return quote(text[:_MAX_SEGMENT], safe=_SAFE_PATH_CHARS)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _malformed(message: str, location: str) -> Finding:
    return Finding(Severity.HIGH, "keras.malformed", message, location)


def _too_large(message: str, location: str) -> Finding:
    return Finding(Severity.HIGH, "limit.keras_config", message, location)


# -- .keras ------------------------------------------------------------------------------------


def scan_keras_zip(
    path: Path, *, location: str, max_config_bytes: int = MAX_CONFIG_BYTES
) -> list[Finding]:
    """Findings for the ``.keras`` zip at ``path``: its root ``config.json``, read from the
    zip (never extracted), up to ``max_config_bytes``."""
    findings: list[Finding] = []
    try:
        with zipfile.ZipFile(path) as archive:
            members = [i for i in archive.infolist() if i.filename == "config.json"]
            if not members:
                return [_malformed("no config.json at the root of the Keras zip", location)]
            for info in members:
                where = f"{location}:{info.filename}"
                if info.file_size > max_config_bytes:
                    findings.append(
                        _too_large(
                            f"config.json declares {info.file_size} bytes, over the limit "
                            f"({max_config_bytes}); not read",
                            where,
                        )
                    )
                    continue
                with archive.open(info) as member:
                    text = member.read(max_config_bytes + 1)
                if len(text) > max_config_bytes:
                    findings.append(
                        _too_large(f"config.json is over the limit ({max_config_bytes})", where)
                    )
                    continue
                findings += scan_keras_config(text, location=where)
    except (*READ_ERRORS, lzma.LZMAError) as exc:
        # a broken zip, an encrypted member, an unsupported or corrupt compression
        findings.append(_malformed(f"the Keras zip cannot be read: {exc}", location))
    return findings


# -- legacy H5 ---------------------------------------------------------------------------------


def scan_h5(
    path: Path, *, location: str, max_config_bytes: int = MAX_CONFIG_BYTES
) -> list[Finding]:
    """Findings for the legacy Keras H5 file at ``path``: the JSON of its root attributes
    ``model_config`` and ``training_config``, each up to ``max_config_bytes``. Never loads
    the model and never raises for a bad file."""
    # h5py costs ~0.1 s to import: only an H5 file's scan pays it
    import h5py  # type: ignore[import-untyped]

    try:
        h5 = h5py.File(path, "r", locking=False)
    except Exception as exc:  # HDF5 reports a bad file through many exception types
        return [_h5_malformed(f"h5py cannot open the file: {exc}", location)]
    findings: list[Finding] = []
    with h5:
        for name in H5_CONFIG_ATTRIBUTES:
            where = f"{location}:{name}"
            try:
                text = _read_config_attribute(h5, name, path=path, limit=max_config_bytes)
            except _Refused as refused:
                findings.append(Finding(Severity.HIGH, refused.rule_id, refused.message, where))
                continue
            except Exception as exc:  # as above: whatever h5py raises is a finding
                findings.append(_h5_malformed(f"h5py cannot read {name}: {exc}", where))
                continue
            if text is not None:
                findings += scan_keras_config(text, location=where)
    return findings


class _Refused(Exception):
    """An H5 config attribute that is not read, and why (a HIGH finding)."""

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.message = message


def _read_config_attribute(h5: Any, name: str, *, path: Path, limit: int) -> bytes | None:
    """The attribute's text, None when there is no such attribute; ``_Refused`` when it is
    not one string or is over ``limit``, before any of it is read."""
    import h5py  # untyped: see scan_h5

    if name not in h5.attrs:
        return None
    attr = h5.attrs.get_id(name)
    kind = attr.get_type()
    if not isinstance(kind, h5py.h5t.TypeStringID):
        raise _Refused("keras.malformed", f"{name} is not a string but {attr.dtype} data")
    if attr.get_space().get_simple_extent_type() != h5py.h5s.SCALAR:
        raise _Refused(
            "keras.malformed", f"{name} is not one string but an array of shape {attr.shape}"
        )
    if kind.is_variable_str():
        # the attribute holds only a reference into the file's global heap, where the text
        # is stored whole (attributes are never compressed): its size is bounded by the file
        # and by the largest heap collection in it
        size = path.stat().st_size
        bound = size if size <= limit else _largest_heap_collection(path, h5=h5)
        what = f"the file holds a global heap collection of {bound} bytes"
    else:
        bound = kind.get_size()
        what = f"{name} is a string of {bound} bytes"
    if bound > limit:
        raise _Refused("limit.keras_config", f"{what}, over the limit ({limit}); {name} not read")
    value = h5.attrs[name]
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise _Refused("keras.malformed", f"{name} is not a string")


def _largest_heap_collection(path: Path, *, h5: Any) -> int:
    """The size the largest global heap collection (``GCOL``) of the file declares; HDF5
    reads a variable-length string from one such collection, whole. Streams the file."""
    length_size = h5.id.get_create_plist().get_sizes()[1]
    header = 8 + length_size  # signature, version, 3 reserved bytes, collection size
    largest = 0
    carry = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            buffer = carry + chunk
            at = buffer.find(b"GCOL")
            while at >= 0 and at + header <= len(buffer):
                if buffer[at + 4] == 1:
                    size = int.from_bytes(buffer[at + 8 : at + header], "little")
                    largest = max(largest, size)
                at = buffer.find(b"GCOL", at + 1)
            carry = buffer[at:] if at >= 0 else buffer[-(header - 1) :]
    return largest


def _h5_malformed(message: str, location: str) -> Finding:
    return Finding(Severity.HIGH, "keras.h5.malformed", message, location)
