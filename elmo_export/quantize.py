"""Quantization: an fp32 ONNX graph in, a quantized ONNX graph out.

One typed settings dataclass per scheme:

- `Int8Settings`: int8 weights (a scale per output column or per matrix) and int8 activations
  quantized in the graph with a scale per row, so that a sentence's vectors do not depend on
  its batch-mates (`quantize_int8` says how and why it is not onnxruntime's `quantize_dynamic`,
  whose scale is one per call). Every MatMul with a constant weight, those inside the LSTM's
  Scan bodies included, becomes `com.microsoft.MatMulIntegerToFloat` (CPU execution provider).
- `Int4Settings`: weight-only 4-bit block-wise (`com.microsoft.MatMulNBits`): each block of
  `block_size` weights along K shares one float scale and a 4-bit zero point; activations stay
  float. Rounded by GPTQ on the inputs the reference sees on a calibration text (`gptq.py`,
  `calibration.py`), or to nearest by onnxruntime's `MatMulNBitsQuantizer`.

fp16 is not made here: `onnx_graph.build_*(precision="fp16")` builds it directly
(onnxconverter_common's float16 pass breaks Loop/Scan bodies).

onnxruntime checks nothing after quantizing: the exporter re-validates every quantized package
against the reference with its own tolerance (`parity.py`); `float_weight_matmuls` below
lists any weight MatMul left in float (the tests use it).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterator, Literal, Mapping, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from elmo_export.gptq import matmul_nbits, quantize_gptq

log = logging.getLogger(__name__)

WEIGHT_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class Int8Settings:
    """Int8 weights and per-row int8 activations for every MatMul with a constant weight (CPU).

    Each activation row (one token, one time step of one sentence) is quantized with its own
    scale, computed in the graph from that row alone; where the graph itself bounds an
    activation (the LSTM state `h` by `proj_clip`, `sigmoid(o) * tanh(c)` by 1) the scale is
    that fixed bound instead. Either way a row's vectors do not depend on the other rows of
    the batch, so a sentence gets the same vectors, bit for bit, alone or in any batch
    (onnxruntime's `quantize_dynamic`, which this replaced, takes one scale per call). The
    products run as `com.microsoft.MatMulIntegerToFloat` (CPU execution provider).

    Attributes:
        per_channel: for the weights outside the recurrence (the char CNN, its highway and
            projection, the LSTM's input products over all steps): one scale per output column
            instead of one per matrix. More exact, and free there: these products are large
            and compute-bound.
        per_channel_steps: the same for the weights used at every time step (the LSTM's
            hidden-to-gate products and projection). Off by default: these products are
            memory-bound, and onnxruntime's kernel reads per-column weights slower, for little
            accuracy (measured with the per-call activation scales of before:
            benchmarks/RESULTS.md, "Design measurements").
        fixed_scales: where the graph bounds an activation (`activation_ranges`: the LSTM
            state within `proj_clip`, `sigmoid * tanh` within 1, rows of the char embedding
            table), quantize it with that fixed range instead of a scale per row: no reduction
            over each row before the product and no multiply by the row scales after it. The
            bound holds for every state the model produces; an initial state beyond
            `proj_clip`, which the model never produces, saturates.
        weight_type: "QInt8" (signed, the default) or "QUInt8" (zero point 128). QInt8
            weights with uint8 activations use onnxruntime's fast u8s8 kernels.
        reduce_range: 7-bit weights (the default). On CPUs without VNNI (AVX2), onnxruntime's
            u8s8 kernel adds pairs of 8-bit products in 16 bits, which saturates with 8-bit
            weights: synthetic `small` on a 2-core AMD EPYC (AVX2), worst layer's mean cosine
            to fp32 0.99729 with 8-bit weights, 0.99927 with 7-bit ones (onnxruntime's
            `quantize_dynamic` with 8-bit weights and per-call scales: 0.99817).
        op_types: the op types whose constant weights are quantized (MatMul only: the graphs
            have no Gemm). The char embedding and all biases stay float.
    """

    per_channel: bool = True
    per_channel_steps: bool = False
    fixed_scales: bool = True
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("MatMul",)

    name: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        if self.weight_type not in ("QInt8", "QUInt8"):
            raise ValueError(f"weight_type is {self.weight_type!r}; choose QInt8 or QUInt8")
        if tuple(self.op_types) != ("MatMul",):
            raise ValueError(f"op_types is {self.op_types!r}; only ('MatMul',) is supported")

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {
            "name": self.name,
            "method": "dynamic, per row",
            "tool": "elmo_export.quantize.quantize_int8",
            "op": "com.microsoft.MatMulIntegerToFloat",
            **asdict(self),
            "op_types": list(self.op_types),
            "activations": "uint8, one scale per row (per token and step) or the graph's fixed bound",
            "devices": ["cpu"],
        }


@dataclass(frozen=True)
class Int4Settings:
    """Weight-only 4-bit block-wise quantization of MatMul weights (`MatMulNBits`).

    Attributes:
        block_size: weights along K sharing one scale (and zero point); a power of two >= 16.
            64 is the default: rounded to nearest, 128 lost accuracy and 32 put the `original`
            package over its size target (benchmarks/RESULTS.md, "Design measurements"); with
            GPTQ, 128 measured nearly as exact on the released-size ELMoForManyLangs model
            ("int4 variants"), not yet on the others.
        min_blocks: a matrix with few rows K gets smaller blocks, so that each column has at
            least this many (never below 16): the fixture-size models (K = 16 to 124) need it to
            meet the int4 tolerance; every matrix of the official architectures has K >= 256 and
            keeps `block_size`.
        symmetric: False stores a 4-bit zero point per block (asymmetric range; more exact for
            +0.8% of the fp32 size at block 64); True centres every block on zero.
        accuracy_level: MatMulNBits' `accuracy_level` (None: the op's default, float compute;
            4: int8 activations, faster on CPUs with VNNI, less exact).
        keep_float: weights left in float32, by name (substrings of the initializer names that
            `onnx_graph` gives them): the char CNN kernels (`W_cnn`) and the token projection
            (`W_proj`). They hold 1.3% of the `original` weights, yet their errors reach every
            layer: quantized, they cost as much accuracy as all the LSTM matrices together.
        rounding: "gptq" (the default): each weight rounded so that its product changes least on
            the inputs the reference sees on the calibration text (`gptq.quantize_gptq`; the
            same size and op as round to nearest). "rtn": round to nearest, by onnxruntime's
            `MatMulNBitsQuantizer`. On the released-size ELMoForManyLangs model round to
            nearest fails the int4 parity bar (benchmarks/RESULTS.md, "int4 variants").
        damp: GPTQ's dampening, a fraction of the moments' mean diagonal added to it.
    """

    block_size: int = 64
    min_blocks: int = 4
    symmetric: bool = False
    accuracy_level: int | None = None
    keep_float: tuple[str, ...] = ("W_cnn", "W_proj")
    rounding: Literal["gptq", "rtn"] = "gptq"
    damp: float = 0.01

    name: ClassVar[str] = "int4"

    def __post_init__(self) -> None:
        b = self.block_size
        if type(b) is not int or b < 16 or b & (b - 1):
            raise ValueError(f"block_size is {b!r}; expected a power of two >= 16 (e.g. 32, 64, 128)")
        if type(self.min_blocks) is not int or self.min_blocks < 1:
            raise ValueError(f"min_blocks is {self.min_blocks!r}; expected an integer >= 1")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level is {self.accuracy_level!r}; expected None or 0-4")
        if self.rounding not in ("gptq", "rtn"):
            raise ValueError(f"rounding is {self.rounding!r}; expected 'gptq' or 'rtn'")
        if self.rounding == "gptq" and self.symmetric:
            raise ValueError("symmetric blocks are for rounding='rtn' only; GPTQ here stores a zero point per block")
        if not (isinstance(self.damp, (int, float)) and 0 < self.damp < 1):
            raise ValueError(f"damp is {self.damp!r}; expected a fraction between 0 and 1 (GPTQ's default 0.01)")

    def block_size_for(self, rows: int) -> int:
        """The block size for a weight of `rows` rows (K): `block_size`, smaller for small K."""
        block = self.block_size
        while block > 16 and rows < block * self.min_blocks:
            block //= 2
        return block

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        gptq = self.rounding == "gptq"
        return {
            "name": self.name,
            **asdict(self),
            "method": "weight-only block-wise, GPTQ on calibration inputs" if gptq
            else "weight-only block-wise, round to nearest",
            "tool": "elmo_export.gptq.quantize_gptq" if gptq
            else "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            "op": "com.microsoft.MatMulNBits",
            "keep_float": list(self.keep_float),
            "activations": "float32",
        }


QuantizationSettings = Union[Int8Settings, Int4Settings]

# The settings each `--quantize` name stands for.
DEFAULT_SETTINGS: dict[str, QuantizationSettings] = {"int8": Int8Settings(), "int4": Int4Settings()}


def quantize(model: onnx.ModelProto, settings: QuantizationSettings,
             moments: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Quantize an fp32 graph with `settings`; `model` is left unchanged.

    `moments`: for int4's GPTQ, `{weight initializer: E[x x^T] of its product's input}`
    (`calibration.input_moments`, keyed through `onnx_graph`'s `sources`).

    Raises:
        TypeError: `settings` is not an `Int8Settings` or `Int4Settings`.
    """
    if isinstance(settings, Int8Settings):
        return quantize_int8(model, settings)
    if isinstance(settings, Int4Settings):
        return quantize_int4(model, settings, moments)
    raise TypeError(f"settings is {type(settings).__name__}; expected Int8Settings or Int4Settings")


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Order `graph`'s nodes (and its subgraphs') topologically, in place, counting what each
    subgraph reads from the enclosing scope; ties keep their original order.

    onnxruntime's quantizers add their nodes at the end and reorder by explicit inputs only,
    which can put a Scan before the producers of what its body reads from the outer scope (the
    hoisted input products): the ONNX checker then rejects the graph.
    """
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    needs = []
    for node in graph.node:
        for sub in _subgraphs(node):
            sort_nodes(sub)
        names = set(node.input).union(*(_outer_reads(sub) for sub in _subgraphs(node)))
        needs.append({producer[name] for name in names if name in producer})
    users: dict[int, list[int]] = {k: [] for k in range(len(graph.node))}
    for k, deps in enumerate(needs):
        for dep in deps:
            users[dep].append(k)
    waiting = [len(deps) for deps in needs]
    ready = [k for k, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for user in users[k]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(graph.node):
        raise ValueError(f"graph {graph.name!r} has a cycle")
    nodes = [graph.node[k] for k in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """The names a subgraph reads but does not define: what it takes from the enclosing scope."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {out for node in graph.node for out in node.output}
    read = {name for node in graph.node for name in node.input if name}
    read |= {name for node in graph.node for sub in _subgraphs(node) for name in _outer_reads(sub)}
    return read - defined


