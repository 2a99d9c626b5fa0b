"""The PyTorch reference against the original TensorFlow outputs."""

import h5py
import numpy as np
import pytest
import torch
from tf_fixtures import FIXTURE_SETS, load_fixture_set

from elmo_export.weights import load_reference
from elmo_runtime.chars import batch_to_char_ids, tokens_to_char_ids


@pytest.mark.parametrize("name", FIXTURE_SETS)
def test_reference_reproduces_tensorflow_with_state_carried(name):
    fixture = load_fixture_set(name)
    model = load_reference(fixture.options, fixture.weights)
    state, checked = None, 0
    with torch.no_grad():
        for i, batch in enumerate(fixture.batches):
            out = model(torch.from_numpy(batch_to_char_ids(batch)), state)
            state = out.state
            for row, sentence in enumerate(batch):
                if (i, row) in fixture.expected:
                    got = out.layers[-1, row, : len(sentence)].numpy()
                    np.testing.assert_allclose(got, fixture.expected[i, row], atol=1e-6, rtol=1e-5)
                    checked += 1
    assert checked == (30 if name == "bilm-tf" else 10)


def test_a_fresh_state_per_batch_does_not_match_tensorflow():
    # The fixtures were made statefully: the carried state is part of what they test.
    fixture = load_fixture_set("bilm-tf")
    model = load_reference(fixture.options, fixture.weights)
    with torch.no_grad():
        out = model(torch.from_numpy(batch_to_char_ids(fixture.batches[5])))
    got = out.layers[-1, 0, : len(fixture.batches[5][0])].numpy()
    assert np.abs(got - fixture.expected[5, 0]).max() > 0.1


def test_char_cnn_reproduces_tensorflow_token_embeddings():
    fixture = load_fixture_set("allennlp-elmo")
    model = load_reference(fixture.options, fixture.weights)
    words = (fixture.options.parent / "vocab_test.txt").read_text().strip().split("\n")
    with h5py.File(fixture.options.parent / "elmo_token_embeddings.hdf5") as fin:
        expected = fin["embedding"][...]
    with torch.no_grad():
        got = model.token_embedder(torch.from_numpy(tokens_to_char_ids(words))[None])[0].numpy()
    assert got.shape == expected.shape == (458, 16)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


def test_padding_never_changes_a_sentence(tiny_model):
    short = ["The", "cat", "sat", "."]
    batch = [["A", "much", "longer", "sentence", "that", "pads", "the", "short", "one", "."], short, ["Hi"]]
    with torch.no_grad():
        alone = tiny_model(torch.from_numpy(batch_to_char_ids([short])))
        padded = tiny_model(torch.from_numpy(batch_to_char_ids(batch)))
    np.testing.assert_allclose(padded.layers[:, 1, :4].numpy(), alone.layers[:, 0].numpy(), atol=1e-6)
    assert (padded.layers[:, 1, 4:] == 0).all()
    # Each row's final state is taken at its own last token.
    np.testing.assert_allclose(padded.state.h[:, :, 1].numpy(), alone.state.h[:, :, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(padded.state.c[:, :, 1].numpy(), alone.state.c[:, :, 0].numpy(), atol=1e-6)


def test_layer_zero_is_the_token_embedding_for_both_directions(tiny_model):
    with torch.no_grad():
        out = tiny_model(torch.from_numpy(batch_to_char_ids([["Hello", "world"]])))
        tokens = tiny_model.token_embedder(torch.from_numpy(batch_to_char_ids([["Hello", "world"]])))
    p = tiny_model.options.projection_dim
    np.testing.assert_allclose(out.layers[0, 0, :, :p].numpy(), tokens[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(out.layers[0, 0, :, p:].numpy(), tokens[0].numpy(), atol=1e-6)


def test_state_carries_between_batches(tiny_model):
    ids = torch.from_numpy(batch_to_char_ids([["one", "two"], ["three"]]))
    with torch.no_grad():
        first = tiny_model(ids)
        carried = tiny_model(ids, first.state)
        fresh = tiny_model(ids)
    assert first.state.h.shape == (2, 2, 2, 16) and first.state.c.shape == (2, 2, 2, 64)
    np.testing.assert_array_equal(fresh.layers.numpy(), first.layers.numpy())
    assert np.abs(carried.layers[1:].numpy() - first.layers[1:].numpy()).max() > 1e-3
