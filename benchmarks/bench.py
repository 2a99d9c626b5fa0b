"""Speed, start-up and memory of every package precision against the PyTorch reference.

One run measures, on the same inputs, for each architecture (synthetic weights: speed does not
depend on their values): throughput at batch 32 (the text's sentences as they come, and 32
sentences cut to 20 tokens: no padding), latency of one 20-token sentence at batch 1,
cold start in a fresh process (import, load, first embedding), peak RSS, package size, and the
gain of the token-embedding cache on running text. Medians over repeats after a warm-up, the
packages' repeats taken in turn; ratios against the reference measured in the same run.

    python benchmarks/bench.py                     # original and small, writes RESULTS.md
    python benchmarks/bench.py --presets small --repeats 3 --no-write
    python benchmarks/bench.py --extra-package "original:int8, old exporter=/tmp/old-int8"  # old vs new, one run

Inputs: `benchmarks/data/GPL-3.txt`, the GNU GPL v3 (verbatim, as its licence allows), split
into its 223 sentences (median 25 tokens, up to 138) by `sentences()` below and tokenized by the
runtime's tokenizer: real English prose with a natural length distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from _common import run_child

from elmo_runtime.contract import precision_name

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DESIGN_MEASUREMENTS = "## Design measurements"
BATCH = 32
LATENCY_TOKENS = 20


def sentences() -> list[list[str]]:
    """The benchmark text, one token list per sentence, in document order."""
    from elmo_runtime.tokenize import tokenize

    text = (HERE / "data" / "GPL-3.txt").read_text(encoding="utf-8")
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    split = (s for p in paragraphs for s in re.split(r"(?<=[.;:?!])\s+(?=[A-Z(\"])", p))
    return [tokens for tokens in map(tokenize, split) if tokens]


def throughput_batches(all_sentences: list[list[str]], n_batches: int, batch: int = BATCH) -> list[list[list[str]]]:
    """Batches of `batch` sentences, each batch of similar lengths (as the runtime would form them).

    Both engines get exactly these batches, so padding is the same for both.
    """
    chosen = all_sentences[: n_batches * batch]
    ordered = sorted(chosen, key=len)
    return [ordered[i : i + batch] for i in range(0, len(ordered), batch)]


def latency_sentence(all_sentences: list[list[str]]) -> list[str]:
    return next(s for s in all_sentences if len(s) >= LATENCY_TOKENS)[:LATENCY_TOKENS]


def unpadded_batch(all_sentences: list[list[str]]) -> list[list[str]]:
    """32 sentences cut to 20 tokens each: a batch without padding.

    The packages' graph skips the rows that have ended at each step, the reference computes
    them (zero-masked), so on the natural batches part of the gap is padding; here it is none.
    """
    return [s[:LATENCY_TOKENS] for s in all_sentences if len(s) >= LATENCY_TOKENS][:BATCH]


def median_time(fn, repeats: int) -> float:
    return median_times({"": fn}, repeats)[""]


def median_times(fns: dict, repeats: int) -> dict:
    """The median seconds of each function, their repeats taken in turn (a warm-up each first).

    In turn, not one after the other: a shared machine's speed drifts over minutes, and the
    ratios between packages are what the tables report. Every other round runs in reverse
    order, so that each function follows each other one equally often.
    """
    for fn in fns.values():
        fn()
    labels = list(fns)
    times = {label: [] for label in labels}
    for r in range(repeats):
        for label in labels if r % 2 == 0 else labels[::-1]:
            start = time.perf_counter()
            fns[label]()
            times[label].append(time.perf_counter() - start)
    return {label: float(np.median(t)) for label, t in times.items()}


@dataclass
class Row:
    preset: str
    engine: str
    batch_tok_s: float
    unpadded_tok_s: float
    latency_ms: float
    cold_start_s: float
    peak_rss_mib: float
    size_mb: float
    extra: dict = field(default_factory=dict)


# -- fresh-process measurements ---------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys, time
    kind, path, options, threads, workload, spawned = sys.argv[1:7]
    threads, spawned = int(threads), float(spawned)
    batches = json.loads(open(workload).read())
    if kind == "reference":
        import torch
        torch.set_num_threads(threads)
        from elmo_export.weights import load_reference
        from elmo_runtime.chars import batch_to_char_ids
        model = load_reference(options, path)
        def embed(batch):
            with torch.no_grad():
                model(torch.from_numpy(batch_to_char_ids(batch)))
    else:
        from elmo_runtime import Elmo
        elmo = Elmo(path, device="cpu", threads=threads)
        def embed(batch):
            elmo.embed(batch)  # the runtime's own batching: its default token budget bounds memory
    embed([batches[0][0]])
    first = time.time() - spawned  # from the parent's spawn: interpreter start-up counts too
    for batch in batches:
        embed(batch)
    from _common import peak_rss_mib
    print(json.dumps({"first_embedding_s": first, "peak_rss_mib": peak_rss_mib()}))
""")


