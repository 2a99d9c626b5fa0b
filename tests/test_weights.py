"""Loading official weight files, and the errors a bad one gives."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from elmo_export.architectures import ARCHITECTURES
from elmo_export.model import ElmoOptions
from elmo_export.synthetic import random_model, write_synthetic
from elmo_export.weights import WeightFileError, check_weight_file, load_reference, save_weights
from elmo_runtime.chars import batch_to_char_ids


@pytest.fixture
def tiny_copy(tiny_weights, tmp_path):
    options, weights = tiny_weights
    shutil.copy(options, tmp_path / "options.json")
    shutil.copy(weights, tmp_path / "weights.hdf5")
    return tmp_path / "options.json", tmp_path / "weights.hdf5"


def test_save_then_load_gives_the_same_model(tmp_path):
    options = ElmoOptions.from_dict(ARCHITECTURES["tiny"])
    model = random_model(options, seed=3)
    save_weights(model, tmp_path / "w.hdf5")
    (tmp_path / "o.json").write_text(json.dumps(options.to_dict()))
    again = load_reference(tmp_path / "o.json", tmp_path / "w.hdf5")
    ids = torch.from_numpy(batch_to_char_ids([["round", "trip", "."]]))
    with torch.no_grad():
        # The forget bias moves by +1 and back, which rounds: equal up to float32 precision.
        np.testing.assert_allclose(again(ids).layers.numpy(), model(ids).layers.numpy(), atol=1e-6)


def test_synthetic_presets_have_the_official_sizes():
    counts = {name: ElmoOptions.from_dict(o).parameter_count() for name, o in ARCHITECTURES.items()}
    assert round(counts["original"] / 1e6, 1) == 93.6
    assert round(counts["small"] / 1e6, 1) == 13.6
    assert round(counts["medium"] / 1e6, 1) == 28.0


def test_synthetic_activations_are_neither_saturated_nor_vanishing(tiny_model):
    ids = torch.from_numpy(batch_to_char_ids([["Activations", "should", "look", "trained", "."]]))
    with torch.no_grad():
        out = tiny_model(ids)
    for layer in out.layers[:, 0]:
        assert 0.05 < layer.std().item() < 2.0
        assert (layer.abs() > 2.99).float().mean().item() < 0.02


def test_missing_weights_file(tiny_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        load_reference(tiny_copy[0], tmp_path / "nope.hdf5")


def test_truncated_file_names_the_file(tiny_copy):
    options, weights = tiny_copy
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match=r"weights.hdf5"):
        load_reference(options, weights)


def test_wrong_shape_names_dataset_expected_and_found(tiny_copy):
    options, weights = tiny_copy
    o = ElmoOptions.from_file(options)
    f_, p = o.n_filters, o.projection_dim
    with h5py.File(weights, "a") as f:
        del f["CNN_proj/W_proj"]
        f["CNN_proj/W_proj"] = np.zeros((f_, p + 1), np.float32)
    with pytest.raises(
        WeightFileError, match=rf"'CNN_proj/W_proj' has shape \({f_}, {p + 1}\), expected \({f_}, {p}\)"
    ):
        load_reference(options, weights)


def test_missing_datasets_are_all_listed(tiny_copy):
    options, weights = tiny_copy
    with h5py.File(weights, "a") as f:
        del f["char_embed"]
        del f["RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/B"]
    with pytest.raises(WeightFileError) as info:
        check_weight_file(ElmoOptions.from_file(options), weights)
    assert "'char_embed' is missing (expected shape (261, 4))" in str(info.value)
    assert "'RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/B' is missing (expected shape (256,))" in str(info.value)


def test_options_that_disagree_with_the_weights(tiny_copy):
    options, weights = tiny_copy
    data = json.loads(options.read_text())
    data["lstm"]["dim"] = 128
    options.write_text(json.dumps(data))
    with pytest.raises(
        WeightFileError, match=r"does not match .*options.json[\s\S]*W_0' has shape \(32, 256\), expected \(32, 512\)"
    ):
        load_reference(options, weights)


def test_non_finite_weights_are_refused(tiny_copy):
    options, weights = tiny_copy
    with h5py.File(weights, "a") as f:
        f["CNN_proj/b_proj"][3] = np.nan
    with pytest.raises(WeightFileError, match="'CNN_proj/b_proj' holds NaN"):
        load_reference(options, weights)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["lstm"].pop("projection_dim"), r"missing field 'lstm.projection_dim'"),
        (lambda d: d["char_cnn"].update(activation="gelu"), r"activation is 'gelu'"),
        (lambda d: d["char_cnn"].update(filters=[[1, "x"]]), r"char_cnn.filters"),
        (lambda d: d["lstm"].update(n_layers="2"), r"'lstm.n_layers' is str '2'"),
    ],
)
def test_bad_options_name_the_field(tiny_copy, edit, message):
    options, weights = tiny_copy
    data = json.loads(options.read_text())
    edit(data)
    options.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_reference(options, weights)


def test_options_that_are_not_json(tiny_copy):
    options, weights = tiny_copy
    options.write_text("{not json")
    with pytest.raises(ValueError, match="options.json: not a valid JSON"):
        load_reference(options, weights)


def test_unknown_preset_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="tiny, small, medium, original"):
        write_synthetic("huge", tmp_path)
