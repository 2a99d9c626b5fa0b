"""Build the package's two ONNX graphs from a reference biLM, node by node.

Why by hand rather than torch.onnx: the dynamo exporter unrolls the Python time loop to the
traced length, and the TorchScript exporter that keeps a dynamic `Loop` is deprecated. Writing
the graph with `onnx.helper` keeps the recurrence a real `Scan` over a dynamic number of
steps that computes only the rows still running, keeps every weight a plain 2-D MatMul operand
(what the int8 and int4 quantizers need), and gives fp16 its own path instead of a converter
that breaks on subgraphs. The reference model stays
the single source of the weights; parity tests prove the graphs equal to it.

Graph contract: `elmo_runtime.contract`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from elmo_export import activations
from elmo_export.model import ElmoBiLm
from elmo_runtime import contract as C

Precision = Literal["fp32", "fp16"]

# Initializer names the quantizers read: int4 keeps these weights in float (`Int4Settings.keep_float`).
CNN_KERNEL = "W_cnn"  # one per filter width: W_cnn_1, W_cnn_2, ...
TOKEN_PROJECTION = "W_proj"
_LAST = np.iinfo(np.int64).max  # a Slice end meaning "to the end"
_DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}
_ONNX_DTYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "int64": TensorProto.INT64}


class _Graph:
    """Accumulates nodes and initializers with unique names; one instance per (sub)graph.

    `sources`, when given, collects which reference module each weight comes from (filled by
    `weight(..., source=)`): the calibration for int4's GPTQ runs on the reference's modules.
    `exact`: float32 sigmoid and tanh written out in exactly rounded ops (`activation`).
    """

    def __init__(
        self,
        prefix: str,
        precision: Precision,
        opset: int,
        sources: dict[str, str] | None = None,
        exact: bool = False,
    ):
        self.prefix = prefix
        self.exact = exact
        self.scalars: dict[float | tuple[float, float], str] = {}
        self.sources = sources
        self.precision = precision
        self.np_dtype, self.onnx_dtype = _DTYPES[precision]
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(
        self,
        op_type: str,
        inputs: list[str],
        hint: str | None = None,
        n_out: int = 1,
        output: str | None = None,
        **attrs,
    ) -> str | list[str]:
        """Add a node; `output` names its (single) output instead of a generated name."""
        outputs = [output] if output else [self.name(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs))
        return outputs[0] if n_out == 1 else outputs

    def weight(self, value: np.ndarray | torch.Tensor, hint: str, source: str | None = None) -> str:
        """A float initializer in the graph's precision; `source`: the path of the reference
        `nn.Linear` whose input the product with this weight takes."""
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        name = self.const(np.ascontiguousarray(value, dtype=self.np_dtype), hint)
        if source is not None and self.sources is not None:
            self.sources[name] = source
        return name

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values: list[int], hint: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int, hint: str | None = None) -> str:
        # Reduce* ops took `axes` as an attribute until opset 18 (ReduceSum: 13), an input after.
        takes_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if takes_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=axes, keepdims=keepdims)

    def clip(self, x: str, limit: float | None) -> str:
        if limit is None:
            return x
        lo = self.const(np.asarray(-limit, dtype=self.np_dtype), "clip_lo")
        hi = self.const(np.asarray(limit, dtype=self.np_dtype), "clip_hi")
        return self.op("Clip", [x, lo, hi])

    def activation(self, op_type: str, x: str) -> str:
        """`Sigmoid` or `Tanh` of a 2-D `x`: the op itself, or with `exact` in float32 a rational
        function of Clip, Mul, Add and Div nodes, the same bits in every ONNX Runtime build
        (`elmo_export.activations`) at about twice the run time of ONNX Runtime's kernels.

        The numerator and the denominator run through Horner's rule together, as the two rows of
        one `(2, rows, width)` tensor (the shorter padded with leading zero coefficients, which
        leaves its bits as they are): half the nodes, and in a Scan step each node costs more
        than its arithmetic.
        """
        if not self.exact or self.onnx_dtype != TensorProto.FLOAT:
            return self.op(op_type, [x])
        f = activations.FUNCTIONS[op_type]
        v = self.op("Clip", [x, self.scalar(-f.limit), self.scalar(f.limit)])
        v2 = self.op("Mul", [v, v])
        n = max(len(f.p), len(f.q))
        pairs = [self.scalar(pq) for pq in zip(*((0.0,) * (n - len(c)) + c for c in (f.p, f.q)))]
        both = self.op("Add", [self.op("Mul", [v2, pairs[0]]), pairs[1]])
        for pair in pairs[2:]:
            both = self.op("Add", [self.op("Mul", [both, v2]), pair])
        p, q = (self.op("Gather", [both, self.const(np.asarray(k, np.int64), "row")], axis=0) for k in (0, 1))
        y = self.op("Div", [self.op("Mul", [p, v]), q])
        if f.offset:
            y = self.op("Add", [y, self.scalar(f.offset)])
        return self.op("Clip", [y, self.scalar(f.low), self.scalar(f.high)], f.name)

    def scalar(self, value: float | tuple[float, float]) -> str:
        """A scalar in the graph's precision (a pair: shape `(2, 1, 1)`), one per value in this graph."""
        if value not in self.scalars:
            shape = (2, 1, 1) if isinstance(value, tuple) else ()
            self.scalars[value] = self.const(np.asarray(value, self.np_dtype).reshape(shape), "scalar")
        return self.scalars[value]

    def to_float(self, x: str) -> str:
        """Cast to the graph's precision (no-op in fp32)."""
        return x if self.onnx_dtype == TensorProto.FLOAT else self.op("Cast", [x], to=self.onnx_dtype)

    def to_fp32(self, x: str) -> str:
        return x if self.onnx_dtype == TensorProto.FLOAT else self.op("Cast", [x], to=TensorProto.FLOAT)


