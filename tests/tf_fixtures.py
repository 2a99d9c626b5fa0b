"""The TensorFlow fixtures in ../shared/fixtures: the ground truth for every parity test."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@dataclass(frozen=True)
class FixtureSet:
    name: str
    options: Path
    weights: Path
    batches: list[list[list[str]]]  # 10 batches of 3 tokenized sentences, in order
    expected: dict[tuple[int, int], np.ndarray]  # (batch, row) -> top layer (T, 2P)


def require_fixture(path: Path) -> Path:
    """`path` under the fixtures; skip the test where it is absent, but fail in CI.

    In CI (environment variable CI set) the ground truth must never go missing unnoticed.
    """
    if not path.exists():
        where = (
            f"TF fixture not found at {path}: the fixtures must be in ../shared/fixtures beside the "
            f"checkout (here {FIXTURES}); they are not copied into the repository"
        )
        if os.environ.get("CI"):
            pytest.fail(where + " (CI is set: a missing fixture is a failure, not a skip)")
        pytest.skip(where)
    return path


def load_fixture_set(name: str) -> FixtureSet:
    """Read one fixture folder (`require_fixture`: a skip, or a failure in CI, where it is absent)."""
    folder = require_fixture(FIXTURES / name)
    sentences_file = next(f for f in ("sentences.json", "lm_embeddings_sentences.json") if (folder / f).exists())
    sentences = json.loads((folder / sentences_file).read_text())
    batches = [[sentences[row][i].split(" ") for row in range(3)] for i in range(10)]
    expected = {}
    for row in range(3):
        path = folder / f"lm_embeddings_{row}.hdf5"
        if path.exists():
            with h5py.File(path, "r") as fin:
                for i in range(10):
                    halves = fin[str(i)][...]  # (2, T, P): forward, backward
                    expected[i, row] = np.concatenate([halves[0], halves[1]], axis=-1)
    return FixtureSet(name, folder / "options.json", folder / "lm_weights.hdf5", batches, expected)


FIXTURE_SETS = ["bilm-tf", "allennlp-elmo"]
