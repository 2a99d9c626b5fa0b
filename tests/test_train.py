"""Training a biLM, writing it in the official layout, and the shipped default model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo_export.architectures import ARCHITECTURES
from elmo_export.sentences import read_sentences
from elmo_export.weights import load_reference
from elmo_runtime.chars import batch_to_char_ids
from elmo_train.corpus import build_vocab, write_vocab
from elmo_train.train import (
    BACKWARD,
    FORWARD,
    TrainSettings,
    encode,
    evaluate,
    load_language_model,
    train,
    unigram_perplexity,
)

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "default-wordnet"

_SUBJECTS = ["the cat", "a dog", "the bird", "my neighbour", "a small child"]
_VERBS = ["sees", "likes", "chases", "hears"]
_OBJECTS = ["the ball .", "a red box .", "the old tree .", "some water ."]


def _tiny_corpus(folder: Path) -> Path:
    sentences = [f"{s} {v} {o}".split() for s in _SUBJECTS for v in _VERBS for o in _OBJECTS]
    folder.mkdir()
    for name, rows in (("train", sentences), ("heldout", sentences[::7])):
        (folder / f"{name}.txt").write_text("".join(" ".join(s) + "\n" for s in rows), encoding="utf-8")
    write_vocab(build_vocab(sentences, min_count=1), folder / "vocab.txt")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    settings = TrainSettings(
        steps=100,
        batch_size=4,
        unroll_steps=8,
        learning_rate=2e-2,
        warmup_steps=1,
        dropout=0.0,
        cutoffs=(),
        eval_every=0,
        log_every=10,
        heldout_sample=5,
    )
    torch.set_num_threads(1)
    result = train(_tiny_corpus(root / "corpus"), root / "out", ARCHITECTURES["train-tiny"], settings)
    return result, root / "out"


def test_training_lowers_the_loss(trained):
    (_, record), _ = trained
    history = record["loss_history"]
    assert len(history) == 10
    for direction in ("loss_forward", "loss_backward"):
        assert history[-1][direction] < history[0][direction] - 0.5, history


def test_training_writes_the_official_files(trained):
    _, out = trained
    for name in ("options.json", "weights.hdf5", "vocab.txt", "softmax.hdf5", "training.json", "heldout_sample.txt"):
        assert (out / name).is_file(), name
    options = json.loads((out / "options.json").read_text())
    assert options["lstm"]["use_skip_connections"] is True
    assert options["char_cnn"]["filters"] == ARCHITECTURES["train-tiny"]["char_cnn"]["filters"]


def test_written_weights_reproduce_the_trained_language_models(trained):
    """The reference loaded from the files gives the training module's own LM outputs."""
    (model, _), out = trained
    reference = load_reference(out / "options.json", out / "weights.hdf5")
    sentence = "a small child hears the old tree .".split()
    n, p = len(sentence), reference.options.projection_dim
    with torch.no_grad():
        layers = reference(torch.from_numpy(batch_to_char_ids([sentence]))).layers  # (L+1, 1, n, 2P)
        table = encode([sentence], {"<S>": 0, "</S>": 1, "<UNK>": 2})
        ids = torch.from_numpy(table.sentences[0])
        streams = {
            FORWARD: torch.cat([torch.tensor([0]), ids, torch.tensor([1])]),
            BACKWARD: torch.cat([torch.tensor([1]), ids.flip(0), torch.tensor([0])]),
        }
        embedded = model.embed_types(table.char_ids, table.n_bytes)
        state = model.bilm.zero_state(1)
        for direction, tokens in streams.items():
            top, _, _ = model.run_lm(
                direction, embedded[tokens][None], state.h[:, direction], state.c[:, direction]
            )  # (1, n+2, P)
            words = top[0, 1 : n + 1] if direction == FORWARD else top[0, 1 : n + 1].flip(0)
            expected = layers[-1, 0, :, direction * p : (direction + 1) * p]
            np.testing.assert_allclose(words.numpy(), expected.numpy(), atol=1e-5)


def test_evaluate_scores_each_word_and_the_closing_boundary(trained):
    (model, _), out = trained
    vocab = {line.split("\t")[0]: i for i, line in enumerate((out / "vocab.txt").read_text().splitlines())}
    sentences = [["the", "cat", "sees", "the", "ball", "."], ["a", "dog", "."]]
    ppl = evaluate(model, sentences, vocab, batch_size=1, unroll_steps=4)
    assert ppl["tokens"] == 6 + 1 + 3 + 1
    # Rows and window sizes change only how the same targets are batched.
    again = evaluate(model, sentences, vocab, batch_size=2, unroll_steps=3)
    assert again["tokens"] == ppl["tokens"]


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no shipped model in models/default-wordnet")
def test_shipped_model_beats_the_unigram_baseline():
    model, vocab_rows = load_language_model(SHIPPED)
    vocab = {w: i for i, (w, _) in enumerate(vocab_rows)}
    sample = read_sentences(SHIPPED / "heldout_sample.txt")
    assert len(sample) >= 100
    ppl = evaluate(model, sample, vocab)
    unigram = unigram_perplexity(sample, vocab_rows)
    assert ppl["forward"] < unigram / 4 and ppl["backward"] < unigram / 4, (ppl, unigram)
    # Pinned: the figures recorded when the model was trained.
    recorded = json.loads((SHIPPED / "training.json").read_text())["sample_perplexity"]
    assert ppl["forward"] == pytest.approx(recorded["forward"], rel=1e-4)
    assert ppl["backward"] == pytest.approx(recorded["backward"], rel=1e-4)
    assert unigram == pytest.approx(recorded["unigram"], rel=1e-9)


def test_the_shipped_model_is_the_default_wordnet_architecture():
    # One name, one architecture: the table the trainer builds from describes the shipped files.
    assert json.loads((SHIPPED / "options.json").read_text()) == ARCHITECTURES["default-wordnet"]


def test_gloss_lines_give_the_definition_and_each_example():
    from elmo_train.corpus import gloss_sentences

    line = (
        "00004492 29 v 01 hold 4 001 @ 02422681 v 0000 01 + 08 00 | keep from exhaling or "
        'expelling; "hold your breath"; "she held her breath"  \n'
    )
    assert gloss_sentences(line) == ["keep from exhaling or expelling", "hold your breath", "she held her breath"]
    assert gloss_sentences("  1 This software and database is being provided to you\n") == []


def test_vocab_counts_boundaries_and_unknown_words():
    rows = build_vocab([["a", "b", "a"], ["a", "c"]], min_count=2)
    assert rows == [("<S>", 2), ("</S>", 2), ("<UNK>", 2), ("a", 3)]