def _model(graph: onnx.GraphProto, opset: int, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="elmo-onnx", doc_string=doc
    )
    # The lowest IR version the opset allows (8 for opset 17 and 18): newer onnx would stamp
    # its own, which older ONNX Runtimes refuse.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def _specs(model: ElmoBiLm) -> dict[str, C.GraphSpec]:
    o = model.options
    return C.graph_specs(o.n_layers, o.projection_dim, o.dim, o.max_characters_per_token, word_ids=o.word_dim > 0)


def _graph(g: _Graph, name: str, spec: C.GraphSpec) -> onnx.GraphProto:
    """The graph of `g`'s nodes, its inputs and outputs declared as the contract's `spec` says."""

    def value_info(t: C.TensorSpec) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(t.name, _ONNX_DTYPES[t.dtype], list(t.shape))

    return helper.make_graph(
        g.nodes,
        name,
        inputs=[value_info(t) for t in spec.inputs],
        outputs=[value_info(t) for t in spec.outputs],
        initializer=g.initializers,
    )


def hoist_subgraph_initializers(model: onnx.ModelProto) -> int:
    """Move every initializer of every subgraph (the Scan bodies' weights) into the main graph,
    in place; the bodies read them from the outer scope. Returns how many moved.

    Why (format 3): ONNX Runtime reads external data only for main-graph initializers when a
    graph is loaded from bytes (Python's in-memory external files, onnxruntime-web's
    `externalData`): a Scan body's external weight fails as "not a regular file" or "could not
    be canonicalized". Kept in the main graph, every weight can be external, whatever loads it.

    Raises:
        ValueError: a subgraph initializer's name is already taken in the main graph.
    """
    taken = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    taken |= {out for node in model.graph.node for out in node.output}
    moved = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                    walk(sub)
                    for tensor in sub.initializer:
                        if tensor.name in taken:
                            raise ValueError(
                                f"subgraph {sub.name!r} initializer {tensor.name!r} clashes with a name "
                                "of the main graph"
                            )
                        taken.add(tensor.name)
                        kept = onnx.TensorProto()
                        kept.CopyFrom(tensor)  # the repeated field's own element goes with the del below
                        moved.append(kept)
                    del sub.initializer[:]

    walk(model.graph)
    model.graph.initializer.extend(moved)
    return len(moved)


def _unsqueeze0(g: _Graph, v: str) -> str:
    return g.op("Unsqueeze", [v, g.ints([0], "axes")])


def _time_major(g: _Graph, v: str) -> str:
    """`(B, T, X)` <-> `(T, B, X)`."""
    return g.op("Transpose", [v], perm=[1, 0, 2])


