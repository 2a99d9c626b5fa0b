"""`elmo_runtime.compat.elmoformanylangs.Embedder` against ELMoForManyLangs itself.

The oracle is the released `elmoformanylangs` package (a test extra), run unmodified on a
synthetic model in its exact on-disk layout; each comparison gives a fresh original
`Embedder` one batch (its zero state, no batch shuffle), which is what the shim gives always.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from compat_catalog import official_models_as

from elmo_export.synthetic import write_synthetic_manylangs
from elmo_runtime.compat.elmoformanylangs import Embedder

elmoformanylangs = pytest.importorskip("elmoformanylangs", reason="the oracle is installed by the test extra")
logging.getLogger("elmoformanylangs").setLevel(logging.ERROR)

SENTENCES = [["the", "señor", "Жж", "unknown", "x" * 60, "中文", "été", "."], ["été", ".", "the"], [], ["Qq"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_synthetic_manylangs("tiny", tmp_path_factory.mktemp("hit") / "xx.model", seed=3)


@pytest.fixture(scope="module")
def shim_and_cache(model_dir, tmp_path_factory):
    """`Embedder(model_dir)` with a cache of its own: the folder is exported once, in a child process."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ELMO_ONNX_CACHE", str(cache))
        yield Embedder(str(model_dir)), cache


@pytest.fixture(scope="module")
def package(shim_and_cache):
    (folder,) = (shim_and_cache[1] / "compat").iterdir()
    return folder


def test_a_model_folder_is_exported_once_and_matches_the_original_for_every_output_layer(model_dir, shim_and_cache):
    ours, cache = shim_and_cache
    original = elmoformanylangs.Embedder(str(model_dir), batch_size=64)
    worst = 0.0
    for layer in (-1, -2, 0, 1, 2):
        # The original fails on an empty sentence with -1 (numpy's average of no rows); ours gives (0, D).
        sentences = [s for s in SENTENCES if s or layer != -1]
        want = original.sents2elmo(sentences, output_layer=layer)
        got = ours.sents2elmo(sentences, output_layer=layer)
        original = elmoformanylangs.Embedder(str(model_dir), batch_size=64)  # fresh: its zero state again
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and g.shape == w.shape
            worst = max(worst, float(np.abs(g - w).max(initial=0.0)))
    assert worst < 1e-5, worst
    assert ours.sents2elmo([[]])[0].shape == (0, got[0].shape[-1])
    (folder,) = (cache / "compat").iterdir()
    assert folder.name.endswith("-fp32-zero")  # the state the shim uses, the faster export
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ELMO_ONNX_CACHE", str(cache))
        assert Embedder(str(model_dir), batch_size=1).elmo.manifest.directory == folder  # not exported again


def test_readme_snippet_runs_with_only_the_import_changed(package, sizes):
    # ELMoForManyLangs README, "Use ELMoForManyLangs programmatically".
    # fmt: off
    from elmo_runtime.compat.elmoformanylangs import Embedder

    e = Embedder(str(package))

    sents = [['今', '天', '天氣', '真', '好', '阿'],
    ['潮水', '退', '了', '就', '知道', '誰', '沒', '穿', '褲子']]
    # the list of lists which store the sentences
    # after segment if necessary.

    vectors = e.sents2elmo(sents)
    # will return a list of numpy arrays
    # each with the shape=(seq_len, embedding_size)
    # fmt: on
    assert [v.shape for v in vectors] == [(6, sizes.dim), (9, sizes.dim)]
    assert all(v.dtype == np.float32 for v in vectors)


def test_a_manylangs_name_resolves_to_the_catalogs_package(package, model_dir, tmp_path, monkeypatch):
    with official_models_as(package, tmp_path, monkeypatch, models=("manylangs-xx",)):
        got = Embedder("manylangs-xx", batch_size=2).sents2elmo(SENTENCES, output_layer=-2)
    want = elmoformanylangs.Embedder(str(model_dir)).sents2elmo(SENTENCES, output_layer=-2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


def test_bad_input_is_named(package, tmp_path):
    e = Embedder(package)
    with pytest.raises(TypeError, match=r"sentence 1 is a str, not a list of tokens: pass s\.split\(\)"):
        e.sents2elmo([["ok"], "今天 天氣"])
    with pytest.raises(ValueError, match=r"output_layer is 3; choose -1 .*-2 .*0\.\.2"):
        e.sents2elmo([["ok"]], output_layer=3)
    with pytest.raises(FileNotFoundError, match=f"no file or folder {tmp_path / 'zhs.model'}"):
        Embedder(str(tmp_path / "zhs.model"))
