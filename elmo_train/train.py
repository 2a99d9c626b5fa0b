"""Train an ELMo biLM from scratch, as bilm-tf does, and write it in the official layout.

The network is `elmo_export.model`'s own `ElmoBiLm` (char CNN, highway, projection, LSTMP
layers with clips and skip connections), trained as two language models that share the token
embedder and one adaptive softmax: the forward LM reads each sentence as `<S> w1 .. wn </S>`,
the backward LM as `</S> wn .. w1 <S>` (the order in which the reference's backward cells see
it). As in bilm-tf, sentences are laid end to end into `batch_size` continuous streams, cut into
windows of `unroll_steps` tokens, and the LSTM state is carried from one window to the next of
the same stream row (truncated backpropagation through time). Each sentence is scored on its
`n` words and its closing boundary; the next sentence's opening boundary is not a target.

Output folder:
    options.json, weights.hdf5   the official files (`save_weights`), loadable by AllenNLP
    vocab.txt                    the corpus vocabulary, `word<TAB>count`
    softmax.hdf5                 the shared adaptive softmax, for scoring text (not official)
    training.json                settings, steps, time, held-out perplexities
    heldout_sample.txt           a few held-out sentences, for tests of the shipped model

Training is seeded and, on CPU with one thread, bitwise reproducible for a given step count.
With `minutes` and no `steps`, the step budget is estimated from the speed of the first steps
(before the learning-rate warm-up ends, so the schedule is that of `steps=budget`) and written
to `training.json`: pass it as `--steps` to repeat the run exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import h5py
import numpy as np
import torch
from torch import nn

from elmo_export.architectures import ARCHITECTURES
from elmo_export.model import ElmoBiLm, ElmoOptions, LstmState
from elmo_export.sentences import read_sentences
from elmo_export.weights import check_storage, load_reference, save_weights
from elmo_runtime import contract
from elmo_runtime.chars import tokens_to_char_ids
from elmo_train.corpus import UNK_TOKEN, read_vocab

log = logging.getLogger(__name__)

FORWARD, BACKWARD = 0, 1
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2  # rows of vocab.txt

# The architecture `train` builds unless told otherwise (`elmo_export.architectures`).
DEFAULT_ARCHITECTURE = "default-wordnet"


@dataclass(frozen=True)
class TrainSettings:
    """How to train. `steps` or `minutes` (or both) bound the run."""

    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 64
    unroll_steps: int = 20
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05  # linear decay from the peak to this share of it
    clip_norm: float = 1.0
    dropout: float = 0.1
    cutoffs: tuple[int, ...] = (2000, 10000)  # adaptive softmax clusters (vocab rows)
    div_value: float = 4.0
    seed: int = 0
    calibration_steps: int = 30  # steps timed to turn `minutes` into a step budget
    log_every: int = 50
    eval_every: int = 1000  # held-out check on `eval_sentences` sentences; 0: only at the end
    eval_sentences: int = 500
    eval_batch_size: int = 32
    heldout_sample: int = 200  # held-out sentences copied next to the model

    def check(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps, minutes or both")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps is {self.steps}, expected >= 1")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes is {self.minutes}, expected > 0")
        for name in ("batch_size", "unroll_steps", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}, expected >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout is {self.dropout}, expected 0 <= dropout < 1")


class BiLanguageModel(nn.Module):
    """An `ElmoBiLm` with the shared softmax that trains it as a forward and a backward LM."""

    def __init__(
        self,
        options: ElmoOptions,
        n_words: int,
        cutoffs: Sequence[int] = TrainSettings.cutoffs,
        div_value: float = TrainSettings.div_value,
        dropout: float = TrainSettings.dropout,
    ):
        super().__init__()
        self.bilm = ElmoBiLm(options)
        # Clusters past the vocabulary are dropped; the softmax needs at least one.
        cutoffs = [c for c in cutoffs if c < n_words - 1] or [max(1, n_words // 2)]
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(options.projection_dim, n_words, cutoffs, div_value=div_value)
        self.dropout = nn.Dropout(dropout)
        self.max_filter_width = max(w for w, _ in options.filters)

    def embed_types(self, char_ids: torch.Tensor, n_bytes: torch.Tensor) -> torch.Tensor:
        """`(U, 50)` char ids of distinct tokens -> `(U, P)` token embeddings.

        Char positions that hold only padding in every token are cut, keeping one all-padding
        window per filter where the full width has one: the max-pool sees the same values, so
        this is exact, and about twice as fast on ordinary words.
        """
        width = min(char_ids.shape[1], int(n_bytes.max()) + 2 + self.max_filter_width)
        return self.bilm.token_embedder(char_ids[None, :, :width])[0]  # (U, P)

    def run_lm(
        self, direction: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One direction's LSTM stack over token embeddings in reading order.

        Args:
            direction: 0 forward, 1 backward (its cells; the caller reverses the text).
            x: `(B, T, P)` token embeddings.
            h: `(L, B, P)`, c: `(L, B, D)` the state at the window's start.

        Returns:
            `(top (B, T, P), h, c)`: the top layer's outputs and the state after the window.
        """
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        hs, cs = [], []
        inputs = x
        for layer, cells in enumerate(self.bilm.cells):
            inputs = self.dropout(inputs)  # bilm-tf: dropout on every layer's input
            out, h_l, c_l = self.bilm.run_direction(cells[direction], inputs, lengths, h[layer], c[layer])
            if layer > 0 and self.bilm.options.use_skip_connections:
                out = out + inputs  # (B, T, P)
            hs.append(h_l)
            cs.append(c_l)
            inputs = out
        return inputs, torch.stack(hs), torch.stack(cs)

    def forward(
        self, char_ids: torch.Tensor, n_bytes: torch.Tensor, tokens: torch.Tensor, state: LstmState
    ) -> tuple[torch.Tensor, LstmState]:
        """Both LMs over one window.

        Args:
            char_ids: `(U, 50)` char ids of the window's distinct tokens; `n_bytes (U,)`.
            tokens: `(2, B, T)` indices into `char_ids`; row 0 the forward stream, row 1 the
                backward (reversed-sentence) stream.
            state: `h (L, 2, B, P)`, `c (L, 2, B, D)` carried from the previous window.

        Returns:
            `(top (2, B, T, P), state)`: each LM's top layer (after dropout) and the new state.
        """
        embedded = self.embed_types(char_ids, n_bytes)[tokens]  # (2, B, T, P)
        tops, hs, cs = [], [], []
        for direction in (FORWARD, BACKWARD):
            top, h, c = self.run_lm(direction, embedded[direction], state.h[:, direction], state.c[:, direction])
            tops.append(self.dropout(top))
            hs.append(h)
            cs.append(c)
        return torch.stack(tops), LstmState(torch.stack(hs, dim=1), torch.stack(cs, dim=1))

    def target_log_probs(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`top (..., P)`, `targets (...)` vocab ids -> `(...)` log p(target)."""
        flat = self.softmax(top.reshape(-1, top.shape[-1]), targets.reshape(-1)).output
        return flat.reshape(targets.shape)


def init_like_bilm_tf(model: BiLanguageModel) -> None:
    """Start where bilm-tf starts: forget gates open, highway carrying, uniform char vectors."""
    d = model.bilm.options.dim
    with torch.no_grad():
        embedding = model.bilm.token_embedder.char_embedding.weight
        embedding.uniform_(-1.0, 1.0)
        embedding[0].zero_()  # the padding row (char ids are shifted by 1); never trained
        for carry in model.bilm.token_embedder.highway_carry:
            carry.bias.fill_(-2.0)  # bilm-tf's b_carry: the gate starts mostly closed
        for cells in model.bilm.cells:
            for cell in cells:
                cell.input_to_gates.bias.zero_()
                # TF's forget_bias=1.0, which the module's bias carries and the file does not.
                cell.input_to_gates.bias[2 * d : 3 * d] = 1.0


class Encoded(NamedTuple):
    """Sentences as indices into a table of distinct tokens."""

    char_ids: torch.Tensor  # (N, 50) int32 char ids of each distinct token
    n_bytes: torch.Tensor  # (N,) bytes of each token (1 for <S>, </S>)
    word_ids: torch.Tensor  # (N,) int64 vocabulary row of each token (<UNK> if none)
    sentences: list[np.ndarray]  # per sentence, its tokens as int64 table indices


def encode(sentences: Sequence[Sequence[str]], vocab: dict[str, int]) -> Encoded:
    """Build the token table of `sentences`; table rows 0 and 1 are `<S>` and `</S>`."""
    index = {contract.BOS_TOKEN: 0, contract.EOS_TOKEN: 1}
    ids = [np.fromiter((index.setdefault(t, len(index)) for t in s), dtype=np.int64, count=len(s)) for s in sentences]
    types = list(index)
    n_bytes = [min(len(t.encode("utf-8", "ignore")), contract.MAX_TOKEN_BYTES) for t in types]
    n_bytes[0] = n_bytes[1] = 1
    unk = vocab[UNK_TOKEN]
    return Encoded(
        torch.from_numpy(tokens_to_char_ids(types)),
        torch.tensor(n_bytes),
        torch.tensor([vocab.get(t, unk) for t in types], dtype=torch.long),
        ids,
    )


class Streams(NamedTuple):
    """Sentences laid end to end in `B` rows, for both directions."""

    tokens: torch.Tensor  # (2, B, N) table indices; N = k * unroll_steps + 1
    scored: torch.Tensor  # (2, B, N - 1) bool: whether the target at t + 1 counts


def make_streams(sentences: Sequence[np.ndarray], order: np.ndarray, rows: int, unroll_steps: int) -> Streams:
    """Split `sentences` (in `order`) into `rows` contiguous runs of similar token counts.

    The forward stream reads each sentence as `<S> w1 .. wn </S>`, the backward one as
    `</S> wn .. w1 <S>`; rows are padded at the end (padding is never scored).
    """
    sizes = np.array([len(sentences[i]) + 2 for i in order])
    starts = np.cumsum(sizes) - sizes
    group = np.minimum(starts * rows // max(int(sizes.sum()), 1), rows - 1)
    row_tokens = []
    for r in range(rows):
        members = order[group == r]
        fwd = [np.concatenate([[0], sentences[i], [1]]) for i in members]
        bwd = [np.concatenate([[1], sentences[i][::-1], [0]]) for i in members]
        row_tokens.append(
            (np.concatenate(fwd or [np.zeros(0, np.int64)]), np.concatenate(bwd or [np.zeros(0, np.int64)]))
        )
    longest = max(len(f) for f, _ in row_tokens)
    n = max(1, math.ceil((longest - 1) / unroll_steps)) * unroll_steps + 1
    tokens = np.zeros((2, rows, n), dtype=np.int64)
    real = np.zeros((rows, n), dtype=bool)
    for r, (f, b) in enumerate(row_tokens):
        tokens[0, r, : len(f)], tokens[1, r, : len(b)], real[r, : len(f)] = f, b, True
    # A target counts if it is real and not the next sentence's opening boundary.
    scored = np.stack([real[:, 1:] & (tokens[0, :, 1:] != 0), real[:, 1:] & (tokens[1, :, 1:] != 1)])
    return Streams(torch.from_numpy(tokens), torch.from_numpy(scored))


class Window(NamedTuple):
    char_ids: torch.Tensor  # (U, 50)
    n_bytes: torch.Tensor  # (U,)
    tokens: torch.Tensor  # (2, B, T) indices into char_ids
    targets: torch.Tensor  # (2, B, T) vocab ids
    scored: torch.Tensor  # (2, B, T) bool


def windows(encoded: Encoded, streams: Streams, unroll_steps: int) -> Iterator[Window]:
    """Consecutive windows of the streams, each with its distinct tokens' char ids."""
    n = streams.tokens.shape[2]
    for start in range(0, n - 1, unroll_steps):
        inputs = streams.tokens[:, :, start : start + unroll_steps]  # (2, B, T)
        distinct, local = torch.unique(inputs, return_inverse=True)
        yield Window(
            encoded.char_ids[distinct],
            encoded.n_bytes[distinct],
            local,
            encoded.word_ids[streams.tokens[:, :, start + 1 : start + unroll_steps + 1]],
            streams.scored[:, :, start : start + unroll_steps],
        )


@torch.no_grad()
def evaluate(
    model: BiLanguageModel,
    sentences: Sequence[Sequence[str]],
    vocab: dict[str, int],
    batch_size: int = 32,
    unroll_steps: int = 20,
) -> dict[str, float]:
    """Held-out perplexity of each LM, sentences read in order with the state carried.

    Returns:
        `{"forward": ppl, "backward": ppl, "tokens": n}`, `n` the targets scored per direction
        (each sentence's words and its closing boundary).
    """
    was_training = model.training
    model.eval()
    encoded = encode(sentences, vocab)
    rows = max(1, min(batch_size, len(sentences)))
    streams = make_streams(encoded.sentences, np.arange(len(sentences)), rows, unroll_steps)
    state = model.bilm.zero_state(rows)
    total = torch.zeros(2, dtype=torch.float64)
    for window in windows(encoded, streams, unroll_steps):
        top, state = model(window.char_ids, window.n_bytes, window.tokens, state)
        log_p = model.target_log_probs(top, window.targets)  # (2, B, T)
        total -= (log_p * window.scored).sum(dim=(1, 2)).double()
    count = int(streams.scored[0].sum())
    model.train(was_training)
    return {"forward": math.exp(total[0] / count), "backward": math.exp(total[1] / count), "tokens": count}


def unigram_perplexity(sentences: Sequence[Sequence[str]], vocab_rows: Sequence[tuple[str, int]]) -> float:
    """Perplexity of the training counts' unigram distribution on the same targets.

    The outcomes are the vocabulary's words, `<UNK>` and one sentence boundary (the closing
    one: `</S>` forward, `<S>` backward, equally frequent), so the value serves both directions.
    """
    counts = {w: n for w, n in vocab_rows}
    total = sum(n for w, n in vocab_rows if w != contract.BOS_TOKEN)
    if total <= 0:
        raise ValueError("vocab counts are missing: unigram perplexity needs `word<TAB>count` rows")
    unk = counts.get(UNK_TOKEN, 0)
    if unk == 0:  # a vocabulary that kept every word: one pseudo-count, so no target gets p = 0
        unk, total = 1, total + 1
    nll, n = 0.0, 0
    for s in sentences:
        for t in [*s, contract.EOS_TOKEN]:
            c = counts.get(t, 0) if t not in (contract.BOS_TOKEN, UNK_TOKEN) else 0
            nll -= math.log((c or unk) / total)
            n += 1
    return math.exp(nll / n)


def lr_factor(step: int, settings: TrainSettings, total_steps: int | None) -> float:
    """Linear warm-up, then linear decay to `final_lr_fraction` at `total_steps`."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if total_steps is None:
        return 1.0
    progress = min(1.0, (step - settings.warmup_steps) / max(1, total_steps - settings.warmup_steps))
    return 1.0 - (1.0 - settings.final_lr_fraction) * progress


def save_softmax(softmax: nn.AdaptiveLogSoftmaxWithLoss, path: str | Path) -> None:
    """The adaptive softmax's weights by their PyTorch names, its shape as attributes."""
    with h5py.File(path, "w") as fout:
        fout.attrs["in_features"] = softmax.in_features
        fout.attrs["n_classes"] = softmax.n_classes
        fout.attrs["cutoffs"] = np.asarray(softmax.cutoffs[:-1], dtype=np.int64)
        fout.attrs["div_value"] = softmax.div_value
        for name, value in softmax.state_dict().items():
            fout.create_dataset(name, data=value.numpy())


def load_softmax(path: str | Path) -> nn.AdaptiveLogSoftmaxWithLoss:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"softmax file not found: {path}")
    with h5py.File(path, "r") as fin:
        check_storage(fin, path, list(fin))  # its bytes must not come from other files either
        softmax = nn.AdaptiveLogSoftmaxWithLoss(
            int(fin.attrs["in_features"]),
            int(fin.attrs["n_classes"]),
            [int(c) for c in fin.attrs["cutoffs"]],
            div_value=float(fin.attrs["div_value"]),
        )
        softmax.load_state_dict({name: torch.from_numpy(fin[name][...]) for name in softmax.state_dict()})
    return softmax.eval()


