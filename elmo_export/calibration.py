"""Calibration: what the inputs of the reference's weight products look like on a text.

GPTQ (`gptq.quantize_gptq`, int4's default rounding) needs, for each weight, the second
moments `E[x x^T]` of the product's input `x`. They come from the reference biLM run over a
calibration text from the zero state, each `nn.Linear` whose weight becomes an ONNX MatMul
operand recording its inputs (`onnx_graph.build_*(sources=...)` says which operand came from
which module). Sentences run in batches of equal length, so that no padding row is counted.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from elmo_export.model import ElmoBiLm
from elmo_export.sentences import builtin_sentences, read_sentences
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

CALIBRATION_TEXT = "calibration.txt"
CALIBRATION_SOURCE = "elmo_export/data/calibration.txt: everyday English written for elmo-onnx"

_FLUSH_ROWS = 4096  # inputs kept before they are folded into the moments: one large product, not many small


class _Moments:
    """Running `sum(x x^T)` and row count of one module's inputs."""

    def __init__(self, dim: int):
        self.total = torch.zeros(dim, dim, dtype=torch.float64)
        self.rows = 0
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        self.pending.append(x.detach().to(torch.float64))
        self.pending_rows += x.shape[0]
        if self.pending_rows >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            x = torch.cat(self.pending)
            self.total += x.T @ x
            self.rows += x.shape[0]
            self.pending, self.pending_rows = [], 0


def input_moments(model: ElmoBiLm, sentences: Iterable[list[str]], modules: Iterable[str]) -> dict[str, np.ndarray]:
    """`E[x x^T]` of the input of each named `nn.Linear` of `model` over `sentences`.

    Args:
        model: the reference biLM.
        sentences: tokenized calibration sentences (empty ones are skipped).
        modules: module paths (`model.named_modules()`), e.g. `cells.0.1.input_to_gates`.

    Returns:
        `{path: (in_features, in_features) float32}`; a module no sentence reached is left out.
    """
    named = dict(model.named_modules())
    missing = sorted(set(modules) - set(named))
    if missing:
        raise KeyError(f"no module named {', '.join(missing)} in the reference biLM")
    moments = {path: _Moments(named[path].in_features) for path in modules}
    hooks = [
        named[path].register_forward_pre_hook(lambda _module, args, m=m: m.add(args[0])) for path, m in moments.items()
    ]
    by_length: dict[int, list[list[str]]] = defaultdict(list)
    for sentence in sentences:
        if sentence:
            by_length[len(sentence)].append(sentence)
    try:
        with torch.no_grad():
            for length in sorted(by_length):
                model.run_tokens(by_length[length], model.zero_state(len(by_length[length])))
    finally:
        for hook in hooks:
            hook.remove()
    out = {}
    for path, m in moments.items():
        m.flush()
        if m.rows:
            out[path] = (m.total / m.rows).to(torch.float32).numpy()  # summed in float64; kept in half the memory
    log.debug("input moments of %d modules from %d sentences", len(out), sum(map(len, by_length.values())))
    return out


def load_calibration_sentences(path: str | Path | None = None) -> tuple[list[list[str]], dict]:
    """int4 GPTQ's calibration text (`path`, or the built-in one) and its manifest description.

    Raises:
        ValueError: the file is not UTF-8 or holds no sentence.
    """
    if path is None:
        sentences, sha = builtin_sentences(CALIBRATION_TEXT)
        name = CALIBRATION_SOURCE
    else:
        name = Path(path).name
        try:
            sentences = read_sentences(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"calibration text {path}: not UTF-8 text (byte {e.start})") from None
        sha = sha256_of(Path(path))
        if not sentences:
            raise ValueError(
                f"calibration text {path}: no sentences (expected tokens separated by spaces, one sentence a line)"
            )
    return sentences, {"text": name, "sha256": sha, "sentences": len(sentences), "tokens": sum(map(len, sentences))}


def calibration_moments(model: ElmoBiLm, path: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The input moments of the reference's weight products on a calibration text (`path`, or the
    built-in one), by module path, and the text's description (`load_calibration_sentences`)."""
    t = time.perf_counter()
    sentences, calibration = load_calibration_sentences(path)
    # A highway layer's carry reads the same input as its transform: the graph's one product for
    # both takes the transform's path (`onnx_graph`), so the carry's moments would be a copy.
    paths = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".highway_carry." not in name
    ]
    moments = input_moments(model, sentences, paths)
    log.info(
        "calibration: %d sentences (%d tokens) in %.1f s",
        calibration["sentences"],
        calibration["tokens"],
        time.perf_counter() - t,
    )
    return moments, calibration
