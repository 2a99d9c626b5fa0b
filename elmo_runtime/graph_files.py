"""The files an ONNX graph refers to (its external-data `location`s), read without the onnx package.

Why by hand: the runtime imports numpy, onnxruntime and tokenizers only, and onnx (with its
compiled protobuf classes) is an export-time dependency. The walk needs a handful of field
numbers from `onnx.proto`, and the protobuf wire format lets everything else be skipped by
its length. It exists so that the runtime confines a package's files itself, whatever the
onnxruntime version (1.20 follows `../../etc/...` locations; newer ones refuse them).
"""

from __future__ import annotations

from pathlib import Path

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
            yield number, buf[pos:pos + size]
            pos += size
        else:
            raise GraphFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise GraphFormatError("a field runs past the end of the message")


def _tensor(buf: memoryview, found: list[tuple[str, str]]) -> None:
    name, location = "", None
    for number, payload in _fields(buf):
        if number == _TENSOR_NAME:
            name = bytes(payload).decode("utf-8", "replace")
        elif number == _TENSOR_EXTERNAL_DATA:
            entry = dict(_fields(payload))
            if bytes(entry.get(_ENTRY_KEY, b"")) == b"location":
                location = bytes(entry.get(_ENTRY_VALUE, b"")).decode("utf-8", "surrogateescape")
    if location is not None:
        found.append((name, location))


def _sparse(buf: memoryview, found: list) -> None:
    for number, payload in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(payload, found)


def _node(buf: memoryview, found: list, depth: int) -> None:
    for number, payload in _fields(buf):
        if number != _NODE_ATTRIBUTE:
            continue
        for field, value in _fields(payload):
            if field in (_ATTR_T, _ATTR_TENSORS):
                _tensor(value, found)
            elif field in (_ATTR_G, _ATTR_GRAPHS):
                _graph(value, found, depth + 1)
            elif field in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                _sparse(value, found)


def _graph(buf: memoryview, found: list, depth: int = 0) -> None:
    if depth > MAX_GRAPH_DEPTH:
        raise GraphFormatError(f"subgraphs nested more than {MAX_GRAPH_DEPTH} deep")
    for number, payload in _fields(buf):
        if number == _GRAPH_NODE:
            _node(payload, found, depth)
        elif number == _GRAPH_INITIALIZER:
            _tensor(payload, found)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(payload, found)


def external_data_locations(path: str | Path) -> list[tuple[str, str]]:
    """`(tensor name, location)` of every tensor of the graph at `path` stored as external data.

    Covers the main graph, subgraphs (a Scan's body), attribute tensors, sparse tensors and
    model-local functions.

    Raises:
        GraphFormatError: the file is not a well-formed ONNX protobuf, is over 2 GiB, or nests
            subgraphs more than `MAX_GRAPH_DEPTH` deep.
    """
    size = Path(path).stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise GraphFormatError(f"{size} bytes, over the 2 GiB that ONNX Runtime reads in a graph file")
    buf = memoryview(Path(path).read_bytes())
    found: list[tuple[str, str]] = []
    for number, payload in _fields(buf):
        if number == _MODEL_GRAPH:
            _graph(payload, found)
        elif number == _MODEL_FUNCTIONS:
            for field, value in _fields(payload):
                if field == _FUNCTION_NODE:
                    _node(value, found, 0)
    return found
