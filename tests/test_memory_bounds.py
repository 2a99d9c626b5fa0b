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
# buffers at once (measured: 10.5x for `elmo-embed --format parquet`, 10.8x for a Ray worker;
# the writers before the fix took 24.9x and 24.1x). NPZ and HDF5 write the array as it is
# (2.6x and 1.5x, the embedding's own buffers included).
PARQUET_BOUND = 15
PLAIN_BOUND = 4


def peak_beyond(mode: str, package, line: Path, scratch: Path) -> int:
    scratch.mkdir()
    root = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(PROBE), mode, str(package), str(line), str(scratch)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
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
        f"({beyond / vector_bytes:.1f}x; the bound is {bound}x)"
    )


# Python memory an NPZ output may gain per sentence written with forget_sentences: zipfile kept
# a ZipInfo per member (376 bytes per sentence, measured), which 520k sentences took to 389 MB.
NPZ_BYTES_PER_SENTENCE = 16


def test_npz_output_memory_does_not_grow_with_the_sentences(elmo, tmp_path):
    """20,000 two-token lines, --forget-sentences: Python's traced memory after the first 4,000
    and after the last may differ by at most 16 bytes a sentence."""
    import tracemalloc

    from elmo_runtime.corpus.files import embed_file

    first, total = 4_000, 20_000
    (tmp_path / "in.txt").write_text("a b\n" * total)

    class Sampler:  # `stop` is asked once per sentence written: the place to look at memory
        def __init__(self):
            self.calls, self.traced = 0, {}

        def is_set(self) -> bool:
            self.calls += 1
            if self.calls in (first, total):
                self.traced[self.calls] = tracemalloc.get_traced_memory()[0]
            return False

    sampler = Sampler()
    tracemalloc.start()
    try:
        embed_file(
            elmo,
            tmp_path / "in.txt",
            tmp_path / "out.npz",
            format="npz",
            tokenized=True,
            forget_sentences=True,
            stop=sampler,
        )
    finally:
        tracemalloc.stop()
    per_sentence = (sampler.traced[total] - sampler.traced[first]) / (total - first)
    assert per_sentence <= NPZ_BYTES_PER_SENTENCE, f"{per_sentence:.0f} bytes more per sentence"
    with np.load(tmp_path / "out.npz") as npz:
        assert len(npz.files) == total
        np.testing.assert_array_equal(npz[str(total - 1)], elmo.embed([["a", "b"]])[0])


def test_npz_members_are_checked_by_zipfile(tmp_path):
    """The streamed zip is a valid ZIP64 archive: every CRC checks, sizes and names as written,
    with ZIP64 sizes in every member."""
    import zipfile

    from elmo_runtime.corpus.npz import NpzWriter

    arrays = {
        "0": np.arange(12, dtype=np.float32).reshape(3, 4),
        "1": np.zeros((0, 4), np.float16),
        "sentence_to_index": np.array('{"a": "0"}'),
    }
    writer = NpzWriter(tmp_path / "x.npz")
    for name, array in arrays.items():
        writer.add(name, array)
    writer.close()
    with zipfile.ZipFile(tmp_path / "x.npz") as z:
        assert z.testzip() is None
        assert z.namelist() == [f"{name}.npy" for name in arrays]
    with np.load(tmp_path / "x.npz") as npz:
        for name, array in arrays.items():
            np.testing.assert_array_equal(npz[name], array)
            assert npz[name].dtype == array.dtype
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]  # the directory's spool file is gone
