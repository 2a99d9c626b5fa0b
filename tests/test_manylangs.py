"""ELMoForManyLangs models: loaded, exported and run, proven against ELMoForManyLangs itself.

The oracle is the released `elmoformanylangs` package (PyPI 0.0.4.post2, a test extra), run
unmodified on synthetic models written in its exact on-disk layout. ELMoForManyLangs is
stateful and shuffles the order of its batches; to compare like with like, every comparison
starts from a fresh `Embedder` (its zero state) and gives it at most `batch_size` sentences
(one batch, so no shuffle), and the carried-state comparison sends two such batches in a fixed
order, their sentences sorted longest first with distinct lengths (as `create_one_batch`
sorts them), against our `stream(state="zero")` in the same row order.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo_export import export
from elmo_export.architectures import MANYLANGS_ARCHITECTURES
from elmo_export.cli import main as export_main
from elmo_export.sources import archives
from elmo_export.sources.archives import fetch_archive, load_archives
from elmo_export.sources.manylangs import load_manylangs, read_dictionary
from elmo_export.synthetic import write_synthetic_manylangs
from elmo_export.weights import WeightFileError
from elmo_runtime import Elmo
from elmo_runtime import contract as C
from elmo_runtime.package import sha256_of

try:
    import elmoformanylangs
except ImportError:  # only the tests that run the oracle need it; the loader's own tests run without it
    elmoformanylangs = None
# A skip, and a failure in CI (tests/conftest.py): the test extra installs the oracle.
needs_oracle = pytest.mark.skipif(
    elmoformanylangs is None, reason="the ELMoForManyLangs oracle (elmoformanylangs) is in the test extra"
)
logging.getLogger("elmoformanylangs").setLevel(logging.ERROR)

# Tokens that exercise the scheme: unknown characters and words, a token over 48 code points,
# a non-BMP character, a token holding a space (ELMoForManyLangs stores the space as U+3000,
# so a real space is unknown), the literal boundary tokens, Cyrillic, CJK and an empty token.
SENTENCES = [
    ["the", "señor", "Жж", "unknown", "x" * 60, "中文", "a b", "😀🙂", "été", ".", ",", "Qq"],
    ["été", ".", "the", "tT", "y" * 49, "中"],
    ["<bos>", "<eos>", "T", "Ж"],
    ["ñ", "s", ""],
    ["."],
]


def oracle_embed(model_dir: Path, sentences: list[list[str]]) -> list[np.ndarray]:
    """A fresh ELMoForManyLangs Embedder on one batch: all three layers per sentence."""
    embedder = elmoformanylangs.Embedder(str(model_dir), batch_size=64)
    return embedder.sents2elmo(sentences, output_layer=-2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_synthetic_manylangs("tiny", tmp_path_factory.mktemp("hit") / "xx.model", seed=3)


@pytest.fixture(scope="module")
def tiny_fp32(tiny_dir, tmp_path_factory) -> Path:
    return export(tiny_dir, tmp_path_factory.mktemp("pkg") / "fp32", progress=False)


@needs_oracle
def test_dictionaries_are_read_as_elmoformanylangs_reads_them(tiny_dir):
    embedder = elmoformanylangs.Embedder(str(tiny_dir))
    chars, words = read_dictionary(tiny_dir / "char.dic"), read_dictionary(tiny_dir / "word.dic")
    assert chars == embedder.char_lexicon and words == embedder.word_lexicon
    assert "\u3000" in chars and " " not in chars  # the stripped space line


@needs_oracle
@pytest.mark.parametrize("legacy_format", [True, False], ids=["legacy-torch-format", "zip-torch-format"])
def test_reference_matches_the_oracle_from_a_fresh_state(tmp_path, legacy_format):
    model_dir = write_synthetic_manylangs("tiny", tmp_path / "xx.model", seed=5, legacy_format=legacy_format)
    assert zipfile.is_zipfile(model_dir / "encoder.pkl") is not legacy_format
    # The legacy files are tagged as PyTorch 0.4 on a GPU wrote them: CUDA storages on cuda:3.
    assert (b"cuda:3" in (model_dir / "encoder.pkl").read_bytes()) is legacy_format
    model, source = load_manylangs(model_dir)
    want = oracle_embed(model_dir, SENTENCES)
    with torch.no_grad():
        got = model.run_tokens(SENTENCES).layers.numpy()  # (3, B, T, 2P), zero state
    for i, sentence in enumerate(SENTENCES):
        assert want[i].shape == (3, len(sentence), 32)
        np.testing.assert_allclose(got[:, i, : len(sentence)], want[i], rtol=0, atol=1e-5)
    assert source["format"] == "elmoformanylangs" and not source["architecture_assumed"]


@needs_oracle
def test_reference_matches_the_oracle_with_state_carried_between_two_batches(tiny_dir):
    # Longest first with distinct lengths: create_one_batch's sort leaves the rows in this order.
    first = [["the", "señor", "Жж", ".", "中文"], ["été", "x" * 55, "."], ["T"]]
    second = [["a", "b", "c", "d", "e", "f"], ["Жж", "中"], ["."]]
    embedder = elmoformanylangs.Embedder(str(tiny_dir), batch_size=64)
    want = [embedder.sents2elmo(first, output_layer=-2), embedder.sents2elmo(second, output_layer=-2)]
    model, _ = load_manylangs(tiny_dir)
    with torch.no_grad():
        out1 = model.run_tokens(first)
        out2 = model.run_tokens(second, out1.state)
    for batch, out, expected in [(first, out1, want[0]), (second, out2, want[1])]:
        for i, sentence in enumerate(batch):
            np.testing.assert_allclose(out.layers[:, i, : len(sentence)].numpy(), expected[i], rtol=0, atol=1e-5)
    # And the state matters: the second batch from a zero state differs.
    with torch.no_grad():
        fresh = model.run_tokens(second).layers[:, 0, :6].numpy()
    assert np.abs(fresh - want[1][0]).max() > 1e-3


def test_package_carries_both_dictionaries_and_describes_the_scheme(tiny_fp32, tiny_dir):
    manifest = json.loads((tiny_fp32 / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["chars"]["scheme"] == "dictionary" and manifest["format_version"] == C.FORMAT_VERSION
    chars = manifest["chars"]["dictionary"]
    words = chars["words"]
    assert chars["file"] == "chars.json" and words["file"] == "words.json"
    lexicon = read_dictionary(tiny_dir / "char.dic")
    # The word is framed by the <eow> id first and the <bow> id last, as ELMoForManyLangs does.
    assert (chars["begin_of_word"], chars["end_of_word"]) == (lexicon["<eow>"], lexicon["<bow>"])
    assert json.loads((tiny_fp32 / "chars.json").read_text(encoding="utf-8")) == lexicon
    assert json.loads((tiny_fp32 / "words.json").read_text(encoding="utf-8")) == read_dictionary(tiny_dir / "word.dic")
    assert words["unknown"] == 0 and manifest["input"]["tokenization"] == "pretokenized"
    assert set(manifest["graphs"]["token_embedder"]["inputs"]) == {"char_ids", "word_ids"}
    assert {"chars.json", "words.json"} <= set(manifest["files"])


@needs_oracle
@pytest.mark.parametrize("precision", ["none", "int8"])
def test_exported_package_matches_the_oracle(tiny_dir, tiny_fp32, tmp_path, precision):
    package = (
        tiny_fp32
        if precision == "none"
        else export(tiny_dir, tmp_path / precision, precision=precision, progress=False)
    )
    want = oracle_embed(tiny_dir, SENTENCES)
    got = Elmo(package, device="cpu").embed(SENTENCES, state="zero")
    if precision == "none":
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    else:
        import onnx

        graph = onnx.load(str(package / "token_embedder.onnx"))
        table = next(t for t in graph.graph.initializer if "word_embedding" in t.name)
        assert table.data_type == onnx.TensorProto.FLOAT  # a Gather input: int8 leaves it float
        real = [(g.reshape(-1, g.shape[-1]), w.reshape(-1, w.shape[-1])) for g, w in zip(got, want)]
        cos = np.concatenate(
            [(g * w).sum(-1) / np.linalg.norm(g, axis=-1) / np.linalg.norm(w, axis=-1) for g, w in real]
        )
        assert cos.mean() >= 0.99, cos.mean()
        # The batch-invariant quantizer (per-row activation scales): alone or in a batch, bit for bit.
        elmo = Elmo(package, device="cpu", token_cache=0)
        for sentence, in_batch in zip(SENTENCES, got):
            np.testing.assert_array_equal(elmo.embed([sentence], state="zero")[0], in_batch)


@pytest.mark.parametrize("precision", ["fp16", "int4"])
def test_every_precision_passes_the_parity_gate_and_keeps_a_float_word_table(tiny_dir, tmp_path, precision):
    import onnx

    package = export(tiny_dir, tmp_path / precision, precision=precision, initial_state="zero", progress=False)
    manifest = json.loads((package / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"] and manifest["precision"]["name"] == precision
    graph = onnx.load(str(package / "token_embedder.onnx"))
    table = next(t for t in graph.graph.initializer if "word_embedding" in t.name)
    assert onnx.numpy_helper.to_array(table).dtype == (np.float16 if precision == "fp16" else np.float32)


@needs_oracle
def test_exported_package_carries_state_like_the_oracle(tiny_dir, tiny_fp32):
    first = [["the", "señor", "Жж", ".", "中文"], ["été", "x" * 55, "."], ["T"]]
    second = [["a", "b", "c", "d", "e", "f"], ["Жж", "中"], ["."]]
    embedder = elmoformanylangs.Embedder(str(tiny_dir), batch_size=64)
    want = embedder.sents2elmo(first, output_layer=-2), embedder.sents2elmo(second, output_layer=-2)
    stream = Elmo(tiny_fp32, device="cpu").stream(state="zero")
    for batch, expected in zip((first, second), want):
        for g, w in zip(stream.embed(batch), expected):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


def test_raw_text_needs_a_chosen_tokenizer(tiny_fp32):
    elmo = Elmo(tiny_fp32, device="cpu")
    with pytest.raises(ValueError, match="expects pre-tokenized input"):
        elmo.embed(["the señor ."])
    split = Elmo(tiny_fp32, device="cpu", tokenizer="whitespace").embed(["the señor ."], state="zero")[0]
    np.testing.assert_array_equal(split, elmo.embed([["the", "señor", "."]], state="zero")[0])


def test_tables_and_corpus_jobs_take_tokens_or_a_chosen_split(tiny_fp32, tmp_path):
    pa = pytest.importorskip("pyarrow")
    from elmo_runtime.corpus.table import TableEmbedder, to_numpy

    embed = TableEmbedder(tiny_fp32, layers="top", state="zero", device="cpu")
    with pytest.raises(ValueError, match="expects pre-tokenized input"):
        embed(pa.table({"id": [1], "text": ["the señor ."]}))
    tokens = to_numpy(embed(pa.table({"id": [1], "text": [["the", "señor", "."]]}))["vectors"])[0]
    split = TableEmbedder(tiny_fp32, layers="top", state="zero", device="cpu", tokenized=True)
    np.testing.assert_array_equal(to_numpy(split(pa.table({"id": [1], "text": ["the señor ."]}))["vectors"])[0], tokens)

    pytest.importorskip("ray")
    from elmo_runtime.corpus.job import embed_to_parquet

    (tmp_path / "in.txt").write_text("the señor .\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expects pre-tokenized input"):  # in the driver, before any worker
        embed_to_parquet(tiny_fp32, tmp_path / "in.txt", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@needs_oracle
def test_a_sentence_over_the_budget_runs_in_time_chunks_and_matches_the_oracle(tiny_dir, tiny_fp32):
    tokens = [t for sentence in SENTENCES for t in sentence] * 3  # 75 tokens
    want = oracle_embed(tiny_dir, [tokens])[0]
    elmo = Elmo(tiny_fp32, device="cpu")
    assert C.SENTENCE_EDGES in elmo.manifest.graphs["bilm"].to_dict()["inputs"]  # a plain input (format 3)
    edges = []
    bilm = elmo.runner.bilm
    elmo.runner.bilm = lambda *args: (edges.append(args[4] if len(args) > 4 else None), bilm(*args))[1]
    for budget in (7, 40):  # chunks of 1 and of 18 tokens, the state carried between them
        got = elmo.embed([tokens], state="zero", batch_tokens=budget)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert len(edges) > 4 and all(e is not None for e in edges)


def test_a_stop_event_leaves_nothing_behind(tiny_dir, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(KeyboardInterrupt):
        export(tiny_dir, tmp_path / "out", initial_state="zero", progress=False, stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_the_dictionaries_are_verified_and_confined_like_the_graphs(tiny_fp32, tmp_path):
    from elmo_runtime.package import PackageError

    manifest = json.loads((tiny_fp32 / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"]
    altered = shutil.copytree(tiny_fp32, tmp_path / "altered")
    words = json.loads((altered / "words.json").read_text(encoding="utf-8"))
    (altered / "words.json").write_text(json.dumps({**words, "the": words["."], ".": words["the"]}), encoding="utf-8")
    entry = manifest["files"]["words.json"]
    entry["bytes"] = (altered / "words.json").stat().st_size  # the size fits: only the sha256 tells
    (altered / "elmo.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(PackageError, match=r"'words\.json' does not match its sha256"):
        Elmo(altered, device="cpu")

    outside = shutil.copytree(tiny_fp32, tmp_path / "outside")
    manifest = json.loads((outside / "elmo.json").read_text(encoding="utf-8"))
    (tmp_path / "chars.json").write_text((outside / "chars.json").read_text(encoding="utf-8"), encoding="utf-8")
    manifest["chars"]["dictionary"]["file"] = "../chars.json"
    (outside / "elmo.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(PackageError, match=r"chars\.dictionary\.file '\.\./chars\.json' is not a plain file name"):
        Elmo(outside, device="cpu")

    unlisted = shutil.copytree(tiny_fp32, tmp_path / "unlisted")
    manifest = json.loads((unlisted / "elmo.json").read_text(encoding="utf-8"))
    (unlisted / "other.json").write_text((unlisted / "words.json").read_text(encoding="utf-8"), encoding="utf-8")
    manifest["chars"]["dictionary"]["words"]["file"] = "other.json"
    (unlisted / "elmo.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(PackageError, match=r"words\.file 'other\.json' is not listed in 'files'"):
        Elmo(unlisted, device="cpu")


def test_the_conformance_vectors_list_word_ids_and_the_runtime_reproduces_them(tiny_fp32, tmp_path):
    from elmo_runtime.conformance import verify_package

    document = json.loads((tiny_fp32 / "conformance.json").read_text(encoding="utf-8"))
    sentences = [s for s in document["sentences"] if s["tokens"]]
    assert all(len(s["word_ids"]) == len(s["tokens"]) == len(s["char_ids"]) for s in sentences)
    report = verify_package(tiny_fp32)
    assert report.passed, report.failures
    wrong = shutil.copytree(tiny_fp32, tmp_path / "wrong")
    sentences[1]["word_ids"][0] += 1
    (wrong / "conformance.json").write_text(json.dumps(document), encoding="utf-8")
    manifest = json.loads((wrong / "elmo.json").read_text(encoding="utf-8"))  # sealed again: only the ids differ
    manifest["files"]["conformance.json"] = {
        "sha256": sha256_of(wrong / "conformance.json"),
        "bytes": (wrong / "conformance.json").stat().st_size,
    }
    (wrong / "elmo.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert "word ids differ from the file's at token 0" in "\n".join(verify_package(wrong).failures)


def test_the_model_card_says_how_to_feed_a_pretokenized_model(tiny_fp32):
    from elmo_export.publish import SourceLicense, model_card

    manifest = json.loads((tiny_fp32 / "elmo.json").read_text(encoding="utf-8"))
    card = model_card(manifest, "someone/elmo-xx", SourceLicense("other-terms"))
    assert 'elmo.embed([["The", "cat", "sat", "."]])' in card and "--tokenized" in card
    assert "elmoformanylangs: config.json, char.dic" in card and "reproduces ELMoForManyLangs" in card


def test_cli_exports_a_directory_and_a_zip(tiny_dir, tmp_path, capsys):
    assert export_main([str(tiny_dir), "-o", str(tmp_path / "dir"), "--no-progress", "-q"]) == 0
    archive = tmp_path / "144.zip"
    with zipfile.ZipFile(archive, "w") as z:  # NLPL's ZIPs hold the files at the root
        for f in tiny_dir.iterdir():
            z.write(f, f.name)
    assert export_main([str(archive), "-o", str(tmp_path / "zip"), "--no-progress", "-q"]) == 0
    manifest = json.loads((tmp_path / "zip" / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["source"]["archive"]["file"] == "144.zip"
    a = Elmo(tmp_path / "dir", device="cpu").embed([["the", "."]])[0]
    b = Elmo(tmp_path / "zip", device="cpu").embed([["the", "."]])[0]
    np.testing.assert_array_equal(a, b)


# -- bad input ------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_architecture_uses_the_released_one_if_the_weights_fit(tiny_dir, tmp_path, caplog):
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "cnn_tiny.json").unlink()
    with pytest.raises(WeightFileError) as e:
        load_manylangs(d)
    message = str(e.value)
    assert "released architecture" in message and "assumed" in message
    assert "token_embedder.pkl" in message and "expected (32, 50, 1)" in message  # mismatches are listed
    assert "released architecture" in caplog.text


def test_missing_dictionary_is_named(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "word.dic").unlink()
    with pytest.raises(FileNotFoundError, match=r"word\.dic is missing"):
        load_manylangs(d)


def test_a_crafted_pickle_is_refused_and_never_run(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path / "m")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (d / "encoder.pkl").write_bytes(pickle.dumps({"forward_layer_0.input_linearity.weight": Exploit()}))
    with pytest.raises(WeightFileError, match=r"encoder\.pkl: refused"):
        load_manylangs(d)
    assert not marker.exists()


def test_unexpected_and_misshaped_tensors_are_all_listed(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path / "m")
    state = torch.load(d / "token_embedder.pkl", map_location="cpu", weights_only=True)
    state["projection.weight"] = state["projection.weight"][:, :-1]
    state["extra.weight"] = torch.zeros(2)
    del state["convolutions.1.bias"]
    torch.save(state, d / "token_embedder.pkl")
    with pytest.raises(WeightFileError) as e:
        load_manylangs(d)
    message = str(e.value)
    assert "token_embedder.pkl does not match" in message
    assert "'projection.weight' has shape (16, 131), expected (16, 132)" in message
    assert "unexpected tensor 'extra.weight'" in message
    assert "'convolutions.1.bias' is missing (expected shape (8,))" in message


def test_the_lstm_encoder_variant_is_refused_naming_the_file(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path / "m")
    arch = json.loads((d / "cnn_tiny.json").read_text())
    arch["encoder"]["name"] = "lstm"
    (d / "cnn_tiny.json").write_text(json.dumps(arch))
    with pytest.raises(ValueError, match=r"cnn_tiny\.json: encoder\.name is 'lstm'"):
        load_manylangs(d)
    arch["encoder"]["name"] = "elmo"
    (d / "cnn_tiny.json").write_text(json.dumps(arch))
    torch.save({"encoder.weight_ih_l0": torch.zeros(64, 8)}, d / "encoder.pkl")
    with pytest.raises(WeightFileError, match=r"encoder\.pkl: this is the 'lstm' encoder variant"):
        load_manylangs(d)


def test_a_bad_dictionary_line_is_named(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path / "m")
    with open(d / "char.dic", "a", encoding="utf-8") as f:
        f.write("a\tb\tc\n")
    with pytest.raises(ValueError, match=r"char\.dic:\d+: expected 'token<TAB>id'"):
        load_manylangs(d)


def test_an_absurd_architecture_fails_before_the_weights_are_read(tiny_dir, tmp_path, monkeypatch, capsys):
    from elmo_export.sources import manylangs

    d = _copy(tiny_dir, tmp_path / "m")
    arch = json.loads((d / "cnn_tiny.json").read_text())
    arch["encoder"]["dim"] = 10_000_000  # a typo: tens of GB if it were allocated
    (d / "cnn_tiny.json").write_text(json.dumps(arch))

    def never(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(manylangs, "load_state_dict", never)
    with pytest.raises(ValueError, match=r"cnn_tiny\.json: dim is 10000000, above the sane limit"):
        load_manylangs(d)
    assert export_main([str(d), "-o", str(tmp_path / "out"), "--no-progress", "-q"]) == 2
    assert "above the sane limit" in capsys.readouterr().err and not (tmp_path / "out").exists()


@needs_oracle
@pytest.mark.full_size
def test_released_size_model_matches_the_oracle(tmp_path):
    """2 x 4096 cells, projection 512, 7 filter widths up to 1024, 2 highway layers.

    Prints its figures (run with -s): max abs difference against ELMoForManyLangs, int8's and
    int4's mean cosine to it, and the time of each step.
    """
    import time

    def diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
        return max(float(np.abs(g - w).max()) for g, w in zip(got, want))

    t = time.perf_counter()
    model_dir = write_synthetic_manylangs("released", tmp_path / "xx.model", seed=7, architecture_file=False)
    figures = {"write_s": time.perf_counter() - t}
    t = time.perf_counter()
    want = oracle_embed(model_dir, SENTENCES)  # the released architecture, from the package's configs
    figures["oracle_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model, source = load_manylangs(model_dir)  # the released architecture, assumed with a note
    assert source["architecture_assumed"]
    assert model.options.to_dict()["lstm"]["dim"] == MANYLANGS_ARCHITECTURES["released"]["encoder"]["dim"]
    with torch.no_grad():
        got = model.run_tokens(SENTENCES).layers.numpy()
    figures["reference_s"] = time.perf_counter() - t
    reference = [got[:, i, : len(sentence)] for i, sentence in enumerate(SENTENCES)]
    figures["reference_max_abs"] = diff(reference, want)
    for r, w in zip(reference, want):
        np.testing.assert_allclose(r, w, rtol=0, atol=1e-4)
    del model
    for precision in ("none", "int8", "int4"):
        t = time.perf_counter()
        package = export(model_dir, tmp_path / precision, precision=precision, progress=False)
        figures[f"export_{precision}_s"] = time.perf_counter() - t
        embedded = Elmo(package, device="cpu").embed(SENTENCES, state="zero")
        # A long sentence in time chunks (`sentence_edges`) too.
        long = [token for sentence in SENTENCES for token in sentence]
        chunked = Elmo(package, device="cpu").embed([long], state="zero", batch_tokens=24)[0]
        whole = oracle_embed(model_dir, [long])[0]
        if precision == "none":
            figures["fp32_max_abs"] = diff(embedded, want)
            figures["fp32_time_chunks_max_abs"] = diff([chunked], [whole])
            for g, w in zip(embedded + [chunked], want + [whole]):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)
        else:
            cos = np.concatenate(
                [
                    ((g * w).sum(-1) / np.linalg.norm(g, axis=-1) / np.linalg.norm(w, axis=-1)).ravel()
                    for g, w in zip(embedded, want)
                ]
            )
            figures[f"{precision}_mean_cosine"], figures[f"{precision}_min_cosine"] = (
                float(cos.mean()),
                float(cos.min()),
            )
            assert cos.mean() >= {"int8": 0.99, "int4": 0.98}[precision], cos.mean()  # the parity gate's bars
    print("\nreleased-size figures:", json.dumps({k: round(v, 7) for k, v in figures.items()}))


# -- by name --------------------------------------------------------------------------------------


def test_catalog_names_every_released_language_and_norelmo():
    models = load_archives()
    hit = [a for a in models.values() if a.family == "elmoformanylangs"]
    assert len(hit) == 44 and sorted(a.nlpl_id for a in hit) == list(range(136, 180))
    assert all(a.url == f"http://vectors.nlpl.eu/repository/11/{a.nlpl_id}.zip" for a in hit)
    assert models["manylangs-fi"].language == "Finnish" and models["manylangs-zh"].tokenization.startswith(
        "word-segmented"
    )
    assert sorted(a.nlpl_id for a in models.values() if a.family == "bilm-tf") == [210, 211, 217, 218]
    assert "lemma" in models["norelmo-210"].tokenization
    assert all(a.sha256 is None for a in models.values())  # none computed here: nothing downloaded


def test_a_model_by_name_is_downloaded_once_then_exported(tiny_dir, tmp_path, monkeypatch):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "www"
    served.mkdir()
    with zipfile.ZipFile(served / "144.zip", "w") as z:
        for f in tiny_dir.iterdir():
            z.write(f, f.name)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        entry = json.loads(Path(archives.archives_path()).read_text(encoding="utf-8"))
        test_entry = dict(entry["models"]["manylangs-en"], url=f"http://127.0.0.1:{httpd.server_port}/144.zip")
        catalog = tmp_path / "archives.json"
        catalog.write_text(
            json.dumps({"schema_version": 1, "models": {"manylangs-test": test_entry}}), encoding="utf-8"
        )
        monkeypatch.setattr(archives, "archives_path", lambda: catalog)
        monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
        path = fetch_archive("manylangs-test", progress=False)
        assert path == tmp_path / "cache" / "models" / "manylangs-test" / "model.zip"
    finally:
        httpd.shutdown()
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")  # the server is gone: the cache serves the name
    out = tmp_path / "pkg"
    assert export_main(["manylangs-test", "-o", str(out), "--initial-state", "zero", "--no-progress", "-q"]) == 0
    manifest = json.loads((out / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["source"]["archive"]["sha256"] == sha256_of(path)
