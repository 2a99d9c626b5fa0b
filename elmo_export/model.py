"""The ELMo biLM in PyTorch: the reference every export is measured against.

Top to bottom: options -> char CNN token embedder -> LSTM-with-projection cell -> biLM.
Written plainly, a Python loop over time steps: this is the yardstick, not the fast path.
Weights are in TF's convention (gates i, j, f, o; y = x @ W); `weights.py` moves them in.

Shapes: B batch rows, T tokens, C characters per token, E char embedding, F CNN filters in
all, P projection, D LSTM cells, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from elmo_runtime import contract
from elmo_runtime.jsonfile import json_field, read_json
from elmo_runtime.token_schemes import WORD_IDS, ByteScheme, TokenScheme

# The char vocabulary: 256 bytes + 5 marks, shifted by one so that id 0 is a padding row.
N_CHAR_IDS = 262
# Sane bounds, far above any published ELMo (the largest, "5.5B": LSTM 4096 x 512, 2 layers, 2
# highway layers, 7 filter widths, 93.6M parameters), checked before anything is built: a typo
# such as "dim": 10000000 would otherwise allocate tens of GB before the weights are read.
LIMITS = {
    "char_embedding_dim": 4096,
    "dim": 65536,
    "projection_dim": 65536,
    "n_layers": 64,
    "n_highway": 64,
    "filters": 256,
    # Other families: bilm-tf's tunable char width (NLPL), ELMoForManyLangs' word vectors.
    "max_characters_per_token": contract.MAX_CHARACTERS_PER_TOKEN_LIMIT,
    "word_dim": 65536,
}
MAX_PARAMETERS = 4_000_000_000


@dataclass(frozen=True)
class ElmoOptions:
    """The architecture, as in the official `options.json`."""

    char_embedding_dim: int
    filters: tuple[tuple[int, int], ...]  # (width, number of filters)
    n_highway: int
    activation: str
    dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    use_skip_connections: bool
    n_characters: int = N_CHAR_IDS
    max_characters_per_token: int = contract.MAX_CHARACTERS_PER_TOKEN
    # bilm-tf has no CNN_proj when the filters already sum to projection_dim, and no W_P_0
    # when projection_dim is not below dim (an LSTMCell without num_proj).
    token_projection: bool = True
    lstm_projection: bool = True
    # ELMoForManyLangs: a per-model char dictionary (its size; None: the 262-id byte scheme)
    # and a word embedding concatenated, word part first, before the projection.
    char_vocab_size: int | None = None
    word_dim: int = 0
    word_vocab_size: int = 0

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @property
    def char_table_rows(self) -> int:
        """Rows of the char embedding table: id 0 (a zero row) for padding tokens, then the ids."""
        return N_CHAR_IDS if self.char_vocab_size is None else self.char_vocab_size + 1

    @classmethod
    def from_file(cls, path: str | Path) -> "ElmoOptions":
        """Read an `options.json`. Raises ValueError naming the file and the bad field."""
        return cls.from_dict(read_json(path, "options file"), source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "options") -> "ElmoOptions":
        """Parse and check the official nested layout (`{"lstm": ..., "char_cnn": ...}`)."""

        def field(section: str, *keys: str, kind: type | tuple = int, default=...):
            path = ".".join((section, *keys))
            if default is ...:
                return json_field(data, path, kind, source)
            return json_field(data, path, kind, source, default=default)

        filters = field("char_cnn", "filters", kind=list)
        if not filters or not all(
            isinstance(f, list) and len(f) == 2 and all(type(v) is int and v > 0 for v in f) for f in filters
        ):
            raise ValueError(f"{source}: field char_cnn.filters is {filters!r}, expected [[width, count], ...]")
        number = (int, float)
        options = cls(
            char_embedding_dim=field("char_cnn", "embedding", "dim"),
            filters=tuple((w, n) for w, n in filters),
            n_highway=field("char_cnn", "n_highway", default=0),  # bilm-tf's default
            activation=field("char_cnn", "activation", kind=str),
            dim=field("lstm", "dim"),
            projection_dim=field("lstm", "projection_dim"),
            n_layers=field("lstm", "n_layers", default=1),  # bilm-tf's default
            cell_clip=field("lstm", "cell_clip", kind=number, default=None),
            proj_clip=field("lstm", "proj_clip", kind=number, default=None),
            use_skip_connections=field("lstm", "use_skip_connections", kind=bool, default=False),
            n_characters=field("char_cnn", "n_characters", default=N_CHAR_IDS),
            max_characters_per_token=field(
                "char_cnn", "max_characters_per_token", default=contract.MAX_CHARACTERS_PER_TOKEN
            ),
        )
        p, d = options.projection_dim, options.dim
        if p > d:
            # bilm-tf then runs an LSTMCell without projection whose D-wide output cannot
            # stack with the P-wide token layer: no working model has it.
            raise ValueError(f"{source}: lstm.projection_dim {p} > lstm.dim {d}: not a bilm-tf architecture")
        options = dataclasses.replace(options, token_projection=options.n_filters != p, lstm_projection=p < d)
        options.check(source)
        return options

    def check(self, source: str = "options") -> None:
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"{source}: char_cnn.activation is {self.activation!r}, expected relu or tanh")
        if self.max_characters_per_token < 3:
            raise ValueError(
                f"{source}: char_cnn.max_characters_per_token is {self.max_characters_per_token}, expected >= 3"
            )
        # Trained models say 261 (no padding id), exported ones 262; both index the same table.
        if self.char_vocab_size is None and self.n_characters not in (N_CHAR_IDS - 1, N_CHAR_IDS):
            raise ValueError(f"{source}: char_cnn.n_characters is {self.n_characters}, expected 261 or 262")
        for name in ("char_embedding_dim", "dim", "projection_dim", "n_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{source}: {name} is {getattr(self, name)}, expected > 0")
        if self.n_highway < 0:
            raise ValueError(f"{source}: char_cnn.n_highway is {self.n_highway}, expected >= 0")
        if max(w for w, _ in self.filters) > self.max_characters_per_token:
            raise ValueError(f"{source}: a filter is wider than {self.max_characters_per_token} characters")
        if not self.token_projection and self.word_dim + self.n_filters != self.projection_dim:
            raise ValueError(
                f"{source}: without a token projection the filters ({self.n_filters}) must sum to "
                f"projection_dim ({self.projection_dim})"
            )
        if not self.lstm_projection and self.projection_dim != self.dim:
            raise ValueError(
                f"{source}: without an LSTM projection, projection_dim ({self.projection_dim}) "
                f"must equal dim ({self.dim})"
            )
        for name, limit in LIMITS.items():
            value = len(self.filters) if name == "filters" else getattr(self, name)
            if value > limit:
                raise ValueError(f"{source}: {name} is {value}, above the sane limit {limit} (a typo?)")
        if max(n for _, n in self.filters) > LIMITS["dim"]:
            raise ValueError(f"{source}: a filter count of char_cnn.filters is above the sane limit {LIMITS['dim']}")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(
                f"{source}: these options make {self.parameter_count():,} parameters, above the sane "
                f"limit {MAX_PARAMETERS:,} (a typo?)"
            )
        for name in ("cell_clip", "proj_clip"):
            clip = getattr(self, name)
            if clip is not None and not (math.isfinite(clip) and clip > 0):
                raise ValueError(f"{source}: lstm.{name} is {clip}, expected a positive finite number (or no field)")

    def to_dict(self) -> dict:
        """The official nested layout, as written to `options.json`."""
        lstm = {
            "dim": self.dim,
            "projection_dim": self.projection_dim,
            "n_layers": self.n_layers,
            "use_skip_connections": self.use_skip_connections,
        }
        if self.cell_clip is not None:
            lstm["cell_clip"] = self.cell_clip
        if self.proj_clip is not None:
            lstm["proj_clip"] = self.proj_clip
        out = {
            "lstm": lstm,
            "char_cnn": {
                "embedding": {"dim": self.char_embedding_dim},
                "filters": [list(f) for f in self.filters],
                "n_highway": self.n_highway,
                "activation": self.activation,
                "n_characters": self.n_characters,
                "max_characters_per_token": self.max_characters_per_token,
            },
        }
        # Written only where they differ from what from_dict derives, so that bilm-tf options
        # read back the same.
        if self.token_projection != (self.n_filters != self.projection_dim) or self.word_dim:
            out["char_cnn"]["projection"] = self.token_projection
        if self.lstm_projection != (self.projection_dim < self.dim):
            lstm["projection"] = self.lstm_projection
        if self.char_vocab_size is not None:
            out["char_cnn"]["char_vocab_size"] = self.char_vocab_size
        if self.word_dim:
            out["word_embedding"] = {"dim": self.word_dim, "vocab_size": self.word_vocab_size}
        return out

    def parameter_count(self) -> int:
        e, f, p, d = self.char_embedding_dim, self.n_filters, self.projection_dim, self.dim
        cnn = (self.char_table_rows - 1) * e + sum(w * e * n + n for w, n in self.filters)
        highway = self.n_highway * 2 * (f * f + f)
        words = self.word_vocab_size * self.word_dim
        projection = (self.word_dim + f) * p + p if self.token_projection else 0
        lstm = 2 * self.n_layers * (2 * p * 4 * d + 4 * d + (d * p if self.lstm_projection else 0))
        return cnn + highway + words + projection + lstm


class CharCNNTokenEmbedder(nn.Module):
    """Char ids -> context-free token embeddings: char CNN, max-pool, highway, projection."""

    def __init__(self, options: ElmoOptions):
        super().__init__()
        self.activation = torch.tanh if options.activation == "tanh" else torch.relu
        self.char_embedding = nn.Embedding(options.char_table_rows, options.char_embedding_dim)
        self.word_embedding = nn.Embedding(options.word_vocab_size, options.word_dim) if options.word_dim else None
        self.convolutions = nn.ModuleList(
            nn.Conv1d(options.char_embedding_dim, n, kernel_size=w) for w, n in options.filters
        )
        f = options.n_filters
        # Highway (TF naming): carry gate g = sigmoid(x W_carry), out = g * relu(x W_transform) + (1 - g) * x
        self.highway_transform = nn.ModuleList(nn.Linear(f, f) for _ in range(options.n_highway))
        self.highway_carry = nn.ModuleList(nn.Linear(f, f) for _ in range(options.n_highway))
        self.projection = nn.Linear(options.word_dim + f, options.projection_dim) if options.token_projection else None

    def forward(self, char_ids: torch.Tensor, word_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T, C)` int char ids (and `(B, T)` word ids, with a word table) -> `(B, T, P)` token embeddings."""
        b, t, c = char_ids.shape
        x = self.char_embedding(char_ids.reshape(b * t, c).long())  # (B*T, C, E)
        x = x.transpose(1, 2)  # (B*T, E, C)
        # Max-pool over positions, then the activation (bilm-tf's order).
        pooled = [self.activation(conv(x).max(dim=-1).values) for conv in self.convolutions]
        x = torch.cat(pooled, dim=-1)  # (B*T, F)
        for transform, carry in zip(self.highway_transform, self.highway_carry):
            gate = torch.sigmoid(carry(x))  # (B*T, F)
            x = gate * torch.relu(transform(x)) + (1.0 - gate) * x
        if self.word_embedding is not None:
            if word_ids is None:
                raise ValueError("this model has a word embedding: pass word_ids")
            words = self.word_embedding(word_ids.reshape(b * t).long())  # (B*T, W)
            x = torch.cat([words, x], dim=-1)  # (B*T, W+F): ELMoForManyLangs puts the word part first
        if self.projection is not None:
            x = self.projection(x)  # (B*T, P)
        return x.reshape(b, t, -1)