def fresh_process(kind: str, path: Path, options: Path, threads: int, workload: Path) -> tuple[float, float]:
    """(cold start seconds, peak RSS MiB) of a new interpreter.

    Cold start: from spawning the process to its first embedding (import, load, one sentence).
    Peak RSS: after it has then embedded the throughput workload, the reference in batches of
    32 and a package with the runtime's default batching (a token budget, which is what bounds
    its memory: batches of 32 long sentences would hold gate products of 32 x 140 x 16384).
    """
    args = [kind, str(path), str(options), str(threads), str(workload), repr(time.time())]
    report = run_child(_CHILD, *args)
    return report["first_embedding_s"], report["peak_rss_mib"]


# -- the run ----------------------------------------------------------------------------------


def prepare(preset: str, precisions: list[str], cache: Path = CACHE) -> tuple[Path, Path, dict[str, Path]]:
    """Synthetic weights of `preset` and its packages under `cache/preset`, made once and reused."""
    from elmo_export import export_package
    from elmo_export.synthetic import write_synthetic

    weights_dir = cache / preset / "weights"
    options, weights = weights_dir / "options.json", weights_dir / "weights.hdf5"
    if not weights.exists():
        write_synthetic(preset, weights_dir, seed=0)
    packages = {}
    for precision in precisions:
        package = cache / preset / precision
        # A package exported by other exporter code would measure that code: export again.
        stamp = cache / preset / f"{precision}.exporter-sha256"
        if not (package / "elmo.json").exists() or not stamp.exists() or stamp.read_text() != exporter_hash():
            export_package(options, weights, package, precision=precision, force=True, progress=False)
            stamp.write_text(exporter_hash())
        packages[precision] = package
    return options, weights, packages


