"""Request fields checked into what `Elmo.embed` takes, with errors that name the field.

Inputs are tokenized here, on the event loop, before they queue: the limits count tokens, the
batcher packs by tokens, and `Elmo.embed` given the tokens embeds exactly what it would have
made of the raw text.
"""

from __future__ import annotations

import base64
import io
import math
import numbers
from typing import Callable, Hashable

import numpy as np

from elmo_runtime.serve.batcher import BOUNDARY_TOKENS

LAYER_NAMES = ("top", "average")


class ApiError(Exception):
    """An error answered to the client: HTTP status, one-line message, the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, kind: str = "validation"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind


def read_inputs(
    value: object,
    name: str,
    tokenizer: Callable[[str], list[str]] | None,
    *,
    max_inputs: int,
    max_tokens: int,
    truncate: bool = False,
    left: bool = False,
) -> list[list[str]]:
    """`value` (a str, or a list of str or of token lists) -> one token list per input.

    Raises:
        ApiError: 422 for a wrong type, an empty list or an input without tokens (naming
            `name[i]`); 413 for more inputs than `max_inputs` or, unless `truncate`, more
            tokens in one input than `max_tokens`.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ApiError(422, f"{name} is {_json_type(value)}; expected a string or a list of strings", name)
    if not items:
        raise ApiError(422, f"{name} is an empty list; send at least one input", name)
    if len(items) > max_inputs:
        raise ApiError(
            413,
            f"{name} has {len(items)} inputs; this server takes at most {max_inputs} per request "
            "(--max-client-batch-size)",
            name,
        )
    out = []
    for i, item in enumerate(items):
        where = name if isinstance(value, str) else f"{name}[{i}]"
        tokens = _tokens_of(item, where, tokenizer)
        if not tokens:
            raise ApiError(422, f"{where} is empty (no tokens); an empty input has no embedding", where)
        if len(tokens) > max_tokens:
            if not truncate:
                raise ApiError(
                    413,
                    f"{where} has {len(tokens)} tokens; this server takes at most {max_tokens} "
                    "per input (--max-input-tokens; or send truncate: true)",
                    where,
                )
            tokens = tokens[-max_tokens:] if left else tokens[:max_tokens]
        out.append(tokens)
    return out


def _tokens_of(item: object, where: str, tokenizer) -> list[str]:
    if isinstance(item, str):
        if tokenizer is None:
            raise ApiError(
                422,
                f"{where} is raw text, but this package's model expects pre-tokenized input: "
                "send each input as a list of token strings",
                where,
            )
        return tokenizer(item)
    if isinstance(item, list):
        for j, token in enumerate(item):
            if not isinstance(token, str):
                raise ApiError(422, f"{where}[{j}] is {_json_type(token)}; tokens must be strings", f"{where}[{j}]")
        return item
    raise ApiError(
        422, f"{where} is {_json_type(item)}; expected a string (raw text) or a list of token strings", where
    )


def read_layers(value: object, name: str, num_layers: int, allow_all: bool) -> tuple[object, Hashable]:
    """A `layers` field -> the value for `Elmo.embed` and a hashable key for batching.

    Raises:
        ApiError: 422 naming `name` and what is allowed.
    """
    n = num_layers
    choices = (
        f"{'all, ' if allow_all else ''}'top', 'average', a layer index in {-n}..{n - 1}, or a list of {n} weights"
    )
    if isinstance(value, str) and (value in LAYER_NAMES or (allow_all and value == "all")):
        return value, value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and -n <= value < n:
        return int(value) % n, int(value) % n
    if (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in value)
    ):
        weights = [float(w) for w in value]
        return weights, tuple(weights)
    raise ApiError(422, f"{name} is {_short(value)}; choose {choices}", name)


def normalized(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length (a zero vector stays zero); a pure function of its values."""
    norm = math.sqrt(float(np.dot(vector.astype(np.float64), vector.astype(np.float64))))
    return vector if norm == 0.0 else (vector / norm).astype(np.float32)


def tokens_used(token_lists: list[list[str]]) -> int:
    """Tokens of a request, as `usage.prompt_tokens` reports them (no boundary positions)."""
    return sum(len(t) for t in token_lists)


def positions(token_lists: list[list[str]]) -> int:
    """Token positions a request costs the model: each input plus its two boundaries."""
    return sum(len(t) + BOUNDARY_TOKENS for t in token_lists)


def base64_of(array: np.ndarray, dtype: str = "float32") -> str:
    """Little-endian bytes of `array` in `dtype`, base64 (as OpenAI's encoding_format=base64)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode(
        "ascii"
    )


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as a .npy file (numpy's format: `numpy.load(io.BytesIO(body))` reads it)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def token_spans(text: str, tokens: list[str]) -> list[tuple[int | None, int | None]]:
    """Character offsets of each token in `text`, found in order (None where a token was altered)."""
    spans, at = [], 0
    for token in tokens:
        start = text.find(token, at) if token else -1
        if start < 0:
            spans.append((None, None))
            continue
        spans.append((start, start + len(token)))
        at = start + len(token)
    return spans


def _json_type(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
