"""Sigmoid and tanh from exactly rounded ops: the same bits from every ONNX Runtime build.

ONNX Runtime's `Sigmoid` and `Tanh` kernels are approximations that differ by target: native
x86 runs MLAS's AVX2/AVX-512 kernels with fused multiply-adds, onnxruntime-web's wasm build
(no relaxed SIMD, so no FMA) the portable ones. Measured on 1.5M inputs (AMD EPYC, onnxruntime
1.32 against onnxruntime-web 1.30): Sigmoid differs on 23% of them by up to 2.4e-7, Tanh on 37%
by up to 4.8e-7 (Exp, Log and Erf differ too). In the char CNN's highway gate that moved layer 0
by up to 3e-6; in int8, such a difference can flip an activation's rounding to the next level,
and the recurrence carries it along a long sentence (max abs 0.15 over 3000 tokens).

Here each function is a table lookup with quadratic interpolation, written with ops whose
result IEEE 754 fixes to the bit on every target: Clip, Mul by a power of two, Floor, Sub, Cast,
Gather, Add and Mul. The tables are computed in float64 once, at export, and rounded to float32.
Absolute error against the float64 function: at most 8.6e-8 (float32's own rounding near 1 is
3e-8), below the 2.4e-7 and 4.8e-7 by which the kernels disagree with each other.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Table(NamedTuple):
    """A function tabulated on `[-limit, limit]` in steps of `2**-exponent` (`limit * 2**exponent`
    an integer); beyond, the end value."""

    name: str
    function: Callable[[np.ndarray], np.ndarray]  # float64 in, float64 out
    limit: float
    exponent: int
    low: float  # the function's range: the output is clipped to it, which also tells the
    high: float  # int8 quantizer's interval analysis (`quantize.ranges`) the bound of the value


# Beyond the limits the functions are within 4.2e-8 of their end values; 13 KB a table.
SIGMOID = Table("sigmoid", lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), 17.0, 5, 0.0, 1.0)  # 1089 rows
TANH = Table("tanh", np.tanh, 9.0, 6, -1.0, 1.0)  # 1153 rows
TABLES = {"Sigmoid": SIGMOID, "Tanh": TANH}


def coefficients(table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grid step k in `[-n, n]`: `(a, b, c)` of `f(x) ~ a + d * (b + d * c)` for
    `x = (k + d) * 2**-exponent`, `d` in [0, 1): the parabola through the step's ends and middle.

    Row k sits at index `k mod (2n + 1)`, so that `Gather` takes k itself as its index (ONNX
    counts a negative index from the end): no offset to add in the graph.
    """
    n = int(table.limit * 2**table.exponent)
    k = np.arange(-n, n + 1, dtype=np.float64)
    step = 2.0**-table.exponent
    start, middle, end = (table.function((k + s) * step) for s in (0.0, 0.5, 1.0))
    c = 2.0 * (start + end - 2.0 * middle)
    b = end - start - c
    order = np.argsort(k.astype(np.int64) % (2 * n + 1))
    return tuple(v[order].astype(np.float32) for v in (start, b, c))


def evaluate(table: Table, x: np.ndarray) -> np.ndarray:
    """What the graph's nodes compute, op by op in float32 (numpy rounds each op as IEEE says)."""
    a, b, c = coefficients(table)
    v = np.clip(np.asarray(x, np.float32), np.float32(-table.limit), np.float32(table.limit))
    v = v * np.float32(2.0**table.exponent)
    k = np.floor(v)
    d = v - k
    i = k.astype(np.int64)
    y = a[i] + d * (b[i] + d * c[i])
    return np.clip(y, np.float32(table.low), np.float32(table.high))
