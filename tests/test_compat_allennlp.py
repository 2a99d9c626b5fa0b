"""`elmo_runtime.compat.allennlp` against AllenNLP's semantics.

AllenNLP itself cannot be installed here (0.9 pins torch < 1.13), so each behaviour is checked
against an independent reference: the TensorFlow fixtures (the original's own outputs, made
statefully), the PyTorch reference `elmo_export.model` for the LSTM with AllenNLP's state
bookkeeping written out in this file from `encoder_base.py`, AllenNLP's character mapper and
ScalarMix re-written here from their source, and the tutorial's snippets run with only the
import changed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from compat_catalog import official_models_as
from tf_fixtures import FIXTURE_SETS, load_fixture_set

from elmo_export.model import LstmState
from elmo_runtime import Elmo as RuntimeElmo
from elmo_runtime.compat import models
from elmo_runtime.compat.allennlp import DEFAULT_OPTIONS_FILE, DEFAULT_WEIGHT_FILE, Elmo, ElmoEmbedder, batch_to_ids

SMALL_URL = (
    "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/2x1024_128_2048cnn_1xhighway/"
    "elmo_2x1024_128_2048cnn_1xhighway_options.json"
)
PUBMED_URL = (
    "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/contributed/pubmed/"
    "elmo_2x4096_512_2048cnn_2xhighway_options.json"
)
ONLY_TOP = [-9e10, -9e10, 0.0]  # AllenNLP's documented way to pick one layer


def allennlp_char_ids(sentences: list[list[str]]) -> np.ndarray:
    """AllenNLP's ELMoCharacterMapper + padding, token by token (elmo_indexer.py)."""

    def word(token: str) -> list[int]:
        if token in ("<S>", "</S>"):
            ids = [260] * 50
            ids[:3] = [258, 256 if token == "<S>" else 257, 259]
        else:
            encoded = token.encode("utf-8", "ignore")[:48]
            ids = [260] * 50
            ids[0] = 258
            for k, byte in enumerate(encoded, start=1):
                ids[k] = byte
            ids[len(encoded) + 1] = 259
        return [i + 1 for i in ids]

    longest = max((len(s) for s in sentences), default=0)
    return np.array([[word(t) for t in s] + [[0] * 50] * (longest - len(s)) for s in sentences], dtype=np.int64)


class AllenNlpStatefulOracle:
    """The reference biLM with `_EncoderBase`'s stateful bookkeeping, written from its source.

    State is kept per row of the unsorted batch; a larger batch appends zero rows; a smaller one
    uses the first rows and leaves the others as they were; a row whose new state is all zero
    (unused) keeps its old one.
    """

    def __init__(self, model):
        self.model = model
        self.h = self.c = None

    def __call__(self, batch: list[list[str]]) -> np.ndarray:
        rows = len(batch)
        if self.h is not None and rows > self.h.shape[2]:
            pad = rows - self.h.shape[2]
            self.h = torch.cat([self.h, self.h.new_zeros(*self.h.shape[:2], pad, self.h.shape[3])], 2)
            self.c = torch.cat([self.c, self.c.new_zeros(*self.c.shape[:2], pad, self.c.shape[3])], 2)
        state = None if self.h is None else LstmState(self.h[:, :, :rows].clone(), self.c[:, :, :rows].clone())
        with torch.no_grad():
            out = self.model(torch.from_numpy(allennlp_char_ids(batch).astype(np.int32)), state)
        if self.h is None:
            self.h, self.c = out.state.h.clone(), out.state.c.clone()
        else:
            used = (out.state.h[0].sum(-1) != 0).any(0)  # (rows,)
            self.h[:, :, :rows][:, :, used] = out.state.h[:, :, used]
            self.c[:, :, :rows][:, :, used] = out.state.c[:, :, used]
        return out.layers.numpy()  # (L + 1, B, T, D)


def scalar_mix(layers: np.ndarray, s: list[float], gamma: float = 1.0) -> np.ndarray:
    w = np.exp(np.asarray(s, np.float64) - max(s))
    return gamma * np.tensordot(w / w.sum(), layers.astype(np.float64), axes=1)


# Batches of different sizes, lengths and an empty sentence: rows left out keep their state.
VARYING = [
    [["The", "cat", "sat", "on", "the", "mat", "."], ["A", "dog", "."], ["Hi"]],
    [["Then", "it", "rained", "."]],
    [["Stocks", "fell", "sharply", "today"], [], ["New", "row", "here", "."], ["And", "another"]],
    [["x" * 60, "é", "<S>"], ["Short"]],
    [["The", "cat", "sat", "on", "the", "mat", "."], ["A", "dog", "."], ["Hi"], ["Bye"], ["Last", "."]],
]


