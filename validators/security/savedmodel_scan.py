"""TensorFlow SavedModel: ``saved_model.pb`` is walked as protobuf, never loaded.

A SavedModel is a folder: ``saved_model.pb`` (a ``SavedModel`` protobuf), ``variables/``,
``assets/`` and ``fingerprint.pb``. Loading it runs ops of its graphs (the saver's restore
function, initializers), and serving it runs its signature functions. TensorFlow itself is
never imported: a small wire-format decoder reads these fields, numbered as in
``saved_model.proto``, ``meta_graph.proto``, ``graph.proto``, ``node_def.proto``,
``function.proto``, ``attr_value.proto`` and ``saver.proto``::

    SavedModel      1 saved_model_schema_version (varint), 2 meta_graphs (repeated)
    MetaGraphDef    2 graph_def, 3 saver_def
    GraphDef        1 node (repeated NodeDef), 2 library (FunctionDefLibrary)
    FunctionDefLibrary  1 function (repeated FunctionDef)
    FunctionDef     1 signature (OpDef; its field 1 is the name), 3 node_def (repeated)
    NodeDef         1 name, 2 op, 3 input (repeated), 5 attr (map<string, AttrValue>)
    AttrValue       1 list (ListValue; its field 9 is repeated NameAttrList), 2 s, 10 func
    NameAttrList    1 name, 2 attr (map<string, AttrValue>)
    SaverDef        2 save_tensor_name, 3 restore_op_name

Every node of every meta graph's graph and of every function of its library is checked,
called or not: a function in the library can be reached by name (``StatefulPartitionedCall``,
``While``, ``If``) or from Python once the model is loaded. As protobuf does, the last value
of a repeated singular field wins (a node that says ``op: "Identity"`` then
``op: "ReadFile"`` is a ``ReadFile``). Fields this scanner does not read are skipped, unread.

Rules:

- ``savedmodel.dangerous-op`` ``CRITICAL``: an op in ``PYTHON_OPS``; it calls the Python
  function the loading process registered under the token the node names.
- ``savedmodel.dangerous-op`` ``HIGH``: an op in ``FILE_AND_NETWORK_OPS`` (it reads, lists,
  maps or writes files, changes file-system settings or opens network connections); an op of
  ``FILE_ATTR_OPS`` whose string attr names a file (``PrintV2`` with
  ``output_stream: "file://..."``); a checkpoint op outside the model's own saver (below).
- ``savedmodel.malformed`` ``HIGH``: the protobuf does not parse: a varint longer than 10
  bytes, a length past the end of its message, a known field of the wrong wire type, a
  group or reserved wire type, field number 0, messages nested deeper than ``MAX_DEPTH``
  (protobuf's own default limit), an op name that is not UTF-8, no meta graph.
- ``limit.savedmodel_bytes`` ``HIGH``: over ``MAX_SAVED_MODEL_BYTES``, protobuf's 2 GiB
  limit (nothing is parsed); ``limit.savedmodel_nodes`` ``HIGH``: more than
  ``MAX_GRAPH_ITEMS`` nodes, inputs and function references, which bounds memory.

Checkpoint ops (``CHECKPOINT_SAVE_OPS``, ``CHECKPOINT_RESTORE_OPS``) are in every SavedModel:
``tf.saved_model.save`` writes ``__inference__traced_save_N`` (``SaveV2``,
``MergeV2Checkpoints``) and ``__inference__traced_restore_N`` (``RestoreV2``); a TF1 builder
puts ``save/SaveV2`` and ``save/RestoreV2`` in the main graph. The meta graph's ``SaverDef``
names the node that saves and the node that restores. A save op is expected in what that save
node reaches (its inputs, backwards, in the main graph; the functions it calls, transitively),
a restore op in what the restore node reaches. Anywhere else, or in a function that a
non-saver node also calls, a checkpoint op is reported: it writes (or reads, or with
``MergeV2Checkpoints`` deletes) files at a path the graph chooses. Inside the saver's reach
the path is not traced: a saver that restores from a fixed path is not reported.
``ShardedFilename`` and ``ShardedFilespec`` only format strings and are not reported.

Not reported, on purpose: ``InitializeTableFromTextFile(V2)`` reads a vocabulary file, which
``tf.saved_model.save`` makes an asset of the model, so every model with a lookup table has
one (a hand-made graph could give it any path: its filename is not traced to an asset);
``DebugNumericSummaryV2`` and ``Copy`` only compute (the debug ops that write to
``debug_urls`` are listed); TensorFlow has no op that loads a library (that is
``tf.load_op_library``, in Python): an op from a custom library fails the load unless the
loading process loaded that library itself. ``saved_model.pbtxt`` (text) is not parsed.

Locations: ``<location>#meta_graph[<i>]/node:<node>`` for a node of meta graph ``i``'s main
graph, ``<location>#meta_graph[<i>]/function:<function>/node:<node>`` for a node of a library
function, and, for a malformed file, ``<location>#<path>@<byte offset>`` with the path of
fields down to the problem (``meta_graph[0]/graph_def/library/function[3]/node_def[2]``), or
``<location>@<byte offset>`` for a problem in the ``SavedModel`` message itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from registry.formats import looks_like_saved_model
from validators.report import Finding, Severity

__all__ = [
    "MAX_SAVED_MODEL_BYTES",
    "SAVED_MODEL_NAMES",
    "looks_like_saved_model",
    "scan_saved_model",
]

#: The name a SavedModel's protobuf has in its folder.
SAVED_MODEL_NAMES = frozenset({"saved_model.pb"})

#: protobuf refuses messages over 2 GiB; so does this scanner, without parsing them.
MAX_SAVED_MODEL_BYTES = 2**31 - 1

#: protobuf's default recursion limit for nested messages.
MAX_DEPTH = 100

#: Nodes, inputs and function references kept while walking: memory stays bounded.
MAX_GRAPH_ITEMS = 1_000_000

#: Ops that run Python: the callable registered in the loading process under the node's token.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

#: Ops that touch files, file-system settings or the network when they run.
FILE_AND_NETWORK_OPS = frozenset(
    {
        # read, list or memory-map files at a path the graph gives
        "ReadFile", "MatchingFiles", "ImmutableConst", "RecordInput",
        "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
        "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader",
        "TFRecordReaderV2", "LMDBReader", "LoadAndRemapMatrix", "GenerateVocabRemapping",
        "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
        "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset",
        "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "LoadDataset",
        "SnapshotDatasetReader", "SnapshotNestedDatasetReader", "SnapshotChunkDataset",
        "ListSnapshotChunksDataset",
        # write files
        "WriteFile", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "SaveDataset",
        "SaveDatasetV2", "SnapshotDataset", "SnapshotDatasetV2", "DistributedSave",
        "CacheDataset", "CacheDatasetV2",
        # summaries: event files or a SQLite database, or a writer the host process shares
        "SummaryWriter", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary",
        "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
        "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent",
        "StatsAggregatorSetSummaryWriter",
        # tfdbg: write tensors to their debug_urls (file:// or grpc://)
        "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
        "DebugNumericSummary",
        # file-system settings (an S3 or GCS endpoint, credentials)
        "FileSystemSetConfiguration",
        # network: RPC servers and clients, tf.data service, functions on remote devices
        "RpcServer", "RpcServerStart", "RpcServerRegister", "RpcClient", "RpcCall",
        "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
        "DataServiceDatasetV4", "RegisterDataset", "RegisterDatasetV2", "RemoteCall",
    }
)  # fmt: skip

#: Ops that touch a file only when a string attr says so: op -> (attr, harmless prefixes).
#: An attr that is absent has its harmless default.
FILE_ATTR_OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "PrintV2": ("output_stream", ("stdout", "stderr", "log(")),
    "DecodeProtoV2": ("descriptor_source", ("local://", "bytes://")),
    "EncodeProto": ("descriptor_source", ("local://", "bytes://")),
}

#: Checkpoint ops expected in what the SaverDef's save node reaches.
CHECKPOINT_SAVE_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints"})

#: Checkpoint ops expected in what the SaverDef's restore node reaches.
CHECKPOINT_RESTORE_OPS = frozenset({"Restore", "RestoreV2", "RestoreSlice"})

_CHECKPOINT_OPS = CHECKPOINT_SAVE_OPS | CHECKPOINT_RESTORE_OPS
_KEPT_OPS = PYTHON_OPS | FILE_AND_NETWORK_OPS | _CHECKPOINT_OPS | FILE_ATTR_OPS.keys()
_STRING_ATTRS = frozenset(attr for attr, _ in FILE_ATTR_OPS.values())

# Wire types: 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit (3 and 4 are groups).
# Known fields of each message read, and their wire types.
_SAVED_MODEL = {1: 0, 2: 2}
_META_GRAPH = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2}
_GRAPH = {1: 2, 2: 2, 3: 0, 4: 2}
_LIBRARY = {1: 2, 2: 2, 3: 2}
_FUNCTION = {1: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2}
_OP_DEF = {1: 2}
_NODE = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
_MAP_ENTRY = {1: 2, 2: 2}
_ATTR_VALUE = {1: 2, 2: 2, 3: 0, 4: 5, 5: 0, 6: 0, 7: 2, 8: 2, 9: 2, 10: 2}
_LIST_VALUE = {2: 2, 7: 2, 8: 2, 9: 2}  # the packed scalars may come either way
_NAME_ATTR_LIST = {1: 2, 2: 2}
_SAVER = {1: 2, 2: 2, 3: 2, 4: 0, 5: 0, 6: 5, 7: 0}

#: Names longer than this are kept as a digest: still exact, never a giant string.
_NAME_BYTES = 256


class _Malformed(Exception):
    def __init__(self, problem: str, *, offset: int, path: str) -> None:
        super().__init__(problem)
        self.problem, self.offset, self.path = problem, offset, path


class _TooMany(Exception):
    pass


@dataclass
class _Node:
    name: bytes
    shown: str
    op: str
    inputs: list[bytes] = field(default_factory=list)
    calls: set[bytes] = field(default_factory=set)
    strings: dict[str, str] = field(default_factory=dict)


@dataclass
class _Function:
    shown: str
    calls: set[bytes] = field(default_factory=set)
    nodes: list[_Node] = field(default_factory=list)  # only the nodes whose op is of interest


@dataclass
class _MetaGraph:
    index: int
    nodes: list[_Node] = field(default_factory=list)  # every node of the main graph
    functions: dict[bytes, _Function] = field(default_factory=dict)
    saver: dict[int, bytes] = field(default_factory=dict)  # SaverDef field -> node name


def scan_saved_model(
    data: bytes, *, location: str, max_bytes: int = MAX_SAVED_MODEL_BYTES
) -> list[Finding]:
    """Findings for ``data``, the bytes of a ``saved_model.pb`` at ``location``.

    The caller reads the file once, after checking its size; a file over ``max_bytes`` is
    reported, not parsed. Never raises for hostile input."""
    if len(data) > max_bytes:
        return [
            _high(
                "limit.savedmodel_bytes",
                f"saved_model.pb of {len(data)} bytes is over the limit ({max_bytes}); not scanned",
                location,
            )
        ]
    reader = _Reader(data)
    problem: Finding | None = None
    try:
        reader.saved_model()
    except _Malformed as exc:
        path = exc.path if len(exc.path) <= 160 else f"{exc.path[:60]}/.../{exc.path[-80:]}"
        problem = _high(
            "savedmodel.malformed",
            f"not a valid SavedModel protobuf: {exc.problem} (byte {exc.offset}, in "
            f"{path or 'SavedModel'})",
            f"{location}#{path}@{exc.offset}" if path else f"{location}@{exc.offset}",
        )
    except _TooMany:
        problem = _high(
            "limit.savedmodel_nodes",
            f"more than {MAX_GRAPH_ITEMS} nodes, inputs and function references; the scan stopped",
            location,
        )
    if problem is None and not reader.graphs:
        problem = _high(
            "savedmodel.malformed", "no meta graph: TensorFlow cannot load it", location
        )
    findings: list[Finding] = []
    for graph in reader.graphs:
        # a broken file is not loadable: its checkpoint ops would only add noise
        findings += _judge(graph, location=location, checkpoints=problem is None)
    return findings if problem is None else [*findings, problem]


def _high(rule_id: str, message: str, location: str) -> Finding:
    return Finding(Severity.HIGH, rule_id, message, location)


class _Reader:
    """Walks a SavedModel's bytes into ``graphs``; raises ``_Malformed`` or ``_TooMany``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.view = memoryview(data)
        self.graphs: list[_MetaGraph] = []
        self.items = 0

    def saved_model(self) -> None:
        for number, start, end in self._fields(0, len(self.data), _SAVED_MODEL, "", 1):
            if number == 2:
                graph = _MetaGraph(len(self.graphs))
                self.graphs.append(graph)
                self._meta_graph(graph, start, end, f"meta_graph[{graph.index}]")

    def _meta_graph(self, graph: _MetaGraph, start: int, end: int, path: str) -> None:
        for number, a, b in self._fields(start, end, _META_GRAPH, path, 2):
            if number == 2:
                self._graph(graph, a, b, f"{path}/graph_def")
            elif number == 3:
                for field_number, c, d in self._fields(a, b, _SAVER, f"{path}/saver_def", 3):
                    if field_number in (2, 3):
                        graph.saver[field_number] = self._node_name(c, d)

    def _graph(self, graph: _MetaGraph, start: int, end: int, path: str) -> None:
        for number, a, b in self._fields(start, end, _GRAPH, path, 3):
            if number == 1:
                node_path = f"{path}/node[{len(graph.nodes)}]"
                graph.nodes.append(self._node(a, b, node_path, 4, main=True))
            elif number == 2:
                self._library(graph, a, b, f"{path}/library")

    def _library(self, graph: _MetaGraph, start: int, end: int, path: str) -> None:
        count = 0
        for number, a, b in self._fields(start, end, _LIBRARY, path, 4):
            if number == 1:
                self._function(graph, a, b, f"{path}/function[{count}]")
                count += 1

    def _function(self, graph: _MetaGraph, start: int, end: int, path: str) -> None:
        name, shown = b"", ""
        function = _Function("")
        count = 0
        for number, a, b in self._fields(start, end, _FUNCTION, path, 5):
            if number == 1:
                for field_number, c, d in self._fields(a, b, _OP_DEF, f"{path}/signature", 6):
                    if field_number == 1:
                        name, shown = self._key(c, d), self._shown(c, d)
            elif number == 3:
                node = self._node(a, b, f"{path}/node_def[{count}]", 6, main=False)
                count += 1
                function.calls |= node.calls
                if node.op in _KEPT_OPS:
                    function.nodes.append(node)
        known = graph.functions.get(name)
        if known is None:
            function.shown = shown or f"<unnamed function #{len(graph.functions)}>"
            graph.functions[name] = function
        else:  # TensorFlow accepts a duplicate only when identical: keep both bodies
            known.calls |= function.calls
            known.nodes += function.nodes

    def _node(self, start: int, end: int, path: str, depth: int, *, main: bool) -> _Node:
        node = _Node(b"", "", "")
        op = b""
        for number, a, b in self._fields(start, end, _NODE, path, depth):
            if number == 1:
                node.name, node.shown = self._key(a, b), self._shown(a, b)
            elif number == 2:
                node.op, op = self._op(a, b, path), self._key(a, b)
            elif number == 3 and main:
                node.inputs.append(self._node_name(a, b))
                self._count(1)
            elif number == 5:
                key, value = self._attr_entry(node.calls, a, b, f"{path}/attr", depth + 1)
                if key in _STRING_ATTRS and value is not None:
                    node.strings[key] = value
        if op:  # an op that is not a primitive names a library function: a call
            node.calls.add(op)
        self._count(1 + len(node.calls))
        return node

    def _attr_entry(
        self, calls: set[bytes], start: int, end: int, path: str, depth: int
    ) -> tuple[str, str | None]:
        """A map<string, AttrValue> entry: its key and its string value; calls are added."""
        key, value = "", None
        for number, a, b in self._fields(start, end, _MAP_ENTRY, path, depth):
            if number == 1:
                key = self._shown(a, b)
            elif number == 2:
                value = self._attr_value(calls, a, b, f"{path}/value", depth + 1)
        return key, value

    def _attr_value(
        self, calls: set[bytes], start: int, end: int, path: str, depth: int
    ) -> str | None:
        value = None
        for number, a, b in self._fields(start, end, _ATTR_VALUE, path, depth):
            if number == 2:
                value = self._shown(a, b)
            elif number == 9:  # set when the function is called: not known here
                value = f"<placeholder {self._shown(a, b)}>"
            elif number == 10:
                self._name_attr_list(calls, a, b, f"{path}/func", depth + 1)
            elif number == 1:
                for item, c, d in self._fields(a, b, _LIST_VALUE, f"{path}/list", depth + 1):
                    if item == 9:
                        self._name_attr_list(calls, c, d, f"{path}/list/func", depth + 2)
        return value

    def _name_attr_list(
        self, calls: set[bytes], start: int, end: int, path: str, depth: int
    ) -> None:
        for number, a, b in self._fields(start, end, _NAME_ATTR_LIST, path, depth):
            if number == 1:
                calls.add(self._key(a, b))
            elif number == 2:
                self._attr_entry(calls, a, b, f"{path}/attr", depth + 1)

    def _fields(
        self, start: int, end: int, known: dict[int, int], path: str, depth: int
    ) -> Iterator[tuple[int, int, int]]:
        """``(field number, a, b)`` for each varint (``a`` is its value) and length-delimited
        field (``data[a:b]`` is its payload) of the message in ``data[start:end]``; fixed-size
        fields are skipped. A known field of another wire type is malformed."""
        if depth > MAX_DEPTH:
            raise _Malformed(f"messages nested deeper than {MAX_DEPTH}", offset=start, path=path)
        pos = start
        while pos < end:
            at = pos
            key, pos = self._varint(pos, end, path)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Malformed("field number 0", offset=at, path=path)
            expected = known.get(number)
            if expected is not None and wire != expected:
                raise _Malformed(
                    f"field {number} has wire type {wire}, not {expected}", offset=at, path=path
                )
            if wire == 0:
                value, pos = self._varint(pos, end, path)
                yield number, value, 0
            elif wire == 2:
                length, pos = self._varint(pos, end, path)
                if length > end - pos:
                    raise _Malformed(
                        f"field {number} of length {length} runs past the end of its message "
                        f"({end - pos} bytes left)",
                        offset=at,
                        path=path,
                    )
                yield number, pos, pos + length
                pos += length
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if width > end - pos:
                    raise _Malformed(
                        f"field {number} of {width} bytes runs past the end of its message",
                        offset=at,
                        path=path,
                    )
                pos += width
            else:
                raise _Malformed(
                    f"field {number} has wire type {wire}, which SavedModel never uses",
                    offset=at,
                    path=path,
                )

    def _varint(self, pos: int, end: int, path: str) -> tuple[int, int]:
        data, value, at = self.data, 0, pos
        for shift in range(0, 70, 7):
            if pos >= end:
                raise _Malformed("varint runs past the end of its message", offset=at, path=path)
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value & 0xFFFF_FFFF_FFFF_FFFF, pos
        raise _Malformed("varint longer than 10 bytes", offset=at, path=path)

    def _op(self, start: int, end: int, path: str) -> str:
        if end - start > _NAME_BYTES:
            return self._shown(start, end)  # no op is that long: it can only be a function
        try:
            return bytes(self.view[start:end]).decode()
        except UnicodeDecodeError:
            raise _Malformed("op name is not UTF-8", offset=start, path=path) from None

    def _node_name(self, start: int, end: int) -> bytes:
        """The node an input or a tensor names: ``^node``, ``node:1`` and ``node:out:0`` are
        ``node``."""
        if self.data[start : start + 1] == b"^":
            start += 1
        colon = self.data.find(b":", start, end)
        return self._key(start, end if colon < 0 else colon)

    def _key(self, start: int, end: int) -> bytes:
        raw = self.view[start:end]
        if len(raw) <= _NAME_BYTES:
            return bytes(raw)
        return b"\0" + hashlib.blake2b(raw, digest_size=16).digest()

    def _shown(self, start: int, end: int) -> str:
        """A name as a finding shows it: printable, at most 120 characters."""
        text = bytes(self.view[start : min(end, start + 120)]).decode(errors="replace")
        if not text.isprintable():
            text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
        return text + "..." if end - start > 120 else text

    def _count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_GRAPH_ITEMS:
            raise _TooMany


