"""The TensorFlow fixtures in ../shared/fixtures: the ground truth for every parity test."""

from __future__ import annotations

import json
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


def load_fixture_set(name: str) -> FixtureSet:
    """Read one fixture folder; skip the test where ../shared/fixtures is absent."""
    folder = FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"TF fixtures not found at {folder} (they live in ../shared/fixtures)")
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