def test_batch_to_ids_equals_allennlp_char_ids():
    sentences = [["The", "señor", "😀", "x" * 60, "<S>", "</S>", ""], [], ["Naïve", "日本語" * 10]]
    got = batch_to_ids(sentences)
    assert got.dtype == np.int64 and got.shape == (3, 7, 50)
    np.testing.assert_array_equal(got, allennlp_char_ids(sentences))
    assert not got[1].any() and not got[2, 2:].any()


@pytest.mark.parametrize("name", FIXTURE_SETS)
def test_stateful_elmo_module_and_embedder_reproduce_tensorflow(name, exported):
    fixture = load_fixture_set(name)
    package = exported(name)
    module = Elmo(package, None, 1, scalar_mix_parameters=ONLY_TOP, stateful=True)
    embedder = ElmoEmbedder(package, None, stateful=True)
    worst, checked = 0.0, 0
    for i, batch in enumerate(fixture.batches):
        out = module(batch_to_ids(batch))
        vectors = embedder.embed_batch(batch)
        for row, sentence in enumerate(batch):
            if (i, row) in fixture.expected:
                want = fixture.expected[i, row]
                for got in (out["elmo_representations"][0][row, : len(sentence)], vectors[row][-1]):
                    worst = max(worst, float(np.abs(got - want).max()))
                checked += 1
    assert checked == (30 if name == "bilm-tf" else 10)
    assert worst < 1e-5, worst
    # The default (the package's warm state) is the documented difference: close, not equal.
    fresh = ElmoEmbedder(package, None).embed_batch(fixture.batches[5])[0][-1]
    assert np.abs(fresh - fixture.expected[5, 0]).max() > 1e-4


def test_stateful_rows_follow_allennlp_bookkeeping_over_batches_of_different_sizes(tiny_package, tiny_model):
    oracle = AllenNlpStatefulOracle(tiny_model)
    module = Elmo(tiny_package, None, 1, stateful=True)
    embedder = ElmoEmbedder(tiny_package, None, stateful=True)
    worst = 0.0
    for batch in VARYING:
        want = oracle(batch)  # (L + 1, B, T, D)
        mixed = module(batch_to_ids(batch))["elmo_representations"][0]
        activations, mask = embedder.batch_to_embeddings(batch)
        assert mixed.shape == want.shape[1:] and activations.shape == np.moveaxis(want, 0, 1).shape
        np.testing.assert_array_equal(mask, [[t < len(s) for t in range(want.shape[2])] for s in batch])
        worst = max(worst, np.abs(mixed - want.mean(axis=0)).max(), np.abs(activations - np.moveaxis(want, 0, 1)).max())
    assert worst < 1e-5, worst
    module.reset_states()
    embedder.reset_states()
    oracle = AllenNlpStatefulOracle(tiny_model)
    np.testing.assert_allclose(embedder.embed_batch(VARYING[1])[0], oracle(VARYING[1])[:, 0], atol=1e-5)


def test_the_default_state_is_fixed_and_batch_invariant(tiny_package):
    embedder = ElmoEmbedder(tiny_package, None)
    runtime = RuntimeElmo(tiny_package, device="cpu")
    sentence = VARYING[0][0]
    alone = embedder.embed_sentence(sentence)
    for batch in VARYING:
        for got, want in zip(embedder.embed_batch(batch), runtime.embed(batch, state="warm")):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(embedder.embed_batch(VARYING[-1])[0], alone)
    module = Elmo(tiny_package, None, 1)
    first = module(batch_to_ids(VARYING[0]))["elmo_representations"][0]
    again = module(batch_to_ids([["Other", "words", "first"], *VARYING[0]]))["elmo_representations"][0][1:]
    np.testing.assert_allclose(again[:, : first.shape[1]], first, atol=1e-6)
    np.testing.assert_allclose(first[0, :7], alone.mean(axis=0), atol=1e-6)


