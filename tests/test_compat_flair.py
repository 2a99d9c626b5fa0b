"""Flair's own, unmodified `ELMoEmbeddings` running on `elmo_runtime.compat` instead of AllenNLP.

The tests marked `flair` need the real `flair` package from PyPI, which is too heavy for CI
(flair 0.15.1 with its dependencies: about 630 MB and 2.5 minutes to install, on top of torch);
they run with `--run-flair` in an environment that has it, e.g.

    python -m venv /work/venvs/flair && /work/venvs/flair/bin/pip install torch==2.13.0
    /work/venvs/flair/bin/pip install flair onnxruntime onnx onnx-ir h5py pytest
    PYTHONPATH=. /work/venvs/flair/bin/python -m pytest --run-flair tests/test_compat_flair.py

The alias rules (a real AllenNLP is never shadowed) need no Flair and run everywhere.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from compat_catalog import official_models_as


@pytest.fixture
def flair_models(tiny_package, tmp_path, monkeypatch):
    """Flair's model names resolved through a catalog that lists the tiny package as each official model."""
    import elmo_runtime.compat.flair  # noqa: F401 (registers allennlp.commands.elmo)

    with official_models_as(tiny_package, tmp_path, monkeypatch) as server:
        yield server


@pytest.mark.flair
def test_flairs_documented_snippet_runs_after_one_import(flair_models, sizes):
    # isort: off
    import elmo_runtime.compat.flair  # noqa: F401 (the one line added)
    from flair.data import Sentence  # Flair's snippet leaves this import out

    # resources/docs/embeddings/ELMO_EMBEDDINGS.md, as published:
    from flair.embeddings import ELMoEmbeddings
    # isort: on

    # fmt: off
    # init embedding
    embedding = ELMoEmbeddings()

    # create a sentence
    sentence = Sentence('The grass is green .')

    # embed words in sentence
    embedding.embed(sentence)
    # fmt: on

    assert embedding.embedding_length == 3 * sizes.dim and embedding.name == "elmo-original-all"
    assert all(tuple(token.embedding.shape) == (3 * sizes.dim,) for token in sentence)


@pytest.mark.flair
@pytest.mark.parametrize("model, mode", [("original", "all"), ("small", "top"), ("5.5B", "average")])
def test_each_mode_gives_allennlps_layers_per_token(flair_models, tiny_package, sizes, model, mode):
    from flair.data import Sentence
    from flair.embeddings import ELMoEmbeddings

    from elmo_runtime.compat.allennlp import ElmoEmbedder

    embedding = ELMoEmbeddings(model=model, embedding_mode=mode)
    assert embedding.name == f"elmo-{model}-{mode}" and str(embedding) == embedding.name
    assert embedding.embedding_length == (3 if mode == "all" else 1) * sizes.dim
    sentences = [Sentence("The grass is green ."), Sentence("Hi !")]
    embedding.embed(sentences)
    for sentence in sentences:
        layers = ElmoEmbedder(tiny_package, None).embed_sentence([t.text for t in sentence])  # (3, T, D)
        want = {"all": np.concatenate(list(layers), axis=-1), "top": layers[-1], "average": layers.mean(axis=0)}[mode]
        got = np.stack([token.get_embedding(embedding.name).numpy() for token in sentence])
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.flair
def test_flair_models_holding_the_embeddings_pickle_and_load(flair_models):
    from flair.data import Sentence
    from flair.embeddings import ELMoEmbeddings

    embedding = ELMoEmbeddings("original", embedding_mode="top")
    restored = pickle.loads(pickle.dumps(embedding))  # what saving a Flair model does; runs its __setstate__
    first, second = Sentence("The grass is green ."), Sentence("The grass is green .")
    embedding.embed(first)
    restored.embed(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.embedding.numpy(), b.embedding.numpy())


def test_the_alias_never_shadows_a_real_allennlp(tmp_path):
    real = tmp_path / "allennlp"
    real.mkdir()
    (real / "__init__.py").write_text("REAL = True\n")
    code = (
        "import sys, elmo_runtime.compat.flair as f\n"
        "assert f.install() is False and 'allennlp' not in sys.modules\n"
        "import allennlp\n"
        "assert allennlp.REAL\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    code = (
        "import sys, elmo_runtime.compat.flair as f, elmo_runtime.compat.allennlp as shim\n"
        "import allennlp.commands.elmo\n"
        "assert allennlp.commands.elmo is shim and f.install()\n"
        "assert allennlp.commands.elmo.DEFAULT_OPTIONS_FILE.endswith('_options.json')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
