"""The README's main job, as a new user runs it: export the default model to int8, embed a file.

The vectors of three sentences are pinned, so that a silent change to the shipped model, the
graph, the quantizer or the runtime is caught:

- fp32 values (the same export without `--quantize`), abs tolerance 1e-4: they depend on the
  model and the graph only (float summation order moves them by ~1e-6).
- int8 values, abs tolerance 2e-3, measured on a CPU whose int8 kernel is onnxruntime's AVX2
  path (no VNNI: its 16-bit sums saturate, so int8 is less exact there). A CPU with VNNI
  (AVX512_VNNI, AVX_VNNI, AMX) rounds differently: there the int8 values are checked against
  the fp32 pins within 0.25, the int8 package's max abs error (README, 0.2 measured on one).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from elmo_export import cli as export_cli
from elmo_export.architectures import ARCHITECTURES
from elmo_runtime import cli as embed_cli

SENTENCES = ["The cat sat on the mat .", "ELMo vectors depend on context .", "She sat by the river bank ."]
# (sentence's HDF5 key, layer, token, component): (fp32 value, int8 value on the AVX2 path)
PINNED = {
    ("0", 0, 0, 0): (2.155884, 2.197006),
    ("0", 1, 2, 17): (-0.128480, -0.188977),
    ("0", 2, 5, 200): (0.076540, 0.029962),
    ("0", 2, 6, 255): (0.614409, 0.696866),
    ("1", 0, 1, 3): (-1.740907, -1.843828),
    ("1", 1, 3, 100): (-0.644646, -0.654809),
    ("1", 2, 5, 128): (-0.244173, -0.302768),
    ("2", 0, 0, 64): (-1.030973, -0.980405),
    ("2", 1, 2, 31): (0.463048, 0.480414),
    ("2", 2, 6, 250): (-0.448583, -0.486381),
}


def _has_vnni() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags) is not None


def _main_job(tmp_path: Path, *quantize: str) -> dict[tuple, float]:
    """`elmo-export [--quantize ...] -o PACKAGE` (no MODEL: the shipped default model), then
    `elmo-embed PACKAGE sentences.txt vectors.hdf5`; -> the pinned positions' values."""
    package = tmp_path / "package"
    assert export_cli.main([*quantize, "-o", str(package), "--no-progress", "-q"]) == 0
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    assert embed_cli.main([str(package), str(sentences), str(tmp_path / "vectors.hdf5"), "-q"]) == 0
    lstm = ARCHITECTURES["default-wordnet"]["lstm"]
    with h5py.File(tmp_path / "vectors.hdf5") as f:
        assert [f[str(i)].shape for i in range(3)] == [
            (lstm["n_layers"] + 1, len(s.split()), 2 * lstm["projection_dim"]) for s in SENTENCES]
        return {index: float(f[index[0]][index[1:]]) for index in PINNED}


def test_the_readme_main_job_gives_the_pinned_vectors(tmp_path):
    int8 = _main_job(tmp_path / "int8", "--quantize", "int8")  # the README's command
    fp32 = _main_job(tmp_path / "fp32")
    np.testing.assert_allclose(list(fp32.values()), [v[0] for v in PINNED.values()], atol=1e-4, rtol=0)
    if _has_vnni():
        np.testing.assert_allclose(list(int8.values()), [v[0] for v in PINNED.values()], atol=0.25, rtol=0)
    else:
        np.testing.assert_allclose(list(int8.values()), [v[1] for v in PINNED.values()], atol=2e-3, rtol=0)
