"""The `Elmo` class: sentences in, ELMo vectors out.

    from elmo_runtime import Elmo
    elmo = Elmo()                                        # the default package, shipped inside
    elmo = Elmo("path/to/package")                       # device="auto": CUDA if usable, else CPU
    vectors = elmo.embed([["The", "cat", "sat", "."], ["Hi", "!"]])   # pre-tokenized
    vectors = elmo.embed(["The cat sat.", "Hi!"])                      # raw text is tokenized

Each sentence is embedded from the same initial LSTM state (the package's warm state by
default), so a sentence's vectors do not depend on what else is in the call or how the runtime
batches it. The original model was stateful instead; `Elmo.stream()` gives that behaviour back,
with the carried state in plain sight.

Shapes: L LSTM layers, so L + 1 output layers (layer 0 is the char CNN's token embedding,
duplicated for both directions); T tokens of one sentence; `dim` = 2 x projection_dim (1024
for the original model).
"""

from __future__ import annotations

import numbers
import reprlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from elmo_runtime import contract as C
from elmo_runtime.batching import BOUNDARY_TOKENS, batch_cost, check_budget, chunks_by_tokens, plan_batches
from elmo_runtime.fetch.catalog import SHIPPED_NAME
from elmo_runtime.fetch.resolve import resolve_package
from elmo_runtime.runner import CPU, CUDA, RUN_ERRORS, PackageRunner
from elmo_runtime.token_cache import DEFAULT_CACHE_BYTES, TokenEmbeddingCache
from elmo_runtime.tokenize import TokenizerError, tokenize

# Token positions per batch (padding and the two sentence-boundary positions included). The
# budget sets the peak memory (a batch's gate pre-activations are positions x 4 x LSTM cells)
# more than the speed (measured: benchmarks/RESULTS.md, "Design measurements"). A GPU wants
# bigger batches (4096: not yet measured on one).
DEFAULT_BATCH_TOKENS = {CPU: 512, CUDA: 4096}
# `embed_iter` reads this many batches' worth of sentences at a time, sorts and embeds them.
CHUNK_BATCHES = 4

POOL_CHOICES = (None, "mean")

Layers = Union[str, int, Sequence[float]]
Sentence = Union[str, Sequence[str]]