def _token_embedding(g: _Graph, model: ElmoBiLm, char_ids: str, word_ids: str | None = None) -> str:
    """Nodes from int char ids `(N, C)` (and word ids `(N,)`) to token embeddings `(N, P)` in the graph's precision."""
    te = model.token_embedder
    o = model.options
    n_chars = o.max_characters_per_token
    table = g.weight(te.char_embedding.weight, "char_embedding")
    x = g.op("Gather", [table, char_ids], "chars")  # (N, C, E)
    pooled = []
    for (width, n), conv in zip(o.filters, te.convolutions):
        # A width-w convolution is a MatMul over every window of w characters: (N, C-w+1, w*E).
        windows = np.arange(n_chars - width + 1)[:, None] + np.arange(width)[None, :]
        win = g.op("Gather", [x, g.const(windows.astype(np.int64), "windows")], "windows", axis=1)
        win = g.op("Reshape", [win, g.ints([0, n_chars - width + 1, width * o.char_embedding_dim])])
        kernel = conv.weight.detach().permute(2, 1, 0).reshape(width * o.char_embedding_dim, n)  # (w*E, n)
        y = g.op("MatMul", [win, g.weight(kernel, f"{CNN_KERNEL}_{width}")])  # (N, C-w+1, n)
        # max(x) + b == max(x + b): add the bias after pooling, on C-w+1 times fewer values.
        y = g.op("Add", [g.reduce("ReduceMax", y, [1], keepdims=0), g.weight(conv.bias, f"b_cnn_{width}")])
        pooled.append(g.activation("Tanh", y) if o.activation == "tanh" else g.op("Relu", [y]))
    x = g.op("Concat", pooled, "cnn", axis=-1)  # (N, F)
    f = o.n_filters
    for k, (transform, carry) in enumerate(zip(te.highway_transform, te.highway_carry)):
        # One MatMul for both halves: [transform | carry].
        w = torch.cat([transform.weight.T, carry.weight.T], dim=1)  # (F, 2F)
        b = torch.cat([transform.bias, carry.bias])
        w = g.weight(w, f"W_highway_{k}", f"token_embedder.highway_transform.{k}")  # carry's input is the same
        both = g.op("Add", [g.op("MatMul", [x, w]), g.weight(b, f"b_highway_{k}")])
        t, c = g.op("Split", [both, g.ints([f, f], "split")], "highway", n_out=2, axis=-1)
        gate = g.activation("Sigmoid", c)
        # gate * relu(t) + (1 - gate) * x == x + gate * (relu(t) - x)
        x = g.op("Add", [x, g.op("Mul", [gate, g.op("Sub", [g.op("Relu", [t]), x])])])
    if te.word_embedding is not None:
        # A Gather, not a MatMul: the word table stays float under int8/int4 quantization.
        words = g.op("Gather", [g.weight(te.word_embedding.weight, "word_embedding"), word_ids], "words", axis=0)
        x = g.op("Concat", [words, x], "words_and_chars", axis=-1)  # (N, W+F), word part first
    proj = te.projection
    if proj is None:  # bilm-tf without CNN_proj: the filters already sum to projection_dim
        return x
    w = g.weight(proj.weight.T, TOKEN_PROJECTION, "token_embedder.projection")
    return g.op("Add", [g.op("MatMul", [x, w]), g.weight(proj.bias, "b_proj")])


def build_token_embedder(
    model: ElmoBiLm,
    precision: Precision = "fp32",
    opset: int = C.DEFAULT_OPSET,
    sources: dict[str, str] | None = None,
    exact_activations: bool = False,
) -> onnx.ModelProto:
    """Char ids `(batch, tokens, 50)` -> token embeddings `(batch, tokens, P)` and the mask.

    `sources`, if given, receives `{weight initializer: reference module path}` for the weights
    that are a `nn.Linear`'s (the char CNN's are not: their product's input is a char window).
    `exact_activations`: float32 sigmoid and tanh in exactly rounded ops (`_Graph.activation`):
    the same bits from every ONNX Runtime build, at about twice the run time.
    """
    C.check_opset(opset)
    o = model.options
    g = _Graph("te/", precision, opset, sources, exact_activations)
    ids = C.CHAR_IDS
    flat = g.op("Reshape", [ids, g.ints([-1, o.max_characters_per_token])], "flat_ids")
    has_words = model.token_embedder.word_embedding is not None
    flat_words = g.op("Reshape", [C.WORD_IDS, g.ints([-1])], "flat_word_ids") if has_words else None
    emb = _token_embedding(g, model, flat, flat_words)  # (N, P)
    batch_tokens = g.op("Slice", [g.op("Shape", [ids]), g.ints([0]), g.ints([2])])
    shape = g.op("Concat", [batch_tokens, g.ints([o.projection_dim])], axis=0)
    emb = g.to_fp32(g.op("Reshape", [emb, shape]))
    g.nodes.append(helper.make_node("Identity", [emb], [C.TOKEN_EMBEDDINGS]))
    # A token is real when any of its char ids is non-zero (padding rows are all zeros).
    max_id = g.reduce("ReduceMax", ids, [2], keepdims=0)
    has_char = g.op("Greater", [max_id, g.const(np.asarray(0, np.int32), "zero")])
    g.nodes.append(helper.make_node("Cast", [has_char], [C.MASK], to=TensorProto.INT32))
    graph = _graph(g, "elmo_token_embedder", _specs(model)["token_embedder"])
    return _model(graph, opset, "ELMo char CNN token embedder (elmo-onnx)")


def _boundary_embeddings(model: ElmoBiLm) -> tuple[np.ndarray, np.ndarray]:
    """The token embeddings of <S> and </S>: constants, so computed once at export.

    In float64, rounded to float32 once: float32 kernels differ in the last bits between CPUs
    (an Intel AVX-512 export was up to 7.2e-7 off an AMD AVX2 one), so float32 constants would make
    the same weights export to different bytes. float64's differences sit ~2^29 times below
    float32's step and do not survive the rounding."""
    ids = torch.stack([model.bos_char_ids, model.eos_char_ids])[None]  # (1, 2, C)
    embedder = copy.deepcopy(model.token_embedder).double()
    with torch.no_grad():
        emb = embedder(ids, model.boundary_word_ids[None])[0].numpy()  # (2, P) float64
    emb = emb.astype(np.float32)
    return emb[0], emb[1]


