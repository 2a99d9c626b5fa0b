"""Sigmoid and tanh from exactly rounded ops: the same bits from every ONNX Runtime build.

ONNX Runtime's `Sigmoid` and `Tanh` kernels (MLAS) evaluate a rational approximation whose
rounding depends on the target: native x86-64 dispatches to hand-written AVX2/AVX-512 kernels
that fuse each multiply-add (FMA: one rounding), onnxruntime-web's wasm build runs the portable
kernel, whose multiply-adds round twice (wasm SIMD has no FMA without relaxed SIMD, which
onnxruntime-web 1.30 does not use). Measured on 1.5M inputs (AMD EPYC, onnxruntime 1.32 against
onnxruntime-web 1.30): Sigmoid differs on 23% of them by up to 2.4e-7, Tanh on 37% by up to
4.8e-7 (Exp, Log and Erf differ too). In the char CNN's highway gate that moved layer 0 by up to
3e-6; in int8 such a difference can flip an activation's rounding to the next level, and the
recurrence carries it along a long sentence (max abs 0.15 over 3000 tokens).

Here the graph spells the same approximation out (the coefficients MLAS and Eigen use) as
Clip, Mul, Add and Div nodes. Each of those IEEE 754 rounds exactly, and ONNX Runtime fuses none
of them, so every build computes the same bits: x86 with or without FMA, AVX-512, ARM, wasm.
A table lookup (Gather) would need fewer nodes but ran 3.5 times slower here: ONNX Runtime's
Gather copies element by element.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Rational(NamedTuple):
    """`f(x) ~ offset + x * p(x^2) / q(x^2)` for x clipped to `[-limit, limit]`, clipped to `[low, high]`.

    `p` and `q` list their coefficients from the highest power of x^2 down, as Horner's rule
    takes them. The final clip also tells the int8 quantizer's interval analysis
    (`quantize.ranges`) the range of the value.
    """

    name: str
    limit: float
    p: tuple[float, ...]
    q: tuple[float, ...]
    offset: float
    low: float
    high: float


# MLAS's `MlasLogisticConstants` and `MlasTanhConstants` (onnxruntime/core/mlas/lib/logistic.cpp
# and tanh.cpp), which are Eigen's.
SIGMOID = Rational(
    "sigmoid",
    18.0,
    (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01),
    (
        6.10247389755681e-13,
        5.76102136993427e-09,
        6.29106785017040e-06,
        1.70198817374094e-03,
        1.16817656904453e-01,
        9.93151921023180e-01,
    ),
    0.5,
    0.0,
    1.0,
)
TANH = Rational(
    "tanh",
    9.0,
    (
        -2.76076847742355e-16,
        2.00018790482477e-13,
        -8.60467152213735e-11,
        5.12229709037114e-08,
        1.48572235717979e-05,
        6.37261928875436e-04,
        4.89352455891786e-03,
    ),
    (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03),
    0.0,
    -1.0,
    1.0,
)
FUNCTIONS = {"Sigmoid": SIGMOID, "Tanh": TANH}


def evaluate(f: Rational, x: np.ndarray) -> np.ndarray:
    """What the graph's nodes compute, op by op in float32 (numpy rounds each op as IEEE says)."""
    f32 = np.float32
    v = np.clip(np.asarray(x, f32), f32(-f.limit), f32(f.limit))
    v2 = v * v

    def horner(coefficients: tuple[float, ...]) -> np.ndarray:
        acc = v2 * f32(coefficients[0]) + f32(coefficients[1])
        for c in coefficients[2:]:
            acc = acc * v2 + f32(c)
        return acc

    y = (horner(f.p) * v) / horner(f.q)
    if f.offset:
        y = y + f32(f.offset)
    return np.clip(y, f32(f.low), f32(f.high))
