"""The files an ONNX graph refers to (its external-data `location`s), read without the onnx package.

Why by hand: the runtime imports numpy, onnxruntime and tokenizers only, and onnx (with its
compiled protobuf classes) is an export-time dependency. The walk needs a handful of field
numbers from `onnx.proto`, and the protobuf wire format lets everything else be skipped by
its length. It exists so that the runtime confines a package's files itself, whatever the
onnxruntime version (1.20 follows `../../etc/...` locations; newer ones refuse them).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

# Field numbers from onnx.proto (stable since IR version 3).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA = 8, 13
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_ENTRY_KEY, _ENTRY_VALUE = 1, 2

# Subgraphs (a Scan's body, an If's branches) nested deeper than this are refused: the walk
# recurses per level, and ONNX's own checker stops near 100 too.
MAX_GRAPH_DEPTH = 100
# ONNX Runtime refuses protobufs over 2 GiB (their weights go to external data), so a larger
# graph file is refused before it is read into memory.
MAX_GRAPH_BYTES = 2 << 30


class GraphFormatError(ValueError):
    """Bytes that are not a well-formed ONNX protobuf."""


class ExternalTensor(NamedTuple):
    """A tensor a graph keeps outside its protobuf: its name, the file (`location`, relative to the
    graph's folder), and whether it sits in a subgraph (a Scan body) rather than the main graph."""

    name: str
    location: str
    in_subgraph: bool


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise GraphFormatError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview):
    """`(field number, payload)` of each length-delimited field; other wire types skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise GraphFormatError("a field runs past the end of the message")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise GraphFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise GraphFormatError("a field runs past the end of the message")


def _tensor(buf: memoryview, found: list[ExternalTensor], depth: int) -> None:
    name, location = "", None
    for number, payload in _fields(buf):
        if number == _TENSOR_NAME:
            name = bytes(payload).decode("utf-8", "replace")
        elif number == _TENSOR_EXTERNAL_DATA:
            entry = dict(_fields(payload))
            if bytes(entry.get(_ENTRY_KEY, b"")) == b"location":
                location = bytes(entry.get(_ENTRY_VALUE, b"")).decode("utf-8", "surrogateescape")
    if location is not None:
        found.append(ExternalTensor(name, location, depth > 0))


def _sparse(buf: memoryview, found: list, depth: int) -> None:
    for number, payload in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(payload, found, depth)


def _node(buf: memoryview, found: list, depth: int) -> None:
    """A node's attribute tensors count as nested (depth + 1): only initializers of the main graph
    are read from external data by every binding."""
    for number, payload in _fields(buf):
        if number != _NODE_ATTRIBUTE:
            continue
        for field, value in _fields(payload):
            if field in (_ATTR_T, _ATTR_TENSORS):
                _tensor(value, found, depth + 1)
            elif field in (_ATTR_G, _ATTR_GRAPHS):
                _graph(value, found, depth + 1)
            elif field in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                _sparse(value, found, depth + 1)


def _graph(buf: memoryview, found: list, depth: int) -> None:
    if depth > MAX_GRAPH_DEPTH:
        raise GraphFormatError(f"subgraphs nested more than {MAX_GRAPH_DEPTH} deep")
    for number, payload in _fields(buf):
        if number == _GRAPH_NODE:
            _node(payload, found, depth)
        elif number == _GRAPH_INITIALIZER:
            _tensor(payload, found, depth)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(payload, found, depth + 1)


def external_tensors(graph: bytes | memoryview) -> list[ExternalTensor]:
    """Every tensor of the serialized graph `graph` stored as external data.

    Covers the main graph, subgraphs (a Scan's body), attribute tensors, sparse tensors and
    model-local functions; all but the main graph's dense initializers are `in_subgraph`.

    Raises:
        GraphFormatError: the bytes are not a well-formed ONNX protobuf, or nest subgraphs more
            than `MAX_GRAPH_DEPTH` deep.
    """
    buf = memoryview(graph)
    found: list[ExternalTensor] = []
    for number, payload in _fields(buf):
        if number == _MODEL_GRAPH:
            _graph(payload, found, 0)
        elif number == _MODEL_FUNCTIONS:
            for field, value in _fields(payload):
                if field == _FUNCTION_NODE:
                    _node(value, found, 1)
    return found


def external_data_locations(path: str | Path) -> list[tuple[str, str]]:
    """`(tensor name, location)` of every tensor of the graph file at `path` stored as external data
    (`external_tensors`).

    Raises:
        GraphFormatError: the file is not a well-formed ONNX protobuf, is over 2 GiB, or nests
            subgraphs more than `MAX_GRAPH_DEPTH` deep.
    """
    check_graph_size(Path(path))
    return [(t.name, t.location) for t in external_tensors(Path(path).read_bytes())]


def check_graph_size(path: Path) -> None:
    """Refuse a graph file over 2 GiB before it is read (GraphFormatError)."""
    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise GraphFormatError(f"{size} bytes, over the 2 GiB that ONNX Runtime reads in a graph file")


class GraphBytes(NamedTuple):
    """A graph and the files it keeps its weights in, as bytes read once: what a session is made of.

    `path` names the graph in messages; `external` maps each external-data `location` to its
    file's bytes. Loading from these bytes (never from the paths again) is what keeps the weights
    a session runs the ones whose sha256 was checked.
    """

    path: Path
    model: bytes
    external: dict[str, bytes]

    @classmethod
    def read(cls, path: str | Path) -> "GraphBytes":
        """Read a graph and its external-data files (relative to its folder), without any check:
        for graphs the caller wrote itself (the exporter's); packages go through
        `package.load_package`, which confines and verifies them.

        Raises:
            GraphFormatError: the file is not a well-formed ONNX protobuf.
        """
        path = Path(path)
        check_graph_size(path)
        model = path.read_bytes()
        locations = {t.location for t in external_tensors(model)}
        return cls(path, model, {name: (path.parent / name).read_bytes() for name in sorted(locations)})