GATES = "ijfo"  # TF's gate order in the LSTM weight matrices


def _gate_columns(weight: torch.Tensor, dim: int) -> list[np.ndarray]:
    """A `(4D, in)` Linear weight -> one `(in, D)` MatMul operand per gate, in `GATES` order."""
    w = weight.detach().cpu().numpy().T
    return [np.ascontiguousarray(w[:, k * dim : (k + 1) * dim]) for k in range(len(GATES))]


def _gate_biases(cell: torch.nn.Module) -> list[np.ndarray]:
    """The cell's `(4D,)` bias -> one `(D,)` bias per gate, in `GATES` order."""
    return np.split(cell.input_to_gates.bias.detach().cpu().numpy(), len(GATES))


def _lstm_step_body(model: ElmoBiLm, layer: int, outer: _Graph, products: dict[str, list[str]]) -> onnx.GraphProto:
    """One time step of both directions of a layer: the body of the layer's Scan.

    State in: h_f, c_f, h_b, c_b. Scan inputs: the scalars `start_t`, `end_t`, `n_t`. The rows
    are sorted longest first, so the rows still active at a step are its first `n_t`: only they
    are computed, and the others keep their state. `products` names, per direction, each gate's
    input products (bias included), computed before the recurrence for the active positions
    only, packed step after step: this step's rows are `start_t:end_t`. Scan outputs: each
    direction's h after the step; what it holds past a row's end is never read (the next
    layer's state ignores it, the graph's output masks it).

    Why this shape (measured in `benchmarks/RESULTS.md`, "Design measurements"): input products
    hoisted over the packed active positions read each weight once per layer instead of once
    per step; one MatMul per gate spares a Split of the gate sum every step; rows are taken
    with Gather, faster than Slice here. `outer`: the layer's graph (precision, opset, sources,
    exact activations).
    """
    o = model.options
    g = _Graph(f"l{layer}/", outer.precision, outer.opset, outer.sources, outer.exact)
    p, d = o.projection_dim, o.dim
    one = g.const(np.asarray(1, np.int64), "one")
    active_rows = g.op("Range", [g.const(np.asarray(0, np.int64), "zero"), "n_t", one])
    step_rows = g.op("Range", ["start_t", "end_t", one])
    n = g.op("Unsqueeze", ["n_t", g.ints([0], "axes")])

    def active(v: str) -> str:  # the rows still running: (n, X)
        return g.op("Gather", [v, active_rows], axis=0)

    def this_step(v: str) -> str:  # this step's rows of the packed input products: (n, D)
        return g.op("Gather", [v, step_rows], axis=0)

    def kept(new: str, old: str, name: str) -> str:  # the new state of the active rows, the old of the rest
        rest = g.op("Slice", [old, n, g.ints([_LAST], "last"), g.ints([0], "rows")])
        return g.op("Concat", [new, rest], axis=0, output=name)

    sides = [("f", "h_f_in", "c_f_in"), ("b", "h_b_in", "c_b_in")]

    def finish(direction: int, c_new: str, m: str) -> None:  # the direction's new state, (n, D) each
        side, h_all, c_all = sides[direction]
        kept(_projected(g, model, layer, direction, m), h_all, f"h_{side}_out")
        kept(c_new, c_all, f"c_{side}_out")
        g.op("Identity", [f"h_{side}_out"], output=f"y_{side}_t")

    updates = []  # per direction: {gate: (n, D)} and the active rows' c (n, D)
    for direction, (side, h_all, c_all) in enumerate(sides):
        h, c = active(h_all), active(c_all)  # (n, P), (n, D)
        updates.append((_gates(g, model, layer, direction, h, this_step, products[side]), c))
        if not g.exact:  # ONNX Runtime's Sigmoid and Tanh: one direction after the other
            finish(direction, *_cell_update(g, model, *updates[-1]))
    if g.exact:  # written-out activations: both directions' gates through one sigmoid
        for direction, (c_new, m) in enumerate(zip(*_cell_updates(g, model, *zip(*updates)))):
            finish(direction, c_new, m)
    return _step_graph(g, layer, p, d)


def _gates(
    g: _Graph, model: ElmoBiLm, layer: int, direction: int, h: str, this_step: Callable[[str], str], xw: list[str]
) -> dict[str, str]:
    """A direction's gates `{i, j, f, o: (n, D)}`: this step's input products `xw` (by `this_step`) + h's."""
    side, path = "fb"[direction], f"cells.{layer}.{direction}"
    w_h = _gate_columns(model.cells[layer][direction].hidden_to_gates.weight, model.options.dim)
    return {
        gate: g.op(
            "Add",
            [this_step(x), g.op("MatMul", [h, g.weight(w, f"W_h_{gate}_{side}", f"{path}.hidden_to_gates")])],
            f"{gate}_{side}",
        )
        for gate, w, x in zip(GATES, w_h, xw)
    }