class Elmo:
    """An exported ELMo package, ready to embed sentences.

    Safe to call from several threads at once: it holds no state that a call changes, and
    ONNX Runtime sessions run concurrently.

    Args:
        package: a package folder written by `elmo-export` (holding `elmo.json`), "default"
            (the default model's int8 package, shipped inside the runtime), a catalog name, or
            "hf:owner/repo[@revision]" (see `elmo_runtime.fetch.resolve.resolve_package` for the order;
            downloads are cached and verified, `ELMO_ONNX_OFFLINE=1` uses the cache only).
        device: "auto" (CUDA when onnxruntime-gpu and a GPU are usable, else the CPU; the
            choice is logged at INFO), "cpu" or "cuda" (an error when CUDA is not usable).
        threads: intra-op threads per ONNX Runtime session (None: its default, one per core).
        batch_tokens: default token budget per batch for `embed` and `embed_iter` (see there);
            None: 512 on the CPU, 4096 on CUDA (`DEFAULT_BATCH_TOKENS`).
        token_cache: token embeddings kept between calls (None: 32 MiB worth; 0: none).
        verify: check the sha256 of every file of the package before loading it (about 0.1 s
            per 100 MB); pass False only for a package verified when it was deployed. Sizes,
            file confinement, the warm state and the parity report are checked either way.
        tokenizer: how raw-text sentences become tokens: "english" (`elmo_runtime.tokenize`,
            the official models' convention), "whitespace" (`str.split`), or a function
            str -> list of str. None: the package's default, "english", except for packages
            whose manifest says the model expects pre-tokenized input (ELMoForManyLangs: UD
            tokens), where raw text is then an error that says how to choose.

    Raises:
        FileNotFoundError: `package` is a path to no directory, or to one without `elmo.json`.
        ValueError: an unknown package name (the known names and accepted forms are listed),
            an unknown device or a bad thread count.
        PackageError: the package is missing files, corrupt or altered (sha256), names files
            outside its directory, was not verified by a passed parity check, or is from a
            newer format version.
        DownloadError: the package could not be downloaded, or offline mode and not cached.
        RuntimeError: device="cuda" and CUDA is not usable (the error lists what is).
    """

    def __init__(
        self,
        package: str | Path = SHIPPED_NAME,
        device: str = "auto",
        threads: int | None = None,
        batch_tokens: int | None = None,
        token_cache: int | None = None,
        verify: bool = True,
        tokenizer: str | Callable[[str], list[str]] | None = None,
    ):
        check_budget(batch_tokens)
        # The low-level path, public for wrappers that need the sessions themselves.
        self.runner = PackageRunner(resolve_package(package), device=device, threads=threads, verify=verify)
        self.manifest = self.runner.manifest
        self.tokenizer = _tokenizer_for(self.manifest.input, tokenizer)
        if token_cache is None:
            token_cache = DEFAULT_CACHE_BYTES // (4 * self.manifest.projection_dim)
        self.token_cache = TokenEmbeddingCache(self.runner.embed_tokens, self.manifest.projection_dim, token_cache)
        if batch_tokens is None:
            batch_tokens = DEFAULT_BATCH_TOKENS.get(self.providers[0], DEFAULT_BATCH_TOKENS[CPU])
        self.batch_tokens = int(batch_tokens)

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime execution providers in use, the preferred one first."""
        return list(self.runner.providers)

    @property
    def dim(self) -> int:
        """Width of each vector: 2 x projection_dim (forward and backward halves)."""
        return self.manifest.output_dim

    @property
    def num_layers(self) -> int:
        """Output layers: the token embedding plus one per LSTM layer."""
        return self.manifest.n_layers + 1

    @property
    def default_state(self) -> str:
        """The state sentences start from unless told otherwise: the package's own mode."""
        return self.manifest.initial_state_mode

    def __repr__(self) -> str:
        return (
            f"Elmo({str(self.manifest.directory)!r}, precision={self.manifest.precision!r}, "
            f"layers={self.num_layers}, dim={self.dim}, provider={self.providers[0]!r})"
        )

    def embed(
        self,
        sentences: Iterable[Sentence],
        layers: Layers = "all",
        pool: str | None = None,
        state: str | None = None,
        return_tokens: bool = False,
        batch_tokens: int | None = None,
        batch_size: int | None = None,
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[list[str]]]:
        """Embed sentences, one float32 array per sentence, in the order given.

        Args:
            sentences: each a str of raw text (tokenized with `elmo_runtime.tokenize`) or a
                list of token strings (used as they are: a token longer than 48 UTF-8 bytes is
                cut to its first 48, as the original does; control characters are embedded as
                their bytes). Wrap a single sentence in a list: a flat list of strings is read
                as that many raw-text sentences.
            layers: "all" -> `(L + 1, T, dim)`; "top" -> the last LSTM layer `(T, dim)`;
                "average" -> the mean of all layers `(T, dim)`; an int (negative counts from
                the top) -> that layer `(T, dim)`; a list of L + 1 floats -> the weighted sum
                `sum_k w[k] * layer[k]` `(T, dim)`, the weights used as given (not normalised;
                for AllenNLP's scalar mix pass `gamma * softmax(s)`).
            pool: None, or "mean" to average over the tokens: one vector per sentence, `(dim,)`
                (`(L + 1, dim)` with layers="all"), like TF-Hub's `default` output. A sentence
                with no tokens pools to zeros.
            state: the LSTM state every sentence starts from: "warm" (the package's warm
                state), "zero", or None for the package's default (`default_state`: warm unless
                the package was exported with a zero state). Every row starts from the same
                state, so batching never changes the vectors.
            return_tokens: also return each sentence's tokens.
            batch_tokens: token positions per batch, padding and the two sentence boundaries
                included (None: the instance's `batch_tokens`, by default 512 on the CPU and
                4096 on CUDA). Memory follows this budget, not the input: a sentence longer
                than the budget runs alone, in time chunks with the LSTM state carried (the
                same vectors as whole).
            batch_size: also cap each batch at this many sentences (None: no cap).

        Returns:
            A list of float32 arrays, or `(arrays, tokens)` with return_tokens. A sentence with
            no tokens gives an array with 0 tokens; no sentences give `[]`.

        Raises:
            TypeError: `sentences` or one sentence or token has the wrong type (the error names
                the sentence and token index).
            ValueError: a bad `layers`, `pool`, `state` or budget; `TokenizerError` (a
                ValueError) when the tokenizer fails on a raw-text sentence (named).
        """
        token_lists = [_as_tokens(s, i, self.tokenizer) for i, s in enumerate(_sentence_iterable(sentences))]
        vectors = self._embed_tokens(token_lists, _Options.make(self, layers, pool, state, batch_tokens, batch_size))
        return (vectors, token_lists) if return_tokens else vectors

    def embed_iter(
        self,
        sentences: Iterable[Sentence],
        layers: Layers = "all",
        pool: str | None = None,
        state: str | None = None,
        return_tokens: bool = False,
        batch_tokens: int | None = None,
        batch_size: int | None = None,
    ) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, list[str]]]:
        """Embed a stream of sentences lazily, yielding one array per sentence in order.

        The input is consumed in chunks of about 4 batches' worth of tokens (`CHUNK_BATCHES` x
        `batch_tokens`), each sorted and batched like `embed`, so memory follows the budget and
        not the length of the stream. The vectors equal `embed`'s.

        Args:
            sentences: any iterable of sentences (a generator over a file, say); see `embed`.
            layers, pool, state, batch_tokens, batch_size: as for `embed` (checked before any
                input is read).
            return_tokens: yield `(array, tokens)` pairs instead of arrays.

        Yields:
            float32 arrays shaped as `embed` returns them (or `(array, tokens)` pairs).

        Raises:
            TypeError, ValueError: as `embed`, when the offending sentence is reached.
        """
        options = _Options.make(self, layers, pool, state, batch_tokens, batch_size)
        iterable = _sentence_iterable(sentences)
        return self._iter(iterable, options, return_tokens)

    def _iter(self, iterable, options: "_Options", return_tokens: bool):
        prepared = (_as_tokens(s, i, self.tokenizer) for i, s in enumerate(iterable))
        chunk_tokens = CHUNK_BATCHES * options.batch_tokens
        for chunk in chunks_by_tokens(prepared, lambda tokens: batch_cost(1, len(tokens)), chunk_tokens):
            vectors = self._embed_tokens(chunk, options)
            if return_tokens:
                yield from zip(vectors, chunk)
            else:
                yield from vectors

    def initial_state(self, rows: int, state: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The state `rows` sentences start from: new arrays `h (L, 2, rows, P)`, `c (L, 2, rows, D)`.

        Args:
            rows: sentences in the batch.
            state: "warm", "zero", or None for the package's default (`default_state`).
        """
        return self.runner.initial_state(_check_state(self, state), rows)

    def embed_with_state(
        self, batch: Sequence[Sentence], h: np.ndarray, c: np.ndarray, layers: Layers = "all", pool: str | None = None
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """One model call on `batch` as given (not sorted or split), from the LSTM state `h`, `c`.

        The low-level stateful call (`ElmoStream` is built on it): row i starts from
        `h[:, :, i]`, `c[:, :, i]`; the state returned is each row's after its own last token
        (and the `</S>` the model adds), ready to feed into the row's next sentence. Start from
        `initial_state(rows)`. Memory follows the batch, not a budget.

        Args:
            batch: sentences, row by row (raw text or token lists, as for `embed`).
            h, c: `(L, 2, rows, P)` and `(L, 2, rows, D)` float32.
            layers, pool: as for `embed`.

        Returns:
            `(vectors, h, c)`: one array per row as `embed` returns them, and the final state.

        Raises:
            ValueError: `h` or `c` of another shape than the batch needs, or bad settings.
            TypeError: a malformed sentence (named), as for `embed`.
        """
        token_lists = [_as_tokens(s, i, self.tokenizer) for i, s in enumerate(_sentence_iterable(batch))]
        options = _Options.make(self, layers, pool, None, None, None)
        m, rows = self.manifest, len(token_lists)
        want_h, want_c = (m.n_layers, 2, rows, m.projection_dim), (m.n_layers, 2, rows, m.dim)
        if np.shape(h) != want_h or np.shape(c) != want_c:
            raise ValueError(
                f"h and c have shapes {np.shape(h)} and {np.shape(c)}; for {rows} sentences this "
                f"package needs {want_h} and {want_c}"
            )
        return self._embed_with_state(token_lists, np.asarray(h, np.float32), np.asarray(c, np.float32), options)

    def stream(self, state: str | None = None) -> "ElmoStream":
        """A stateful embedder: each row's LSTM state carries into the same row of the next call.

        This is how the original TensorFlow model was run (and how its test fixtures were
        made): `stream.embed(batch)` runs the batch as given, row i after row i of the previous
        call, without sorting or splitting it. See `ElmoStream`.

        Args:
            state: the state rows start from (and `reset` returns to): "warm", "zero" (the
                original's), or None for the package's default.
        """
        return ElmoStream(self, _check_state(self, state))

    # -- internals ------------------------------------------------------------------------

    def _embed_with_state(
        self, token_lists: list[list[str]], h: np.ndarray, c: np.ndarray, options: "_Options"
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        if not token_lists:
            return [], h, c
        layers, final_h, final_c = self._run(token_lists, h, c)
        return list(options.per_row(layers, [len(tokens) for tokens in token_lists])), final_h, final_c

    def _embed_tokens(self, token_lists: list[list[str]], options: "_Options") -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(token_lists)
        lengths = [len(tokens) for tokens in token_lists]
        for rows in plan_batches(lengths, options.batch_tokens, options.batch_size):
            if len(rows) == 1 and batch_cost(1, lengths[rows[0]]) > options.batch_tokens:
                out[rows[0]] = self._embed_in_time_chunks(token_lists[rows[0]], options)
                continue
            batch = [token_lists[i] for i in rows]
            h, c = self.runner.initial_state(options.state, len(batch))
            layers, _, _ = self._run(batch, h, c)
            for i, vectors in zip(rows, options.per_row(layers, [lengths[i] for i in rows])):
                out[i] = vectors
        for i, n in enumerate(lengths):
            if n == 0:
                out[i] = options.empty(self)
        return out  # type: ignore[return-value]

    def _embed_in_time_chunks(self, tokens: list[str], options: "_Options") -> np.ndarray:
        """One sentence over the batch budget, in time chunks with the LSTM state carried.

        The biLM's directions are independent stacks: the forward one reads chunks in order,
        carrying its state from each chunk's end into the next; the backward one reads them in
        reverse, from each chunk's start into the one before. Each call runs two rows: chunk k
        for the forward direction and chunk K-1-k for the backward one (whose other direction
        is computed and dropped); only the first chunk has <S> and only the last </S>. So the
        result equals the whole sentence's, and a call holds `2 x (chunk + 2)` positions, within
        the budget, whatever the length.
        """
        n, p = len(tokens), self.manifest.projection_dim
        size = max(1, options.batch_tokens // 2 - BOUNDARY_TOKENS)
        spans = [(start, min(start + size, n)) for start in range(0, n, size)]
        last = len(spans) - 1
        h0, c0 = self.runner.initial_state(options.state, 1)  # (L, 2, 1, P), (L, 2, 1, D)
        forward, backward = (h0, c0), (h0, c0)  # each row's carried state (one direction of it is used)
        sink = options.sink(n, self.num_layers, self.dim)
        for k in range(len(spans)):
            (fs, fe), (bs, be) = spans[k], spans[last - k]
            h = np.concatenate([forward[0], backward[0]], axis=2)
            c = np.concatenate([forward[1], backward[1]], axis=2)
            edges = np.array([[k == 0, k == last], [last - k == 0, last - k == last]], np.int64)
            layers, final_h, final_c = self._run([tokens[fs:fe], tokens[bs:be]], h, c, edges)
            mixed = options.mix_layers(layers)  # (..., 2, T, dim)
            sink.put(mixed[..., 0, : fe - fs, :p], fs, fe, slice(0, p))
            sink.put(mixed[..., 1, : be - bs, p:], bs, be, slice(p, 2 * p))
            forward = final_h[:, :, 0:1], final_c[:, :, 0:1]
            backward = final_h[:, :, 1:2], final_c[:, :, 1:2]
        return sink.result()

    def _run(
        self, batch: list[list[str]], h: np.ndarray, c: np.ndarray, edges: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both graphs on one batch: `layers (L + 1, B, T, dim)`, final `h`, `c`.

        Token embeddings come from the cache, the token embedder running on new tokens only.
        `edges`: see `PackageRunner.bilm`.
        """
        try:
            embeddings, mask = self.token_cache.embed_batch(batch)  # (B, T, P), (B, T)
            if mask.shape[1] == 0:
                # Every row empty: one padding position runs the same as none (the graphs need T > 0).
                embeddings, mask = (
                    np.zeros((len(batch), 1, embeddings.shape[2]), np.float32),
                    np.zeros((len(batch), 1), np.int32),
                )
            return self.runner.bilm(embeddings, mask, h, c, edges)
        except RUN_ERRORS as e:
            raise RuntimeError(
                f"ONNX Runtime failed on a batch of {len(batch)} sentences x "
                f"{max(map(len, batch), default=0)} tokens ({str(e).splitlines()[0]})"
            ) from None


class ElmoStream:
    """Stateful embedding: row i of each call continues from row i of the previous call.

    Made by `Elmo.stream()`. Each batch runs as one model call, as given: rows are not sorted
    or split, so memory follows the batch. A row whose sentence is shorter than the batch's
    longest keeps its state from after its own last token. Rows beyond the current batch keep
    their state untouched; rows new to a larger batch start from the initial state. An empty
    sentence still moves its row's state (through the `<S>` and `</S>` the model adds), as in
    the original.

    One stream is one sequence of calls: calls on it are serialised by a lock; use one stream
    per thread for concurrent streams.
    """

    def __init__(self, elmo: Elmo, state: str):
        self._elmo = elmo
        self._mode = state
        self._h: np.ndarray | None = None  # (L, 2, rows, P)
        self._c: np.ndarray | None = None  # (L, 2, rows, D)
        self._lock = threading.Lock()

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of the carried `h (L, 2, rows, P)` and `c (L, 2, rows, D)`; None before the first call."""
        with self._lock:
            return None if self._h is None else (self._h.copy(), self._c.copy())

    def reset(self) -> None:
        """Forget the carried state: the next call starts every row from the initial state."""
        with self._lock:
            self._h = self._c = None

    def embed(
        self, batch: Sequence[Sentence], layers: Layers = "all", pool: str | None = None, return_tokens: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[list[str]]]:
        """Embed one batch, carrying each row's state in and out.

        Args:
            batch: sentences, row by row (raw text or token lists, as for `Elmo.embed`).
            layers, pool, return_tokens: as for `Elmo.embed`.

        Returns:
            One float32 array per row (or `(arrays, tokens)`), as `Elmo.embed` returns them.
        """
        token_lists = [_as_tokens(s, i, self._elmo.tokenizer) for i, s in enumerate(_sentence_iterable(batch))]
        options = _Options.make(self._elmo, layers, pool, self._mode, None, None)
        if not token_lists:
            return ([], []) if return_tokens else []
        rows = len(token_lists)
        with self._lock:
            h0, c0 = self._elmo.initial_state(rows, self._mode)
            if self._h is not None:
                carried = min(rows, self._h.shape[2])
                h0[:, :, :carried], c0[:, :, :carried] = self._h[:, :, :carried], self._c[:, :, :carried]
            vectors, h, c = self._elmo._embed_with_state(token_lists, h0, c0, options)
            if self._h is not None and self._h.shape[2] > rows:
                h = np.concatenate([h, self._h[:, :, rows:]], axis=2)
                c = np.concatenate([c, self._c[:, :, rows:]], axis=2)
            self._h, self._c = h, c
        return (vectors, token_lists) if return_tokens else vectors


# -- input checking ---------------------------------------------------------------------------


def _sentence_iterable(sentences) -> Iterable:
    if isinstance(sentences, (str, bytes)):
        raise TypeError(
            f"sentences is a single {type(sentences).__name__}; pass a list of sentences, "
            f"e.g. embed([{sentences[:20]!r}])"
        )
    if sentences is None or not isinstance(sentences, Iterable):
        raise TypeError(
            f"sentences is {type(sentences).__name__}; expected a list of sentences "
            "(each a str or a list of token strings)"
        )
    return sentences


TOKENIZERS = {"english": tokenize, "whitespace": str.split}


def _tokenizer_for(input_entry: dict, tokenizer) -> Callable[[str], list[str]] | None:
    """The tokenizer for raw-text sentences: the one asked for, else the package's default.

    Packages of models that expect another tokenization than ours (ELMoForManyLangs: UD
    tokens) say so in their manifest (`input.tokenization: "pretokenized"`): by default they
    get none, and raw text is an error that says what to do.
    """
    if callable(tokenizer):
        return tokenizer
    if tokenizer is None:
        pretokenized = (input_entry or {}).get("tokenization") == "pretokenized"
        return None if pretokenized else tokenize
    if tokenizer not in TOKENIZERS:
        raise ValueError(
            f"tokenizer is {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}, or pass a function str -> list of str"
        )
    return TOKENIZERS[tokenizer]


def _as_tokens(sentence, index: int, tokenizer: Callable[[str], list[str]] | None = tokenize) -> list[str]:
    """One sentence as a list of tokens; TypeError naming the sentence (and token) if malformed."""
    if isinstance(sentence, str):
        if tokenizer is None:
            raise ValueError(
                f"sentence {index} is raw text, but this package's model expects pre-tokenized input "
                "(its manifest: input.tokenization = 'pretokenized'; ELMoForManyLangs models were trained on "
                "Universal Dependencies tokens). Pass each sentence as a list of tokens, or choose a tokenizer: "
                "Elmo(..., tokenizer='whitespace') splits on whitespace, tokenizer='english' is elmo-onnx's "
                "English tokenizer, or pass your own function"
            )
        try:
            return tokenizer(sentence)
        except TokenizerError as e:
            raise TokenizerError(f"sentence {index}: {e}") from None
    if isinstance(sentence, (list, tuple)):
        tokens = list(sentence)
        if all(isinstance(t, str) for t in tokens):
            return tokens
        j, bad = next((j, t) for j, t in enumerate(tokens) if not isinstance(t, str))
        if isinstance(bad, (list, tuple)):
            raise TypeError(
                f"sentence {index}, token {j} is a {type(bad).__name__}, not a str: sentences nest "
                "one level too deep (expected a list of sentences, each a str or a list of str)"
            )
        raise TypeError(f"sentence {index}, token {j} is {type(bad).__name__} {reprlib.repr(bad)}; tokens must be str")
    if isinstance(sentence, bytes):
        raise TypeError(f"sentence {index} is bytes; decode it to str first")
    raise TypeError(
        f"sentence {index} is {type(sentence).__name__} {reprlib.repr(sentence)}; expected a str (raw text) "
        "or a list of token strings"
    )


def _check_state(elmo: Elmo, state: str | None) -> str:
    if state is None:
        return elmo.default_state
    if state not in C.STATE_MODES:
        raise ValueError(
            f"state is {state!r}; choose one of {', '.join(C.STATE_MODES)}, or None (the package's default)"
        )
    if state == C.WARM and elmo.manifest.warm_h is None:
        raise ValueError(
            f"{elmo.manifest.directory} was exported without a warm state; use state='zero' (elmo-embed: --state zero)"
        )
    return state


# The layers a call returns, checked (`_layer_mix`): "all" of them `(L + 1, ...)`, one layer by
# index, or float32 weights `(L + 1,)` of a weighted sum.
LayerMix = Union[str, int, np.ndarray]


@dataclass(frozen=True, eq=False)
class _Options:
    """Checked per-call settings; `make` checks each once, where it comes in."""

    mix: LayerMix
    pool: str | None
    state: str
    batch_tokens: int
    batch_size: int | None

    @classmethod
    def make(
        cls,
        elmo: Elmo,
        layers: Layers,
        pool: str | None,
        state: str | None,
        batch_tokens: int | None,
        batch_size: int | None,
    ) -> "_Options":
        if pool not in POOL_CHOICES:
            raise ValueError(f"pool is {pool!r}; choose None or 'mean'")
        check_budget(batch_tokens, batch_size)  # the instance's own was checked when it was made
        batch_tokens = elmo.batch_tokens if batch_tokens is None else int(batch_tokens)
        return cls(_layer_mix(layers, elmo.num_layers), pool, _check_state(elmo, state), batch_tokens, batch_size)

    def mix_layers(self, layers: np.ndarray) -> np.ndarray:
        """`layers (L + 1, B, T, dim)` -> the chosen layer or mix `(B, T, dim)`, or all of them."""
        if isinstance(self.mix, str):  # "all"
            return layers  # (L + 1, B, T, dim)
        if isinstance(self.mix, int):
            return layers[self.mix]  # (B, T, dim)
        # A sum in a fixed order, value by value: the same roundings whatever the batch's shape.
        # np.tensordot's BLAS call took other paths for other shapes (9.5e-7 apart alone vs batched).
        mixed = self.mix[0] * layers[0]  # (B, T, dim)
        for weight, layer in zip(self.mix[1:], layers[1:]):
            mixed += weight * layer
        return mixed

    def sink(self, n: int, num_layers: int, dim: int) -> "_Sink":
        """Where the time chunks of one `n`-token sentence are put together."""
        shape = (num_layers, n, dim) if isinstance(self.mix, str) else (n, dim)
        return _Sink(shape, n if self.pool == "mean" else None)

    def per_row(self, layers: np.ndarray, lengths: Sequence[int]) -> Iterator[np.ndarray]:
        """`layers (L + 1, B, T, dim)` -> each row's own array, a copy (never a view of the batch)."""
        mixed = self.mix_layers(layers)
        if self.pool == "mean":
            n = np.asarray(lengths)
            mask = (np.arange(mixed.shape[-2])[None, :] < n[:, None]).astype(np.float32)  # (B, T)
            pooled = np.einsum("...btd,bt->b...d", mixed, mask) / np.maximum(n, 1).reshape(-1, *[1] * (mixed.ndim - 2))
            for row in pooled.astype(np.float32):
                yield row.copy()  # (dim,) or (L + 1, dim); zeros for no tokens
        elif mixed.ndim == 4:
            for b, n in enumerate(lengths):
                yield np.array(mixed[:, b, :n], dtype=np.float32, copy=True)  # (L + 1, n, dim)
        else:
            for b, n in enumerate(lengths):
                yield np.array(mixed[b, :n], dtype=np.float32, copy=True)  # (n, dim)

    def empty(self, elmo: Elmo) -> np.ndarray:
        """The array for a sentence with no tokens."""
        shape = (elmo.num_layers, 0, elmo.dim) if isinstance(self.mix, str) else (0, elmo.dim)
        if self.pool == "mean":
            shape = shape[:-2] + shape[-1:]
        return np.zeros(shape, np.float32)


class _Sink:
    """One sentence's output, filled a time chunk and a half (forward or backward) at a time.

    With pooling only the sums are kept: the memory is that of the result, not of the tokens.
    """

    def __init__(self, shape: tuple[int, ...], pool_over: int | None):
        self._pool_over = pool_over
        if pool_over is None:
            self._out = np.empty(shape, np.float32)  # (L + 1, n, dim) or (n, dim)
        else:
            self._out = np.zeros(shape[:-2] + shape[-1:], np.float64)  # (L + 1, dim) or (dim,)

    def put(self, values: np.ndarray, start: int, end: int, half: slice) -> None:
        """`values (..., end - start, half)`: tokens start..end, the columns of one direction."""
        if self._pool_over is None:
            self._out[..., start:end, half] = values
        else:
            self._out[..., half] += values.sum(axis=-2, dtype=np.float64)

    def result(self) -> np.ndarray:
        if self._pool_over is None:
            return self._out
        return (self._out / self._pool_over).astype(np.float32)


def _layer_mix(layers, n: int):
    """Check `layers` against `n` output layers -> "all", a layer index, or float32 weights."""
    choices = f"'all', 'top', 'average', a layer index in {-n}..{n - 1}, or a list of {n} weights"
    if isinstance(layers, str):
        if layers == "all":
            return "all"
        if layers == "top":
            return n - 1
        if layers == "average":
            return np.full(n, 1.0 / n, np.float32)
        raise ValueError(f"layers is {layers!r}; choose {choices}")
    if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        if not -n <= layers < n:
            raise ValueError(f"layers is {layers}; this package has {n} layers: choose {choices}")
        return int(layers) % n
    if isinstance(layers, (list, tuple, np.ndarray)):
        try:
            weights = np.asarray(layers, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"layers is {layers!r}; the weights must be numbers ({choices})") from None
        if weights.shape != (n,) or not np.all(np.isfinite(weights)):
            raise ValueError(f"layers is {layers!r}; expected {n} finite weights ({choices})")
        return weights.astype(np.float32)
    raise ValueError(f"layers is {type(layers).__name__} {reprlib.repr(layers)}; choose {choices}")
