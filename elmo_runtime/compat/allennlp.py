"""AllenNLP's ELMo API on the torch-free runtime: change the import, keep the code.

    # from allennlp.commands.elmo import ElmoEmbedder           (AllenNLP <= 0.9)
    # from allennlp.modules.elmo import Elmo, batch_to_ids      (AllenNLP 1.x - 2.x)
    from elmo_runtime.compat.allennlp import ElmoEmbedder, Elmo, batch_to_ids

    ee = ElmoEmbedder()                                     # AllenNLP's default: the `original` model
    vectors = ee.embed_sentence(["The", "cat", "sat", "."])  # (3, 4, 1024) float32

    elmo = Elmo(options_file, weight_file, 2, dropout=0)
    out = elmo(batch_to_ids([["The", "cat"], ["Hi"]]))      # numpy in, numpy out
    out["elmo_representations"]                             # 2 x (2, 2, 1024) float32
    out["mask"]                                             # (2, 2) bool

What is the same as AllenNLP: the arguments and their defaults, the shapes, dtypes and layer
order, the character ids, the scalar mix (`gamma * softmax(s)`, a plain mean at its initial
values), zeros at padding, `embed_file`'s HDF5 layout. Arrays are numpy, not torch tensors.

The one intended difference is the LSTM state. AllenNLP carries each batch row's state into the
next call, so a sentence's vectors depend on what ran before it and on its row; here every
sentence starts from the package's fixed state (its warm state: the state after a warm-up
text), so the same sentence always gets the same vectors. `stateful=True` gives AllenNLP's
behaviour back exactly: batches run in the caller's order, row i continues from row i of the
previous call, rows a smaller batch leaves out keep their state, new rows start from zeros;
`reset_states()` forgets it.

Models: the `options_file`/`weight_file` pair may be AllenNLP's published URLs (the default is
`original`), local files (exported once into the cache when the exporter is installed), or, as
`options_file` alone, any package form `elmo_runtime.Elmo` opens (see
`elmo_runtime.compat.models`). Training options refuse in one line: `requires_grad=True`
(fine-tuning needs torch) and `module=`.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from elmo_runtime import contract as C
from elmo_runtime.chars import batch_to_char_ids, boundary_char_ids, tokens_to_char_ids
from elmo_runtime.compat.models import pair_package, token_lists
from elmo_runtime.embedder import Elmo as _Runtime
from elmo_runtime.runner import PackageRunner
from elmo_runtime.token_schemes import ByteScheme

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPTIONS_FILE", "DEFAULT_WEIGHT_FILE", "DEFAULT_BATCH_SIZE", "ElmoEmbedder", "Elmo", "batch_to_ids"]

# AllenNLP 0.9's constants (allennlp/commands/elmo.py): the `original` model. Flair reads them.
DEFAULT_OPTIONS_FILE = (
    "https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/"
    "elmo_2x4096_512_2048cnn_2xhighway_options.json"
)
DEFAULT_WEIGHT_FILE = (
    "https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/"
    "elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5"
)
DEFAULT_BATCH_SIZE = 64
OUTPUT_FORMATS = ("all", "top", "average")
# AllenNLP's ScalarMix adds util.tiny_value_of_dtype(float32) to the variance.
_LAYER_NORM_EPSILON = 1e-13


def batch_to_ids(batch: Sequence[Sequence[str]]) -> np.ndarray:
    """AllenNLP's `batch_to_ids`: tokenized sentences -> character ids, int64 `(B, T, 50)`.

    Each token is its UTF-8 bytes (cut to 48) between begin- and end-of-word marks, padded,
    every id + 1; rows past a sentence's end are zeros. The same ids AllenNLP makes.

    Raises:
        TypeError: a sentence that is not a list of str (a bare str names `s.split()`).
    """
    return batch_to_char_ids(token_lists(batch)).astype(np.int64)


def _device(cuda_device: int) -> str:
    if isinstance(cuda_device, bool) or not isinstance(cuda_device, numbers.Integral):
        raise TypeError(f"cuda_device is {cuda_device!r}; expected an int (-1: the CPU, 0 or more: a GPU)")
    return "cpu" if cuda_device < 0 else "cuda"


def _package(options_file, weight_file, precision: str, stateful: bool) -> Path:
    """The package for AllenNLP's file pair (or any model form): a stateful caller starts rows
    from zeros, as AllenNLP does, so a zero-state export serves it."""
    state = C.ZERO if stateful else C.WARM
    return pair_package(
        options_file, weight_file, precision=precision, state=state, default_weight_file=DEFAULT_WEIGHT_FILE
    )


class _BiLmHandle:
    """What Flair's `ELMoEmbeddings.__setstate__` touches of AllenNLP's `_ElmoBiLm`.

    It moves the module and its carried LSTM states to Flair's device; here there is nothing to
    move (ONNX Runtime holds the weights, and the carried state is numpy).
    """

    def __init__(self) -> None:
        self._elmo_lstm = _LstmHandle()

    def to(self, *args, **kwargs) -> "_BiLmHandle":
        return self


class _LstmHandle:
    _states: tuple = ()


class ElmoEmbedder:
    """AllenNLP 0.9's `allennlp.commands.elmo.ElmoEmbedder`, torch-free.

    Args:
        options_file: AllenNLP's options.json (a path or one of its published URLs), or a
            package (folder, name, `hf:owner/repo`) with `weight_file` left as it is.
        weight_file: the weights.hdf5 (a path or URL) that goes with `options_file`.
        cuda_device: -1 for the CPU (AllenNLP's default), 0 or more for CUDA (onnxruntime-gpu).
        stateful: carry each row's LSTM state into the next call, as AllenNLP did (its vectors,
            its order dependence); default False: every sentence starts from the package's
            fixed state.
        precision: which package of an official model to use ("fp32", or "int8" where the
            catalog lists one: faster, within its parity tolerance).

    Raises:
        ValueError: an unknown URL or name (the known models named).
        FileNotFoundError: a local file that does not exist.
        RuntimeError: local files that need exporting without the exporter installed (the
            `elmo-export` command is named), or no CUDA for `cuda_device >= 0`.
    """

    def __init__(
        self,
        options_file: str | os.PathLike = DEFAULT_OPTIONS_FILE,
        weight_file: str | os.PathLike | None = DEFAULT_WEIGHT_FILE,
        cuda_device: int = -1,
        *,
        stateful: bool = False,
        precision: str = "fp32",
    ):
        self._args = (options_file, weight_file, cuda_device, stateful, precision)
        package = _package(options_file, weight_file, precision, stateful)
        self.elmo = _Runtime(package, device=_device(cuda_device))
        self.cuda_device = cuda_device
        self.stateful = bool(stateful)
        self._stream = self.elmo.stream(state=C.ZERO) if self.stateful else None
        self.elmo_bilm = _BiLmHandle()

    def __getstate__(self) -> dict:
        # Sessions do not pickle; a pickle (Flair saves its embeddings in models) re-opens the
        # package. A stateful embedder comes back with its state reset.
        return {"args": self._args}

    def __setstate__(self, state: dict) -> None:
        options_file, weight_file, cuda_device, stateful, precision = state["args"]
        self.__init__(options_file, weight_file, cuda_device, stateful=stateful, precision=precision)

    def reset_states(self) -> None:
        """Forget the carried state (stateful=True): the next call starts every row from zeros."""
        if self._stream is not None:
            self._stream.reset()

    def embed_sentence(self, sentence: Sequence[str]) -> np.ndarray:
        """One tokenized sentence -> `(L + 1, T, dim)` float32 (`(3, T, 1024)` for `original`)."""
        if isinstance(sentence, str):
            token_lists([sentence])
        return self.embed_batch([sentence])[0]

    def embed_batch(self, batch: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Tokenized sentences -> one `(L + 1, T_i, dim)` float32 array each, in order.

        A sentence with no tokens gives zeros `(L + 1, 0, dim)` (AllenNLP gave float64
        `(3, 0, 1024)` whatever the model's width).
        """
        sentences = token_lists(batch)
        if sentences == [[]]:  # AllenNLP returns this case without running the model (nor moving state)
            return [np.zeros((self.elmo.num_layers, 0, self.elmo.dim), np.float32)]
        if self._stream is not None:
            return self._stream.embed(sentences, layers="all")
        return self.elmo.embed(sentences, layers="all")

    def embed_sentences(
        self, sentences: Iterable[Sequence[str]], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[np.ndarray]:
        """Embed an iterable lazily, `batch_size` sentences per batch in the order given."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size is {batch_size!r}; expected a positive int")
        if isinstance(sentences, (str, bytes)):
            token_lists(sentences, "sentences")
        batch: list = []
        for sentence in sentences:
            batch.append(sentence)
            if len(batch) == batch_size:
                yield from self.embed_batch(batch)
                batch = []
        if batch:
            yield from self.embed_batch(batch)

    def batch_to_embeddings(self, batch: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """-> activations `(B, L + 1, T, dim)` float32 (zeros past each sentence), mask `(B, T)` int64."""
        arrays = self.embed_batch(batch)
        lengths = np.array([a.shape[1] for a in arrays], dtype=np.int64)
        longest = int(lengths.max(initial=0))
        activations = np.zeros((len(arrays), self.elmo.num_layers, longest, self.elmo.dim), np.float32)
        for row, array in enumerate(arrays):
            activations[row, :, : array.shape[1]] = array
        return activations, (np.arange(longest)[None, :] < lengths[:, None]).astype(np.int64)

    def embed_file(
        self,
        input_file: IO[str] | str | os.PathLike,
        output_file_path: str | os.PathLike,
        output_format: str = "all",
        batch_size: int = DEFAULT_BATCH_SIZE,
        forget_sentences: bool = False,
        use_sentence_keys: bool = False,
    ) -> None:
        """Embed a file of whitespace-tokenized sentences, one a line, into AllenNLP's HDF5 layout.

        One float32 dataset per line: `(L + 1, T, dim)` for "all", `(T, dim)` for "top" or
        "average"; keyed by the 0-based line number ("0", "1", ...), or by the sentence itself
        with `use_sentence_keys` (a repeated sentence is then an error). Unless
        `forget_sentences` or `use_sentence_keys`, a `(1,)` string dataset `sentence_to_index`
        holds the JSON of {sentence: key}. The file is written beside `output_file_path` and
        renamed onto it once complete (it replaces an existing file, as AllenNLP did).

        Args:
            input_file: an open text file (as AllenNLP took) or a path.

        Raises:
            ValueError: a blank line (its line numbers named), a repeated sentence with
                `use_sentence_keys`, or an unknown `output_format`.
            FileNotFoundError: no such input file or output folder.
            ImportError: h5py is not installed (the `hdf5` extra).
        """
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format is {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        from elmo_runtime.compat._hdf5 import read_sentence_lines, write_datasets

        name, sentences = read_sentence_lines(input_file)
        if use_sentence_keys:
            log.warning("Using sentences as keys can fail if sentences contain forward slashes or colons.")
            seen: dict[str, int] = {}
            for number, sentence in enumerate(sentences, 1):
                if sentence in seen:
                    raise ValueError(
                        f"{name}:{number}: the sentence of line {seen[sentence]} again; with "
                        "use_sentence_keys (--use-sentence-keys) every sentence must be unique"
                    )
                seen[sentence] = number
        keys = sentences if use_sentence_keys else [str(i) for i in range(len(sentences))]
        vectors = self.embed_sentences((s.split() for s in sentences), batch_size)
        pick = {"all": lambda v: v, "top": lambda v: v[-1], "average": lambda v: np.average(v, axis=0)}[output_format]
        index = None if forget_sentences or use_sentence_keys else json.dumps(dict(zip(sentences, keys)))
        write_datasets(Path(output_file_path), zip(keys, map(pick, vectors)), index)


class Elmo:
    """AllenNLP's `allennlp.modules.elmo.Elmo` (1.x - 2.x) for inference: character ids in, numpy out.

    Call it on `batch_to_ids(sentences)` (`(B, T, 50)`, or more leading dimensions) to get
    `{"elmo_representations": [(B, T, dim)] * num_output_representations, "mask": (B, T) bool}`.
    Each representation is AllenNLP's ScalarMix of the biLM's layers, `gamma * sum_k
    softmax(s)_k * layer_k`, with `s` = `scalar_mix_parameters` or zeros (a plain mean, as an
    untrained AllenNLP model has) and `gamma = 1`; `do_layer_norm` normalises each layer over
    the batch's unmasked positions, boundary tokens included, as AllenNLP does. Positions past
    a sentence are zeros. With no trainable mix, the `num_output_representations` outputs are
    equal (as AllenNLP's are until trained).

    Args:
        options_file, weight_file: as for `ElmoEmbedder` (or a package as `options_file` and
            None as `weight_file`).
        num_output_representations: how many representations to return.
        requires_grad: must be False (fine-tuning the biLM needs torch).
        do_layer_norm: layer-normalise each layer before mixing.
        dropout: accepted and not applied (inference).
        vocab_to_cache: words whose ids `word_inputs` may then hold (index 0: padding).
        keep_sentence_boundaries: keep the `<S>` and `</S>` positions: `(B, T + 2, dim)`.
        scalar_mix_parameters: the pre-softmax mix weights, one per layer (e.g. `[-9e10, 1,
            -9e10]` for the first LSTM layer alone).
        module: must be None (a torch module cannot run here).
        stateful: carry each row's state into the next call, as AllenNLP does (see the module
            docstring); default False: the package's fixed state for every sentence.
        precision, cuda_device: the package's precision and the device (-1: the CPU).

    Raises:
        NotImplementedError: `requires_grad=True` or a `module`.
        ValueError: `scalar_mix_parameters` of the wrong length, a bad count, a package whose
            model does not read AllenNLP's character ids.
    """

    def __init__(
        self,
        options_file: str | os.PathLike,
        weight_file: str | os.PathLike | None,
        num_output_representations: int,
        requires_grad: bool = False,
        do_layer_norm: bool = False,
        dropout: float = 0.5,
        vocab_to_cache: list[str] | None = None,
        keep_sentence_boundaries: bool = False,
        scalar_mix_parameters: list[float] | None = None,
        module: object = None,
        *,
        stateful: bool = False,
        precision: str = "fp32",
        cuda_device: int = -1,
    ):
        if requires_grad:
            raise NotImplementedError(
                "requires_grad=True fine-tunes the biLM, which needs torch; elmo_runtime runs "
                "the biLM frozen, as AllenNLP's default requires_grad=False does"
            )
        if module is not None:
            raise NotImplementedError(
                "module= runs a torch module as the biLM; elmo_runtime runs exported packages: "
                "export the model with elmo-export and pass the package as options_file"
            )
        if (
            isinstance(num_output_representations, bool)
            or not isinstance(num_output_representations, numbers.Integral)
            or num_output_representations < 1
        ):
            raise ValueError(f"num_output_representations is {num_output_representations!r}; expected an int >= 1")
        package = _package(options_file, weight_file, precision, stateful)
        self._runner = PackageRunner(package, device=_device(cuda_device))
        if not isinstance(self._runner.scheme, ByteScheme):
            raise ValueError(
                f"{package}: this model reads its own dictionary's ids (ELMoForManyLangs), not "
                "AllenNLP's character ids; use elmo_runtime.compat.elmoformanylangs.Embedder"
            )
        self.scalar_mix_weights = _mix_weights(scalar_mix_parameters, self._runner.manifest.n_layers + 1)
        self.num_output_representations = int(num_output_representations)
        self.do_layer_norm = bool(do_layer_norm)
        self.keep_sentence_boundaries = bool(keep_sentence_boundaries)
        self.dropout = dropout
        width = self._runner.scheme.max_characters_per_token
        self._vocab_ids = None if vocab_to_cache is None else tokens_to_char_ids(list(vocab_to_cache), width)
        self._state = _CarriedState(self._runner) if stateful else None

    def get_output_dim(self) -> int:
        return self._runner.manifest.output_dim

    def reset_states(self) -> None:
        """Forget the carried state (stateful=True): the next call starts every row from zeros."""
        if self._state is not None:
            self._state.reset()

    def __call__(self, inputs: np.ndarray, word_inputs: np.ndarray | None = None) -> dict:
        """Character ids `(..., T, 50)` -> `{"elmo_representations": [...], "mask": ...}` (see the class)."""
        ids = self._char_ids(inputs, word_inputs)
        lead, (steps, width) = ids.shape[:-2], ids.shape[-2:]
        framed, mask = _add_boundaries(ids.reshape(-1, steps, width))  # (B, T + 2, C), (B, T + 2)
        layers = self._run(framed, mask)  # (L + 1, B, T + 2, dim)
        mixed = _scalar_mix(layers, self.scalar_mix_weights, mask if self.do_layer_norm else None)
        if not self.keep_sentence_boundaries:
            mixed, mask = _remove_boundaries(mixed, mask)
        shape = lead + mask.shape[1:]
        return {
            "elmo_representations": [mixed.reshape(*shape, -1).copy() for _ in range(self.num_output_representations)],
            "mask": mask.reshape(shape),
        }

    forward = __call__

    def _char_ids(self, inputs, word_inputs) -> np.ndarray:
        if word_inputs is not None and self._vocab_ids is not None:
            words = np.asarray(word_inputs)
            if words.dtype.kind not in "iu" or words.ndim < 2:
                raise TypeError(f"word_inputs is {words.dtype} {words.shape}; expected integer ids (B, T)")
            return self._vocab_ids[words] * (words > 0)[..., None]
        if word_inputs is not None:
            log.warning("Word inputs were passed to ELMo but it does not have a cached vocab.")
        ids = np.asarray(inputs)
        width = self._runner.scheme.max_characters_per_token
        if ids.dtype.kind not in "iu" or ids.ndim < 3 or ids.shape[-1] != width:
            raise TypeError(
                f"inputs is {ids.dtype} {ids.shape}; expected character ids (B, T, {width}) from batch_to_ids"
            )
        return ids

    def _run(self, framed: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The biLM on rows that carry their own `<S>`/`</S>` (sentence_edges 0): all positions out."""
        rows = framed.shape[0]
        embeddings, _ = self._runner.token_embeddings(framed)
        if self._state is None:
            h, c = self._runner.initial_state(self._runner.manifest.initial_state_mode, rows)
        else:
            h, c = self._state.take(rows)
        layers, final_h, final_c = self._runner.bilm(embeddings, mask, h, c, np.zeros((rows, 2), np.int64))
        if self._state is not None:
            self._state.put(final_h, final_c)
        return layers * mask[None, :, :, None]  # layer 0 too: AllenNLP masks the token layer


class _CarriedState:
    """AllenNLP's stateful-LSTM bookkeeping (`encoder_base._EncoderBase`), row by row.

    One buffer of every row seen: a call of B rows starts from (and updates) its first B rows;
    rows beyond B keep their state; a batch larger than any before adds rows of zeros.
    """

    def __init__(self, runner: PackageRunner):
        self._runner = runner
        self.reset()

    def reset(self) -> None:
        self._h, self._c = self._runner.initial_state(C.ZERO, 0)  # (L, 2, rows, P), (L, 2, rows, D)

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        new = rows - self._h.shape[2]
        if new > 0:
            h0, c0 = self._runner.initial_state(C.ZERO, new)
            self._h, self._c = np.concatenate([self._h, h0], axis=2), np.concatenate([self._c, c0], axis=2)
        return self._h[:, :, :rows], self._c[:, :, :rows]

    def put(self, h: np.ndarray, c: np.ndarray) -> None:
        rows = h.shape[2]
        self._h[:, :, :rows], self._c[:, :, :rows] = h, c


def _mix_weights(scalar_mix_parameters: list[float] | None, layers: int) -> np.ndarray:
    """ScalarMix's `softmax(s)` (gamma is 1), float32 `(layers,)`; `s` is zeros unless given."""
    parameters = [0.0] * layers if scalar_mix_parameters is None else [float(s) for s in scalar_mix_parameters]
    if len(parameters) != layers:
        raise ValueError(
            f"scalar_mix_parameters has {len(parameters)} values; this model has {layers} layers "
            "(the token layer and each LSTM layer): give one pre-softmax weight per layer"
        )
    exp = np.exp(np.asarray(parameters, np.float64) - max(parameters))
    return (exp / exp.sum()).astype(np.float32)


def _add_boundaries(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(B, T, C)` ids -> `(B, T + 2, C)` with `<S>` first and `</S>` after each row's tokens, and the mask."""
    rows, steps, width = ids.shape
    lengths = (ids > 0).any(axis=-1).sum(axis=1)  # (B,)
    bos, eos = boundary_char_ids(width)
    framed = np.zeros((rows, steps + 2, width), np.int32)
    framed[:, 1:-1] = ids
    framed[:, 0] = bos
    framed[np.arange(rows), lengths + 1] = eos
    return framed, np.arange(steps + 2)[None, :] < (lengths + 2)[:, None]


def _remove_boundaries(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AllenNLP's `remove_sentence_boundaries`: `(B, T + 2, D)` -> `(B, T, D)`, zeros past each row."""
    kept = np.arange(mask.shape[1] - 2)[None, :] < (mask.sum(axis=1) - 2)[:, None]  # (B, T)
    return x[:, 1:-1] * kept[..., None], kept


def _scalar_mix(layers: np.ndarray, weights: np.ndarray, norm_mask: np.ndarray | None) -> np.ndarray:
    """AllenNLP's ScalarMix at gamma 1: `layers (L + 1, B, T, D)` -> `(B, T, D)` float32.

    With `norm_mask` (B, T), each layer is first normalised by the mean and variance of its
    unmasked values over the whole batch (so the result depends on the batch, as in AllenNLP).
    """
    if norm_mask is None:
        return np.tensordot(weights, layers, axes=1).astype(np.float32)
    m = norm_mask[None, :, :, None].astype(np.float32)
    count = norm_mask.sum() * layers.shape[-1]
    mean = (layers * m).sum(axis=(1, 2, 3), keepdims=True) / count
    variance = (((layers * m - mean) * m) ** 2).sum(axis=(1, 2, 3), keepdims=True) / count
    normed = (layers - mean) / np.sqrt(variance + _LAYER_NORM_EPSILON)
    return np.tensordot(weights, normed, axes=1).astype(np.float32)
