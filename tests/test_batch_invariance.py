"""A sentence's vectors do not depend on what it is embedded with.

Bit for bit (`numpy.array_equal`) in fp32 and int8: alone or inside any batch, in any order,
under any token budget, through `embed`, `embed_iter`, a fresh `stream` and `elmo-embed`, with
the token cache on (whatever its history) or off, from several threads at once. int8 gets
this from per-row activation scales (`elmo_export.quantize.quantize_int8`). fp16 and int4 on
the CPU are not bit-identical: onnxruntime's kernels for them take different paths for
different numbers of rows; the tests below pin how far apart they stay.
"""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from elmo_export import export_package
from elmo_runtime import Elmo, cli

# Edge cases: an empty-string token, multi-byte and 4-byte UTF-8, a token over 48 bytes, the
# boundary tokens, a 1-token and a 60-token sentence, and a sentence repeated.
SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Hi", "!"],
    [""],
    ["Ω", "is", "omega"],
    ["a" * 60, "long", "token"],
    ["x"],
    ("word " * 60).split(),
    ["<S>", "boundary", "</S>"],
    ["emoji", "😀", "here"],
    ["Zürich", "ist", "schön", "."],
    ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "."],
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["A", "", "b"],
    [],
]


@pytest.fixture(scope="module")
def packages(tiny_weights, tiny_package, tmp_path_factory):
    """The tiny preset in every precision."""
    out = {"fp32": tiny_package}
    for precision in ("fp16", "int8", "int4"):
        out[precision] = export_package(
            *tiny_weights, tmp_path_factory.mktemp(precision) / precision, precision=precision, progress=False
        )
    return out


@pytest.fixture(scope="module")
def alone(packages):
    """Each sentence embedded on its own, on a fresh instance without a token cache."""
    out = {}
    for precision, package in packages.items():
        elmo = Elmo(package, device="cpu", token_cache=0)
        out[precision] = [elmo.embed([s])[0] for s in SENTENCES]
    return out


def _random_run(elmo: Elmo, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray]]:
    """Some of the sentences (repeats allowed) in a random order, batching and entry point."""
    picks = rng.choice(len(SENTENCES), size=int(rng.integers(1, 3 * len(SENTENCES))), replace=True).tolist()
    batch = [SENTENCES[i] for i in picks]
    budget = int(rng.integers(64, 2000))  # 64: the 60-token sentence runs alone
    batch_size = [None, 1, 2, 5][int(rng.integers(4))]
    how = ["embed", "embed_iter", "stream"][int(rng.integers(3))]
    if how == "embed":
        vectors = elmo.embed(batch, batch_tokens=budget, batch_size=batch_size)
    elif how == "embed_iter":
        vectors = list(elmo.embed_iter(iter(batch), batch_tokens=budget, batch_size=batch_size))
    else:  # one call of a fresh stream: every row starts from the same state as in `embed`
        vectors = elmo.stream().embed(batch)
    return picks, vectors


def _differences(picks, vectors, want) -> list[str]:
    return [
        f"sentence {i} {SENTENCES[i][:3]}: max abs {np.abs(v - want[i]).max() if v.size else 0:.3g}"
        for i, v in zip(picks, vectors)
        if not np.array_equal(v, want[i])
    ]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("cache", [0, 3, None], ids=["no-cache", "tiny-cache", "cache"])
def test_vectors_are_bit_identical_under_any_batching_order_budget_and_cache(packages, alone, precision, cache):
    # One instance for all runs, so the cache carries its history (and evictions, at size 3)
    # from run to run.
    elmo = Elmo(packages[precision], device="cpu", token_cache=cache)
    rng = np.random.default_rng(12)
    for _ in range(12):
        picks, vectors = _random_run(elmo, rng)
        assert _differences(picks, vectors, alone[precision]) == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_vectors_are_bit_identical_from_concurrent_threads_on_a_cold_cache(packages, alone, precision):
    elmo = Elmo(packages[precision], device="cpu")
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(3):
            picks, vectors = _random_run(elmo, rng)
            failures.extend(_differences(picks, vectors, alone[precision]))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_elmo_embed_writes_the_vectors_of_each_sentence_alone(packages, alone, precision, tmp_path):
    lines = [" ".join(s) for s in SENTENCES if s and all(t and t == t.strip() for t in s)]
    picks = [i for i, s in enumerate(SENTENCES) if " ".join(s) in lines]
    text = tmp_path / "in.txt"
    text.write_text("\n".join(" ".join(SENTENCES[i]) for i in picks) + "\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert (
        cli.main(
            [
                str(packages[precision]),
                str(text),
                str(out),
                "--tokenized",
                "--batch-tokens",
                "100",
                "--no-progress",
                "-q",
            ]
        )
        == 0
    )
    with h5py.File(out, "r") as f:
        vectors = [f[str(k)][()] for k in range(len(picks))]
    assert _differences(picks, vectors, alone[precision]) == []


@pytest.mark.parametrize("precision, within", [("fp16", 1e-3), ("int4", 1e-5)])
def test_fp16_and_int4_stay_within_their_kernels_rounding_of_the_vectors_alone(packages, alone, precision, within):
    # onnxruntime's CPU kernels for float16 MatMul and for MatMulNBits (float compute) sum in
    # a different order for different numbers of rows: not bit-identical, but this close.
    elmo = Elmo(packages[precision], device="cpu")
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(6):
        picks, vectors = _random_run(elmo, rng)
        for i, v in zip(picks, vectors):
            if v.size:
                worst = max(worst, float(np.abs(v - alone[precision][i]).max()))
    assert worst <= within