def _cell_update(g: _Graph, model: ElmoBiLm, gates: dict[str, str], c: str) -> tuple[str, str]:
    """The new cell state and `m = sigmoid(o) * tanh(c_new)`, `(n, D)` each, from gates i, j, f, o."""
    sigmoid, tanh = (lambda x: g.activation("Sigmoid", x)), (lambda x: g.activation("Tanh", x))
    c_new = g.op("Add", [g.op("Mul", [sigmoid(gates["f"]), c]), g.op("Mul", [sigmoid(gates["i"]), tanh(gates["j"])])])
    c_new = g.clip(c_new, model.options.cell_clip)
    return c_new, g.op("Mul", [sigmoid(gates["o"]), tanh(c_new)])


def _cell_updates(
    g: _Graph, model: ElmoBiLm, gates: list[dict[str, str]], cells: list[str]
) -> tuple[list[str], list[str]]:
    """Per direction, from its gates `{i, j, f, o: (n, D)}` and cell state `(n, D)`: the new cell
    state and `m = sigmoid(o) * tanh(c_new)`, `(n, D)` each.

    For exact activations (`_Graph.exact`): one sigmoid runs over both directions' gates, j's
    too, as tanh(j) = 2 sigmoid(2j) - 1: written out, an activation is two dozen ops
    (`_Graph.activation`), and on a step's few rows an op's run costs more than its arithmetic.
    """
    d = model.options.dim
    two, one = g.scalar(2.0), g.scalar(1.0)
    j2 = g.op("Mul", [_concat(g, [gs["j"] for gs in gates]), two])  # exact: a power of two
    sigmoid = _split(g, g.activation("Sigmoid", _concat(g, [gs[k] for gs in gates for k in "ifo"] + [j2])), 7, d)
    tanh_j = _split(g, g.op("Sub", [g.op("Mul", [sigmoid[6], two]), one]), 2, d)
    c_new = []
    for direction, c in enumerate(cells):
        sig_i, sig_f = sigmoid[3 * direction : 3 * direction + 2]
        c = g.op("Add", [g.op("Mul", [sig_f, c]), g.op("Mul", [sig_i, tanh_j[direction]])])
        c_new.append(g.clip(c, model.options.cell_clip))
    tanh_c = _split(g, g.activation("Tanh", _concat(g, c_new)), 2, d)
    return c_new, [g.op("Mul", [sigmoid[3 * k + 2], tanh_c[k]]) for k in range(len(cells))]


def _concat(g: _Graph, parts: list[str]) -> str:
    return g.op("Concat", parts, axis=-1)


def _split(g: _Graph, x: str, parts: int, width: int) -> list[str]:
    """`x (n, parts * width)` -> `parts` tensors `(n, width)`; `(n, width * 2)`, the last of 7."""
    sizes = [width] * parts if parts < 7 else [width] * 6 + [2 * width]
    return g.op("Split", [x, g.ints(sizes, "split")], n_out=parts, axis=-1)


def _projected(g: _Graph, model: ElmoBiLm, layer: int, direction: int, m: str) -> str:
    """The cell's output `(n, P)` from `m (n, D)`: projected and clipped (bilm-tf without num_proj
    has no projection, and no proj_clip either)."""
    cell = model.cells[layer][direction]
    if cell.projection is None:
        return m
    w_p = g.weight(cell.projection.weight.T, f"W_p_{'fb'[direction]}", f"cells.{layer}.{direction}.projection")
    return g.clip(g.op("MatMul", [m, w_p]), model.options.proj_clip)


def _step_graph(g: _Graph, layer: int, p: int, d: int) -> onnx.GraphProto:
    """The step body's graph from its nodes: the states in and out, the step's scalars, each direction's h."""
    t = g.onnx_dtype
    vi = helper.make_tensor_value_info
    names_out = ["h_f_out", "c_f_out", "h_b_out", "c_b_out", "y_f_t", "y_b_t"]
    return helper.make_graph(
        g.nodes,
        f"lstm_layer_{layer}_step",
        inputs=[
            vi("h_f_in", t, [C.BATCH, p]),
            vi("c_f_in", t, [C.BATCH, d]),
            vi("h_b_in", t, [C.BATCH, p]),
            vi("c_b_in", t, [C.BATCH, d]),
        ]
        + [vi(name, TensorProto.INT64, []) for name in ("start_t", "end_t", "n_t")],
        outputs=[
            vi(names_out[0], t, [C.BATCH, p]),
            vi(names_out[1], t, [C.BATCH, d]),
            vi(names_out[2], t, [C.BATCH, p]),
            vi(names_out[3], t, [C.BATCH, d]),
            vi(names_out[4], t, [C.BATCH, p]),
            vi(names_out[5], t, [C.BATCH, p]),
        ],
        initializer=g.initializers,
    )


