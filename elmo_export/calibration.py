"""Calibration: what the inputs of the reference's weight products look like on a text.

GPTQ (`gptq.quantize_gptq`, int4's default rounding) needs, for each weight, the second
moments `E[x x^T]` of the product's input `x`. They come from the reference biLM run over a
calibration text from the zero state, each `nn.Linear` whose weight becomes an ONNX MatMul
operand recording its inputs (`onnx_graph.build_*(sources=...)` says which operand came from
which module). Sentences run in batches of equal length, so that no padding row is counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Iterable

import numpy as np
import torch

from elmo_export.model import ElmoBiLm

log = logging.getLogger(__name__)

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
    hooks = [named[path].register_forward_pre_hook(lambda _module, args, m=m: m.add(args[0]))
             for path, m in moments.items()]
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