def exporter_hash() -> str:
    """sha256 over the exporter's and the runtime's contract sources."""
    import hashlib

    digest = hashlib.sha256()
    root = HERE.parent
    for path in sorted([*(root / "elmo_export").glob("*.py"), root / "elmo_runtime" / "contract.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def package_size_mb(package: Path) -> float:
    return sum(f.stat().st_size for f in package.iterdir()) / 1e6


def run_preset(
    preset: str, precisions: list[str], threads: int, repeats: int, n_batches: int, extra: dict[str, Path] | None = None
) -> list[Row]:
    """Rows for the reference and each package of `preset`; `extra`: more packages by label
    (e.g. one exported by an older version of the exporter), measured the same way."""
    import torch

    from elmo_export.weights import load_reference
    from elmo_runtime import Elmo
    from elmo_runtime.chars import batch_to_char_ids

    options, weights, packages = prepare(preset, precisions)
    packages = {f"ONNX {precision}": package for precision, package in packages.items()} | (extra or {})
    text = sentences()
    batches = throughput_batches(text, n_batches)
    n_tokens = sum(len(s) for b in batches for s in b)
    one = [latency_sentence(text)]
    even = [unpadded_batch(text)]
    n_even = sum(map(len, even[0]))
    workload = CACHE / preset / "workload.json"
    workload.write_text(json.dumps(batches))

    torch.set_num_threads(threads)
    model = load_reference(options, weights)

    def reference(batch_list):
        def run():
            with torch.no_grad():
                for batch in batch_list:
                    model(torch.from_numpy(batch_to_char_ids(batch)))

        return run

    # No token cache here: repeating the same input would skip the char CNN entirely, which
    # the reference never does. The cache's gain is measured on its own (`cache_gain`).
    elmos = {label: Elmo(package, device="cpu", threads=threads, token_cache=0) for label, package in packages.items()}

    # The reference on its own: PyTorch's threads spin on after each call, which would slow
    # whichever package came next.
    engines = {"PyTorch reference": reference} | {label: runtime(elmo) for label, elmo in elmos.items()}
    batch_s, even_s, one_s = {}, {}, {}
    for group in (["PyTorch reference"], list(elmos)):
        batch_s |= median_times({label: engines[label](batches) for label in group}, repeats)
        even_s |= median_times({label: engines[label](even) for label in group}, repeats)
        one_s |= median_times({label: engines[label]([one]) for label in group}, repeats * 3)
    rows = []
    for label in engines:
        if label == "PyTorch reference":
            cold, rss = fresh_process("reference", weights, options, threads, workload)
            size = (options.stat().st_size + weights.stat().st_size) / 1e6
        else:
            cold, rss = fresh_process("package", packages[label], options, threads, workload)
            size = package_size_mb(packages[label])
        rows.append(
            Row(preset, label, n_tokens / batch_s[label], n_even / even_s[label], 1000 * one_s[label], cold, rss, size)
        )
        if label == "ONNX int8":
            rows[-1].extra = cache_gain(packages[label], threads, repeats)
    return rows


def runtime(elmo):
    """`Elmo.embed` as an engine of `run_preset`: batches -> a callable that embeds them."""

    def make(batch_list):
        def run():
            for batch in batch_list:
                elmo.embed(batch, batch_size=BATCH, batch_tokens=1 << 20)

        return run

    return make


def cache_gain(package: Path, threads: int, repeats: int) -> dict:
    """Tokens/s on running text (the whole benchmark text in order) with and without the cache."""
    from elmo_runtime import Elmo

    text = sentences()
    n_tokens = sum(map(len, text))
    result = {}
    for label, size in (("cache", None), ("no cache", 0)):
        elmo = Elmo(package, device="cpu", threads=threads, token_cache=size)

        def run(elmo=elmo):
            elmo.token_cache.clear()  # every run starts empty, as in a new process
            elmo.embed(text, batch_size=BATCH)

        result[label] = n_tokens / median_time(run, repeats)
    return result


def table(rows: list[Row]) -> str:
    lines = [
        "| model | engine | batch 32 tokens/s | x ref | batch 32 x 20, no padding, tokens/s | x ref | "
        "batch 1, 20 tokens (ms) | x ref | cold start (s) | peak RSS (MiB) | size (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    refs = {r.preset: r for r in rows if r.engine == "PyTorch reference"}
    for r in rows:
        ref = refs[r.preset]
        lines.append(
            f"| {r.preset} | {r.engine} | {r.batch_tok_s:,.0f} | {r.batch_tok_s / ref.batch_tok_s:.1f} | "
            f"{r.unpadded_tok_s:,.0f} | {r.unpadded_tok_s / ref.unpadded_tok_s:.1f} | "
            f"{r.latency_ms:.1f} | {ref.latency_ms / r.latency_ms:.1f} | {r.cold_start_s:.2f} | "
            f"{r.peak_rss_mib:,.0f} | {r.size_mb:,.1f} |"
        )
    gains = [
        f"| {r.preset} | {r.engine} | {r.extra['cache']:,.0f} | {r.extra['no cache']:,.0f} | "
        f"{r.extra['cache'] / r.extra['no cache']:.2f} |"
        for r in rows
        if r.extra
    ]
    if gains:
        lines += [
            "",
            "Token-embedding cache on running text (all 223 sentences in order, batches of 32, a fresh cache per run):",
            "",
            "| model | engine | tokens/s, cache | tokens/s, no cache | gain |",
            "| --- | --- | ---: | ---: | ---: |",
            *gains,
        ]
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, onnxruntime "
        f"{onnxruntime.__version__}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["original", "small"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        type=precision_name,
        default=["fp32", "int8", "int4"],
        help="package precisions (fp16 is for CUDA; on the CPU it is slower than fp32)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime alike")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="batches of 32 sentences in the throughput run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite RESULTS.md")
    parser.add_argument(
        "--extra-package",
        action="append",
        default=[],
        metavar="PRESET:LABEL=DIR",
        help="also measure the package DIR of PRESET's weights under LABEL (e.g. one exported "
        "by an older exporter, to compare in the same run); repeatable",
    )
    args = parser.parse_args()
    extra: dict[str, dict[str, Path]] = {}
    for spec in args.extra_package:
        preset, sep, rest = spec.partition(":")
        label, sep2, directory = rest.partition("=")
        if not (sep and sep2 and label and Path(directory, "elmo.json").is_file()):
            parser.error(f"--extra-package {spec!r}: expected PRESET:LABEL=DIR, DIR a package directory")
        extra.setdefault(preset, {})[label] = Path(directory)

    rows = []
    for preset in args.presets:
        rows += run_preset(preset, args.precisions, args.threads, args.repeats, args.batches, extra.get(preset))
        print(table(rows), flush=True)
    result = (
        f"# Benchmark results\n\n{date.today().isoformat()}, `python benchmarks/bench.py "
        f"{' '.join(sys.argv[1:])}`\n\nMachine: {machine()}; {args.threads} threads for every engine.\n\n"
        f"{table(rows)}\n"
    )
    print(result)
    if not args.no_write:
        results = HERE / "RESULTS.md"
        # The design measurements are not this script's: keep them.
        old = results.read_text(encoding="utf-8") if results.exists() else ""
        kept = old[old.index(DESIGN_MEASUREMENTS) :] if DESIGN_MEASUREMENTS in old else ""
        results.write_text(result + ("\n" + kept if kept else ""), encoding="utf-8")


if __name__ == "__main__":
    main()