def _judge(graph: _MetaGraph, *, location: str, checkpoints: bool) -> list[Finding]:
    """The findings for one meta graph's nodes, main graph first, then each function."""
    where = f"{location}#meta_graph[{graph.index}]"
    by_name: dict[bytes, list[_Node]] = {}
    for node in graph.nodes:
        by_name.setdefault(node.name, []).append(node)
    save_nodes = _upstream(graph.saver.get(2), by_name)
    restore_nodes = _upstream(graph.saver.get(3), by_name)
    saver_nodes = save_nodes | restore_nodes
    save_fns = _reach(_calls_of(by_name, save_nodes), graph.functions)
    restore_fns = _reach(_calls_of(by_name, restore_nodes), graph.functions)
    other_roots = _calls_of(by_name, by_name.keys() - saver_nodes)
    for name, function in graph.functions.items():
        if name not in save_fns and name not in restore_fns:
            other_roots |= function.calls
    others = _reach(other_roots, graph.functions)

    findings: list[Finding] = []
    for node in graph.nodes:
        allowed = (CHECKPOINT_SAVE_OPS if node.name in save_nodes else frozenset()) | (
            CHECKPOINT_RESTORE_OPS if node.name in restore_nodes else frozenset()
        )
        findings += _check(node, f"{where}/node:{node.shown}", allowed, checkpoints)
    for name, function in graph.functions.items():
        allowed = (CHECKPOINT_SAVE_OPS if name in save_fns - others else frozenset()) | (
            CHECKPOINT_RESTORE_OPS if name in restore_fns - others else frozenset()
        )
        for node in function.nodes:
            at = f"{where}/function:{function.shown}/node:{node.shown}"
            findings += _check(node, at, allowed, checkpoints)
    return findings


