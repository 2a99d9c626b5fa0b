"""Official ELMo weight files (`weights.hdf5`, TF layout) to and from the reference model.

One explicit name map serves reading, writing and checking. Every conversion between TF's
convention and PyTorch's is spelled out next to the dataset it applies to.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from elmo_export.model import ElmoBiLm, ElmoOptions

log = logging.getLogger(__name__)


class WeightFileError(ValueError):
    """A weights file that cannot be used with the given options."""


@dataclass(frozen=True)
class Entry:
    """One dataset: its expected shape and how it moves into and out of the model."""

    shape: tuple[int, ...]
    load: Callable[[ElmoBiLm, np.ndarray], None]
    save: Callable[[ElmoBiLm], np.ndarray]


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _get(param: torch.Tensor) -> np.ndarray:
    return param.detach().cpu().numpy().astype(np.float32)


def lstm_dataset(direction: int, layer: int, name: str) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{name}"


def name_map(options: ElmoOptions) -> dict[str, Entry]:
    """Every dataset of an official weights file for these options."""
    o = options
    e, f, p, d = o.char_embedding_dim, o.n_filters, o.projection_dim, o.dim
    entries: dict[str, Entry] = {}

    # Stored without the padding row: our char ids are shifted by 1, so row 0 is added as zeros.
    entries["char_embed"] = Entry(
        (260 + 1, e),
        lambda m, a: _set(m.token_embedder.char_embedding.weight, np.concatenate([np.zeros((1, e)), a])),
        lambda m: _get(m.token_embedder.char_embedding.weight)[1:],
    )
    for i, (w, n) in enumerate(o.filters):
        conv = lambda m, i=i: m.token_embedder.convolutions[i]  # noqa: E731
        # TF conv2d kernel (1, width, in, out); torch Conv1d wants (out, in, width).
        entries[f"CNN/W_cnn_{i}"] = Entry(
            (1, w, e, n),
            lambda m, a, conv=conv: _set(conv(m).weight, a[0].transpose(2, 1, 0)),
            lambda m, conv=conv: _get(conv(m).weight).transpose(2, 1, 0)[None],
        )
        entries[f"CNN/b_cnn_{i}"] = Entry(
            (n,),
            lambda m, a, conv=conv: _set(conv(m).bias, a),
            lambda m, conv=conv: _get(conv(m).bias),
        )

    def linear(get_layer: Callable[[ElmoBiLm], torch.nn.Linear]) -> tuple[Callable, Callable, Callable, Callable]:
        # TF stores y = x @ W, torch's Linear y = x @ W.T.
        return (
            lambda m, a: _set(get_layer(m).weight, a.T),
            lambda m: _get(get_layer(m).weight).T,
            lambda m, a: _set(get_layer(m).bias, a),
            lambda m: _get(get_layer(m).bias),
        )

    for k in range(o.n_highway):
        for part, modules in (("transform", "highway_transform"), ("carry", "highway_carry")):
            wl, ws, bl, bs = linear(lambda m, k=k, modules=modules: getattr(m.token_embedder, modules)[k])
            entries[f"CNN_high_{k}/W_{part}"] = Entry((f, f), wl, ws)
            entries[f"CNN_high_{k}/b_{part}"] = Entry((f,), bl, bs)
    wl, ws, bl, bs = linear(lambda m: m.token_embedder.projection)
    entries["CNN_proj/W_proj"] = Entry((f, p), wl, ws)
    entries["CNN_proj/b_proj"] = Entry((p,), bl, bs)

    # TF's LSTMCell adds forget_bias=1.0 at run time; the file's B does not include it.
    forget = np.zeros(4 * d, dtype=np.float32)
    forget[2 * d : 3 * d] = 1.0
    for layer in range(o.n_layers):
        for direction in range(2):
            cell = lambda m, layer=layer, direction=direction: m.cells[layer][direction]  # noqa: E731

            def load_w(m: ElmoBiLm, a: np.ndarray, cell=cell) -> None:
                # W_0 multiplies concat([x, h]): the first P rows act on x, the rest on h.
                _set(cell(m).input_to_gates.weight, a[:p].T)
                _set(cell(m).hidden_to_gates.weight, a[p:].T)

            def save_w(m: ElmoBiLm, cell=cell) -> np.ndarray:
                return np.concatenate([_get(cell(m).input_to_gates.weight).T,
                                       _get(cell(m).hidden_to_gates.weight).T])

            entries[lstm_dataset(direction, layer, "W_0")] = Entry((2 * p, 4 * d), load_w, save_w)
            entries[lstm_dataset(direction, layer, "B")] = Entry(
                (4 * d,),
                lambda m, a, cell=cell: _set(cell(m).input_to_gates.bias, a + forget),
                lambda m, cell=cell: _get(cell(m).input_to_gates.bias) - forget,
            )
            entries[lstm_dataset(direction, layer, "W_P_0")] = Entry(
                (d, p),
                lambda m, a, cell=cell: _set(cell(m).projection.weight, a.T),
                lambda m, cell=cell: _get(cell(m).projection.weight).T,
            )
    return entries


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise WeightFileError(f"{path}: cannot be read as an HDF5 weights file ({e})") from None


def _check(fin: h5py.File, path: Path, entries: dict[str, Entry], options_source: str) -> None:
    problems = []
    for name, entry in entries.items():
        if name not in fin:
            problems.append(f"dataset {name!r} is missing (expected shape {entry.shape})")
        elif not isinstance(fin[name], h5py.Dataset):
            problems.append(f"{name!r} is a group, expected a dataset of shape {entry.shape}")
        elif fin[name].shape != entry.shape:
            problems.append(f"dataset {name!r} has shape {fin[name].shape}, expected {entry.shape}")
    if problems:
        raise WeightFileError(
            f"{path} does not match {options_source}:\n  " + "\n  ".join(problems)
        )


def check_weight_file(options: ElmoOptions, path: str | Path, options_source: str = "the options") -> None:
    """Check that every dataset the options call for is present with the right shape.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: the file is not HDF5, or datasets are missing or mis-shaped (all listed).
    """
    path = Path(path)
    with _open(path) as fin:
        _check(fin, path, name_map(options), options_source)


def load_weights(model: ElmoBiLm, path: str | Path, options_source: str = "the options") -> None:
    """Copy an official weights file into `model`, checking every dataset first."""
    path = Path(path)
    entries = name_map(model.options)
    with _open(path) as fin:
        _check(fin, path, entries, options_source)
        for name, entry in entries.items():
            try:
                value = fin[name][...]
            except (OSError, KeyError) as e:  # a truncated file opens, then fails on read
                raise WeightFileError(f"{path}: dataset {name!r} cannot be read ({e})") from None
            if not np.all(np.isfinite(value)):
                raise WeightFileError(f"{path}: dataset {name!r} holds NaN or infinite values")
            entry.load(model, value)
    log.info("loaded %s (%d datasets)", path, len(entries))


def save_weights(model: ElmoBiLm, path: str | Path) -> None:
    """Write `model` as an official weights file (the inverse of `load_weights`).

    Written beside `path` and renamed at the end: a failure never leaves a truncated file.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with h5py.File(partial, "w") as fout:
            for name, entry in name_map(model.options).items():
                value = entry.save(model)
                assert value.shape == entry.shape, (name, value.shape, entry.shape)
                fout.create_dataset(name, data=value)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_reference(options_path: str | Path, weights_path: str | Path) -> ElmoBiLm:
    """Build the reference biLM from `options.json` + `weights.hdf5`, in eval mode."""
    options = ElmoOptions.from_file(options_path)
    model = ElmoBiLm(options)
    load_weights(model, weights_path, options_source=str(options_path))
    return model.eval()
