"""GPTQ: 4-bit block-wise weights rounded so that their products change least on real inputs.

Round to nearest (RTN) rounds every weight on its own. GPTQ (Frantar et al., "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", 2022) rounds the rows of a
`(K, N)` MatMul weight one after the other and moves each row's rounding error onto the rows
not yet rounded, weighted by how the inputs of those rows go together: the second moments
`H = E[x x^T]` of the product's input over a calibration text (`calibration.input_moments`).
With `H` the identity nothing moves and GPTQ is round to nearest.

The result is stored as onnxruntime's `com.microsoft.MatMulNBits` (the op `Int4Settings`' round
to nearest makes too): a float scale and a 4-bit zero point per block of `block` rows of one
column. onnxruntime ships a GPTQ (`quantization.neural_compressor.weight_only.gptq`), but in
version 1.32 it returns round to nearest exactly (it takes the transposed Cholesky factor,
whose entries below the diagonal are zero, so no error is ever moved), collects its moments
from graph outputs, which cannot reach the MatMuls inside the LSTM's Scan body, and re-derives
each block's scale from the rounded values' range, which moves them off their grid when a block
does not use both end levels. `tests/test_gptq.py` checks this module against a textbook
GPTQ and its packing against onnxruntime's quantizer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

LEVELS = 15  # 4 bits: levels 0..15
_LAZY_ROWS = 128  # rows rounded between two updates of the rest of the matrix (GPTQ's lazy batch)


class Blocks(NamedTuple):
    """A `(K, N)` weight in 4-bit blocks along K: `levels (K, N)` in 0..15, and per block of
    `block` rows of one column a `scale` and a `zero_point` `(ceil(K / block), N)`."""

    levels: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    block: int

    def dequantized(self) -> np.ndarray:
        """The weight the op computes with, `(K, N)` float32."""
        rows = np.arange(len(self.levels)) // self.block
        return ((self.levels.astype(np.float32) - self.zero_points[rows]) * self.scales[rows]).astype(np.float32)


def block_params(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point per column of one block `(b, N)`: the range of its values, widened
    to include 0 (as onnxruntime's MLAS round to nearest does), over 15 levels."""
    # In float32, as MLAS computes them: round to nearest then gives its bytes exactly.
    low = np.minimum(rows.min(axis=0), 0.0).astype(np.float32)
    high = np.maximum(rows.max(axis=0), 0.0).astype(np.float32)
    scale = (high - low) / np.float32(LEVELS)
    scale[scale == 0] = 1.0  # an all-zero column: any scale stores it exactly
    zero_point = np.clip(np.round(-low / scale), 0, LEVELS).astype(np.float32)
    return scale, zero_point


def quantize_gptq(weight: np.ndarray, moments: np.ndarray | None, block: int, damp: float = 0.01) -> Blocks:
    """Round a `(K, N)` weight to 4-bit blocks of `block` rows, GPTQ-style.

    Args:
        weight: the MatMul's constant operand, `(K, N)`.
        moments: `(K, K)` second moments of the MatMul's input; None: round to nearest.
        block: rows sharing a scale and zero point.
        damp: added to the diagonal, as a fraction of its mean: keeps `H` invertible when the
            calibration text is shorter than K or leaves inputs at zero (GPTQ's 1%).

    Returns:
        The levels, scales and zero points (`Blocks`).
    """
    k, n = weight.shape
    w = weight.astype(np.float64)  # rows are updated in place as the errors move
    factor = None  # round to nearest: no error moves
    if moments is not None:
        h = np.array(moments, dtype=np.float64)
        dead = np.diag(h) == 0  # never active on the calibration text: rounded to nearest, nothing moves
        h[dead, dead] = 1.0
        h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
        # The upper Cholesky factor U of H^-1 (H^-1 = U^T U): row i of U says how row i's
        # error spreads onto the later rows, with the earlier rows' errors already taken out.
        factor = np.linalg.cholesky(np.linalg.inv(h)).T
    levels = np.zeros((k, n), np.uint8)
    blocks = -(-k // block)
    scales = np.zeros((blocks, n), np.float32)
    zero_points = np.zeros((blocks, n), np.float32)
    lazy = max(_LAZY_ROWS, block)  # a multiple of `block` (both are powers of two)
    for start in range(0, k, lazy):
        stop = min(start + lazy, k)
        errors = np.zeros((stop - start, n))
        for i in range(start, stop):
            if i % block == 0:  # the block's parameters from its rows as they are now
                scales[i // block], zero_points[i // block] = block_params(w[i : i + block])
            scale, zero = scales[i // block], zero_points[i // block]
            q = np.clip(np.round(w[i] / scale) + zero, 0, LEVELS)
            levels[i] = q
            if factor is None:
                continue
            error = (w[i] - (q - zero) * scale) / factor[i, i]
            w[i + 1 : stop] -= np.outer(factor[i, i + 1 : stop], error)
            errors[i - start] = error
        if factor is not None:
            w[stop:] -= factor[start:stop, stop:].T @ errors
    return Blocks(levels, scales, zero_points.astype(np.uint8), block)


def matmul_nbits(
    node: onnx.NodeProto, weight_name: str, blocks: Blocks, accuracy_level: int | None = None
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """The `MatMulNBits` node (and its initializers) that replaces MatMul `node`.

    Layout (onnxruntime's contrib op): `B (N, blocks, block / 2)` uint8, two levels a byte,
    the lower row in the low nibble; `scales (N, blocks)`; `zero_points (N, ceil(blocks / 2))`
    uint8, two blocks a byte, each column's padded to whole bytes. K is padded to whole blocks
    with level 0 rows (their zero products never reach the output: the input has K columns).
    """
    k, n = blocks.levels.shape
    count = blocks.scales.shape[0]
    padded = np.zeros((count * blocks.block, n), np.uint8)
    padded[:k] = blocks.levels
    by_column = padded.T.reshape(n, count, blocks.block)
    packed = (by_column[..., 0::2] | (by_column[..., 1::2] << 4)).astype(np.uint8)
    zp = np.full((n, count + count % 2), 8, np.uint8)  # a padding nibble holds 8, as onnxruntime writes it
    zp[:, :count] = blocks.zero_points.T
    zp_packed = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
    names = [f"{weight_name}_Q4G{blocks.block}", f"{weight_name}_scales", f"{weight_name}_zero_points"]
    initializers = [
        numpy_helper.from_array(packed, names[0]),
        numpy_helper.from_array(np.ascontiguousarray(blocks.scales.T), names[1]),
        numpy_helper.from_array(zp_packed, names[2]),
    ]
    attrs = {"K": k, "N": n, "bits": 4, "block_size": blocks.block}
    if accuracy_level is not None:
        attrs["accuracy_level"] = accuracy_level
    new = helper.make_node(
        "MatMulNBits",
        [node.input[0], *names],
        list(node.output),
        name=f"{node.name}_Q4",
        domain="com.microsoft",
        **attrs,
    )
    return new, initializers