def build_bilm(
    model: ElmoBiLm,
    precision: Precision = "fp32",
    opset: int = C.DEFAULT_OPSET,
    sources: dict[str, str] | None = None,
    exact_activations: bool = False,
) -> onnx.ModelProto:
    """Token embeddings, mask and initial state -> all layers and each row's final state.

    `sources`, `exact_activations`: as for `build_token_embedder` (every weight of the biLM has a source).
    """
    C.check_opset(opset)
    g = _Graph("bilm/", precision, opset, sources, exact_activations)
    # Up to the recurrence the graph works in float32 whatever the precision: it is cheap,
    # and ONNX Runtime (1.32) crashed optimizing some float16 Transposes here.
    edges = _with_boundaries(g, model)
    rows = _sort_rows(g, edges.x, edges.ext_lengths, edges.batch, edges.positions)

    layer_outputs = [g.op("Concat", [rows.x, rows.x], "layer0", axis=-1)]  # (B, T+2, 2P)
    # The recurrence runs time-major: Scan then hands each step a contiguous slice, not a copy.
    forward_in = backward_in = g.to_float(_time_major(g, rows.x))  # (T+2, B, P)
    final_h, final_c = [], []
    for layer in range(model.options.n_layers):
        y_f, y_b, (h_f, c_f, h_b, c_b) = _bilm_layer(g, model, layer, forward_in, backward_in, rows)
        both = g.op("Concat", [y_f, y_b], f"layer{layer + 1}", axis=-1)  # (T+2, B, 2P)
        layer_outputs.append(_time_major(g, g.to_fp32(both)))  # (B, T+2, 2P)
        forward_in, backward_in = y_f, y_b
        final_h.append(g.op("Concat", [_unsqueeze0(g, h_f), _unsqueeze0(g, h_b)], axis=0))  # (2, B, P)
        final_c.append(g.op("Concat", [_unsqueeze0(g, c_f), _unsqueeze0(g, c_b)], axis=0))  # (2, B, D)

    _outputs(g, layer_outputs, final_h, final_c, rows.unorder, edges)
    graph = _graph(g, "elmo_bilm", _specs(model)["bilm"])
    return _model(graph, opset, "ELMo biLM with LSTM state in and out (elmo-onnx)")


class _Boundaries(NamedTuple):
    """The rows with their sentence boundaries, and what the outputs need to drop them again."""

    x: str  # (B, T+2, P) each row's steps: [<S>,] its tokens[, </S>], then padding
    mask_f: str  # (B, T) float
    ext_lengths: str  # (B,) steps per row: tokens + <S> + </S>, each where the row has it
    batch: str  # [B]
    positions: str  # (1, T+2) step indices
    n_tokens: str  # [T]
    n_steps: str  # T+2, a scalar
    has_bos: str  # (B,) 1 where the row starts with <S>


