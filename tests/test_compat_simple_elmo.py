"""`elmo_runtime.compat.simple_elmo.ElmoModel` against simple_elmo's documented semantics.

simple_elmo needs TensorFlow 1.x, which does not install here; its procedure is re-stated in
this file from its source (`elmo_helpers.py`: a new session per call = zero state, the first
batch run once to warm up, then the batches in order with the state carried row by row;
float64 arrays of `(N, longest, D)`; the sentence vector = the mean over positions divided by
its norm) and computed with independent parts: bilm-tf's graph in numpy (`test_nlpl`) for the
zero state, the PyTorch reference with the row bookkeeping of `test_compat_allennlp` for the
carried one.
"""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest
from compat_catalog import official_models_as
from test_compat_allennlp import AllenNlpStatefulOracle
from test_nlpl import bilm_tf_numpy

from elmo_export.synthetic import write_nlpl_zip
from elmo_export.weights import load_reference
from elmo_runtime import Elmo as RuntimeElmo
from elmo_runtime.compat.simple_elmo import ElmoModel

TEXTS = [
    ["Det", "var", "en", "gang", "."],
    ["Привет", "мир", "!"],
    ["x" * 70],
    ["En", "til", "setning", "her", "nå", "."],
    ["Kort"],
]


def simple_elmo_average(batch_vectors: np.ndarray) -> np.ndarray:
    """simple_elmo's get_elmo_vector_average on one batch's `(B, T, D)` output, as its code does it."""
    out = []
    for sentence in batch_vectors:
        fingerprint = np.sum(sentence, axis=0) / sentence.shape[0]
        out.append(fingerprint / np.linalg.norm(fingerprint))
    return np.array(out)


def test_an_nlpl_zip_stateful_reproduces_simple_elmos_procedure(tmp_path, monkeypatch):
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    archive = write_nlpl_zip("nlpl", tmp_path / "209.zip", seed=11)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "files")
    options = json.loads((tmp_path / "files" / "options.json").read_text())
    model = ElmoModel(stateful=True)
    assert model.load(str(archive), max_batch_size=2) == "The model is now loaded."

    # One batch, no warm-up: each sentence from the zero state, as bilm-tf's graph computes it.
    got = model.get_elmo_vectors(TEXTS[:2], warmup=False, layers="all")
    assert got.dtype == np.float64 and got.shape == (2, 3, 5, model.vector_size)
    with h5py.File(tmp_path / "files" / "model.hdf5", "r") as weights:
        for i, sentence in enumerate(TEXTS[:2]):
            np.testing.assert_allclose(
                got[i, :, : len(sentence)], bilm_tf_numpy(options, weights, sentence), rtol=0, atol=1e-5
            )
    assert not got[1, :, 3:].any()

    # Several batches: the first run once, then all in order, each row carrying its state.
    oracle = AllenNlpStatefulOracle(
        load_reference(tmp_path / "files" / "options.json", tmp_path / "files" / "model.hdf5")
    )
    batches = [TEXTS[i : i + 2] for i in range(0, len(TEXTS), 2)]
    oracle(batches[0])
    want = [layers[:, row, : len(s)] for batch in batches for layers in [oracle(batch)] for row, s in enumerate(batch)]
    got = model.get_elmo_vectors(TEXTS, layers="all")
    worst = max(float(np.abs(got[i, :, : len(s)] - w).max()) for i, (s, w) in enumerate(zip(TEXTS, want)))
    assert worst < 1e-5, worst
    (folder,) = (tmp_path / "cache" / "compat").iterdir()
    assert folder.name.endswith("-fp32-zero")


def test_vectors_layers_and_sentence_averages(tiny_package, sizes):
    model = ElmoModel()
    model.load(str(tiny_package), max_batch_size=2)
    everything = model.get_elmo_vectors(TEXTS, layers="all")
    average, top = model.get_elmo_vectors(TEXTS), model.get_elmo_vectors(TEXTS, layers="top")
    assert everything.shape == (5, sizes.layers, 6, sizes.dim) and average.shape == top.shape == (5, 6, sizes.dim)
    assert average.dtype == top.dtype == np.float64
    np.testing.assert_allclose(average, everything.mean(axis=1), atol=1e-6)
    np.testing.assert_array_equal(top, everything[:, -1])
    for i, sentence in enumerate(TEXTS):
        assert not everything[i, :, len(sentence) :].any()
    # The package's fixed state: a text's vectors do not depend on the others.
    runtime = RuntimeElmo(tiny_package, device="cpu").embed(TEXTS, layers="all")
    for i, want in enumerate(runtime):
        np.testing.assert_allclose(everything[i, :, : want.shape[1]], want, atol=1e-6)

    averages = model.get_elmo_vector_average(TEXTS, layers="top")
    assert averages.shape == (5, sizes.dim) and averages.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(averages, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(averages, simple_elmo_average(top), atol=1e-6)  # padding is zero in "top"
    mean_of_own = np.array([v[: len(s)].mean(axis=0) for v, s in zip(average, TEXTS)])
    np.testing.assert_allclose(
        model.get_elmo_vector_average(TEXTS),
        mean_of_own / np.linalg.norm(mean_of_own, axis=1, keepdims=True),
        atol=1e-6,
    )
    per_layer = model.get_elmo_vector_average(TEXTS, layers="all")
    assert per_layer.shape == (5, sizes.layers, sizes.dim)
    np.testing.assert_allclose(np.linalg.norm(per_layer.reshape(5, -1), axis=1), 1.0, atol=1e-12)


def test_readme_snippet_runs_with_only_the_import_changed(tiny_package, sizes, tmp_path, monkeypatch):
    PATH_TO_ELMO = "norelmo-210"
    SENTENCES = [["Dette", "er", "en", "setning", "."], ["Hei", "!"]]
    with official_models_as(tiny_package, tmp_path, monkeypatch, models=("norelmo-210",)):
        # simple_elmo README, "Usage", with only the import changed.
        # fmt: off
        from elmo_runtime.compat.simple_elmo import ElmoModel
        model = ElmoModel()
        model.load(PATH_TO_ELMO)
        elmo_vectors = model.get_elmo_vectors(SENTENCES)
        averaged_vectors = model.get_elmo_vector_average(SENTENCES)
        # fmt: on
    # "(number of sentences, the length of the longest sentence, ELMo dimensionality)"
    assert elmo_vectors.shape == (2, 5, sizes.dim) and averaged_vectors.shape == (2, sizes.dim)


def test_bad_input_is_named(tiny_package, tmp_path):
    model = ElmoModel()
    with pytest.raises(RuntimeError, match="no model is loaded"):
        model.get_elmo_vectors([["a"]])
    model.load(tiny_package)
    with pytest.raises(TypeError, match=r"sentence 0 is a str, not a list of tokens: pass s\.split\(\)"):
        model.get_elmo_vectors(["Det var en gang"])
    with pytest.raises(ValueError, match="layers is 'mean'; choose one of average, top, all"):
        model.get_elmo_vectors([["a"]], layers="mean")
    with pytest.raises(NotImplementedError, match="full=True"):
        ElmoModel().load(tiny_package, full=True)
    with pytest.raises(FileNotFoundError, match=f"no file or folder {tmp_path / '209.zip'}"):
        ElmoModel().load(str(tmp_path / "209.zip"))
