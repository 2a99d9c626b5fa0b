"""The README's main job, as a new user runs it: export the default model to int8, embed a file.

The vectors of three sentences are pinned, so that a silent change to the shipped model, the
graph, the quantizer or the runtime is caught. Tolerance: abs 2e-3. The values were measured
with onnxruntime 1.32 on x86 (AVX-512 VNNI); dynamic int8 kernels on other CPUs may round
activations differently, by far less than that, while a changed model or graph moves them by
more (quantization alone moves them by up to 0.2, the int8 package's max abs error in the
README).
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
    "0": {(0, 0, 0): 2.197006, (1, 2, 17): -0.188977, (2, 5, 200): 0.029962, (2, 6, 255): 0.696866},
    "1": {(0, 1, 3): -1.843828, (1, 3, 100): -0.654809, (2, 5, 128): -0.302768},
    "2": {(0, 0, 64): -0.980405, (1, 2, 31): 0.480414, (2, 6, 250): -0.486381},
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