def quantize_int8(model: onnx.ModelProto, settings: Int8Settings = Int8Settings()) -> onnx.ModelProto:
    """Int8 weights, per-row int8 activations: every MatMul with a constant 2-D weight, in the
    graph and every subgraph, becomes `MatMulIntegerToFloat`; `model` is unchanged.

    MatMuls that read the same activation share its quantization (the four gates of a step
    read one `h`). Each row's scale comes from that row alone: `max(abs(row)) / 127` around
    zero point 128, or `max(row) / 255` around 0 for an activation the graph keeps
    non-negative (the char CNN's ReLU outputs and their highway mixes: twice the levels); or,
    with `Int8Settings.fixed_scales`, from the graph's own bound of the activation
    (`activation_ranges`). The products' columns are scaled by the weights' scales inside the
    op, the rows by theirs after it. Integer products are exact, so nothing here depends on
    how many rows a call has or how they are split between threads.

    Why not onnxruntime's `quantize_dynamic`: its `DynamicQuantizeLinear` takes one scale for
    the whole activation tensor, i.e. for every token of the call, so a sentence's vectors moved
    with its batch-mates, the call order and the token cache's history (min cosine 0.9928
    between two batchings of the same sentences, max abs 0.49 under 8 threads). Neither it nor
    `MatMulIntegerToFloat` takes a scale per row, so the row scales are applied after the op.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    if not any(o.domain == _MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    replaced: set[str] = set()
    _quantize_int8_graph(out.graph, settings, opset, 0, {}, [], replaced)
    used = {name for _, node, _ in _walk(out.graph) for name in node.input}
    for _, graph in _graphs(out.graph):
        keep = [t for t in graph.initializer if t.name in used or t.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return out


_MS_DOMAIN = "com.microsoft"
Interval = tuple[float, float]
_UNKNOWN: Interval = (-math.inf, math.inf)
_EMPTY: Interval = (math.inf, -math.inf)  # no value yet: a Scan state before the induction
# Ops that only move values around: the output's range is the data input's (the first).
_MOVERS = {"Gather", "Slice", "Identity", "Reshape", "Transpose", "Compress", "ReverseSequence",
           "Squeeze", "Unsqueeze", "Expand", "Flatten"}


def _graphs(graph: onnx.GraphProto, depth: int = 0) -> Iterator[tuple[int, onnx.GraphProto]]:
    yield depth, graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _graphs(sub, depth + 1)


def _hull(*ranges: Interval) -> Interval:
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _times(a: Interval, b: Interval) -> Interval:
    if _EMPTY in (a, b):
        return _EMPTY
    products = [0.0 if 0.0 in (x, y) else x * y for x in a for y in b]  # 0 x inf: the 0 end adds 0
    return min(products), max(products)


def _constant(name: str, scope: list[dict[str, onnx.TensorProto]]):
    for names in reversed(scope):
        if name in names:
            return np.asarray(numpy_helper.to_array(names[name]))
    return None


def activation_ranges(graph: onnx.GraphProto, known: dict[str, Interval],
                      scope: list[dict[str, onnx.TensorProto]] | None = None) -> dict[str, Interval]:
    """The range `[lo, hi]` each value of `graph` is guaranteed to lie in, by name (±inf: none).

    From constants, `Clip` with constant limits, `Relu`, `Sigmoid`, `Tanh`, sums and products,
    `a + g * (b - a)` with `g` in [0, 1] (a highway layer's mix stays between `a` and `b`), ops
    that only move values, and a Scan's state by induction over its steps (given an initial
    state within the range that the steps keep).
    """
    scope = (scope or []) + [{t.name: t for t in graph.initializer}]
    ranges = dict(known)
    for t in graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and np.prod(t.dims) > 0:
            value = _constant(t.name, scope)
            ranges[t.name] = (float(value.min()), float(value.max()))
    producer = {out: node for node in graph.node for out in node.output}

    def lerp(a: str, other: str) -> Interval | None:
        """`a + g * (b - a)` with g in [0, 1] lies between a and b."""
        mul = producer.get(other)
        if mul is None or mul.op_type != "Mul":
            return None
        for g, diff in (mul.input, mul.input[::-1]):
            sub = producer.get(diff)
            gate = ranges.get(g, _UNKNOWN)
            if sub is not None and sub.op_type == "Sub" and sub.input[1] == a and 0 <= gate[0] and gate[1] <= 1:
                return _hull(ranges.get(a, _UNKNOWN), ranges.get(sub.input[0], _UNKNOWN))
        return None

    for node in graph.node:
        ins = [ranges.get(name, _UNKNOWN) for name in node.input]
        op = node.op_type
        r = _UNKNOWN
        if op == "Clip" and len(node.input) == 3:
            lo, hi = _constant(node.input[1], scope), _constant(node.input[2], scope)
            if lo is not None and hi is not None:
                r = ins[0] if ins[0] == _EMPTY else (max(ins[0][0], float(lo)), min(ins[0][1], float(hi)))
        elif op == "Relu":
            r = ins[0] if ins[0] == _EMPTY else (max(ins[0][0], 0.0), max(ins[0][1], 0.0))
        elif op == "Sigmoid":
            r = (0.0, 1.0)
        elif op == "Tanh":
            r = (-1.0, 1.0)
        elif op == "Mul":
            r = _times(ins[0], ins[1])
        elif op == "Add":
            r = lerp(*node.input) or lerp(*node.input[::-1]) or (
                _EMPTY if _EMPTY in ins else (ins[0][0] + ins[1][0], ins[0][1] + ins[1][1]))
        elif op == "Sub":
            r = _EMPTY if _EMPTY in ins else (ins[0][0] - ins[1][1], ins[0][1] - ins[1][0])
        elif op in _MOVERS:
            r = ins[0]
        elif op in ("Concat", "Where"):
            r = _hull(*(ins if op == "Concat" else ins[1:]))
        elif op == "Scan":
            for name, value in zip(node.output, _scan_ranges(node, ins, scope, ranges)[1]):
                ranges[name] = value
            continue
        for name in node.output:
            ranges[name] = r
    return ranges


def _scan_ranges(node: onnx.NodeProto, ins: list[Interval], scope, known: dict[str, Interval]
                 ) -> tuple[dict[str, Interval], list[Interval]]:
    """A Scan's body input ranges (its states by induction over the steps) and output ranges.

    `ins`: the ranges of the Scan's inputs; `known`: of the values its body reads from outside.
    """
    body = next(_subgraphs(node))
    n_scan = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
    n_state = len(node.input) - n_scan
    body_in, body_out = [v.name for v in body.input], [v.name for v in body.output]
    scanned = dict(zip(body_in[n_state:], ins[n_state:]))
    # What the steps guarantee of the state they hand on, knowing nothing of the state they get
    # (the induction hypothesis adds nothing to what it proves) ...
    first = activation_ranges(body, known | scanned | {name: _EMPTY for name in body_in[:n_state]}, scope)
    states = [first.get(name, _UNKNOWN) for name in body_out[:n_state]]
    # ... and whether they keep it when they get a state in that range.
    second = activation_ranges(body, known | scanned | dict(zip(body_in, states)), scope)
    kept = [s if _hull(s, second.get(name, _UNKNOWN)) == s else _UNKNOWN for name, s in zip(body_out, states)]
    inputs = known | scanned | dict(zip(body_in, kept))
    final = activation_ranges(body, inputs, scope)
    return inputs, kept + [final.get(name, _UNKNOWN) for name in body_out[n_state:]]


def _quantize_int8_graph(graph: onnx.GraphProto, settings: Int8Settings, opset: int, depth: int,
                         known: dict[str, Interval], outer: list[dict[str, onnx.TensorProto]],
                         replaced: set[str]) -> None:
    scope = outer + [{t.name: t for t in graph.initializer}]
    ranges = activation_ranges(graph, known, outer)
    per_channel = settings.per_channel if depth == 0 else settings.per_channel_steps
    levels_w = 63 if settings.reduce_range else 127
    consts: dict[str, onnx.TensorProto] = {}

    def const(hint: str, value) -> str:
        name = f"{graph.name}/int8_{hint}"
        if name not in consts:
            consts[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def weight(name: str) -> tuple[str, str, str]:
        """The quantized weight, its scale and zero point, next to the activation's nodes."""
        w = _constant(name, scope).astype(np.float32)  # (K, N)
        peak = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
        scale = np.where(peak > 0, peak / levels_w, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -levels_w, levels_w).astype(np.int8)
        zero = np.int8(0)
        if settings.weight_type == "QUInt8":
            q, zero = (q.astype(np.int16) + 128).astype(np.uint8), np.uint8(128)
        tensors = [numpy_helper.from_array(q, f"{name}_quantized"), numpy_helper.from_array(scale, f"{name}_scale"),
                   numpy_helper.from_array(np.asarray(zero), f"{name}_zero_point")]
        if tensors[0].name not in consts:
            consts.update((t.name, t) for t in tensors)
        replaced.add(name)
        return tensors[0].name, tensors[1].name, tensors[2].name

    nodes: list[onnx.NodeProto] = []
    activations: dict[str, tuple[str, str, str, str | None]] = {}  # x -> (q, scale, zero point, row scale)
    biases = _bias_adds(graph, scope)  # product -> (the Add of its bias, the bias)
    folded: set[str] = set()  # the outputs of the Adds whose bias went into the product
    for node in graph.node:
        if node.op_type == "Add" and node.output[0] in folded:
            continue
        for sub in _subgraphs(node):
            inner = _scan_ranges(node, [ranges.get(n, _UNKNOWN) for n in node.input], scope, ranges)[0] \
                if node.op_type == "Scan" else ranges
            _quantize_int8_graph(sub, settings, opset, depth + 1, inner, scope, replaced)
        w_name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        w = _constant(w_name, scope) if w_name is not None else None
        if w is None or w.ndim != 2:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in activations:
            span = ranges.get(x, _UNKNOWN)
            fixed = settings.fixed_scales and math.isfinite(span[0]) and math.isfinite(span[1])
            activations[x] = _quantize_activation(x, span, fixed, opset, const, nodes)
        q, a_scale, a_zero, row_scale = activations[x]
        w_q, w_scale, w_zero = weight(w_name)
        inputs = [q, w_q, a_scale, w_scale, a_zero, w_zero]
        product = f"{node.output[0]}_unscaled" if row_scale else node.output[0]
        add, bias = biases.get(node.output[0], (None, None)) if row_scale is None else (None, None)  # rows first
        if add is not None and _constant(bias, scope).shape == w.shape[1:]:
            # The op adds the bias itself: one pass over the product less.
            inputs, product = inputs + [bias], add.output[0]
            folded.add(add.output[0])
        nodes.append(helper.make_node("MatMulIntegerToFloat", inputs, [product], name=f"{node.name}_int8",
                                      domain=_MS_DOMAIN))
        if row_scale:
            nodes.append(helper.make_node("Mul", [product, row_scale], [node.output[0]], name=f"{node.name}_rows"))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts.values())


