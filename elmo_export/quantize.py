"""Quantization: an fp32 ONNX graph in, a quantized ONNX graph out.

Thin wrappers over onnxruntime's own tools, one typed settings dataclass per scheme:

- `Int8Settings`: dynamic int8 (`onnxruntime.quantization.quantize_dynamic`). Weights of every
  MatMul/Gemm, those inside the LSTM's Scan/Loop body included, are stored as int8 with a scale
  per output column; activations are quantized on the fly at each call. The quantized ops
  (`MatMulInteger`, `DynamicQuantizeLinear`) run on the CPU execution provider only.
- `Int4Settings`: weight-only 4-bit block-wise (`MatMulNBitsQuantizer` -> `MatMulNBits`,
  com.microsoft domain): each block of `block_size` weights along K shares one float scale;
  activations stay float.

fp16 is not made here: `onnx_graph.build_*(precision="fp16")` builds it directly
(onnxconverter_common's float16 pass breaks Loop/Scan bodies).

onnxruntime checks nothing after quantizing: the exporter re-validates every quantized package
against the reference with its own tolerance (`parity.py`); `float_weight_matmuls` below
lists any weight MatMul left in float (the tests use it).
"""

from __future__ import annotations

import heapq
import logging
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Literal, Union

import onnx

log = logging.getLogger(__name__)

WEIGHT_OPS = ("MatMul", "Gemm")
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf cannot serialize 2 GiB


@dataclass(frozen=True)
class Int8Settings:
    """Dynamic int8 quantization of MatMul/Gemm weights (CPU only).

    Attributes:
        per_channel: for the weights outside the recurrence (the char CNN's highway and
            projection, the LSTM's input products over all steps): one scale per output column
            instead of one per matrix. More exact, and free there: these products are large
            and compute-bound.
        per_channel_steps: the same for the weights used at every time step (the LSTM's
            hidden-to-gate products and projection). Off by default: these products are
            memory-bound, and onnxruntime's kernel reads per-column weights slower, for little
            accuracy (measured: benchmarks/RESULTS.md, "Design measurements").
        weight_type: "QInt8" (signed, the default) or "QUInt8". Equally exact here; QInt8
            weights with uint8 activations use onnxruntime's fast u8s8 kernels (VNNI/AVX-512 on
            x86), which is what onnxruntime recommends for CPUs.
        reduce_range: 7-bit weights, for CPUs without VNNI where 8-bit products can saturate.
        op_types: the op types whose constant weights are quantized. The char CNN's Conv and the
            char embedding stay float (0.2% of the parameters, and the most sensitive ones).
    """

    per_channel: bool = True
    per_channel_steps: bool = False
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    reduce_range: bool = False
    op_types: tuple[str, ...] = WEIGHT_OPS

    name: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        if self.weight_type not in ("QInt8", "QUInt8"):
            raise ValueError(f"weight_type is {self.weight_type!r}; choose QInt8 or QUInt8")
        unknown = set(self.op_types) - set(WEIGHT_OPS)
        if not self.op_types or unknown:
            raise ValueError(f"op_types is {self.op_types!r}; choose among {WEIGHT_OPS}")

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {
            "name": self.name,
            "method": "dynamic",
            "tool": "onnxruntime.quantization.quantize_dynamic",
            **asdict(self),
            "op_types": list(self.op_types),
            "activations": "uint8, quantized per call",
            "devices": ["cpu"],
        }


