"""Official ELMo weight files (`weights.hdf5`, TF layout) to and from the reference model.

One explicit name map serves reading, writing and checking. Every conversion between TF's
convention and PyTorch's is spelled out next to the dataset it applies to.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import numpy as np
import torch

from elmo_export.model import N_CHAR_IDS, ElmoBiLm, ElmoOptions

log = logging.getLogger(__name__)


class WeightFileError(ValueError):
    """A weights file that cannot be used with the given options."""


class Conversion(NamedTuple):
    """How a dataset becomes model parameters (one value per parameter) and back."""

    to_torch: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    to_tf: Callable[..., np.ndarray]


def _forget_bias(n: int) -> np.ndarray:
    """`(4D,)`: 1 for the forget gate, the third of TF's gates i, j, f, o."""
    forget = np.zeros(n, dtype=np.float32)
    forget[n // 2 : 3 * n // 4] = 1.0
    return forget


AS_IS = Conversion(lambda a: (a,), lambda w: w)
# TF stores y = x @ W, torch's Linear y = x @ W.T.
LINEAR = Conversion(lambda a: (a.T,), lambda w: w.T)
# TF conv2d kernel (1, width, in, out); torch Conv1d wants (out, in, width).
CONV = Conversion(lambda a: (a[0].transpose(2, 1, 0),), lambda w: w.transpose(2, 1, 0)[None])
# Stored without the padding row: our char ids are shifted by 1, so row 0 is added as zeros.
CHAR_EMBEDDING = Conversion(lambda a: (np.concatenate([np.zeros((1, a.shape[1])), a]),), lambda w: w[1:])
# W_0 multiplies concat([x, h]): the first P rows act on x (input_to_gates), the rest on h.
LSTM_KERNEL = Conversion(
    lambda a: (a[: len(a) // 2].T, a[len(a) // 2 :].T), lambda w_x, w_h: np.concatenate([w_x.T, w_h.T])
)
# TF's LSTMCell adds forget_bias=1.0 at run time; the file's B does not include it.
LSTM_BIAS = Conversion(lambda a: (a + _forget_bias(len(a)),), lambda b: b - _forget_bias(len(b)))


@dataclass(frozen=True)
class Entry:
    """One dataset: its expected shape, the model parameters it holds, and how it converts."""

    shape: tuple[int, ...]
    parameters: tuple[str, ...]  # paths for `model.get_parameter`
    conversion: Conversion

    def load(self, model: ElmoBiLm, value: np.ndarray) -> None:
        for path, converted in zip(self.parameters, self.conversion.to_torch(value)):
            _set(model.get_parameter(path), converted)

    def save(self, model: ElmoBiLm) -> np.ndarray:
        return self.conversion.to_tf(*(_get(model.get_parameter(path)) for path in self.parameters))


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _get(param: torch.Tensor) -> np.ndarray:
    return param.detach().cpu().numpy().astype(np.float32)


def lstm_dataset(direction: int, layer: int, name: str) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{name}"


def name_map(options: ElmoOptions) -> dict[str, Entry]:
    """Every dataset of an official weights file for these options: name -> `Entry`."""
    o = options
    e, f, p, d = o.char_embedding_dim, o.n_filters, o.projection_dim, o.dim
    rows = [("char_embed", (N_CHAR_IDS - 1, e), ["token_embedder.char_embedding.weight"], CHAR_EMBEDDING)]
    for i, (width, n) in enumerate(o.filters):
        conv = f"token_embedder.convolutions.{i}"
        rows += [
            (f"CNN/W_cnn_{i}", (1, width, e, n), [f"{conv}.weight"], CONV),
            (f"CNN/b_cnn_{i}", (n,), [f"{conv}.bias"], AS_IS),
        ]
    for k in range(o.n_highway):
        for part in ("transform", "carry"):
            linear = f"token_embedder.highway_{part}.{k}"
            rows += [
                (f"CNN_high_{k}/W_{part}", (f, f), [f"{linear}.weight"], LINEAR),
                (f"CNN_high_{k}/b_{part}", (f,), [f"{linear}.bias"], AS_IS),
            ]
    if o.token_projection:  # bilm-tf writes no CNN_proj when the filters sum to projection_dim
        rows += [
            ("CNN_proj/W_proj", (f, p), ["token_embedder.projection.weight"], LINEAR),
            ("CNN_proj/b_proj", (p,), ["token_embedder.projection.bias"], AS_IS),
        ]
    for layer in range(o.n_layers):
        for direction in range(2):
            cell = f"cells.{layer}.{direction}"
            rows += [
                (
                    lstm_dataset(direction, layer, "W_0"),
                    (2 * p, 4 * d),
                    [f"{cell}.input_to_gates.weight", f"{cell}.hidden_to_gates.weight"],
                    LSTM_KERNEL,
                ),
                (lstm_dataset(direction, layer, "B"), (4 * d,), [f"{cell}.input_to_gates.bias"], LSTM_BIAS),
            ]
            if o.lstm_projection:  # an LSTMCell without num_proj has no W_P_0
                rows.append((lstm_dataset(direction, layer, "W_P_0"), (d, p), [f"{cell}.projection.weight"], LINEAR))
    return {name: Entry(shape, tuple(parameters), conversion) for name, shape, parameters, conversion in rows}


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise WeightFileError(f"{path}: cannot be read as an HDF5 weights file ({e})") from None


# Soft links followed before a name counts as a loop (HDF5's own default limit is 16).
_MAX_SOFT_LINKS = 16
# Deflate's largest possible ratio is about 1032:1: a dataset declaring more bytes than that per
# stored byte cannot be real data, only fill values that would be allocated on read.
_MAX_COMPRESSION_RATIO = 1032


def _link_problem(fin: h5py.File, name: str) -> str | None:
    """Why `name` leads out of this file (an external link, also behind soft links), else None.

    Walks the path one link at a time without resolving it: `fin[name]` would open an external
    file before any check could refuse it.
    """
    parts, followed, i, group_path = [p for p in name.split("/") if p], 0, 0, "/"
    while i < len(parts):
        group = fin[group_path]  # reached through hard links only
        if not isinstance(group, h5py.Group) or parts[i] not in group:
            return f"is a soft link to {'/' + '/'.join(parts)!r}, which does not exist" if followed else None
        link = group.get(parts[i], getlink=True)
        if isinstance(link, h5py.ExternalLink):
            return f"is an HDF5 external link to {link.path!r} in the file {link.filename!r}"
        if isinstance(link, h5py.SoftLink):
            followed += 1
            if followed > _MAX_SOFT_LINKS:
                return f"goes through more than {_MAX_SOFT_LINKS} soft links (a loop?)"
            target = posixpath.normpath(posixpath.join(group_path, link.path, *parts[i + 1 :]))
            parts, i, group_path = [p for p in target.split("/") if p], 0, "/"
            continue
        group_path = posixpath.join(group_path, parts[i])
        i += 1
    return None


def storage_problem(fin: h5py.File, name: str) -> str | None:
    """Why dataset `name` would be read from outside `fin`, or is not really stored; None if fine.

    HDF5 lets a dataset keep its bytes in other files (external raw storage, an external link,
    a virtual dataset): a crafted weights file could then copy any readable file (say
    `/proc/self/environ`) into an exported package. And a dataset declared but never written
    costs nothing on disk and its full size in memory.
    """
    why = _link_problem(fin, name)
    if why is not None or name not in fin or not isinstance(fin[name], h5py.Dataset):
        return why
    dataset = fin[name]
    plist = dataset.id.get_create_plist()
    if dataset.is_virtual:
        sources = sorted({s.file_name for s in dataset.virtual_sources()})
        return f"is a virtual dataset mapping {', '.join(map(repr, sources))}"
    if plist.get_external_count() > 0:
        files = [plist.get_external(k)[0].decode(errors="replace") for k in range(plist.get_external_count())]
        return f"keeps its bytes in external file(s) {', '.join(map(repr, files))}"
    declared, stored = dataset.size * dataset.dtype.itemsize, dataset.id.get_storage_size()
    limit = stored * (_MAX_COMPRESSION_RATIO if plist.get_nfilters() else 1)
    if declared and declared > limit:
        return (
            f"declares {declared} bytes but stores {stored} (unwritten chunks would be read as fill "
            "values, allocated in full)"
        )
    return None


def check_storage(fin: h5py.File, path: Path, names) -> None:
    """Refuse, in one line, datasets whose bytes are not inside `fin` itself (see `storage_problem`)."""
    problems = [f"{name!r} {why}" for name in names if (why := storage_problem(fin, name)) is not None]
    if problems:
        raise WeightFileError(
            f"{path}: dataset {'; '.join(problems)}: a weights file must hold its own data, refusing to read it"
        )


def _check(fin: h5py.File, path: Path, entries: dict[str, Entry], options_source: str) -> None:
    check_storage(fin, path, entries)
    problems = []
    for name, entry in entries.items():
        if name not in fin:
            problems.append(f"dataset {name!r} is missing (expected shape {entry.shape})")
        elif not isinstance(fin[name], h5py.Dataset):
            problems.append(f"{name!r} is a group, expected a dataset of shape {entry.shape}")
        elif fin[name].shape != entry.shape:
            problems.append(f"dataset {name!r} has shape {fin[name].shape}, expected {entry.shape}")
        elif not np.issubdtype(fin[name].dtype, np.floating):
            problems.append(f"dataset {name!r} holds {fin[name].dtype} values, expected floating point")
    if problems:
        raise WeightFileError(f"{path} does not match {options_source}:\n  " + "\n  ".join(problems))


def check_weight_file(options: ElmoOptions, path: str | Path, options_source: str = "the options") -> None:
    """Check that every dataset the options call for is present with the right shape and a float dtype.

    Reads metadata only (no weights), so it is cheap whatever the options claim.

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
    # Shapes first (metadata only): a typo in options.json must fail here, not allocate a
    # model of whatever size it claims.
    check_weight_file(options, weights_path, options_source=str(options_path))
    model = ElmoBiLm(options)
    load_weights(model, weights_path, options_source=str(options_path))
    return model.eval()