def _bias_adds(graph: onnx.GraphProto, scope: list[dict[str, onnx.TensorProto]]
               ) -> dict[str, tuple[onnx.NodeProto, str]]:
    """The Adds of a constant 1-D bias that are the only readers of a value of `graph`, with the
    bias, by that value.

    A product with a fixed activation scale takes such a bias into `MatMulIntegerToFloat`
    (its optional `bias` input), which onnxruntime does not fuse by itself: the LSTM's input
    products over all steps, a product as large as the batch's tokens times 4 x cells.
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input).union(*(_outer_reads(sub) for sub in _subgraphs(node))):
            readers.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}
    adds = {}
    for name, (node, *more) in readers.items():
        if more or name in outputs or node.op_type != "Add" or len(node.input) != 2:
            continue
        other = next((n for n in node.input if n != name), None)
        bias = _constant(other, scope) if other else None
        if bias is not None and bias.ndim == 1 and bias.dtype == np.float32:
            adds[name] = (node, other)
    return adds


def _quantize_activation(x: str, span: Interval, fixed: bool, opset: int, const, nodes: list[onnx.NodeProto]
                         ) -> tuple[str, str, str, str | None]:
    """Nodes quantizing `x` to uint8, with a fixed scale from `span` or one scale per row (last axis).

    A non-negative `x` uses all 255 levels above zero point 0; any other, 127 on each side of 128.

    Returns:
        (quantized, scale, zero point, row scale `(..., 1)` or None with a fixed scale): the op
        computes with `scale`; with a row scale, its product is multiplied by it.
    """
    unsigned = span[0] >= 0
    levels, zero = (255, np.uint8(0)) if unsigned else (127, np.uint8(128))
    zero_point = const(f"zero_point_{int(zero)}", zero)
    if fixed:
        peak = span[1] if unsigned else max(-span[0], span[1])
        scale = const(f"scale_{peak:g}", np.float32(max(peak, 1e-30) / levels))
        nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero_point], [f"{x}_int8"], name=f"{x}_int8"))
        return f"{x}_int8", scale, zero_point, None
    # A zero row gets a tiny scale instead of 0 (x / 0 is NaN); its products are 0 either way.
    names = [f"{x}_{part}" for part in ("abs", "peak", "peak_nz", "row_scale", "in_levels", "int8")]
    peak_of = x
    if not unsigned:
        nodes.append(helper.make_node("Abs", [x], [names[0]], name=names[0]))
        peak_of = names[0]
    if opset >= 18:
        nodes.append(helper.make_node("ReduceMax", [peak_of, const("last_axis", np.asarray([-1], np.int64))], [names[1]],
                                      name=names[1], keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMax", [peak_of], [names[1]], name=names[1], axes=[-1], keepdims=1))
    nodes.append(helper.make_node("Max", [names[1], const("tiny", np.float32(1e-30))], [names[2]], name=names[2]))
    nodes.append(helper.make_node("Mul", [names[2], const(f"per_level_{levels}", np.float32(1 / levels))], [names[3]], name=names[3]))
    nodes.append(helper.make_node("Div", [x, names[3]], [names[4]], name=names[4]))
    one = const("one", np.float32(1.0))
    nodes.append(helper.make_node("QuantizeLinear", [names[4], one, zero_point], [names[5]], name=names[5]))
    return names[5], one, zero_point, names[3]


def quantize_int4(model: onnx.ModelProto, settings: Int4Settings = Int4Settings(),
                  moments: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Weight-only 4-bit: MatMuls with a constant 2-D weight -> `MatMulNBits`; `model` is unchanged.

    Subgraphs (the LSTM's Scan bodies) included. GPTQ (`settings.rounding`) takes each weight's
    input moments from `moments` by initializer name; a weight without them (none of the
    graphs' weights, unless `keep_float` is emptied: the char CNN's inputs are char windows) is
    rounded to nearest. Round to nearest is onnxruntime's quantizer: one pass per block size in
    use (`Int4Settings.block_size_for`), each leaving the other passes' MatMuls alone.

    Raises:
        ValueError: GPTQ without `moments`.
        ImportError: onnxruntime's quantizer needs the `onnx-ir` package, which is missing.
    """
    if settings.rounding == "gptq":
        if moments is None:
            raise ValueError("int4 GPTQ needs the input moments of the weights (calibration.input_moments); "
                             "use Int4Settings(rounding='rtn') to round to nearest without them")
        return _quantize_int4_gptq(model, settings, moments)
    with _quiet_onnxruntime_logging():
        try:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        except ModuleNotFoundError as e:
            raise ImportError(
                f"int4 quantization needs onnxruntime's MatMulNBitsQuantizer, which failed to import "
                f"({e}); install the exporter's dependencies: pip install 'elmo-onnx[export]' (onnx-ir)"
            ) from None
        out = onnx.ModelProto()
        out.CopyFrom(model)  # the quantizer edits the graph in place
        groups: dict[int, list[str]] = {}
        for _, node, weight in _weight_matmuls(out.graph):
            if node.op_type == "MatMul" and weight is not None and len(weight.dims) == 2:
                if not any(part in weight.name for part in settings.keep_float):
                    groups.setdefault(settings.block_size_for(weight.dims[0]), []).append(node.name)
        all_names = {n.name for _, n, _ in _weight_matmuls(out.graph)}
        for block, names in sorted(groups.items()):
            quantizer = MatMulNBitsQuantizer(
                out,
                bits=4,
                block_size=block,
                is_symmetric=settings.symmetric,
                accuracy_level=settings.accuracy_level,
                nodes_to_exclude=sorted(all_names - set(names)),
                op_types_to_quantize=("MatMul",),
            )
            quantizer.process()
            out = quantizer.model.model
    sort_nodes(out.graph)  # see `sort_nodes`
    return out