def test_shapes_dtypes_padding_and_empty_sentences(tiny_package, sizes):
    embedder = ElmoEmbedder(tiny_package, None)
    vectors = embedder.embed_batch([["One", "two"], [], ["Three"]])
    assert [v.shape for v in vectors] == [
        (sizes.layers, 2, sizes.dim),
        (sizes.layers, 0, sizes.dim),
        (sizes.layers, 1, sizes.dim),
    ]
    assert all(v.dtype == np.float32 for v in vectors)
    assert embedder.embed_batch([[]])[0].shape == (sizes.layers, 0, sizes.dim)
    streamed = list(embedder.embed_sentences(iter([["a"], ["b", "c"], ["d"]]), batch_size=2))
    assert [v.shape[1] for v in streamed] == [1, 2, 1]
    out = Elmo(tiny_package, None, 2)(batch_to_ids([["One", "two", "three"], ["Four"]]))
    first, second = out["elmo_representations"]
    assert first.shape == (2, 3, sizes.dim) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)  # equal until trained, as in AllenNLP
    assert out["mask"].dtype == np.bool_ and out["mask"].tolist() == [[True] * 3, [True, False, False]]
    assert not first[1, 1:].any()
    # More leading dimensions are folded and restored, as AllenNLP's forward does.
    ids = batch_to_ids([["One", "two", "three"], ["Four"]])
    folded = Elmo(tiny_package, None, 1)(np.stack([ids, ids]))
    assert folded["elmo_representations"][0].shape == (2, 2, 3, sizes.dim) and folded["mask"].shape == (2, 2, 3)


def test_scalar_mix_layer_norm_and_boundaries_as_allennlp_computes_them(tiny_package):
    batch = [["The", "cat", "sat", "."], ["Hi", "!"]]
    ids = batch_to_ids(batch)
    layers = np.stack(ElmoEmbedder(tiny_package, None).batch_to_embeddings(batch)[0], axis=1)  # (L+1, B, T, D)
    s = [1.0, -1.0, 0.5]
    got = Elmo(tiny_package, None, 1, scalar_mix_parameters=s)(ids)["elmo_representations"][0]
    np.testing.assert_allclose(got, scalar_mix(layers, s), atol=1e-6)

    # With boundaries: each layer alone through a one-hot mix, then AllenNLP's layer norm by hand.
    framed = [
        Elmo(
            tiny_package,
            None,
            1,
            keep_sentence_boundaries=True,
            scalar_mix_parameters=[0.0 if k == j else -9e10 for k in range(3)],
        )(ids)
        for j in range(3)
    ]
    mask = framed[0]["mask"]  # (B, T + 2)
    assert mask.sum(axis=1).tolist() == [6, 4]
    bounded = np.stack([f["elmo_representations"][0] for f in framed])  # (L+1, B, T+2, D)
    np.testing.assert_allclose(bounded[:, 0, 1:5], layers[:, 0], atol=1e-6)  # the tokens between <S> and </S>
    m = mask[None, :, :, None]
    n = mask.sum() * bounded.shape[-1]
    mean = (bounded * m).sum(axis=(1, 2, 3), keepdims=True) / n
    var = (((bounded * m - mean) * m) ** 2).sum(axis=(1, 2, 3), keepdims=True) / n
    normed = scalar_mix((bounded - mean) / np.sqrt(var + 1e-13), [0.0, 0.0, 0.0])
    out = Elmo(tiny_package, None, 1, do_layer_norm=True)(ids)
    np.testing.assert_allclose(out["elmo_representations"][0], normed[:, 1:-1] * out["mask"][..., None], atol=1e-5)


def test_options_that_need_training_or_torch_refuse_in_one_line(tiny_package):
    for kwargs, words in [({"requires_grad": True}, "requires_grad=True"), ({"module": object()}, "module=")]:
        with pytest.raises(NotImplementedError, match=words) as e:
            Elmo(tiny_package, None, 1, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="scalar_mix_parameters has 2 values; this model has 3 layers"):
        Elmo(tiny_package, None, 1, scalar_mix_parameters=[0.0, 1.0])


def test_a_str_where_tokens_are_expected_names_split(tiny_package):
    embedder = ElmoEmbedder(tiny_package, None)
    for call in (
        lambda: embedder.embed_sentence("Bitcoin alone has a market cap"),
        lambda: embedder.embed_batch(["Bitcoin alone", ["ok"]]),
        lambda: batch_to_ids(["Bitcoin alone"]),
        lambda: list(embedder.embed_sentences(["Bitcoin alone"])),
    ):
        with pytest.raises(TypeError, match=r"s\.split\(\)"):
            call()
    with pytest.raises(TypeError, match=r"\.split\(\)"):
        batch_to_ids("Bitcoin alone")
    with pytest.raises(TypeError, match="sentence 0, token 1 is int"):
        batch_to_ids([["a", 3]])


