"""Comparing a package's layers with expected ones: the one measure and the one tolerance.

Used by the exporter's parity gate (the package against the PyTorch reference), the conformance
writer (the package's expected outputs against the reference) and `elmo-verify` (a runtime
against the package's conformance vectors), so that the three cannot disagree on what "close"
means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What a comparison must meet; None: not checked (still measured).

    Attributes:
        max_abs: the largest allowed abs difference of any value.
        min_cosine: the smallest allowed cosine similarity of any token vector.
        mean_cosine: the smallest allowed mean cosine similarity of a layer's token vectors.
    """

    max_abs: float | None = None
    min_cosine: float | None = None
    mean_cosine: float | None = None

    def violations(
        self, max_abs: float, mean_cosine: float | None = None, min_cosine: float | None = None
    ) -> list[str]:
        """What the figures of one layer break, one phrase each (none: within tolerance).

        A NaN anywhere is a violation by itself, whatever is checked: NaN compares false.
        """
        figures = [max_abs, mean_cosine, min_cosine]
        if not all(np.isfinite(f) for f in figures if f is not None):
            return ["non-finite values"]
        found = []
        if self.max_abs is not None and max_abs > self.max_abs:
            found.append(f"max abs difference {max_abs:.3g} > {self.max_abs:g}")
        if self.min_cosine is not None and min_cosine is not None and min_cosine < self.min_cosine:
            found.append(f"min cosine {min_cosine:.6f} < {self.min_cosine:g}")
        if self.mean_cosine is not None and mean_cosine is not None and mean_cosine < self.mean_cosine:
            found.append(f"mean cosine {mean_cosine:.6f} < {self.mean_cosine:g}")
        return found


class Comparison(NamedTuple):
    """Per layer (the first axis): the max abs difference and the mean and min token cosine."""

    max_abs: np.ndarray
    mean_cosine: np.ndarray
    min_cosine: np.ndarray


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, in float64.

    A zero vector against a non-zero one scores 0 (a package that zeroes a token's vector must
    not pass as perfect); two zero vectors score 1 (padding, the empty sentence).
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    dot = (got * want).sum(-1)
    norms = np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1)
    zero = norms == 0
    both_zero = ~got.any(-1) & ~want.any(-1)
    return np.where(zero, both_zero.astype(np.float64), dot / np.where(zero, 1.0, norms))


def compare(got: np.ndarray, want: np.ndarray, real: np.ndarray | None = None) -> Comparison:
    """Compare layers `(layers, ..., dim)` with the expected ones, per layer.

    Args:
        got, want: arrays of one shape; the first axis is the layer, the last the vector.
        real: which vectors are real tokens (`got.shape[1:-1]`, e.g. a batch's mask); the
            cosines are over those only, the max abs over every value (padding must match too).
            None: every vector.

    Returns:
        A `Comparison`; a NaN in a layer makes its figures NaN. With no token, the cosines are 1.
    """
    layers = got.shape[0]
    diff = np.abs(np.asarray(got, np.float64) - want).reshape(layers, -1)
    max_abs = diff.max(axis=1) if diff.shape[1] else np.zeros(layers)  # NaN propagates
    if real is not None:
        got, want = got[:, real], want[:, real]
    cos = cosines(got, want).reshape(layers, -1)
    if cos.shape[1] == 0:
        return Comparison(max_abs, np.ones(layers), np.ones(layers))
    return Comparison(max_abs, cos.mean(axis=1), cos.min(axis=1))