def _quantize_int4_gptq(model: onnx.ModelProto, settings: Int4Settings,
                        moments: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    done = _gptq_graph(out.graph, settings, moments)
    log.debug("int4 GPTQ: %d weights", done)
    if not any(o.domain == _MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    return out


def _gptq_graph(graph: onnx.GraphProto, settings: Int4Settings, moments: Mapping[str, np.ndarray]) -> int:
    """Replace, in place, each MatMul of `graph` (and its subgraphs) whose weight is an
    initializer of the same graph; the weights are read one at a time. Returns the count."""
    done = sum(_gptq_graph(sub, settings, moments) for node in graph.node for sub in _subgraphs(node))
    weights = {t.name: t for t in graph.initializer}
    replaced: set[str] = set()
    for position, node in enumerate(graph.node):
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 2 or any(part in weight.name for part in settings.keep_float):
            continue
        value = numpy_helper.to_array(weight)
        blocks = quantize_gptq(value, moments.get(weight.name), settings.block_size_for(value.shape[0]), settings.damp)
        new, initializers = matmul_nbits(node, weight.name, blocks, settings.accuracy_level)
        graph.node[position].CopyFrom(new)
        graph.initializer.extend(initializers)
        replaced.add(weight.name)
        done += 1
    still_read = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return done


# -- inspection -----------------------------------------------------------------------------------


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _walk(graph: onnx.GraphProto, depth: int = 0, scope: tuple[dict[str, onnx.TensorProto], ...] = ()
          ) -> Iterator[tuple[int, onnx.NodeProto, tuple[dict[str, onnx.TensorProto], ...]]]:
    """Every node with its nesting depth (0: main graph) and the initializers in scope, innermost last."""
    scope = scope + ({t.name: t for t in graph.initializer},)
    for node in graph.node:
        yield depth, node, scope
        for sub in _subgraphs(node):
            yield from _walk(sub, depth + 1, scope)


def _weight_matmuls(graph: onnx.GraphProto) -> Iterator[tuple[int, onnx.NodeProto, onnx.TensorProto | None]]:
    """Every MatMul/Gemm with its depth and its weight (second input) if that is an initializer."""
    for depth, node, scope in _walk(graph):
        if node.op_type in WEIGHT_OPS and len(node.input) > 1:
            weight = next((names[node.input[1]] for names in reversed(scope) if node.input[1] in names), None)
            yield depth, node, weight


def op_counts(model: onnx.ModelProto) -> dict[str, Counter]:
    """Op types counted separately in the main graph and in all subgraphs (Scan/Loop bodies).

    Returns:
        `{"main": Counter, "subgraphs": Counter}`.
    """
    counts = {"main": Counter(), "subgraphs": Counter()}
    for depth, node, _ in _walk(model.graph):
        counts["main" if depth == 0 else "subgraphs"][node.op_type] += 1
    return counts


def float_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes whose weight is still a float initializer, with the weight's name.

    After `quantize` these should be only the ones the settings keep in float; any other name
    means onnxruntime's quantizer skipped that node (e.g. a MatMul in a subgraph).

    Returns:
        `"<op> <node> (<weight>, main graph|subgraph depth N)"` per node.
    """
    left = []
    for depth, node, weight in _weight_matmuls(model.graph):
        if weight is not None and weight.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            where = "main graph" if depth == 0 else f"subgraph depth {depth}"
            left.append(f"{node.op_type} {node.name or node.output[0]} ({weight.name}, {where})")
    return left


@contextmanager
def _quiet_onnxruntime_logging() -> Iterator[None]:
    """Keep onnxruntime's quantizers from configuring the root logger or logging per node.

    `matmul_nbits_quantizer` calls `logging.basicConfig(level=INFO)` at import and logs one INFO
    line per node; `quantize_dynamic` logs on the root logger once per activation it leaves to
    be quantized at run time (which is what dynamic quantization does) and warns about a
    pre-processing step that does not apply to these graphs.
    """
    root = logging.getLogger()
    placeholder = None
    if not root.handlers:  # makes the import's basicConfig a no-op
        placeholder = logging.NullHandler()
        root.addHandler(placeholder)
    names = ("onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    drop = _DropMessages(("Please consider to run pre-processing", "Quantization parameters for tensor"))
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if placeholder is not None:
            root.removeHandler(placeholder)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)