class LstmpCell(nn.Module):
    """TF's LSTMCell with a projection and clipping, one time step."""

    def __init__(
        self,
        input_dim: int,
        dim: int,
        projection_dim: int,
        cell_clip: float | None,
        proj_clip: float | None,
        projection: bool = True,
    ):
        super().__init__()
        self.input_to_gates = nn.Linear(input_dim, 4 * dim)  # carries the bias (+1 on f)
        self.hidden_to_gates = nn.Linear(projection_dim, 4 * dim, bias=False)
        # Without a projection (bilm-tf's LSTMCell without num_proj) h is o * tanh(c) and
        # proj_clip does not apply, as in TF.
        self.projection = nn.Linear(dim, projection_dim, bias=False) if projection else None
        self.cell_clip = cell_clip
        self.proj_clip = proj_clip

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`x (B, I)`, `h (B, P)`, `c (B, D)` -> new `(h, c)`."""
        gates = self.input_to_gates(x) + self.hidden_to_gates(h)  # (B, 4D)
        i, j, f, o = gates.chunk(4, dim=-1)  # TF gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)  # (B, D)
        if self.cell_clip is not None:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        h = torch.sigmoid(o) * torch.tanh(c)  # (B, D)
        if self.projection is not None:
            h = self.projection(h)  # (B, P)
            if self.proj_clip is not None:
                h = h.clamp(-self.proj_clip, self.proj_clip)
        return h, c


class LstmState(NamedTuple):
    """`h (L, 2, B, P)` and `c (L, 2, B, D)`; direction 0 is forward."""

    h: torch.Tensor
    c: torch.Tensor


class BiLmOutput(NamedTuple):
    layers: torch.Tensor  # (L + 1, B, T, 2P), zero at padding, sentence boundaries removed
    mask: torch.Tensor  # (B, T) bool
    state: LstmState  # each row's state after its own last real token


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of `x (B, T, ...)` over its first `lengths[b]` steps; padding stays put."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    index = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class ElmoBiLm(nn.Module):
    """The bidirectional language model: char ids in, all layers and the final state out.

    Layer 0 is the token embedding duplicated for both directions, as the original does.
    Sentence boundary tokens `<S>` and `</S>` are added around each row and removed from
    the output. Padding tokens (all-zero char ids) never move the LSTM state; an empty row
    still reads its `<S> </S>`, as the original does.
    """

    def __init__(self, options: ElmoOptions, scheme: TokenScheme | None = None):
        super().__init__()
        self.options = options
        # How tokens become the token embedder's inputs: the package ships it (manifest).
        self.scheme = ByteScheme(options.max_characters_per_token) if scheme is None else scheme
        o = options
        self.token_embedder = CharCNNTokenEmbedder(o)
        # cells[layer][direction]
        self.cells = nn.ModuleList(
            nn.ModuleList(
                LstmpCell(o.projection_dim, o.dim, o.projection_dim, o.cell_clip, o.proj_clip, o.lstm_projection)
                for _ in range(2)
            )
            for _ in range(o.n_layers)
        )
        boundaries = self.scheme.encode([self.scheme.bos_token, self.scheme.eos_token])
        self.register_buffer("bos_char_ids", torch.as_tensor(boundaries["char_ids"][0].copy()), persistent=False)
        self.register_buffer("eos_char_ids", torch.as_tensor(boundaries["char_ids"][1].copy()), persistent=False)
        words = boundaries.get(WORD_IDS, np.zeros(2, np.int32))
        self.register_buffer("boundary_word_ids", torch.as_tensor(words.astype(np.int64)), persistent=False)

    def zero_state(self, batch_size: int) -> LstmState:
        o = self.options
        dev = self.bos_char_ids.device
        return LstmState(
            torch.zeros(o.n_layers, 2, batch_size, o.projection_dim, device=dev),
            torch.zeros(o.n_layers, 2, batch_size, o.dim, device=dev),
        )

    def add_sentence_boundaries(self, char_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(B, T, C)` -> `(B, T + 2, C)` with `<S>` first and `</S>` after each row's last token."""
        b, t, c = char_ids.shape
        out = char_ids.new_zeros(b, t + 2, c)
        out[:, 1 : t + 1] = char_ids
        out[:, 0] = self.bos_char_ids
        out[torch.arange(b, device=out.device), lengths + 1] = self.eos_char_ids
        return out

    def add_boundary_words(self, word_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(B, T)` word ids -> `(B, T + 2)`, the boundary tokens' word ids added as for the chars."""
        b, t = word_ids.shape
        out = word_ids.new_zeros(b, t + 2)
        out[:, 1 : t + 1] = word_ids
        out[:, 0] = self.boundary_word_ids[0]
        out[torch.arange(b, device=out.device), lengths + 1] = self.boundary_word_ids[1].to(word_ids.dtype)
        return out

    def run_tokens(self, sentences: list[list[str]], state: LstmState | None = None) -> BiLmOutput:
        """Embed tokenized sentences, mapped to ids by the model's token scheme."""
        inputs = {k: torch.from_numpy(v) for k, v in self.scheme.encode_batch(sentences).items()}
        return self(inputs["char_ids"], state, inputs.get(WORD_IDS))

    def run_direction(
        self, cell: LstmpCell, x: torch.Tensor, lengths: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run `cell` left to right over `x (B, T, P)`; rows stop at their length."""
        outputs = []
        for t in range(x.shape[1]):
            h_new, c_new = cell(x[:, t], h, c)
            active = (t < lengths)[:, None]  # (B, 1)
            h = torch.where(active, h_new, h)
            c = torch.where(active, c_new, c)
            outputs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
        return torch.stack(outputs, dim=1), h, c  # (B, T, P)

    def forward(
        self, char_ids: torch.Tensor, state: LstmState | None = None, word_ids: torch.Tensor | None = None
    ) -> BiLmOutput:
        """Embed a batch.

        Args:
            char_ids: `(B, T, C)` int char ids without sentence boundaries; padding rows zero.
            state: initial state, or None for zeros.
            word_ids: `(B, T)` word ids, for a model with a word embedding (else ignored).

        Returns:
            `BiLmOutput` with `layers (L + 1, B, T, 2P)`, `mask (B, T)` and the final state.
        """
        b, t, _ = char_ids.shape
        mask = (char_ids > 0).any(dim=-1)  # (B, T)
        lengths = mask.sum(dim=1)  # (B,)
        if state is None:
            state = self.zero_state(b)

        if word_ids is not None and self.token_embedder.word_embedding is not None:
            word_ids = self.add_boundary_words(word_ids, lengths)  # (B, T+2)
        x = self.token_embedder(self.add_sentence_boundaries(char_ids, lengths), word_ids)  # (B, T+2, P)
        ext_lengths = lengths + 2
        ext_mask = (torch.arange(t + 2, device=x.device)[None, :] < ext_lengths[:, None])[..., None]
        x = x * ext_mask  # (B, T+2, P)

        layers = [torch.cat([x, x], dim=-1)]  # (B, T+2, 2P)
        forward_in, backward_in = x, x
        final_h, final_c = [], []
        for layer, (fwd_cell, bwd_cell) in enumerate(self.cells):
            fwd, hf, cf = self.run_direction(fwd_cell, forward_in, ext_lengths, state.h[layer, 0], state.c[layer, 0])
            bwd_rev, hb, cb = self.run_direction(
                bwd_cell,
                reverse_within_length(backward_in, ext_lengths),
                ext_lengths,
                state.h[layer, 1],
                state.c[layer, 1],
            )
            bwd = reverse_within_length(bwd_rev, ext_lengths)  # (B, T+2, P)
            if layer > 0 and self.options.use_skip_connections:
                fwd, bwd = fwd + forward_in, bwd + backward_in
            layers.append(torch.cat([fwd, bwd], dim=-1))
            forward_in, backward_in = fwd, bwd
            final_h.append(torch.stack([hf, hb]))
            final_c.append(torch.stack([cf, cb]))

        stacked = torch.stack(layers)  # (L+1, B, T+2, 2P)
        # Drop <S> and each row's </S>: shift left by one, then zero everything past the row.
        no_boundaries = stacked[:, :, 1 : t + 1] * mask[None, :, :, None]  # (L+1, B, T, 2P)
        return BiLmOutput(no_boundaries, mask, LstmState(torch.stack(final_h), torch.stack(final_c)))
