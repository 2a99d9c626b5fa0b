"""Packing sentences into batches bounded by a token budget.

The biLM's cost and memory grow with rows x padded length, so sentences are sorted by length
(longest first) and packed greedily: a batch takes rows while `rows * (longest + 2)` stays
within the budget (the `+ 2` is the `<S>` and `</S>` positions the graph adds to every row).
Sorted rows have similar lengths, so little of the budget is padding. A sentence longer than
the budget goes alone; sentences with no tokens need no model run and are left out.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

# Positions per row that the graph adds around each sentence: <S> and </S>.
BOUNDARY_TOKENS = 2


def batch_cost(rows: int, longest: int) -> int:
    """The token positions one batch runs: `rows * (longest + 2)`, padding included."""
    return rows * (longest + BOUNDARY_TOKENS)


def plan_batches(lengths: Sequence[int], batch_tokens: int, batch_size: int | None = None) -> list[np.ndarray]:
    """Group sentence indices into batches, longest sentences first.

    Args:
        lengths: tokens per sentence.
        batch_tokens: the most token positions a batch may run (`batch_cost`); a sentence
            whose own cost exceeds it gets a batch of its own.
        batch_size: the most sentences a batch may hold (None: no limit but the budget).
            Both as `check_budget` passed them: the caller checks them where they come in.

    Returns:
        Arrays of indices into `lengths`, each sorted by decreasing length; every index with
        a length above zero appears exactly once, zero-length ones never.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = max(1, batch_tokens // (longest + BOUNDARY_TOKENS))
        if batch_size is not None:
            rows = min(rows, batch_size)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def check_budget(batch_tokens: int | None = None, batch_size: int | None = None) -> None:
    """Raise ValueError naming a budget given that is not a positive int (None: not given)."""
    for name, value, allowed in (
        ("batch_tokens", batch_tokens, "a positive integer"),
        ("batch_size", batch_size, "a positive integer or None"),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} is {value!r}; expected {allowed}")


def chunks_by_tokens(items: Iterable[T], size_of: Callable[[T], int], max_tokens: int) -> Iterator[list[T]]:
    """Split a stream into lists whose sizes add up to about `max_tokens` (at least one item each).

    Only one chunk is held at a time, so memory follows `max_tokens`, not the stream.
    """
    iterator = iter(items)
    while True:
        chunk, total = [], 0
        for item in iterator:
            chunk.append(item)
            total += size_of(item)
            if total >= max_tokens:
                break
        if not chunk:
            return
        yield chunk