def test_allennlp_urls_resolve_to_the_catalogs_models_and_unknown_ones_are_named():
    assert models.model_for_url(DEFAULT_OPTIONS_FILE) == models.model_for_url(DEFAULT_WEIGHT_FILE) == "original"
    assert models.model_for_url(SMALL_URL) == "small"
    for url in (PUBMED_URL, "https://example.org/elmo_options.json"):
        with pytest.raises(ValueError, match="small .*medium .*original .*original-5.5b") as e:
            ElmoEmbedder(url, DEFAULT_WEIGHT_FILE)
        assert url in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="'small' model but weight_file is 'original'"):
        ElmoEmbedder(SMALL_URL, DEFAULT_WEIGHT_FILE)


def test_a_hub_package_works_wherever_a_file_pair_does(tiny_package, tmp_path, monkeypatch):
    from http_server import serving
    from hub_server import HubHandler, HubState

    from elmo_runtime.compat.elmoformanylangs import Embedder
    from elmo_runtime.compat.simple_elmo import ElmoModel

    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    with serving(HubHandler, HubState()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.commit("team/elmo-tiny", {f.name: f.read_bytes() for f in tiny_package.iterdir()})
        want = ElmoEmbedder(tiny_package, None).embed_sentence(["From", "the", "Hub"])
        np.testing.assert_array_equal(ElmoEmbedder("hf:team/elmo-tiny").embed_sentence(["From", "the", "Hub"]), want)
        out = Elmo("hf:team/elmo-tiny", None, 1)(batch_to_ids([["From", "the", "Hub"]]))
        np.testing.assert_allclose(out["elmo_representations"][0][0], want.mean(axis=0), atol=1e-6)
        assert Embedder("hf:team/elmo-tiny").sents2elmo([["From", "the", "Hub"]])[0].shape == want.shape[1:]
        model = ElmoModel()
        model.load("hf:team/elmo-tiny")
        assert model.get_elmo_vectors([["From", "the", "Hub"]]).shape == (1,) + want.shape[1:]


def test_default_is_the_shipped_package_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE

    (tmp_path / "default").mkdir()
    monkeypatch.chdir(tmp_path)
    assert ElmoEmbedder("default").elmo.manifest.directory == SHIPPED_PACKAGE


def test_a_missing_file_is_named(tmp_path):
    options = tmp_path / "options.json"
    with pytest.raises(FileNotFoundError, match=f"options file not found: {options}"):
        ElmoEmbedder(options, tmp_path / "weights.hdf5")
    options.write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"weight file not found: {tmp_path / 'weights.hdf5'}"):
        Elmo(options, tmp_path / "weights.hdf5", 1)
    with pytest.raises(FileNotFoundError, match="no file or folder ./nowhere"):
        ElmoEmbedder("./nowhere", None)


def test_tutorial_snippets_run_with_only_the_import_changed(tiny_package, sizes, tmp_path, monkeypatch):
    # allennlp tutorials/how_to/elmo.md (v0.9.0), both snippets as published but the import.
    with official_models_as(tiny_package, tmp_path, monkeypatch, models=("original",)) as server:
        # fmt: off
        from elmo_runtime.compat.allennlp import ElmoEmbedder
        elmo = ElmoEmbedder()
        tokens = ["I", "ate", "an", "apple", "for", "breakfast"]
        vectors = elmo.embed_sentence(tokens)
        assert(len(vectors) == 3) # one for each layer in the ELMo output
        assert(len(vectors[0]) == len(tokens)) # the vector elements correspond with the input tokens
        vectors2 = elmo.embed_sentence(["I", "ate", "a", "carrot", "for", "breakfast"])
        assert vectors.shape == (3, 6, sizes.dim) and vectors.dtype == np.float32
        apple, carrot = vectors[2][3], vectors2[2][3]  # the tutorial's scipy cosine, in numpy
        assert 0.0 < 1 - apple @ carrot / np.linalg.norm(apple) / np.linalg.norm(carrot)

        from elmo_runtime.compat.allennlp import Elmo, batch_to_ids
        options_file = "https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_options.json"  # noqa: E501
        weight_file = "https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5"  # noqa: E501
        elmo = Elmo(options_file, weight_file, 2, dropout=0)
        sentences = [['First', 'sentence', '.'], ['Another', '.']]
        character_ids = batch_to_ids(sentences)
        embeddings = elmo(character_ids)
        # fmt: on
        assert len(embeddings["elmo_representations"]) == 2
        assert all(r.shape == (2, 3, sizes.dim) for r in embeddings["elmo_representations"])
        assert len(server.seen("/original.zip")) == 1  # downloaded once, then cached


