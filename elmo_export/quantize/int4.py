"""int4: weight-only 4-bit blocks as `com.microsoft.MatMulNBits`, rounded by GPTQ or to nearest.

GPTQ is ours (`gptq.py`, which says why not onnxruntime's); round to nearest is onnxruntime's
`MatMulNBitsQuantizer`, wrapped: it does the job, once its logging is kept off the root logger.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from elmo_export.quantize.gptq import matmul_nbits, quantize_gptq
from elmo_export.quantize.graph import drop_replaced_initializers, graphs, sort_nodes, use_microsoft_ops, weight_matmuls
from elmo_export.quantize.settings import Int4Settings

log = logging.getLogger(__name__)


def quantize_int4(
    model: onnx.ModelProto, settings: Int4Settings = Int4Settings(), moments: Mapping[str, np.ndarray] | None = None
) -> onnx.ModelProto:
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
            raise ValueError(
                "int4 GPTQ needs the input moments of the weights (calibration.input_moments); "
                "use Int4Settings(rounding='rtn') to round to nearest without them"
            )
        return _quantize_gptq(model, settings, moments)
    return _quantize_nearest(model, settings)


def _quantize_nearest(model: onnx.ModelProto, settings: Int4Settings) -> onnx.ModelProto:
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
        for _, node, weight in weight_matmuls(out.graph):
            if weight is not None and len(weight.dims) == 2 and not settings.keeps_float(weight.name):
                groups.setdefault(settings.block_size_for(weight.dims[0]), []).append(node.name)
        all_names = {n.name for _, n, _ in weight_matmuls(out.graph)}
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


def _quantize_gptq(
    model: onnx.ModelProto, settings: Int4Settings, moments: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """Replace each MatMul whose weight is an initializer of its own graph, the weights read one
    at a time (the main graph and every subgraph)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    replaced: set[str] = set()
    for _, graph in list(graphs(out.graph)):
        weights = {t.name: t for t in graph.initializer}
        for position, node in enumerate(graph.node):
            weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
            if weight is None or len(weight.dims) != 2 or settings.keeps_float(weight.name):
                continue
            value = numpy_helper.to_array(weight)
            blocks = quantize_gptq(
                value, moments.get(weight.name), settings.block_size_for(value.shape[0]), settings.damp
            )
            new, initializers = matmul_nbits(node, weight.name, blocks, settings.accuracy_level)
            graph.node[position].CopyFrom(new)
            graph.initializer.extend(initializers)
            replaced.add(weight.name)
    drop_replaced_initializers(out.graph, replaced)
    log.debug("int4 GPTQ: %d weights", len(replaced))
    use_microsoft_ops(out)
    return out


@contextmanager
def _quiet_onnxruntime_logging() -> Iterator[None]:
    """Keep onnxruntime's `matmul_nbits_quantizer` from configuring the root logger or logging per node.

    It calls `logging.basicConfig(level=INFO)` at import and logs one INFO line per node.
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
    try:
        yield
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
