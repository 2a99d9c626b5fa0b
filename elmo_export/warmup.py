"""The warm initial state: the reference's state after a built-in warm-up text.

A package exported with `initial_state="warm"` ships this state in its manifest, so that every
sentence starts from the state of a model that has read some text, not from zeros.
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from elmo_export.model import ElmoBiLm, LstmState
from elmo_export.sentences import builtin_sentences

log = logging.getLogger(__name__)

WARMUP_TEXT = "warmup.txt"
WARMUP_SOURCE = "elmo_export/data/warmup.txt: Lincoln, the Gettysburg Address (1863, Bliss copy), public domain"


def load_warmup_sentences() -> tuple[list[list[str]], str]:
    """The built-in warm-up text: tokenized sentences and the text's sha256."""
    return builtin_sentences(WARMUP_TEXT)


def warm_state(model: ElmoBiLm, sentences: list[list[str]], progress: bool = False) -> LstmState:
    """The reference's state after `sentences`, one per batch of one, state carried throughout.

    Returns:
        `LstmState` with `h (L, 2, P)` and `c (L, 2, D)` (the batch axis dropped).
    """
    state = None
    with torch.no_grad():
        bar = tqdm(sentences, desc="warm-up", unit="sentence", disable=None if progress else True, leave=False)
        for sentence in bar:
            state = model.run_tokens([sentence], state).state
    return LstmState(state.h[:, :, 0], state.c[:, :, 0])


def warm_start(model: ElmoBiLm, progress: bool = False) -> tuple[LstmState, dict]:
    """The warm state from the built-in text, and its description for the manifest."""
    t = time.perf_counter()
    sentences, text_sha = load_warmup_sentences()
    state = warm_state(model, sentences, progress)
    warmup = {
        "source": WARMUP_SOURCE,
        "sentences": len(sentences),
        "tokens": sum(map(len, sentences)),
        "batches": len(sentences),
        "batch_size": 1,
        "text_sha256": text_sha,
    }
    log.info("warm state from %d warm-up sentences in %.1f s", len(sentences), time.perf_counter() - t)
    return state, warmup
