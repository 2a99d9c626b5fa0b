"""A bounded cache of token embeddings (the char CNN's output), shared across calls and batches.

A token's embedding depends on its characters alone, and running text repeats its words: the
char CNN and highway layers (about a quarter of the model's work per token on the original
architecture) need to run once per distinct token, not once per occurrence.
"""

from __future__ import annotations

import numbers
import threading
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

# 32 MiB of float32 vectors: 16,384 tokens of the original model (projection 512).
DEFAULT_CACHE_BYTES = 32 << 20
# Longer tokens are embedded every time, never cached: the cache's keys are whole tokens, and
# 3,000 distinct 100 KB tokens kept 200 MB alive. Words this long are not worth a cache entry
# (the char CNN reads a token's first 48 bytes; the word table, where there is one, has no
# such words).
MAX_CACHED_TOKEN_CHARS = 64


class TokenEmbeddingCache:
    """Least-recently-used token -> embedding map, bounded in entries; thread-safe.

    Args:
        embed_tokens: runs the token embedder on distinct tokens: `N` tokens -> `(N, P)` float32
            (`PackageRunner.embed_tokens`, which maps them by the package's token scheme).
        dim: P, the width of a token embedding.
        max_tokens: entries kept; 0 disables caching (every token is embedded every time).
            Tokens over `MAX_CACHED_TOKEN_CHARS` characters are never kept.
    """

    def __init__(self, embed_tokens: Callable[[list[str]], np.ndarray], dim: int, max_tokens: int):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < 0:
            raise ValueError(f"token cache size is {max_tokens!r}; expected an integer >= 0")
        max_tokens = int(max_tokens)
        self._embed = embed_tokens
        self.dim = dim
        self.max_tokens = max_tokens
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, np.ndarray]]:
        """The cached `(token, vector (P,))` pairs, least recently used first (the arrays themselves)."""
        with self._lock:
            return list(self._entries.items())

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """Embeddings of distinct `tokens`, `(len(tokens), P)`, running the embedder on misses only."""
        with self._lock:
            found = [self._entries.get(t) for t in tokens]
            for t, v in zip(tokens, found):
                if v is not None:
                    self._entries.move_to_end(t)
        missing = [t for t, v in zip(tokens, found) if v is None]
        if missing:
            fresh = self._embed(missing)  # (M, P)
            # Copies: a row view would keep the whole batch's output alive in the cache.
            by_token = {t: row.copy() for t, row in zip(missing, fresh)}
            found = [by_token[t] if v is None else v for t, v in zip(tokens, found)]
            if self.max_tokens:
                with self._lock:
                    for t in missing:
                        if len(t) <= MAX_CACHED_TOKEN_CHARS:
                            self._entries[t] = by_token[t]
                    while len(self._entries) > self.max_tokens:
                        self._entries.popitem(last=False)
        with self._lock:
            self.hits += len(tokens) - len(missing)
            self.misses += len(missing)
        return np.stack(found) if found else np.zeros((0, self.dim), np.float32)

    def embed_batch(self, batch: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Token embeddings `(B, T, P)` (zeros at padding) and the int32 mask `(B, T)` of a batch."""
        lengths = np.fromiter((len(s) for s in batch), dtype=np.int64, count=len(batch))
        width = int(lengths.max(initial=0))
        index: dict[str, int] = {}
        positions = [index.setdefault(t, len(index)) for s in batch for t in s]
        mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
        table = self.lookup(list(index))  # (U, P)
        out = np.zeros((len(batch), width, self.dim), np.float32)
        out[mask] = table[np.asarray(positions, dtype=np.int64)]
        return out, mask.astype(np.int32)
