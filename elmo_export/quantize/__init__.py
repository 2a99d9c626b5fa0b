"""Quantization: an fp32 ONNX graph in, a quantized ONNX graph out.

- `settings`: one typed description per precision (`Fp32Settings`, `Fp16Settings`,
  `Int8Settings`, `Int4Settings`), what the manifest records and the tolerance parity holds it to;
- `graph`: walking subgraphs, ordering nodes, weights and opsets;
- `ranges`: the bounds the graph itself puts on its activations (interval analysis);
- `int8`: the project's own int8 quantizer, batch-invariant by construction (per-row scales);
- `int4`: weight-only 4-bit blocks, rounded by GPTQ (`gptq`) or onnxruntime's round to nearest.

fp16 is not made here: `onnx_graph.build_*(precision="fp16")` builds it directly
(onnxconverter_common's float16 pass breaks Loop/Scan bodies).

onnxruntime checks nothing after quantizing: the exporter re-validates every quantized package
against the reference with its own tolerance (`parity.py`); `float_weight_matmuls` lists any
weight MatMul left in float (the tests use it).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from elmo_export.quantize.graph import float_weight_matmuls, op_counts, sort_nodes
from elmo_export.quantize.int4 import quantize_int4
from elmo_export.quantize.int8 import quantize_int8
from elmo_export.quantize.ranges import activation_ranges
from elmo_export.quantize.settings import (
    DEFAULT_SETTINGS,
    Fp16Settings,
    Fp32Settings,
    Int4Settings,
    Int8Settings,
    PrecisionSettings,
    QuantizationSettings,
    precision_settings,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "Fp16Settings",
    "Fp32Settings",
    "Int4Settings",
    "Int8Settings",
    "PrecisionSettings",
    "QuantizationSettings",
    "activation_ranges",
    "float_weight_matmuls",
    "op_counts",
    "precision_settings",
    "quantize",
    "quantize_int4",
    "quantize_int8",
    "sort_nodes",
]


def quantize(
    model: onnx.ModelProto, settings: QuantizationSettings, moments: Mapping[str, np.ndarray] | None = None
) -> onnx.ModelProto:
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