def _with_boundaries(g: _Graph, model: ElmoBiLm) -> _Boundaries:
    """The masked token embeddings with `<S>` before every row and `</S>` after its last token.

    Rows whose `sentence_edges` say so (the time chunks of a long sentence) go without one or
    both: such a row starts one step earlier, and its `</S>` step lies past its end, where the
    recurrence never runs.
    """
    p = model.options.projection_dim
    mask_f = g.op("Cast", [C.MASK], to=TensorProto.FLOAT)  # (B, T)
    lengths = g.reduce("ReduceSum", g.op("Cast", [C.MASK], to=TensorProto.INT64), [1], keepdims=0, hint="lengths")
    tokens = g.op("Mul", [C.TOKEN_EMBEDDINGS, g.op("Unsqueeze", [mask_f, g.ints([2], "axes")])])  # (B, T, P)

    bos, eos = _boundary_embeddings(model)
    shape = g.op("Shape", [tokens])
    batch = g.op("Slice", [shape, g.ints([0]), g.ints([1])], "batch")
    n_tokens = g.op("Slice", [shape, g.ints([1]), g.ints([2])], "n_tokens")  # [T]
    edges = g.op("Expand", [C.SENTENCE_EDGES, g.op("Concat", [batch, g.ints([2])], axis=0)], "edges")  # (B, 2)
    has_bos = g.op("Gather", [edges, g.const(np.asarray(0, np.int64), "bos_edge")], "has_bos", axis=1)  # (B,)
    has_eos = g.op("Gather", [edges, g.const(np.asarray(1, np.int64), "eos_edge")], "has_eos", axis=1)  # (B,)
    ext_lengths = g.op("Add", [g.op("Add", [lengths, has_bos]), has_eos], "ext_lengths")  # (B,)
    row_shape = g.op("Concat", [batch, g.ints([1, p])], axis=0)
    bos_col = g.op("Expand", [g.const(bos.reshape(1, 1, p), "bos"), row_shape])  # (B, 1, P)
    pad_col = g.op("Expand", [g.const(np.zeros((1, 1, p), np.float32), "pad"), row_shape])  # (B, 1, P)
    x = g.op("Concat", [bos_col, tokens, pad_col], "with_bos", axis=1)  # (B, T+2, P)
    zero, one = g.const(np.asarray(0, np.int64), "zero"), g.const(np.asarray(1, np.int64), "one")
    n_steps = g.op("Squeeze", [g.op("Add", [n_tokens, g.ints([2], "two")]), g.ints([0], "axes")])  # T+2
    positions = g.op("Unsqueeze", [g.op("Range", [zero, n_steps, one], "positions"), g.ints([0], "axes")])  # (1, T+2)
    # Rows without <S> start one column later: every row's steps gathered from the flat columns.
    rows = g.op("Range", [zero, g.op("Squeeze", [batch, g.ints([0], "axes")]), one])  # (B,)
    row_base = g.op("Unsqueeze", [g.op("Mul", [rows, n_steps]), g.ints([1], "axes")])  # (B, 1)
    no_bos = g.op("Unsqueeze", [g.op("Sub", [one, has_bos]), g.ints([1], "axes")])  # (B, 1)
    columns = g.op("Min", [g.op("Add", [positions, no_bos]), g.op("Sub", [n_steps, one])])  # (B, T+2)
    flat = g.op("Reshape", [x, g.ints([-1, p])])  # (B * (T+2), P)
    x = g.op("Gather", [flat, g.op("Add", [row_base, columns])], "shifted", axis=0)  # (B, T+2, P)
    # </S> at the step after each row's last token.
    eos_step = g.op("Unsqueeze", [g.op("Add", [lengths, has_bos]), g.ints([1], "axes")])  # (B, 1)
    is_eos = g.op("Equal", [positions, eos_step])  # (B, T+2)
    eos_where = g.op("Unsqueeze", [is_eos, g.ints([2], "axes")])  # (B, T+2, 1)
    x = g.op("Where", [eos_where, g.const(eos.reshape(1, 1, p), "eos"), x], "with_eos")  # (B, T+2, P)
    return _Boundaries(x, mask_f, ext_lengths, batch, positions, n_tokens, n_steps, has_bos)


class _SortedRows(NamedTuple):
    """The batch sorted longest row first, and what the recurrence needs per step."""

    x: str  # (B, T+2, P) the rows, sorted
    ext_lengths: str  # (B,) sorted, descending
    unorder: str  # (B,) the permutation back to the caller's order
    h0: str  # (L, 2, B, P) initial state, sorted, in the graph's precision
    c0: str  # (L, 2, B, D)
    per_step: list[str]  # the Scan body's start_t, end_t, n_t, each (T+2,)
    active_flat: str  # ((T+2) * B,) bool: whether step t of row b runs, time-major


def _sort_rows(g: _Graph, x: str, ext_lengths: str, batch: str, positions: str) -> _SortedRows:
    """Sort the rows longest first, so that the rows still active at any step are a prefix.

    Then only they are computed (as AllenNLP's LSTM does): padding costs nothing. The outputs
    are put back in the caller's order at the end (`unorder`).
    """
    ext_lengths, order = g.op("TopK", [ext_lengths, batch], "sorted", n_out=2, axis=0, largest=1, sorted=1)
    unorder = g.op("TopK", [order, batch], "unorder", n_out=2, axis=0, largest=0, sorted=1)[1]
    x = g.op("Gather", [x, order], axis=0)
    h0 = g.to_float(g.op("Gather", [C.INITIAL_H, order], axis=2))
    c0 = g.to_float(g.op("Gather", [C.INITIAL_C, order], axis=2))
    # (T+2, B): row b is active at step t; per step, the first n_active[t] rows.
    steps_column = g.op("Transpose", [positions])  # (T+2, 1)
    lengths_row = g.op("Unsqueeze", [ext_lengths, g.ints([0], "axes")])  # (1, B)
    active = g.op("Less", [steps_column, lengths_row])
    active_ints = g.op("Cast", [active], to=TensorProto.INT64)
    n_active = g.reduce("ReduceSum", active_ints, [1], keepdims=0, hint="n_active")  # (T+2,)
    ends = g.op("CumSum", [n_active, g.const(np.asarray(0, np.int64), "axis")], "ends")  # (T+2,)
    per_step = [g.op("Sub", [ends, n_active], "starts"), ends, n_active]  # the body's start_t, end_t, n_t
    active_flat = g.op("Reshape", [active, g.ints([-1])])
    return _SortedRows(x, ext_lengths, unorder, h0, c0, per_step, active_flat)


def _state_of(g: _Graph, tensor: str, layer: int, direction: int) -> str:
    """One layer's and direction's rows of an `(L, 2, B, X)` state: `(B, X)`."""
    of_layer = g.op("Gather", [tensor, g.const(np.asarray(layer, np.int64), "l")], axis=0)
    return g.op("Gather", [of_layer, g.const(np.asarray(direction, np.int64), "d")], axis=0)