def load_language_model(model_dir: str | Path) -> tuple[BiLanguageModel, list[tuple[str, int]]]:
    """A trained model folder -> (the model in eval mode, its vocabulary rows)."""
    model_dir = Path(model_dir)
    bilm = load_reference(model_dir / contract.OPTIONS_FILE, model_dir / contract.WEIGHTS_FILE)
    vocab_rows = read_vocab(model_dir / "vocab.txt")
    softmax = load_softmax(model_dir / "softmax.hdf5")
    if softmax.n_classes != len(vocab_rows):
        raise ValueError(f"{model_dir}: softmax has {softmax.n_classes} classes, vocab.txt {len(vocab_rows)} rows")
    model = BiLanguageModel(bilm.options, len(vocab_rows), dropout=0.0)
    model.bilm, model.softmax = bilm, softmax
    return model.eval(), vocab_rows


def write_model(model: BiLanguageModel, out_dir: Path, vocab_path: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    options = model.bilm.options.to_dict()
    (out_dir / contract.OPTIONS_FILE).write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
    save_weights(model.bilm, out_dir / contract.WEIGHTS_FILE)
    save_softmax(model.softmax, out_dir / "softmax.hdf5")
    if vocab_path.resolve() != (out_dir / "vocab.txt").resolve():
        shutil.copyfile(vocab_path, out_dir / "vocab.txt")


class TrainResult(NamedTuple):
    model: BiLanguageModel  # the trained model, in eval mode
    record: dict  # what `training.json` holds


class _Corpus(NamedTuple):
    vocab_rows: list[tuple[str, int]]
    vocab: dict[str, int]  # word -> vocabulary row
    train_sentences: list[list[str]]
    heldout: list[list[str]]
    encoded: Encoded  # the training sentences as token-table indices

    @property
    def train_tokens(self) -> int:
        return sum(len(s) for s in self.train_sentences)

    def epochs(self, step: int, settings: TrainSettings) -> float:
        """Passes over the training text after `step` steps (boundaries counted as tokens)."""
        seen = step * settings.batch_size * settings.unroll_steps
        return seen / (self.train_tokens + 2 * len(self.train_sentences))


def _read_corpus(corpus: Path) -> _Corpus:
    for name in ("train.txt", "heldout.txt", "vocab.txt"):
        if not (corpus / name).is_file():
            raise FileNotFoundError(f"{corpus / name} not found; make the corpus with elmo_train.corpus")
    vocab_rows = read_vocab(corpus / "vocab.txt")
    vocab = {w: i for i, (w, _) in enumerate(vocab_rows)}
    train_sentences = read_sentences(corpus / "train.txt")
    data = _Corpus(
        vocab_rows, vocab, train_sentences, read_sentences(corpus / "heldout.txt"), encode(train_sentences, vocab)
    )
    log.info(
        "corpus: %d train sentences, %d tokens, %d distinct; %d held-out sentences; vocab %d",
        len(train_sentences),
        data.train_tokens,
        len(data.encoded.n_bytes),
        len(data.heldout),
        len(vocab_rows),
    )
    return data


class _Budget:
    """When to stop: after `settings.steps`, or a step budget timed from the first steps for `minutes`.

    The steps from the 3rd to the `3 + calibration_steps`th are timed (the first ones are slower)
    before the warm-up ends, so the learning-rate schedule is that of `steps=budget`.
    """

    def __init__(self, settings: TrainSettings):
        self.settings = settings
        self.total_steps = settings.steps
        self.started = time.perf_counter()
        self.deadline = None if settings.minutes is None else self.started + settings.minutes * 60
        self._calibration_start: float | None = None

    def after_step(self, step: int) -> None:
        settings = self.settings
        if step == 3:
            self._calibration_start = time.perf_counter()
        if settings.steps is None and step == 3 + settings.calibration_steps:
            per_step = (time.perf_counter() - self._calibration_start) / settings.calibration_steps
            self.total_steps = max(step + 1, int((self.deadline - self.started) / per_step))
            log.info(
                "%.3f s a step: a budget of %d steps for %.1f minutes", per_step, self.total_steps, settings.minutes
            )
            if self.total_steps <= settings.warmup_steps:
                log.warning("the budget is inside the warm-up (%d steps)", settings.warmup_steps)

    def done(self, step: int) -> bool:
        if self.total_steps is not None and step >= self.total_steps:
            return True
        if self.deadline is not None and time.perf_counter() > self.deadline + 0.25 * (self.deadline - self.started):
            log.warning("stopping at step %d of %s: over the time limit by a quarter", step, self.total_steps)
            return True
        return False

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def _train_step(
    model: BiLanguageModel,
    optimizer: torch.optim.Optimizer,
    window: Window,
    state: LstmState,
    lr: float,
    clip_norm: float,
) -> tuple[torch.Tensor, LstmState]:
    """One optimizer step on one window: -> each LM's mean loss `(2,)` and the carried state."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    top, state = model(window.char_ids, window.n_bytes, window.tokens, state)
    state = LstmState(state.h.detach(), state.c.detach())  # truncated backpropagation through time
    log_p = model.target_log_probs(top, window.targets)  # (2, B, T)
    per_direction = -(log_p * window.scored).sum(dim=(1, 2)) / window.scored.sum(dim=(1, 2)).clamp(min=1)  # (2,)
    optimizer.zero_grad(set_to_none=True)
    per_direction.mean().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return per_direction.detach(), state


def _log_losses(running: list[torch.Tensor], step: int, epoch: int, lr: float, budget: _Budget) -> dict:
    """Log the mean losses since the last log; -> the `loss_history` entry."""
    mean = torch.stack(running).mean(dim=0)
    log.info(
        "step %d epoch %d lr %.2e loss fwd %.3f bwd %.3f (ppl %.1f / %.1f) %.0f s",
        step,
        epoch,
        lr,
        mean[0],
        mean[1],
        math.exp(mean[0]),
        math.exp(mean[1]),
        budget.seconds,
    )
    return {"step": step, "loss_forward": float(mean[0]), "loss_backward": float(mean[1])}


def _run_record(
    model: BiLanguageModel,
    data: _Corpus,
    settings: TrainSettings,
    out: Path,
    step: int,
    budget: _Budget,
    history: list[dict],
) -> dict:
    """Held-out perplexities, the held-out sample written beside the model, and the run record."""
    train_seconds = budget.seconds
    log.info("trained %d steps (%.2f epochs) in %.1f minutes", step, data.epochs(step, settings), train_seconds / 60)
    ppl = evaluate(model, data.heldout, data.vocab, settings.eval_batch_size, settings.unroll_steps)
    unigram = unigram_perplexity(data.heldout, data.vocab_rows)
    log.info(
        "held-out perplexity: forward %.2f, backward %.2f, unigram %.2f (%d targets)",
        ppl["forward"],
        ppl["backward"],
        unigram,
        ppl["tokens"],
    )
    sample_every = max(1, len(data.heldout) // max(settings.heldout_sample, 1))
    sample = data.heldout[::sample_every][: settings.heldout_sample]
    (out / "heldout_sample.txt").write_text("".join(" ".join(s) + "\n" for s in sample), encoding="utf-8")
    return {
        "settings": asdict(settings),
        "steps_done": step,
        "step_budget": budget.total_steps,
        "epochs": data.epochs(step, settings),
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": {
            "bilm": sum(p.numel() for p in model.bilm.parameters()),
            "softmax": sum(p.numel() for p in model.softmax.parameters()),
        },
        "corpus": {
            "train_sentences": len(data.train_sentences),
            "train_tokens": data.train_tokens,
            "heldout_sentences": len(data.heldout),
            "vocab": len(data.vocab_rows),
        },
        "heldout_perplexity": {
            "forward": ppl["forward"],
            "backward": ppl["backward"],
            "unigram": unigram,
            "targets": ppl["tokens"],
        },
        "sample_perplexity": {
            **evaluate(model, sample, data.vocab, settings.eval_batch_size, settings.unroll_steps),
            "unigram": unigram_perplexity(sample, data.vocab_rows),
        },
        "loss_history": history,
    }


def _new_model(elmo_options: ElmoOptions, n_words: int, settings: TrainSettings) -> BiLanguageModel:
    """A biLM initialized as bilm-tf does, in training mode."""
    model = BiLanguageModel(elmo_options, n_words, settings.cutoffs, settings.div_value, settings.dropout)
    init_like_bilm_tf(model)
    model.train()
    log.info(
        "parameters: biLM %d (file: %d), softmax %d",
        sum(p.numel() for p in model.bilm.parameters()),
        elmo_options.parameter_count(),
        sum(p.numel() for p in model.softmax.parameters()),
    )
    return model


def _checkpoint(
    model: BiLanguageModel, data: _Corpus, settings: TrainSettings, step: int, out: Path, corpus: Path
) -> None:
    """Log the held-out perplexity on the first `eval_sentences` and write the model so far."""
    eval_subset = data.heldout[: settings.eval_sentences]
    ppl = evaluate(model, eval_subset, data.vocab, settings.eval_batch_size, settings.unroll_steps)
    log.info(
        "step %d held-out (%d sentences) ppl fwd %.1f bwd %.1f",
        step,
        len(eval_subset),
        ppl["forward"],
        ppl["backward"],
    )
    write_model(model, out, corpus / "vocab.txt")  # a usable model even if stopped


def train(
    corpus: str | Path,
    out: str | Path,
    options: dict | None = None,
    settings: TrainSettings = TrainSettings(steps=1000),
) -> TrainResult:
    """Train a biLM on `corpus` (`train.txt`, `heldout.txt`, `vocab.txt`) and write it to `out`.

    Args:
        corpus: folder made by `elmo_train.corpus` (or alike).
        out: output folder (created).
        options: the architecture in the official `options.json` layout; default
            `ARCHITECTURES["default-wordnet"]`.
        settings: the training settings.

    Returns:
        The trained model and the run record (also written to `out/training.json`).

    Raises:
        FileNotFoundError: a corpus file is missing.
        ValueError: bad settings or options.
    """
    settings.check()
    corpus, out = Path(corpus), Path(out)
    data = _read_corpus(corpus)
    options_dict = options if options is not None else ARCHITECTURES[DEFAULT_ARCHITECTURE]
    elmo_options = ElmoOptions.from_dict(options_dict, source="training options")

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = _new_model(elmo_options, len(data.vocab_rows), settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    budget = _Budget(settings)
    step, epoch, running, history = 0, 0, [], []
    done = False
    while not done:
        order = rng.permutation(len(data.train_sentences))
        streams = make_streams(data.encoded.sentences, order, settings.batch_size, settings.unroll_steps)
        state = model.bilm.zero_state(settings.batch_size)
        for window in windows(data.encoded, streams, settings.unroll_steps):
            lr = settings.learning_rate * lr_factor(step, settings, budget.total_steps)
            per_direction, state = _train_step(model, optimizer, window, state, lr, settings.clip_norm)
            step += 1
            running.append(per_direction)
            budget.after_step(step)
            if step % settings.log_every == 0:
                history.append(_log_losses(running, step, epoch, lr, budget))
                running = []
            if settings.eval_every and step % settings.eval_every == 0:
                _checkpoint(model, data, settings, step, out, corpus)
            done = budget.done(step)
            if done:
                break
        epoch += 1

    write_model(model, out, corpus / "vocab.txt")
    record = _run_record(model, data, settings, out, step, budget, history)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TrainResult(model.eval(), record)


def main(argv: list[str] | None = None) -> None:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description="Train an ELMo biLM and write it in the official layout.")
    parser.add_argument("--corpus", type=Path, required=True, help="folder with train.txt, heldout.txt, vocab.txt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--options", type=Path, help="an options.json to train instead of --architecture")
    parser.add_argument("--steps", type=int, help="step budget (exact reproduction of a run)")
    parser.add_argument("--minutes", type=float, help="time budget; the step budget is estimated from it")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--unroll-steps", type=int, default=defaults.unroll_steps)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--cutoffs", type=int, nargs="*", default=list(defaults.cutoffs))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    options = json.loads(args.options.read_text(encoding="utf-8")) if args.options else ARCHITECTURES[args.architecture]
    settings = TrainSettings(
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        unroll_steps=args.unroll_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        dropout=args.dropout,
        cutoffs=tuple(args.cutoffs),
        seed=args.seed,
        eval_every=args.eval_every,
    )
    try:
        train(args.corpus, args.out, options, settings)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
