"""Memory follows the batch budget, not the longest sentence: a sentence over the budget runs in
time chunks with the LSTM state carried, and gives the whole sentence's vectors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORDS = "the cat sat on a mat while an old dog watched it from under the kitchen table".split()


def sentence(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [WORDS[i] for i in rng.integers(0, len(WORDS), n)]


@pytest.mark.parametrize("state", ["warm", "zero"])
@pytest.mark.parametrize(
    "layers, pool", [("all", None), ("top", None), ([0.2, 0.5, 0.3], None), (0, "mean"), ("all", "mean")]
)
def test_time_chunks_equal_the_whole_sentence(elmo, state, layers, pool):
    tokens = sentence(101)
    whole = elmo.embed([tokens], layers=layers, pool=pool, state=state, batch_tokens=10**6)[0]
    for budget in (1, 7, 16, 60):  # chunks of 1, 1, 6 and 28 tokens
        chunked = elmo.embed([tokens], layers=layers, pool=pool, state=state, batch_tokens=budget)[0]
        assert chunked.shape == whole.shape
        assert np.abs(chunked - whole).max() <= 1e-6


def test_every_call_stays_within_the_budget(tiny_package):
    from elmo_runtime import Elmo

    elmo = Elmo(tiny_package, device="cpu")
    positions = []
    bilm = elmo.runner.bilm
    elmo.runner.bilm = lambda emb, *rest: (positions.append(emb.shape[0] * (emb.shape[1] + 2)), bilm(emb, *rest))[1]
    short = sentence(3, seed=1)
    out = elmo.embed([short, sentence(1000), short], layers="top", batch_tokens=64)
    assert [v.shape for v in out] == [(3, 32), (1000, 32), (3, 32)]
    assert len(positions) > 30 and max(positions) <= 64


CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from elmo_runtime import Elmo

    package, n, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    words = "the cat sat on a mat while an old dog watched it from under the kitchen table".split()
    elmo = Elmo(package, device="cpu", threads=1)
    elmo.embed([words * 40], layers="top", batch_tokens=budget)  # warm up: libraries, threads, arenas
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) << 10
    result = n * elmo.dim * 4
    cap = size + result + (24 << 20)  # the result, and 24 MiB beyond what a 600-token sentence needed
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    vectors = elmo.embed([(words * (n // len(words) + 1))[:n]], layers="top", batch_tokens=budget)[0]
    print(vectors.shape, bool(np.isfinite(vectors).all()))
""")


def run_capped(package, n: int, budget: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(package), str(n), str(budget)], capture_output=True, text=True, timeout=300
    )


def test_a_200k_token_sentence_runs_under_a_memory_cap_the_whole_one_exceeds(tiny_package):
    # About 30 s: the LSTM steps 200,000 times whatever the chunking (~65 us a step in ORT's Scan).
    n = 200_000
    chunked = run_capped(tiny_package, n, 512)
    assert chunked.returncode == 0, chunked.stderr[-2000:]
    assert chunked.stdout.split() == [f"({n},", "32)", "True"]
    whole = run_capped(tiny_package, n, 10**9)  # one batch: what the code did before time chunks
    assert whole.returncode != 0 and ("alloc" in whole.stderr or "MemoryError" in whole.stderr), whole.stderr[-2000:]
