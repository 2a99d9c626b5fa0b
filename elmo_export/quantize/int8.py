"""int8: weights and per-row activations in 8 bits, products as `com.microsoft.MatMulIntegerToFloat`.

The project's own quantizer, not onnxruntime's `quantize_dynamic`: that one takes one activation
scale per call, so a sentence's vectors would depend on its batch-mates; here each row gets its
own scale, or the graph's fixed bound of the activation (`ranges`), and a sentence's vectors
are the same, bit for bit, alone or in any batch (`quantize_int8` says how).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from elmo_export.quantize.graph import (
    MS_DOMAIN,
    Scope,
    constant,
    drop_replaced_initializers,
    outer_reads,
    subgraphs,
    use_microsoft_ops,
)
from elmo_export.quantize.ranges import UNKNOWN, Interval, activation_ranges, scan_ranges
from elmo_export.quantize.settings import Int8Settings


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
    use_microsoft_ops(out)
    replaced: set[str] = set()
    _Int8Graph(out.graph, settings, opset, 0, [], replaced).rewrite({})
    drop_replaced_initializers(out.graph, replaced)
    return out


class _Int8Graph:
    """The rewrite of one graph (and, recursively, its subgraphs): each MatMul with a constant
    2-D weight becomes `MatMulIntegerToFloat`, its activation quantized once for all its readers."""

    def __init__(
        self, graph: onnx.GraphProto, settings: Int8Settings, opset: int, depth: int, outer: Scope, replaced: set[str]
    ):
        self.graph, self.settings, self.opset, self.depth, self.outer = graph, settings, opset, depth, outer
        self.replaced = replaced  # the float weights replaced, in every graph
        self.scope = outer + [{t.name: t for t in graph.initializer}]
        self.per_channel = settings.per_channel if depth == 0 else settings.per_channel_steps
        self.consts: dict[str, onnx.TensorProto] = {}  # the new initializers, in the order made
        self.nodes: list[onnx.NodeProto] = []
        self.activations: dict[str, tuple[str, str, str, str | None]] = {}  # x -> (q, scale, zero point, row scale)
        self.folded: set[str] = set()  # the outputs of the Adds whose bias went into the product

    def rewrite(self, known: dict[str, Interval]) -> None:
        """Rewrite the graph in place; `known`: the ranges of what it reads from outside."""
        graph = self.graph
        ranges = activation_ranges(graph, known, self.outer)
        biases = _bias_adds(graph, self.scope)  # product -> (the Add of its bias, the bias)
        for node in graph.node:
            if node.op_type == "Add" and node.output[0] in self.folded:
                continue
            for sub in subgraphs(node):
                inner = (
                    scan_ranges(node, [ranges.get(n, UNKNOWN) for n in node.input], self.scope, ranges)[0]
                    if node.op_type == "Scan"
                    else ranges
                )
                _Int8Graph(sub, self.settings, self.opset, self.depth + 1, self.scope, self.replaced).rewrite(inner)
            w_name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
            w = constant(w_name, self.scope) if w_name is not None else None
            if w is None or w.ndim != 2:
                self.nodes.append(node)
                continue
            self._matmul(node, w_name, w, ranges.get(node.input[0], UNKNOWN), biases)
        del graph.node[:]
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.consts.values())

    def const(self, hint: str, value) -> str:
        """A new scalar or small initializer of this graph, made once by name."""
        name = f"{self.graph.name}/int8_{hint}"
        if name not in self.consts:
            self.consts[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def _weight(self, name: str, w: np.ndarray) -> tuple[str, str, str]:
        """The quantized weight, its scale and zero point, next to the activation's nodes."""
        levels = 63 if self.settings.reduce_range else 127
        w = w.astype(np.float32)  # (K, N)
        peak = np.abs(w).max(axis=0) if self.per_channel else np.abs(w).max()
        scale = np.where(peak > 0, peak / levels, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -levels, levels).astype(np.int8)
        zero = np.int8(0)
        if self.settings.weight_type == "QUInt8":
            q, zero = (q.astype(np.int16) + 128).astype(np.uint8), np.uint8(128)
        tensors = [
            numpy_helper.from_array(q, f"{name}_quantized"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.asarray(zero), f"{name}_zero_point"),
        ]
        if tensors[0].name not in self.consts:
            self.consts.update((t.name, t) for t in tensors)
        self.replaced.add(name)
        return tensors[0].name, tensors[1].name, tensors[2].name

    def _matmul(
        self,
        node: onnx.NodeProto,
        w_name: str,
        w: np.ndarray,
        span: Interval,
        biases: dict[str, tuple[onnx.NodeProto, str]],
    ) -> None:
        """The nodes replacing MatMul `node` of activation range `span` and constant weight `w`."""
        x = node.input[0]
        if x not in self.activations:
            fixed = self.settings.fixed_scales and math.isfinite(span[0]) and math.isfinite(span[1])
            self.activations[x] = _quantize_activation(x, span, fixed, self.opset, self.const, self.nodes)
        q, a_scale, a_zero, row_scale = self.activations[x]
        w_q, w_scale, w_zero = self._weight(w_name, w)
        inputs = [q, w_q, a_scale, w_scale, a_zero, w_zero]
        product = f"{node.output[0]}_unscaled" if row_scale else node.output[0]
        add, bias = biases.get(node.output[0], (None, None)) if row_scale is None else (None, None)  # rows first
        if add is not None and constant(bias, self.scope).shape == w.shape[1:]:
            # The op adds the bias itself: one pass over the product less.
            inputs, product = inputs + [bias], add.output[0]
            self.folded.add(add.output[0])
        self.nodes.append(
            helper.make_node("MatMulIntegerToFloat", inputs, [product], name=f"{node.name}_int8", domain=MS_DOMAIN)
        )
        if row_scale:
            self.nodes.append(helper.make_node("Mul", [product, row_scale], [node.output[0]], name=f"{node.name}_rows"))


