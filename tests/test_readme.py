"""The README's main job, as a new user runs it: export the default model to int8, embed a file.

The vectors of three sentences are pinned, so that a silent change to the shipped model, the
graph, the quantizer or the runtime is caught:

- fp32 values (the same export without `--quantize`), abs tolerance 1e-4: they depend on the
  model and the graph only (float summation order moves them by ~1e-6).
- int8 values, abs tolerance 2e-3, measured with onnxruntime 1.32 on x86 (AMD EPYC, AVX2) with
  per-row activation scales and 7-bit weights, whose integer products no x86 kernel saturates,
  so other x86 CPUs should differ only by float rounding, far less than the tolerance; a changed
  model or graph moves them by more (quantization alone moves them by up to 0.2, the int8
  package's max abs error in docs/export.md).

The shipped int8 package of the runtime (`elmo-embed default ...`) is that same export: its
vectors meet the same int8 pins.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from elmo_export import cli as export_cli
from elmo_export.architectures import ARCHITECTURES
from elmo_runtime import cli as embed_cli

SENTENCES = ["The cat sat on the mat .", "ELMo vectors depend on context .", "She sat by the river bank ."]
# (sentence's HDF5 key, layer, token, component): (fp32 value, int8 value)
PINNED = {
    ("0", 0, 0, 0): (2.155884, 2.148370),
    ("0", 1, 2, 17): (-0.128480, -0.140116),
    ("0", 2, 5, 200): (0.076540, 0.110522),
    ("0", 2, 6, 255): (0.614409, 0.598934),
    ("1", 0, 1, 3): (-1.740907, -1.720536),
    ("1", 1, 3, 100): (-0.644646, -0.657002),
    ("1", 2, 5, 128): (-0.244173, -0.238974),
    ("2", 0, 0, 64): (-1.030973, -1.048430),
    ("2", 1, 2, 31): (0.463048, 0.436137),
    ("2", 2, 6, 250): (-0.448583, -0.465522),
}
FP32 = [fp32 for fp32, _ in PINNED.values()]
INT8 = [int8 for _, int8 in PINNED.values()]


def _embed(package: str, tmp_path: Path) -> list[float]:
    """`elmo-embed PACKAGE sentences.txt vectors.hdf5` in TMP_PATH -> the pinned positions' values."""
    tmp_path.mkdir(exist_ok=True)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    assert embed_cli.main([package, str(sentences), str(tmp_path / "vectors.hdf5"), "-q"]) == 0
    lstm = ARCHITECTURES["default-wordnet"]["lstm"]
    with h5py.File(tmp_path / "vectors.hdf5") as f:
        assert [f[str(i)].shape for i in range(3)] == [
            (lstm["n_layers"] + 1, len(s.split()), 2 * lstm["projection_dim"]) for s in SENTENCES
        ]
        return [float(f[key][tuple(index)]) for key, *index in PINNED]


def test_the_readme_main_job_gives_the_pinned_vectors(tmp_path):
    # elmo-export --quantize int8 -o elmo-int8   (no MODEL: the shipped default model)
    for name, quantize, want, atol in (
        ("elmo-int8", ["--quantize", "int8"], INT8, 2e-3),
        ("elmo-fp32", [], FP32, 1e-4),
    ):
        package = tmp_path / name
        assert export_cli.main([*quantize, "-o", str(package), "--no-progress", "-q"]) == 0
        got = _embed(str(package), tmp_path / f"{name}-job")
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=name)


def test_the_readme_first_command_embeds_with_the_shipped_package(tmp_path, monkeypatch):
    # pip install . && ... && elmo-embed default sentences.txt vectors.hdf5   (no torch, no download)
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    np.testing.assert_allclose(_embed("default", tmp_path), INT8, atol=2e-3, rtol=0)
