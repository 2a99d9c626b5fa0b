"""Peak memory against sentence length: one sentence of 1k to 200k tokens, in time chunks and whole.

The runtime runs a sentence longer than its batch budget in time chunks with the LSTM state
carried (`Elmo._embed_in_time_chunks`); before that, such a sentence ran as one batch and its
memory grew with its length. This measures both on the project's default model (or a
synthetic preset, `--model tiny`: the same code path, faster to run; fp32, every
layer returned, as `elmo-embed --all` writes it), each length in a fresh process: the peak RSS
of the call, the RSS before it, the size of the returned array, and what is left, the working
memory.
"Whole" is the same runtime with a budget no sentence exceeds (`batch_tokens=10**9`), which is
what every budget did before; by default it stops at 50k tokens (`--whole-up-to`; about 3 GB
at 100k on the default model).

    python benchmarks/long_sentences.py              # writes its section of RESULTS.md
    python benchmarks/long_sentences.py --model tiny --lengths 1000 10000 50000 200000 --threads 1
    python benchmarks/long_sentences.py --lengths 1000 5000 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import textwrap
from datetime import date
from pathlib import Path

from _common import run_child
from results import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
MODEL = ROOT / "models" / "default-wordnet"
LENGTHS = (1_000, 5_000, 20_000, 50_000, 100_000, 200_000)
WHOLE_UP_TO = 50_000

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from elmo_runtime import Elmo

    package, n, budget, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
    words = open(sys.argv[4], encoding="utf-8").read().split()
    rng = np.random.default_rng(0)
    tokens = [words[i] for i in rng.integers(0, len(words), n)]
    elmo = Elmo(package, device="cpu", threads=threads)

    from _common import peak_rss_mib

    def status(field):  # kB
        return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1])

    # Loading peaks above what it keeps: reset the peak (Linux's clear_refs) to see the embedding's.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    loaded = status("VmRSS")
    started = time.perf_counter()
    vectors = elmo.embed([tokens], batch_tokens=budget)[0]
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_mib": peak_rss_mib(), "loaded_mib": loaded / 1024, "array_mib": vectors.nbytes / 2**20,
                      "seconds": seconds, "finite": bool(np.isfinite(vectors).all())}))
""")


def package(model: str) -> Path:
    """The model exported to fp32 (again when the exporter's sources changed): "default" (the
    project's default model) or a synthetic preset (`elmo_export.synthetic`, e.g. "tiny")."""
    from elmo_export import export_package

    sources = sorted((ROOT / "elmo_export").glob("*.py"))
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    path = CACHE / f"{model}-fp32-{stamp}"
    if not path.is_dir():
        CACHE.mkdir(exist_ok=True)
        if model == "default":
            options, weights = MODEL / "options.json", MODEL / "weights.hdf5"
        else:
            from elmo_export.synthetic import write_synthetic

            options, weights = write_synthetic(model, CACHE / f"{model}-weights", seed=0)
        export_package(options, weights, path, progress=False)
    return path


def measure(pkg: Path, n: int, budget: int, threads: int) -> dict:
    return run_child(CHILD, pkg, n, budget, MODEL / "heldout_sample.txt", threads)


def table(rows: list[dict]) -> str:
    lines = [
        "| tokens | run | peak RSS while embedding (MiB) | RSS before (MiB) | returned array (MiB) "
        "| working memory (MiB) | seconds |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        working = r["peak_mib"] - r["loaded_mib"] - r["array_mib"]
        lines.append(
            f"| {r['n']:,} | {r['run']} | {r['peak_mib']:,.0f} | {r['loaded_mib']:,.0f} | "
            f"{r['array_mib']:,.0f} | {working:,.0f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help='"default" (models/default-wordnet) or a synthetic preset')
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--whole-up-to", type=int, default=WHOLE_UP_TO, help="longest sentence also run whole")
    parser.add_argument("--budget", type=int, default=512, help="batch_tokens of the chunked runs (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads per session (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite RESULTS.md")
    args = parser.parse_args()

    pkg = package(args.model)
    rows = []
    for n in args.lengths:
        runs = [("chunks", args.budget)] + ([("whole", 10**9)] if n <= args.whole_up_to else [])
        for run, budget in runs:
            row = {"n": n, "run": run, **measure(pkg, n, budget, args.threads)}
            assert row["finite"], row
            rows.append(row)
            print(
                f"{n:>8,} {run:<7} peak {row['peak_mib']:8,.0f} MiB  array {row['array_mib']:6,.0f} MiB  "
                f"{row['seconds']:6.1f} s",
                flush=True,
            )
    load = os.getloadavg()
    import numpy
    import onnxruntime

    text = "\n".join(
        [
            "## Peak memory against sentence length",
            "",
            f"{date.today()}, `python benchmarks/long_sentences.py {' '.join(sys.argv[1:])}` "
            f"(model {args.model}, fp32, "
            f"all layers, {args.threads} thread(s), chunks within `batch_tokens={args.budget}`; "
            f"onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}). Load average at the end "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
            f"{os.cpu_count()} cores: the machine was shared, so seconds are indicative; memory is not affected.",
            "",
            "Peak RSS while embedding: the peak from the call on (reset after loading through /proc/self/clear_refs). "
            "Working memory = that peak - the RSS before the call - the returned array. In time chunks it stays flat "
            "whatever the length; a whole sentence's grows with it.",
            "",
            table(rows),
        ]
    )
    print(text)
    if not args.no_write:
        write_section("long_sentences.py", text)


if __name__ == "__main__":
    main()