def _check(node: _Node, at: str, allowed: frozenset[str], checkpoints: bool) -> list[Finding]:
    op, runs = node.op, f"node {node.shown!r} runs {node.op}"
    if op in PYTHON_OPS:
        message = f"{runs}, which calls Python code of the process that serves the model"
        return [Finding(Severity.CRITICAL, "savedmodel.dangerous-op", message, at)]
    if op in FILE_AND_NETWORK_OPS:
        message = f"{runs}, which touches files or the network"
    elif op in FILE_ATTR_OPS:
        attr, harmless = FILE_ATTR_OPS[op]
        value = node.strings.get(attr)
        if value is None or value.startswith(harmless):
            return []
        message = f"{runs} with {attr} {value!r}, which touches a file"
    elif op in _CHECKPOINT_OPS and checkpoints and op not in allowed:
        message = (
            f"{runs} outside the model's saver: it reads or writes checkpoint files at a path "
            "the graph chooses"
        )
    else:
        return []
    return [_high("savedmodel.dangerous-op", message, at)]


def _upstream(root: bytes | None, by_name: dict[bytes, list[_Node]]) -> set[bytes]:
    """The main-graph nodes ``root`` depends on, itself included."""
    seen: set[bytes] = set()
    todo = [root] if root is not None and root in by_name else []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += (i for node in by_name[name] for i in node.inputs if i in by_name)
    return seen


def _calls_of(by_name: dict[bytes, list[_Node]], names: Iterable[bytes]) -> set[bytes]:
    return {call for name in names for node in by_name[name] for call in node.calls}


def _reach(roots: set[bytes], functions: dict[bytes, _Function]) -> set[bytes]:
    """The library functions ``roots`` name, and every function they call, transitively."""
    seen: set[bytes] = set()
    todo = [name for name in roots if name in functions]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += (call for call in functions[name].calls if call in functions)
    return seen
