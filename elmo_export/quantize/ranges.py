"""Value ranges by interval analysis: the bounds an ONNX graph itself puts on its activations.

int8 quantizes an activation the graph bounds (the LSTM state `h` within `proj_clip`,
`sigmoid(o) * tanh(c)` within 1, rows of the char embedding table) with that fixed range instead
of a scale computed per row: no reduction over each row before the product and no multiply by
the row scales after it (`Int8Settings.fixed_scales`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from elmo_export.quantize.graph import Scope, constant, subgraphs

Interval = tuple[float, float]
UNKNOWN: Interval = (-math.inf, math.inf)
_EMPTY: Interval = (math.inf, -math.inf)  # no value yet: a Scan state before the induction
# Ops that only move values around: the output's range is the data input's (the first).
_MOVERS = {
    "Gather",
    "Slice",
    "Identity",
    "Reshape",
    "Transpose",
    "Compress",
    "ReverseSequence",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Flatten",
    "Split",
}


def _hull(*ranges: Interval) -> Interval:
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _times(a: Interval, b: Interval) -> Interval:
    if _EMPTY in (a, b):
        return _EMPTY
    products = [0.0 if 0.0 in (x, y) else x * y for x in a for y in b]  # 0 x inf: the 0 end adds 0
    return min(products), max(products)


def activation_ranges(
    graph: onnx.GraphProto, known: dict[str, Interval], scope: Scope | None = None
) -> dict[str, Interval]:
    """The range `[lo, hi]` each value of `graph` is guaranteed to lie in, by name (±inf: none).

    From constants, `Clip` with constant limits (the end of `elmo_export.activations`' sigmoid
    and tanh), `Relu`, `Sigmoid`, `Tanh`, sums and products,
    `a + g * (b - a)` with `g` in [0, 1] (a highway layer's mix stays between `a` and `b`), ops
    that only move values, and a Scan's state by induction over its steps (given an initial
    state within the range that the steps keep).
    """
    scope = (scope or []) + [{t.name: t for t in graph.initializer}]
    ranges = dict(known)
    for t in graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and np.prod(t.dims) > 0:
            value = constant(t.name, scope)
            ranges[t.name] = (float(value.min()), float(value.max()))
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        ins = [ranges.get(name, UNKNOWN) for name in node.input]
        if node.op_type == "Scan":
            for name, value in zip(node.output, scan_ranges(node, ins, scope, ranges)[1]):
                ranges[name] = value
            continue
        r = _node_range(node, ins, scope, ranges, producer)
        for name in node.output:
            ranges[name] = r
    return ranges


def _lerp(a: str, other: str, ranges: dict[str, Interval], producer: dict[str, onnx.NodeProto]) -> Interval | None:
    """`a + g * (b - a)` with g in [0, 1] lies between a and b."""
    mul = producer.get(other)
    if mul is None or mul.op_type != "Mul":
        return None
    for g, diff in (mul.input, mul.input[::-1]):
        sub = producer.get(diff)
        gate = ranges.get(g, UNKNOWN)
        if sub is not None and sub.op_type == "Sub" and sub.input[1] == a and 0 <= gate[0] and gate[1] <= 1:
            return _hull(ranges.get(a, UNKNOWN), ranges.get(sub.input[0], UNKNOWN))
    return None


def _node_range(
    node: onnx.NodeProto,
    ins: list[Interval],
    scope: Scope,
    ranges: dict[str, Interval],
    producer: dict[str, onnx.NodeProto],
) -> Interval:
    """The range of a (non-Scan) node's outputs, given its inputs' `ins`."""
    op = node.op_type
    if op == "Clip" and len(node.input) == 3:
        lo, hi = constant(node.input[1], scope), constant(node.input[2], scope)
        if lo is None or hi is None:
            return UNKNOWN
        return ins[0] if ins[0] == _EMPTY else (max(ins[0][0], float(lo)), min(ins[0][1], float(hi)))
    if op == "Relu":
        return ins[0] if ins[0] == _EMPTY else (max(ins[0][0], 0.0), max(ins[0][1], 0.0))
    if op == "Sigmoid":
        return (0.0, 1.0)
    if op == "Tanh":
        return (-1.0, 1.0)
    if op == "Mul":
        return _times(ins[0], ins[1])
    if op == "Add":
        return (
            _lerp(*node.input, ranges, producer)
            or _lerp(*node.input[::-1], ranges, producer)
            or (_EMPTY if _EMPTY in ins else (ins[0][0] + ins[1][0], ins[0][1] + ins[1][1]))
        )
    if op == "Sub":
        return _EMPTY if _EMPTY in ins else (ins[0][0] - ins[1][1], ins[0][1] - ins[1][0])
    if op in _MOVERS:
        return ins[0]
    if op in ("Concat", "Where"):
        return _hull(*(ins if op == "Concat" else ins[1:]))
    return UNKNOWN


def scan_ranges(
    node: onnx.NodeProto, ins: list[Interval], scope: Scope, known: dict[str, Interval]
) -> tuple[dict[str, Interval], list[Interval]]:
    """A Scan's body input ranges (its states by induction over the steps) and output ranges.

    `ins`: the ranges of the Scan's inputs; `known`: of the values its body reads from outside.
    """
    body = next(subgraphs(node))
    n_scan = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
    n_state = len(node.input) - n_scan
    body_in, body_out = [v.name for v in body.input], [v.name for v in body.output]
    scanned = dict(zip(body_in[n_state:], ins[n_state:]))
    # What the steps guarantee of the state they hand on, knowing nothing of the state they get
    # (the induction hypothesis adds nothing to what it proves) ...
    first = activation_ranges(body, known | scanned | {name: _EMPTY for name in body_in[:n_state]}, scope)
    states = [first.get(name, UNKNOWN) for name in body_out[:n_state]]
    # ... and whether they keep it when they get a state in that range.
    second = activation_ranges(body, known | scanned | dict(zip(body_in, states)), scope)
    # A state the steps never bound (still no value after the induction) is unknown.
    kept = [
        s if s != _EMPTY and _hull(s, second.get(name, UNKNOWN)) == s else UNKNOWN for name, s in zip(body_out, states)
    ]
    inputs = known | scanned | dict(zip(body_in, kept))
    final = activation_ranges(body, inputs, scope)
    return inputs, kept + [final.get(name, UNKNOWN) for name in body_out[n_state:]]