@dataclass(frozen=True)
class Int4Settings:
    """Weight-only 4-bit block-wise quantization of MatMul weights (`MatMulNBits`).

    Attributes:
        block_size: weights along K sharing one scale (and zero point); a power of two >= 16.
            64 is the default: 128 loses accuracy and 32 puts the `original` package over its
            size target (measured: benchmarks/RESULTS.md, "Design measurements").
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
    """

    block_size: int = 64
    min_blocks: int = 4
    symmetric: bool = False
    accuracy_level: int | None = None
    keep_float: tuple[str, ...] = ("W_cnn", "W_proj")

    name: ClassVar[str] = "int4"

    def __post_init__(self) -> None:
        b = self.block_size
        if type(b) is not int or b < 16 or b & (b - 1):
            raise ValueError(f"block_size is {b!r}; expected a power of two >= 16 (e.g. 32, 64, 128)")
        if type(self.min_blocks) is not int or self.min_blocks < 1:
            raise ValueError(f"min_blocks is {self.min_blocks!r}; expected an integer >= 1")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level is {self.accuracy_level!r}; expected None or 0-4")

    def block_size_for(self, rows: int) -> int:
        """The block size for a weight of `rows` rows (K): `block_size`, smaller for small K."""
        block = self.block_size
        while block > 16 and rows < block * self.min_blocks:
            block //= 2
        return block

    def to_dict(self) -> dict:
        """The settings as recorded in the manifest's `precision` entry."""
        return {
            "name": self.name,
            "method": "weight-only block-wise, round to nearest",
            "tool": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            "op": "com.microsoft.MatMulNBits",
            **asdict(self),
            "keep_float": list(self.keep_float),
            "activations": "float32",
        }


QuantizationSettings = Union[Int8Settings, Int4Settings]

# The settings each `--quantize` name stands for.
DEFAULT_SETTINGS: dict[str, QuantizationSettings] = {"int8": Int8Settings(), "int4": Int4Settings()}


def quantize(model: onnx.ModelProto, settings: QuantizationSettings) -> onnx.ModelProto:
    """Quantize an fp32 graph with `settings`; `model` is left unchanged.

    Raises:
        TypeError: `settings` is not an `Int8Settings` or `Int4Settings`.
    """
    if isinstance(settings, Int8Settings):
        return quantize_int8(model, settings)
    if isinstance(settings, Int4Settings):
        return quantize_int4(model, settings)
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
    """Dynamic int8: `quantize_dynamic` over the graph and every subgraph; `model` is unchanged.

    One pass per granularity in use: the main graph's weights with `per_channel`, then the
    subgraphs' (the Scan bodies, run at every step) with `per_channel_steps`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    outside = [n.name for n in model.graph.node if n.op_type in settings.op_types]
    if settings.per_channel == settings.per_channel_steps:
        passes = [(settings.per_channel, None)]
    else:
        passes = [(settings.per_channel, outside), (settings.per_channel_steps, None)]  # None: all left
    # quantize_dynamic writes to a file; large graphs go through external data.
    large = model.ByteSize() > _EXTERNAL_DATA_BYTES
    quantized = model
    with tempfile.TemporaryDirectory(prefix="elmo-int8-") as tmp:
        for k, (per_channel, nodes) in enumerate(passes):
            out = Path(tmp) / f"pass{k}.onnx"
            with _quiet_onnxruntime_logging():
                quantize_dynamic(
                    quantized,
                    out,
                    op_types_to_quantize=list(settings.op_types),
                    nodes_to_quantize=nodes,
                    per_channel=per_channel,
                    reduce_range=settings.reduce_range,
                    weight_type=QuantType[settings.weight_type],
                    use_external_data_format=large,
                    extra_options={"EnableSubgraph": nodes is None, "MatMulConstBOnly": True},
                )
            quantized = onnx.load(out)
    sort_nodes(quantized.graph)  # see `sort_nodes`
    return quantized


def quantize_int4(model: onnx.ModelProto, settings: Int4Settings = Int4Settings()) -> onnx.ModelProto:
    """Weight-only 4-bit: MatMuls with a constant 2-D weight -> `MatMulNBits`; `model` is unchanged.

    Subgraphs (the LSTM's Scan bodies) included. One quantizer pass per block size in use
    (`Int4Settings.block_size_for`), each leaving the other passes' MatMuls alone.

    Raises:
        ImportError: onnxruntime's quantizer needs the `onnx-ir` package, which is missing.
    """
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
