"""The README's main job, as a new user runs it: export the default model to int8, embed a file.

The vectors of three sentences are pinned, so that a silent change to the shipped model, the
graph, the quantizer or the runtime is caught. Tolerance: abs 2e-3. The values were measured
with onnxruntime 1.32 on x86 (AMD EPYC, AVX2) with per-row activation scales and 7-bit weights,
whose integer products no x86 kernel saturates, so other x86 CPUs should differ only by float
rounding, far less than the tolerance; a changed model or graph moves them by more
(quantization alone moves them by up to 0.2, the int8 package's max abs error in the README).
"""

from __future__ import annotations

import h5py
import numpy as np

from elmo_export import cli as export_cli
from elmo_export.architectures import ARCHITECTURES
from elmo_runtime import cli as embed_cli

SENTENCES = ["The cat sat on the mat .", "ELMo vectors depend on context .", "She sat by the river bank ."]
# Per sentence (the HDF5 key), (layer, token, component) -> value.
PINNED = {
    "0": {(0, 0, 0): 2.148370, (1, 2, 17): -0.140116, (2, 5, 200): 0.110522, (2, 6, 255): 0.598934},
    "1": {(0, 1, 3): -1.720536, (1, 3, 100): -0.657002, (2, 5, 128): -0.238974},
    "2": {(0, 0, 64): -1.048430, (1, 2, 31): 0.436137, (2, 6, 250): -0.465522},
}


def test_the_readme_main_job_gives_the_pinned_vectors(tmp_path):
    # elmo-export --quantize int8 -o elmo-int8   (no MODEL: the shipped default model)
    package = tmp_path / "elmo-int8"
    assert export_cli.main(["--quantize", "int8", "-o", str(package), "--no-progress", "-q"]) == 0
    # elmo-embed elmo-int8 sentences.txt vectors.hdf5
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    assert embed_cli.main([str(package), str(sentences), str(tmp_path / "vectors.hdf5"), "-q"]) == 0

    with h5py.File(tmp_path / "vectors.hdf5") as f:
        lstm = ARCHITECTURES["default-wordnet"]["lstm"]
        shapes = [(lstm["n_layers"] + 1, len(s.split()), 2 * lstm["projection_dim"]) for s in SENTENCES]
        assert [f[key].shape for key in PINNED] == shapes
        got = [float(f[key][index]) for key, values in PINNED.items() for index in values]
    want = [value for values in PINNED.values() for value in values.values()]
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)


def test_the_readme_first_command_embeds_with_the_shipped_package(tmp_path, monkeypatch):
    # pip install . && ... && elmo-embed default sentences.txt vectors.hdf5   (no torch, no download)
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    assert embed_cli.main(["default", str(sentences), str(tmp_path / "vectors.hdf5"), "-q"]) == 0
    with h5py.File(tmp_path / "vectors.hdf5") as f:
        got = [float(f[key][index]) for key, values in PINNED.items() for index in values]
    want = [value for values in PINNED.values() for value in values.values()]
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)
