"""Memory follows the budget in every writer (reliability review 2026-12, M1 and M7).

Each test runs the real writer in a fresh process (`memory_probe.py`) and compares its peak
memory with the bytes of the vectors it wrote.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

PROBE = Path(__file__).with_name("memory_probe.py")
# Tokens of the long line: its vectors (every layer of the tiny model) are a few MB, enough to
# dwarf the allocator's noise, and it embeds in a few seconds.
LONG_LINE_TOKENS = 16_000
# Peak memory while writing the line, over its vectors' bytes. Parquet keeps a row in one
# record: pyarrow needs its values, their repetition and definition levels and the page
# buffers at once (measured 8.7x for `elmo-embed --format parquet`, 9.8x for a Ray worker; the
# writers before the fix took 20x). NPZ and HDF5 write the array as it is (2.5x and 1.5x,
# the embedding's own buffers included).
PARQUET_BOUND = 12
PLAIN_BOUND = 4


def peak_beyond(mode: str, package, line: Path, scratch: Path) -> int:
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(PROBE), mode, str(package), str(line), str(scratch)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])["beyond"]


@pytest.fixture(scope="module")
def long_line(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = "the a cat dog sat ran on under mat tree quickly slowly , . ! ?".split()
    path = tmp_path_factory.mktemp("long") / "line.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(LONG_LINE_TOKENS)) + "\n")
    return path


@pytest.mark.parametrize("mode,bound", [("parquet", PARQUET_BOUND), ("ray", PARQUET_BOUND), ("npz", PLAIN_BOUND)])
def test_one_long_line_needs_memory_in_proportion_to_its_vectors(mode, bound, tiny_package, sizes, long_line, tmp_path):
    vector_bytes = LONG_LINE_TOKENS * sizes.layers * sizes.dim * np.dtype(np.float32).itemsize
    beyond = peak_beyond(mode, tiny_package, long_line, tmp_path / "scratch")
    assert beyond <= bound * vector_bytes, (
        f"{mode}: writing {vector_bytes / 2**20:.1f} MB of vectors took {beyond / 2**20:.1f} MB "
        f"({beyond / vector_bytes:.1f}x; the bound is {bound}x)")
