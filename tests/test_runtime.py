"""The torch-free runtime (`elmo_runtime.Elmo`) against the reference and the TF fixtures.

Packages are exported once per session (conftest's `exported`) from the synthetic `tiny`
architecture and the two fixture models; tests that break a package work on a copy. Sizes come
from the tiny model's options (conftest's `sizes`).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tf_fixtures import FIXTURE_SETS, load_fixture_set

from elmo_export.model import LstmState
from elmo_runtime import Elmo, PackageError
from elmo_runtime import embedder as embedder_module
from elmo_runtime.batching import batch_cost, check_budget, plan_batches
from elmo_runtime.chars import batch_to_char_ids
from elmo_runtime.package import sha256_of

SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Hi", "!"],
    ["Call", "me", "Ishmael", "."],
    ["The", "naïve", "café", "owner", "served", "crème", "brûlée", "in", "Zürich", "."],
    ["x" * 60, "tokens", "longer", "than", "48", "bytes", "are", "cut"],
    [
        "It",
        "was",
        "the",
        "best",
        "of",
        "times",
        ",",
        "it",
        "was",
        "the",
        "worst",
        "of",
        "times",
        ",",
        "it",
        "was",
        "the",
        "age",
        "of",
        "wisdom",
        ",",
        "it",
        "was",
        "the",
        "age",
        "of",
        "foolishness",
        ".",
    ],
    ["One"],
]


@pytest.fixture(scope="session")
def tiny_zero_package(exported):
    """The `tiny` architecture exported with initial_state="zero"."""
    return exported("tiny", "fp32", "zero")


def reference_layers(model, sentences, elmo, state):
    """The reference's layers for `sentences` (one padded batch) from the package's `state`."""
    h, c = elmo.initial_state(len(sentences), state)
    with torch.no_grad():
        out = model(torch.from_numpy(batch_to_char_ids(sentences)), LstmState(torch.from_numpy(h), torch.from_numpy(c)))
    return [out.layers[:, b, : len(s)].numpy() for b, s in enumerate(sentences)]  # each (L + 1, T, 2P)


# -- the README's examples ---------------------------------------------------------------------


def test_embed_pretokenized_and_raw_text(elmo, sizes):
    vectors = elmo.embed([["The", "cat", "sat", "."], ["Hi", "!"]])
    assert [v.shape for v in vectors] == [(sizes.layers, 4, sizes.dim), (sizes.layers, 2, sizes.dim)]
    assert all(v.dtype == np.float32 for v in vectors)

    raw, tokens = elmo.embed(["The cat sat.", "Hi!"], return_tokens=True)
    assert tokens == [["The", "cat", "sat", "."], ["Hi", "!"]]
    for got, want in zip(raw, vectors):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_layer_choices(elmo):
    sentence = [["The", "cat", "sat", "on", "the", "mat", "."]]
    (all_layers,) = elmo.embed(sentence)  # (L + 1, 7, dim)
    np.testing.assert_array_equal(elmo.embed(sentence, layers="top")[0], all_layers[-1])
    np.testing.assert_array_equal(elmo.embed(sentence, layers=0)[0], all_layers[0])
    np.testing.assert_array_equal(elmo.embed(sentence, layers=-2)[0], all_layers[1])
    np.testing.assert_allclose(elmo.embed(sentence, layers="average")[0], all_layers.mean(0), atol=1e-6)
    # A weighted mix uses the weights as given: no softmax, no gamma.
    weights = [0.5, -1.0, 2.0]
    np.testing.assert_allclose(
        elmo.embed(sentence, layers=weights)[0], sum(w * layer for w, layer in zip(weights, all_layers)), atol=1e-6
    )


def test_mean_pooling_gives_one_vector_per_sentence(elmo, sizes):
    sentences = [["The", "cat", "sat", "."], ["Hi", "!"], []]
    full = elmo.embed(sentences)
    pooled = elmo.embed(sentences, pool="mean")
    top = elmo.embed(sentences, layers="top", pool="mean")
    assert [p.shape for p in pooled] == [(sizes.layers, sizes.dim)] * 3 and [t.shape for t in top] == [(sizes.dim,)] * 3
    for f, p, t in zip(full[:2], pooled, top):
        np.testing.assert_allclose(p, f.mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(t, f[-1].mean(axis=0), atol=1e-6)
    assert (pooled[2] == 0).all() and (top[2] == 0).all()  # no tokens: zeros


def test_empty_sentences_and_empty_input(elmo, sizes):
    assert elmo.embed([]) == []
    assert elmo.embed([], return_tokens=True) == ([], [])
    vectors, tokens = elmo.embed([[], "", "   ", ["Hi"]], return_tokens=True)
    assert [v.shape for v in vectors] == [(sizes.layers, 0, sizes.dim)] * 3 + [(sizes.layers, 1, sizes.dim)]
    assert tokens == [[], [], [], ["Hi"]]
    assert elmo.embed([[]], layers="top")[0].shape == (0, sizes.dim)
    assert list(elmo.embed_iter([])) == []


def test_properties_and_repr(elmo, sizes):
    assert (elmo.dim, elmo.num_layers, elmo.default_state, elmo.batch_tokens) == (sizes.dim, sizes.layers, "warm", 512)
    assert elmo.providers[0] == "CPUExecutionProvider"
    assert "tiny" in repr(elmo) and "fp32" in repr(elmo)


# -- parity with the reference and with TensorFlow ------------------------------------------------


@pytest.mark.parametrize("state", ["warm", "zero"])
def test_runtime_matches_the_reference(elmo, tiny_model, state):
    want = reference_layers(tiny_model, SENTENCES, elmo, state)
    got = elmo.embed(SENTENCES, state=state, batch_tokens=64)  # sorted into several batches
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    assert np.abs(got[0] - elmo.embed(SENTENCES[:1], state="zero" if state == "warm" else "warm")[0]).max() > 1e-3


def test_the_default_state_is_the_package_warm_state(elmo, tiny_zero_package):
    np.testing.assert_array_equal(elmo.embed(SENTENCES[:2])[0], elmo.embed(SENTENCES[:2], state="warm")[0])
    zero = Elmo(tiny_zero_package, device="cpu")
    assert zero.default_state == "zero"
    np.testing.assert_allclose(zero.embed(SENTENCES[:2])[0], elmo.embed(SENTENCES[:2], state="zero")[0], atol=1e-6)
    with pytest.raises(ValueError, match="exported without a warm state; use state='zero'"):
        zero.embed(SENTENCES[:1], state="warm")


@pytest.mark.parametrize("name", FIXTURE_SETS)
def test_stream_reproduces_tensorflow_with_state_carried(exported, name):
    fixture = load_fixture_set(name)
    stream = Elmo(exported(name), device="cpu").stream(state="zero")  # the fixtures start from zeros
    checked = 0
    for i, batch in enumerate(fixture.batches):
        top = stream.embed(batch, layers="top")  # rows stay rows: not sorted, not split
        for row in range(len(batch)):
            if (i, row) in fixture.expected:
                np.testing.assert_allclose(top[row], fixture.expected[i, row], atol=1e-6, rtol=1e-5)
                checked += 1
    assert checked == (30 if name == "bilm-tf" else 10)


def test_stream_state_is_explicit(elmo, sizes):
    stream = elmo.stream()
    assert stream.state is None
    batch = [["one", "two", "three"], ["four"]]
    first = stream.embed(batch)
    h, c = stream.state
    assert h.shape == (sizes.n_layers, 2, 2, sizes.projection_dim) and c.shape == (sizes.n_layers, 2, 2, sizes.cells)
    for got, want in zip(first, elmo.embed(batch)):  # the first call starts from the warm state
        np.testing.assert_allclose(got, want, atol=1e-5)
    second = stream.embed(batch)
    assert np.abs(second[0][1:] - first[0][1:]).max() > 1e-3  # the state carried
    # A smaller batch carries row 0 and leaves row 1's state alone.
    stream.embed([["five"]])
    np.testing.assert_array_equal(stream.state[0][:, :, 1], _state_after(elmo, [batch, batch])[0][:, :, 1])
    stream.reset()
    assert stream.state is None
    for got, want in zip(stream.embed(batch), first):
        np.testing.assert_array_equal(got, want)


def _state_after(elmo, batches):
    stream = elmo.stream()
    for batch in batches:
        stream.embed(batch)
    return stream.state


def test_stream_rows_new_to_a_larger_batch_start_fresh(elmo):
    stream = elmo.stream(state="zero")
    stream.embed([["a", "b"]])
    got = stream.embed([["a", "b"], ["c", "d"]])
    np.testing.assert_allclose(got[1], elmo.embed([["c", "d"]], state="zero")[0], atol=1e-5)
    assert stream.embed([]) == []


def test_embed_with_state_is_the_stream_without_the_bookkeeping(elmo, sizes):
    batch = [["one", "two", "three"], ["four"]]
    h, c = elmo.initial_state(2)  # the warm state, as a stream starts
    stream = elmo.stream()
    for _ in range(2):  # the second call starts from the state the first one left
        vectors, h, c = elmo.embed_with_state(batch, h, c, layers="top")
        for got, want in zip(vectors, stream.embed(batch, layers="top")):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(h, stream.state[0])
        np.testing.assert_array_equal(c, stream.state[1])
    assert vectors[0].shape == (3, sizes.dim) and vectors[1].shape == (1, sizes.dim)
    zero_h, zero_c = elmo.initial_state(1, "zero")
    assert not zero_h.any() and not zero_c.any() and zero_c.shape == (sizes.n_layers, 2, 1, sizes.cells)
    pooled, _, _ = elmo.embed_with_state([["four"]], zero_h, zero_c, pool="mean")
    np.testing.assert_allclose(pooled[0], elmo.embed([["four"]], state="zero", pool="mean")[0], atol=1e-5)
    with pytest.raises(ValueError, match="for 2 sentences this package needs"):
        elmo.embed_with_state(batch, zero_h, zero_c)


# -- every precision ------------------------------------------------------------------------------

PRECISIONS = ["fp32", "fp16", "int8", "int4"]


def _cosines(got, want):
    """Cosine of each token vector `(..., dim)` with its reference."""
    return (got * want).sum(-1) / np.maximum(np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1), 1e-12)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_meets_its_bar_through_elmo(exported, tiny_model, precision):
    """`Elmo` (sorting, batching, the token cache) on each package, against the reference, by
    the bar the package met at export (`parity.tolerance_for`)."""
    from elmo_export.parity import tolerance_for

    elmo = Elmo(exported("tiny", precision), device="cpu")
    bar = tolerance_for(precision, tiny_model.options)
    for state in ("warm", "zero"):
        got = elmo.embed(SENTENCES, state=state, batch_tokens=64)  # sorted into several batches
        want = reference_layers(tiny_model, SENTENCES, elmo, state)
        cos = np.concatenate([_cosines(g, w).ravel() for g, w in zip(got, want)])
        if bar.max_abs is not None:
            assert max(np.abs(g - w).max() for g, w in zip(got, want)) <= bar.max_abs
        if bar.min_cosine is not None:
            assert cos.min() >= bar.min_cosine
        if bar.mean_cosine is not None:
            assert cos.mean() >= bar.mean_cosine


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_streams_and_batches_like_fp32(exported, precision):
    elmo = Elmo(exported("tiny", precision), device="cpu")
    # A stream's first call starts from the same state as `embed`: the same vectors.
    batch = SENTENCES[:3]
    for got, want in zip(elmo.stream().embed(batch), elmo.embed(batch)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Batch-mates: none for fp32, fp16 and int4 (weights only); int8 quantizes a step's
    # activations with one scale for the whole batch, so its vectors move by quantization
    # noise (the README's claim: cosine 0.9995 on the default model).
    rng = np.random.default_rng(1)
    words = [w for s in SENTENCES for w in s]
    crowd = [[words[i] for i in rng.integers(0, len(words), rng.integers(1, 40))] for _ in range(60)]
    crowd[37] = SENTENCES[3]
    alone = elmo.embed([SENTENCES[3]])[0]
    together = elmo.embed(crowd, batch_tokens=4096)[37]
    if precision == "int8":
        assert _cosines(together, alone).min() >= 0.999
    else:
        np.testing.assert_allclose(together, alone, atol=1e-5 if precision != "fp16" else 2e-3)


# -- batching -------------------------------------------------------------------------------------


def test_batches_respect_the_budget_and_keep_the_order():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(0, 50, 500)) + [300]
    batches = plan_batches(lengths, batch_tokens=256, batch_size=20)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == [i for i, n in enumerate(lengths) if n > 0]
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 20
        assert batch_cost(len(batch), longest) <= 256 or len(batch) == 1  # a long one goes alone
    assert any(len(b) == 1 and lengths[b[0]] == 300 for b in batches)
    with pytest.raises(ValueError, match="batch_tokens is 0"):
        check_budget(0, None)


def test_batch_composition_does_not_change_the_vectors(elmo):
    rng = np.random.default_rng(1)
    words = [w for s in SENTENCES for w in s]
    crowd = [[words[i] for i in rng.integers(0, len(words), rng.integers(0, 40))] for _ in range(300)]
    crowd[137] = SENTENCES[3]
    alone = elmo.embed([SENTENCES[3]])[0]
    together = elmo.embed(crowd, batch_tokens=4096)
    np.testing.assert_allclose(together[137], alone, atol=1e-5)
    small_batches = elmo.embed(crowd, batch_tokens=50, batch_size=3)
    for a, b in zip(together, small_batches):
        np.testing.assert_allclose(a, b, atol=1e-5)


def record_batches(monkeypatch, elmo) -> list[tuple[int, int]]:
    """Make `elmo` record the (rows, tokens) of every batch it runs."""
    shapes = []
    real = elmo.runner.bilm

    def recording(embeddings, mask, h, c, *edges):
        shapes.append(mask.shape)
        return real(embeddings, mask, h, c, *edges)

    monkeypatch.setattr(elmo.runner, "bilm", recording)
    return shapes


def test_a_long_sentence_runs_alone_in_time_chunks_within_the_budget(elmo, monkeypatch, sizes):
    shapes = record_batches(monkeypatch, elmo)
    long = ["word", "after", "word", "."] * 1250  # 5,000 tokens
    vectors = elmo.embed([["Hi"], long, ["Bye", "."]], layers="top", batch_tokens=1000)
    assert [v.shape for v in vectors] == [(1, sizes.dim), (5000, sizes.dim), (2, sizes.dim)]
    # Two rows a call (chunk k forward, chunk K-1-k backward) of 498 tokens, then the short pair.
    assert shapes == [(2, 498)] * 11 + [(2, 2)]


def test_many_short_sentences_are_streamed_within_the_budget(tiny_package, monkeypatch, sizes):
    # The model itself is stubbed (zeros of the right shapes, ~1000x faster than the tiny model on
    # 100,000 sentences): this checks what the runtime holds and sends, not the vectors. An
    # instance of its own, so that the stub's zeros never reach a shared token cache.
    elmo = Elmo(tiny_package, device="cpu", token_cache=0)
    shapes = []

    def token_embeddings(inputs):
        char_ids = inputs["char_ids"]
        return np.zeros((*char_ids.shape[:2], sizes.projection_dim), np.float32), (char_ids > 0).any(-1).astype(
            np.int32
        )

    def bilm(embeddings, mask, h, c, edges=None):
        shapes.append(mask.shape)
        return np.zeros((sizes.layers, *mask.shape, sizes.dim), np.float32), h, c

    monkeypatch.setattr(elmo.runner, "token_embeddings", token_embeddings)
    monkeypatch.setattr(elmo.runner, "bilm", bilm)
    read = 0

    def sentences():
        nonlocal read
        for i in range(100_000):
            read += 1
            yield ["Hi"] if i % 2 else ["Hello", "there", "!"]

    vectors = elmo.embed_iter(sentences(), batch_tokens=2048)
    first = next(vectors)
    assert read <= embedder_module.CHUNK_BATCHES * 2048  # one chunk read, not the whole input
    assert first.shape == (sizes.layers, 3, sizes.dim) and next(vectors).shape == (sizes.layers, 1, sizes.dim)
    assert 2 + sum(1 for _ in vectors) == 100_000
    assert max(rows * (tokens + 2) for rows, tokens in shapes) <= 2048
    assert len(elmo.embed([["Hi"]] * 100_000, layers="top", batch_tokens=2048)) == 100_000


def test_embed_iter_matches_embed(elmo):
    sentences = SENTENCES * 20
    got = list(elmo.embed_iter(iter(sentences), batch_tokens=64, return_tokens=True))
    want = elmo.embed(sentences)
    assert len(got) == len(want)
    for (vectors, tokens), w, s in zip(got, want, sentences):
        assert tokens == s
        np.testing.assert_allclose(vectors, w, atol=1e-5)


def test_threads_share_one_elmo_safely(tiny_package):
    rng = np.random.default_rng(2)
    words = [w for s in SENTENCES for w in s] + [f"new{i}" for i in range(200)]
    jobs = [
        [[words[i] for i in rng.integers(0, len(words), rng.integers(1, 30))] for _ in range(20)] for _ in range(16)
    ]
    # Threads first, on an empty token cache: they miss and fill it concurrently.
    elmo = Elmo(tiny_package, device="cpu")
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: elmo.embed(job, batch_tokens=128), jobs))
    assert elmo.token_cache.misses > 0
    serial_elmo = Elmo(tiny_package, device="cpu", token_cache=0)
    serial = [serial_elmo.embed(job, batch_tokens=128) for job in jobs]
    for s_job, p_job in zip(serial, parallel):
        for s, p in zip(s_job, p_job):
            np.testing.assert_allclose(p, s, atol=1e-6)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentences, error, message",
    [
        ("The cat sat.", TypeError, r"sentences is a single str; pass a list of sentences"),
        (None, TypeError, r"sentences is NoneType"),
        ([["The", "cat"], None], TypeError, r"sentence 1 is NoneType None"),
        ([["The", 5]], TypeError, r"sentence 0, token 1 is int 5; tokens must be str"),
        ([["ok"], ["fine", None]], TypeError, r"sentence 1, token 1 is NoneType"),
        ([[["The", "cat"]]], TypeError, r"sentence 0, token 0 is a list, not a str: sentences nest one level too deep"),
        ([b"bytes"], TypeError, r"sentence 0 is bytes; decode it to str first"),
        ([{"a": 1}], TypeError, r"sentence 0 is dict"),
    ],
)
def test_malformed_input_names_the_sentence(elmo, sentences, error, message):
    with pytest.raises(error, match=message):
        elmo.embed(sentences)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": "middle"}, r"layers is 'middle'; choose 'all', 'top', 'average', a layer index in -3..2"),
        ({"layers": 3}, r"layers is 3; this package has 3 layers"),
        ({"layers": True}, r"layers is bool True"),
        ({"layers": [1.0, 2.0]}, r"expected 3 finite weights"),
        ({"layers": ["a", "b", "c"]}, r"the weights must be numbers"),
        ({"pool": "max"}, r"pool is 'max'; choose None or 'mean'"),
        ({"state": "carried"}, r"state is 'carried'; choose one of warm, zero, or None"),
        ({"batch_tokens": 0}, r"batch_tokens is 0; expected a positive integer"),
        ({"batch_size": -1}, r"batch_size is -1; expected a positive integer or None"),
    ],
)
def test_bad_settings_are_refused_before_any_work(elmo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        elmo.embed([["Hi"]], **kwargs)
    with pytest.raises(ValueError, match=message):
        elmo.embed_iter(iter([["Hi"]]), **kwargs)  # checked when called, not when iterated


def test_long_tokens_are_cut_like_the_reference(elmo, tiny_model):
    long = "é" * 30  # 60 UTF-8 bytes: cut to 48, i.e. 24 characters
    got = elmo.embed([["A", long, "x" * 100]], state="zero")[0]
    cut = elmo.embed([["A", "é" * 24, "x" * 48]], state="zero")[0]
    np.testing.assert_array_equal(got, cut)
    np.testing.assert_allclose(got, reference_layers(tiny_model, [["A", long, "x" * 100]], elmo, "zero")[0], atol=1e-5)


def test_control_characters(elmo, tiny_model):
    # In raw text they separate tokens, like whitespace; in given tokens they are bytes like any other.
    _, tokens = elmo.embed(["tab\tand\x00null\x1bescape"], return_tokens=True)
    assert tokens == [["tab", "and", "null", "escape"]]
    odd = [["a\x00b", "\x07", "c\x1bd", "\ud800lone"]]
    got = elmo.embed(odd, state="zero")[0]
    np.testing.assert_allclose(got, reference_layers(tiny_model, odd, elmo, "zero")[0], atol=1e-5)


# -- packages -------------------------------------------------------------------------------------


@pytest.fixture
def package_copy(tiny_package, tmp_path):
    return Path(shutil.copytree(tiny_package, tmp_path / "copy"))


def edit_manifest(package, change):
    path = package / "elmo.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="model package not found"):
        Elmo(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no elmo.json"):
        Elmo(tmp_path)


def test_package_missing_a_file(package_copy):
    (package_copy / "bilm.onnx").unlink()
    with pytest.raises(PackageError, match="file 'bilm.onnx' listed in the manifest is missing"):
        Elmo(package_copy)


def test_corrupt_manifest(package_copy):
    (package_copy / "elmo.json").write_text('{"format_version": 1, "files": ')
    with pytest.raises(PackageError, match="elmo.json: not a valid JSON manifest"):
        Elmo(package_copy)


def test_manifest_missing_a_field(package_copy):
    edit_manifest(package_copy, lambda d: d["architecture"]["lstm"].pop("projection_dim"))
    with pytest.raises(PackageError, match="missing field 'architecture.lstm.projection_dim'"):
        Elmo(package_copy)


def test_newer_format_version(package_copy):
    edit_manifest(package_copy, lambda d: d.update(format_version=99))
    with pytest.raises(PackageError, match="format version 99 is newer than this runtime reads"):
        Elmo(package_copy)


def test_truncated_graph(package_copy):
    path = package_copy / "token_embedder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PackageError, match="'token_embedder.onnx' has 1000 bytes, the manifest says"):
        Elmo(package_copy)


def test_garbled_graph(package_copy):
    path = package_copy / "bilm.onnx"
    path.write_bytes(b"\x00garbage" * (path.stat().st_size // 8) + b"\x00" * (path.stat().st_size % 8))
    with pytest.raises(PackageError, match="'bilm.onnx' does not match its sha256"):
        Elmo(package_copy)
    # Garbled and the manifest made to match: still a clear PackageError naming the file.
    edit_manifest(package_copy, lambda d: d["files"]["bilm.onnx"].update(sha256=sha256_of(path)))
    with pytest.raises(PackageError, match="bilm.onnx.*(is not a valid ONNX file|ONNX Runtime cannot load this graph)"):
        Elmo(package_copy)


def rewrite_graph(package, name, change):
    """Change one graph of a package, and record its new files in the manifest (so that only
    the change, not a size or digest, can be what the runtime objects to)."""
    import hashlib

    import onnx

    path = package / name
    model = onnx.load(str(path))
    change(model.graph)
    (package / f"{name}.data").unlink()
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{name}.data",
        size_threshold=1024,
    )
    files = {
        f: {"sha256": hashlib.sha256((package / f).read_bytes()).hexdigest(), "bytes": (package / f).stat().st_size}
        for f in (name, f"{name}.data")
    }
    edit_manifest(package, lambda d: d["files"].update(files))


def test_outputs_are_taken_by_name_not_position(package_copy, elmo):
    def reverse_outputs(graph):
        outputs = list(graph.output)[::-1]  # final_c, final_h, layers
        del graph.output[:]
        graph.output.extend(outputs)

    rewrite_graph(package_copy, "bilm.onnx", reverse_outputs)
    for got, want in zip(Elmo(package_copy, device="cpu").embed(SENTENCES), elmo.embed(SENTENCES)):
        np.testing.assert_array_equal(got, want)


def test_a_graph_output_the_contract_does_not_name_is_refused(package_copy):
    def rename_final_c(graph):
        node = next(n for n in graph.node if "final_c" in n.output)
        node.output[list(node.output).index("final_c")] = "cell_state"
        next(o for o in graph.output if o.name == "final_c").name = "cell_state"

    rewrite_graph(package_copy, "bilm.onnx", rename_final_c)
    with pytest.raises(
        PackageError,
        match=r"bilm.onnx: the graph does not match the package contract:\n  "
        r"outputs are \['layers', 'final_h', 'cell_state'\], the contract says "
        r"\['layers', 'final_h', 'final_c'\]",
    ):
        Elmo(package_copy)


def test_a_graph_output_of_another_type_is_refused(package_copy):
    from onnx import TensorProto

    def mask_as_int64(graph):
        cast = next(n for n in graph.node if "mask" in n.output)
        next(a for a in cast.attribute if a.name == "to").i = TensorProto.INT64
        next(o for o in graph.output if o.name == "mask").type.tensor_type.elem_type = TensorProto.INT64

    rewrite_graph(package_copy, "token_embedder.onnx", mask_as_int64)
    with pytest.raises(
        PackageError, match=r"token_embedder.onnx: [\s\S]*output 'mask' is int64, the contract says int32"
    ):
        Elmo(package_copy)


def test_the_contract_check_names_names_types_and_ranks():
    from types import SimpleNamespace

    from elmo_runtime import contract as C
    from elmo_runtime.runner import check_session

    spec = C.graph_specs(n_layers=2, projection_dim=16, dim=64)["token_embedder"]

    def session(inputs, outputs):
        args = lambda specs: [SimpleNamespace(name=n, type=t, shape=s) for n, t, s in specs]  # noqa: E731
        return SimpleNamespace(get_inputs=lambda: args(inputs), get_outputs=lambda: args(outputs))

    good_in = [("char_ids", "tensor(int32)", ["batch", "tokens", 50])]
    good_out = [
        ("token_embeddings", "tensor(float)", ["batch", "tokens", 16]),
        ("mask", "tensor(int32)", ["batch", "tokens"]),
    ]
    check_session(session(good_in, good_out), spec, Path("te.onnx"))  # no error
    with pytest.raises(PackageError) as info:
        check_session(session([("char_ids", "tensor(int64)", ["batch", 50])], good_out[::-1]), spec, Path("te.onnx"))
    message = str(info.value)
    assert "input 'char_ids' is int64, the contract says int32" in message
    assert "input 'char_ids' has rank 2" in message and "the contract says 3" in message
    assert "outputs" not in message  # the same names in another order are fine: outputs go by name


def test_a_manifest_whose_graphs_differ_from_the_contract_is_refused(package_copy):
    edit_manifest(package_copy, lambda d: d["graphs"]["bilm"]["outputs"].pop("final_c"))
    with pytest.raises(PackageError, match="graphs.bilm.outputs is .* the contract says"):
        Elmo(package_copy)


def test_the_manifest_reads_back_as_written(tiny_package):
    from elmo_runtime.package import Manifest, load_manifest

    data = json.loads((tiny_package / "elmo.json").read_text())
    manifest = load_manifest(tiny_package)
    assert manifest.to_json() == data
    assert Manifest.from_json(data, "elmo.json").to_json() == data
    assert (manifest.precision, manifest.initial_state_mode) == ("fp32", "warm")


# -- devices and threads --------------------------------------------------------------------------


def cuda_usable() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
        return session.get_providers()[0] == "CUDAExecutionProvider"
    except Exception:
        return False


CUDA_USABLE = cuda_usable()
needs_cuda = pytest.mark.skipif(
    not CUDA_USABLE,
    reason=f"needs onnxruntime-gpu with a usable CUDA device (onnxruntime offers {ort.get_available_providers()})",
)


def test_unknown_device(tiny_package):
    with pytest.raises(ValueError, match="device is 'gpu'; choose one of auto, cpu, cuda"):
        Elmo(tiny_package, device="gpu")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_cuda_without_onnxruntime_gpu_is_a_clear_error(tiny_package):
    with pytest.raises(
        RuntimeError,
        match=r"device='cuda' but onnxruntime offers no CUDAExecutionProvider "
        r"\(available: .*CPUExecutionProvider.*\); install the GPU build",
    ):
        Elmo(tiny_package, device="cuda")


def test_auto_says_which_device_runs(tiny_package, caplog):
    with caplog.at_level(logging.INFO, logger="elmo_runtime"):
        elmo = Elmo(tiny_package, device="auto")
    assert any(f"on {elmo.providers[0]} (device='auto')" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(CUDA_USABLE, reason="CUDA works here")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_a_cuda_provider_that_does_not_start(tiny_package, monkeypatch, caplog):
    # onnxruntime-gpu installed without a usable GPU: ONNX Runtime quietly runs on the CPU.
    available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])
    with caplog.at_level(logging.WARNING, logger="elmo_runtime"):
        elmo = Elmo(tiny_package, device="auto")
    assert elmo.providers[0] == "CPUExecutionProvider"
    assert any("CUDA was requested (device='auto') but the CPU runs" in r.getMessage() for r in caplog.records)
    with pytest.raises(
        RuntimeError, match="device='cuda': onnxruntime offers CUDAExecutionProvider but it did not start"
    ):
        Elmo(tiny_package, device="cuda")


def test_onnxruntime_and_onnxruntime_gpu_side_by_side_is_flagged(monkeypatch, caplog):
    from elmo_runtime import runner

    monkeypatch.setattr(runner.metadata, "version", lambda name: "1.31.0")
    runner._warn_if_two_onnxruntimes.cache_clear()
    with caplog.at_level(logging.WARNING, logger="elmo_runtime"):
        runner.providers_for("auto")
    runner._warn_if_two_onnxruntimes.cache_clear()
    assert any(
        "both onnxruntime 1.31.0 and onnxruntime-gpu 1.31.0 are installed" in r.getMessage() for r in caplog.records
    )


def test_thread_count(tiny_package, elmo):
    single = Elmo(tiny_package, device="cpu", threads=1)
    np.testing.assert_allclose(single.embed(SENTENCES)[5], elmo.embed(SENTENCES)[5], atol=1e-6)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="threads is"):
            Elmo(tiny_package, threads=bad)


@pytest.mark.cuda
@needs_cuda
def test_cuda_matches_the_cpu(tiny_package, elmo):
    gpu = Elmo(tiny_package, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    for got, want in zip(gpu.embed(SENTENCES), elmo.embed(SENTENCES)):
        np.testing.assert_allclose(got, want, atol=1e-4)


# -- the torch-free promise -----------------------------------------------------------------------


def test_the_runtime_never_imports_torch(tiny_package, sizes):
    code = (
        "import sys\n"
        "from elmo_runtime import Elmo\n"
        "import elmo_runtime.cli\n"
        f"v = Elmo({str(tiny_package)!r}).embed(['Torch-free, at last.'])\n"
        f"assert v[0].shape == {(sizes.layers, 5, sizes.dim)}, v[0].shape\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'elmo_export', 'onnx'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_distinct_token_goes_through_the_char_cnn_once(tiny_package, monkeypatch):
    elmo = Elmo(tiny_package, device="cpu")
    seen = []
    real = elmo.runner.token_embeddings

    def recording(inputs):
        seen.append(inputs["char_ids"].shape[1])
        return real(inputs)

    monkeypatch.setattr(elmo.runner, "token_embeddings", recording)
    first = elmo.embed([["the", "cat", "and", "the", "dog"], ["the", "end"]])
    again = elmo.embed([["the", "dog", "and", "the", "cat"]])
    assert seen == [5]  # the, cat, and, dog, end; nothing new in the second call
    # Counted per distinct token of a batch: 5 new ones, then 4 found again.
    assert elmo.token_cache.misses == 5 and elmo.token_cache.hits == 4
    uncached = Elmo(tiny_package, device="cpu", token_cache=0)
    np.testing.assert_array_equal(uncached.embed([["the", "cat", "and", "the", "dog"]])[0], first[0])
    # Layer 0 is the token embedding: the cached vectors themselves, reused as they are.
    np.testing.assert_array_equal(again[0][0], first[0][0][[0, 4, 2, 3, 1]])


def test_the_token_cache_is_bounded(tiny_package, sizes):
    elmo = Elmo(tiny_package, device="cpu", token_cache=3)
    elmo.embed([["a", "b", "c", "d", "e"]])
    assert len(elmo.token_cache) == 3
    # Entries own their memory: a view would keep its whole batch's output alive.
    assert all(v.base is None and v.shape == (sizes.projection_dim,) for _, v in elmo.token_cache.items())
    with pytest.raises(ValueError, match="token cache size is -1"):
        Elmo(tiny_package, device="cpu", token_cache=-1)