def _bilm_layer(
    g: _Graph, model: ElmoBiLm, layer: int, forward_in: str, backward_in: str, rows: _SortedRows
) -> tuple[str, str, tuple[str, str, str, str]]:
    """One LSTM layer, both directions in one Scan.

    Returns:
        `y_f`, `y_b` `(T+2, B, P)` (skip connection added from layer 1 on), and the final
        `(h_f, c_f, h_b, c_b)`.
    """
    o = model.options
    p = o.projection_dim
    reversed_in = g.op("ReverseSequence", [backward_in, rows.ext_lengths], batch_axis=1, time_axis=0)
    # The input products of every active step and row, in one MatMul per gate, hoisted out
    # of the recurrence: the active positions, packed step after step, (N, P) -> (N, D).
    products = {}
    for d, (side, inputs) in enumerate([("f", forward_in), ("b", reversed_in)]):
        cell = model.cells[layer][d]
        flat = g.op("Reshape", [inputs, g.ints([-1, p])])  # ((T+2) * B, P)
        packed = g.op("Compress", [flat, rows.active_flat], f"packed_{side}", axis=0)  # (N, P)
        products[side] = []
        for gate, w, b in zip(GATES, _gate_columns(cell.input_to_gates.weight, o.dim), _gate_biases(cell)):
            product = g.op("MatMul", [packed, g.weight(w, f"W_x_{gate}_{side}", f"cells.{layer}.{d}.input_to_gates")])
            products[side].append(g.op("Add", [product, g.weight(b, f"b_{gate}_{side}")], f"xw_{gate}_{side}"))
    body = _lstm_step_body(model, layer, g, products)
    initial = [
        _state_of(g, rows.h0, layer, 0),
        _state_of(g, rows.c0, layer, 0),
        _state_of(g, rows.h0, layer, 1),
        _state_of(g, rows.c0, layer, 1),
    ]
    h_f, c_f, h_b, c_b, y_f, y_b_rev = g.op(
        "Scan", [*initial, *rows.per_step], f"scan{layer}", n_out=6, body=body, num_scan_inputs=3
    )
    y_b = g.op("ReverseSequence", [y_b_rev, rows.ext_lengths], batch_axis=1, time_axis=0)  # (T+2, B, P)
    if layer > 0 and o.use_skip_connections:
        y_f, y_b = g.op("Add", [y_f, forward_in]), g.op("Add", [y_b, backward_in])
    return y_f, y_b, (h_f, c_f, h_b, c_b)


def _outputs(
    g: _Graph, layer_outputs: list[str], final_h: list[str], final_c: list[str], unorder: str, edges: _Boundaries
) -> None:
    """The graph's outputs, rows back in the caller's order, without `<S>` and `</S>`."""
    stacked = g.op("Concat", [_unsqueeze0(g, v) for v in layer_outputs], "stacked", axis=0)  # (L+1, B, T+2, 2P) sorted
    # Row b's T steps from its first token on (step 1, or 0 without <S>), taken from the sorted
    # rows in one Gather over the flat steps; then zero what lies past each row's end.
    zero, one = g.const(np.asarray(0, np.int64), "zero"), g.const(np.asarray(1, np.int64), "one")
    token_steps = g.op("Range", [zero, g.op("Squeeze", [edges.n_tokens, g.ints([0], "axes")]), one])  # (T,)
    first = g.op("Add", [g.op("Mul", [unorder, edges.n_steps]), edges.has_bos])  # (B,)
    keep = g.op(
        "Add", [g.op("Unsqueeze", [first, g.ints([1], "axes")]), g.op("Unsqueeze", [token_steps, g.ints([0], "axes")])]
    )  # (B, T)
    width = g.op("Slice", [g.op("Shape", [stacked]), g.ints([3]), g.ints([4])])  # [2P]
    flat_shape = g.op("Concat", [g.ints([len(layer_outputs), -1]), width], axis=0)
    flat_steps = g.op("Reshape", [stacked, flat_shape])  # (L+1, B * (T+2), 2P)
    inner = g.op("Gather", [flat_steps, keep], axis=1)  # (L+1, B, T, 2P)
    inner = g.op("Mul", [inner, g.op("Unsqueeze", [edges.mask_f, g.ints([0, 3], "axes")])])
    g.nodes.append(helper.make_node("Identity", [inner], [C.LAYERS]))
    for states, name in [(final_h, C.FINAL_H), (final_c, C.FINAL_C)]:
        stacked_states = g.op("Concat", [_unsqueeze0(g, v) for v in states], axis=0)  # (L, 2, B, P) or (L, 2, B, D)
        in_order = g.op("Gather", [stacked_states, unorder], axis=2)
        g.nodes.append(helper.make_node("Identity", [g.to_fp32(in_order)], [name]))
