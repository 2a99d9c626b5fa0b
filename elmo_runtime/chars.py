"""Tokens to ELMo character ids, in numpy (a port of AllenNLP's ELMoCharacterMapper)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from elmo_runtime import contract as C


def _special_ids(character: int, width: int = C.MAX_CHARACTERS_PER_TOKEN) -> np.ndarray:
    ids = np.full(width, C.PADDING_CHARACTER, dtype=np.int32)
    ids[:3] = (C.BEGINNING_OF_WORD_CHARACTER, character, C.END_OF_WORD_CHARACTER)
    return ids + C.CHAR_ID_OFFSET


BOS_CHAR_IDS = _special_ids(C.BEGINNING_OF_SENTENCE_CHARACTER)
EOS_CHAR_IDS = _special_ids(C.END_OF_SENTENCE_CHARACTER)
BOS_CHAR_IDS.flags.writeable = False
EOS_CHAR_IDS.flags.writeable = False


def boundary_char_ids(width: int = C.MAX_CHARACTERS_PER_TOKEN) -> tuple[np.ndarray, np.ndarray]:
    """The char ids of `<S>` and `</S>` for tokens `width` ids wide."""
    if width == C.MAX_CHARACTERS_PER_TOKEN:
        return BOS_CHAR_IDS, EOS_CHAR_IDS
    return _special_ids(C.BEGINNING_OF_SENTENCE_CHARACTER, width), _special_ids(C.END_OF_SENTENCE_CHARACTER, width)


def tokens_to_char_ids(tokens: Sequence[str], width: int = C.MAX_CHARACTERS_PER_TOKEN) -> np.ndarray:
    """Map tokens to character ids, one row per token.

    A token longer than `width - 2` (48) UTF-8 bytes is truncated to its first `width - 2`
    bytes (possibly mid character), as the original does; characters UTF-8 cannot encode
    (lone surrogates) are dropped. The literal tokens `<S>` and `</S>` map to the
    sentence-boundary ids. `width` is the model's `max_characters_per_token` (bilm-tf made it
    tunable; NLPL models for languages of multi-byte characters may use more than 50).

    Returns:
        `(len(tokens), width)` int32 array, every id >= 1.
    """
    n = len(tokens)
    try:
        encoded = [t.encode("utf-8", "ignore")[: width - 2] for t in tokens]
    except AttributeError:
        bad = next(i for i, t in enumerate(tokens) if not isinstance(t, str))
        raise TypeError(f"token {bad} is {type(tokens[bad]).__name__} {tokens[bad]!r}; tokens must be str") from None
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    flat = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int32)

    ids = np.full((n, width), C.PADDING_CHARACTER, dtype=np.int32)
    ids[:, 0] = C.BEGINNING_OF_WORD_CHARACTER
    rows = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = 1 + np.arange(flat.size) - np.repeat(starts, lengths)
    ids[rows, cols] = flat
    ids[np.arange(n), lengths + 1] = C.END_OF_WORD_CHARACTER
    ids += C.CHAR_ID_OFFSET

    if C.BOS_TOKEN in tokens or C.EOS_TOKEN in tokens:
        bos, eos = boundary_char_ids(width)
        for i, t in enumerate(tokens):
            if t == C.BOS_TOKEN:
                ids[i] = bos
            elif t == C.EOS_TOKEN:
                ids[i] = eos
    return ids


def batch_to_char_ids(sentences: Sequence[Sequence[str]], width: int = C.MAX_CHARACTERS_PER_TOKEN) -> np.ndarray:
    """Map a batch of tokenized sentences to char ids padded with all-zero rows.

    Returns:
        `(len(sentences), max_tokens, width)` int32 array; row `b`, token `t` is zero for
        `t >= len(sentences[b])`.
    """
    lengths = [len(s) for s in sentences]
    longest = max(lengths, default=0)
    out = np.zeros((len(sentences), longest, width), dtype=np.int32)
    flat = [t for s in sentences for t in s]
    if flat:
        mask = np.arange(longest)[None, :] < np.asarray(lengths)[:, None]
        out[mask] = tokens_to_char_ids(flat, width)
    return out