def _bias_adds(graph: onnx.GraphProto, scope: Scope) -> dict[str, tuple[onnx.NodeProto, str]]:
    """The Adds of a constant 1-D bias that are the only readers of a value of `graph`, with the
    bias, by that value.

    A product with a fixed activation scale takes such a bias into `MatMulIntegerToFloat`
    (its optional `bias` input), which onnxruntime does not fuse by itself: the LSTM's input
    products over all steps, a product as large as the batch's tokens times 4 x cells.
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input).union(*(outer_reads(sub) for sub in subgraphs(node))):
            readers.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}
    adds = {}
    for name, (node, *more) in readers.items():
        if more or name in outputs or node.op_type != "Add" or len(node.input) != 2:
            continue
        other = next((n for n in node.input if n != name), None)
        bias = constant(other, scope) if other else None
        if bias is not None and bias.ndim == 1 and bias.dtype == np.float32:
            adds[name] = (node, other)
    return adds


def _quantize_activation(
    x: str, span: Interval, fixed: bool, opset: int, const: Callable[[str, object], str], nodes: list[onnx.NodeProto]
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
        axes = const("last_axis", np.asarray([-1], np.int64))
        nodes.append(helper.make_node("ReduceMax", [peak_of, axes], [names[1]], name=names[1], keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMax", [peak_of], [names[1]], name=names[1], axes=[-1], keepdims=1))
    nodes.append(helper.make_node("Max", [names[1], const("tiny", np.float32(1e-30))], [names[2]], name=names[2]))
    per_level = const(f"per_level_{levels}", np.float32(1 / levels))
    nodes.append(helper.make_node("Mul", [names[2], per_level], [names[3]], name=names[3]))
    nodes.append(helper.make_node("Div", [x, names[3]], [names[4]], name=names[4]))
    one = const("one", np.float32(1.0))
    nodes.append(helper.make_node("QuantizeLinear", [names[4], one, zero_point], [names[5]], name=names[5]))
    return names[5], one, zero_point, names[3]