def test_local_files_are_exported_once_into_the_cache(tiny_weights, tmp_path, monkeypatch, sizes):
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "exporter_installed", lambda: False)
    with pytest.raises(
        RuntimeError,
        match=r"run once `elmo-export --options .*options.json --weights .*weights.hdf5 "
        r"--quantize fp32 -o PACKAGE`",
    ) as e:
        ElmoEmbedder(*tiny_weights)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    # Stateful callers only use the zero state: the package is exported with it (a faster export).
    vectors = ElmoEmbedder(*tiny_weights, stateful=True).embed_sentence(["Exported", "once"])
    (folder,) = (tmp_path / "cache" / "compat").iterdir()
    assert folder.name.startswith(models.sha256_of(tiny_weights[1])[:32]) and folder.name.endswith("-fp32-zero")
    mtime = (folder / "elmo.json").stat().st_mtime_ns
    again = Elmo(*tiny_weights, 1, scalar_mix_parameters=ONLY_TOP, stateful=True)(batch_to_ids([["Exported", "once"]]))
    assert [p.name for p in (tmp_path / "cache" / "compat").iterdir()] == [folder.name]
    assert (folder / "elmo.json").stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again["elmo_representations"][0][0], vectors[-1], atol=1e-6)
    assert vectors.shape == (sizes.layers, 2, sizes.dim)


def test_embed_file_writes_allennlps_layout(tiny_package, tmp_path, sizes):
    lines = ["The cat sat .", "Hi !", "The cat sat ."]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    embedder = ElmoEmbedder(tiny_package, None)
    expected = embedder.embed_batch([s.split() for s in lines])
    with open(source, encoding="utf-8") as f:
        embedder.embed_file(f, tmp_path / "all.hdf5", batch_size=2)
    embedder.embed_file(source, tmp_path / "top.hdf5", "top", forget_sentences=True)
    embedder.embed_file(str(source), tmp_path / "avg.hdf5", "average")
    with (
        h5py.File(tmp_path / "all.hdf5") as all_,
        h5py.File(tmp_path / "top.hdf5") as top,
        h5py.File(tmp_path / "avg.hdf5") as avg,
    ):
        assert sorted(all_) == ["0", "1", "2", "sentence_to_index"] and sorted(top) == ["0", "1", "2"]
        assert json.loads(all_["sentence_to_index"][0]) == {"The cat sat .": "2", "Hi !": "1"}
        for i, want in enumerate(expected):
            assert all_[str(i)].dtype == np.float32
            assert all_[str(i)].shape == (sizes.layers, len(lines[i].split()), sizes.dim)
            np.testing.assert_array_equal(all_[str(i)][...], want)
            np.testing.assert_array_equal(top[str(i)][...], want[-1])
            np.testing.assert_allclose(avg[str(i)][...], want.mean(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"in.txt:3: the sentence of line 1 again; with use_sentence_keys"):
        embedder.embed_file(source, tmp_path / "keys.hdf5", use_sentence_keys=True)
    source.write_text("The cat sat .\nHi !\n", encoding="utf-8")
    embedder.embed_file(source, tmp_path / "keys.hdf5", use_sentence_keys=True)
    with h5py.File(tmp_path / "keys.hdf5") as keyed:
        assert sorted(keyed) == ["Hi !", "The cat sat ."]
    source.write_text("one\n\ntwo\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"in.txt: empty lines at line 2, 4"):
        embedder.embed_file(source, tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()
    with pytest.raises(ValueError, match="output_format is 'mean'"):
        embedder.embed_file(source, tmp_path / "x.hdf5", "mean")


def test_compat_modules_import_nothing_heavy():
    code = (
        "import sys\n"
        "import elmo_runtime\n"
        "assert not [m for m in sys.modules if m.startswith('elmo_runtime.compat')]\n"
        "import elmo_runtime.compat.allennlp, elmo_runtime.compat.elmoformanylangs, "
        "elmo_runtime.compat.simple_elmo, elmo_runtime.compat.flair\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorflow', 'elmo_export', 'onnx', 'h5py', 'flair'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
