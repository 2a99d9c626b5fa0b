"""The Ray engine against single-process `elmo-embed`: same package, input and cores.

    python benchmarks/bench_corpus.py                       # original int8, 2 CPUs, 3 repeats
    python benchmarks/bench_corpus.py --preset small --repeats 1

Each run is a fresh process. Single process: `embed_file` with 2 threads (model load
included). Ray: a local cluster of 2 CPUs started first (its start-up reported on its own, as
a cluster runs before and after a job), then `embed_to_parquet` with 2 workers of 1 thread each
(worker start and model load included). Both embed the top layer, token by token, into
float32; medians over the repeats (written to `benchmarks/RESULTS-corpus.json`). Peak memory
per worker: the highest VmHWM of the Ray workers' processes. Bytes per token: every output
choice written for the same sentences (the text's first 60).

Input: the benchmark text (`benchmarks/data/GPL-3.txt`, 223 sentences, median 25 tokens)
repeated to `--sentences` lines. Synthetic weights (speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import run_child  # noqa: E402
from bench import CACHE, prepare, sentences  # noqa: E402

_SINGLE = """
import json, sys, time
t0 = time.perf_counter()
from elmo_runtime.cli import embed_file
n = embed_file(sys.argv[1], sys.argv[2], sys.argv[3], layers="top", threads=int(sys.argv[4]), force=True,
               progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": n}))
"""

_RAY = """
import json, os, sys, threading, time
t0 = time.perf_counter()
import ray
from _common import peak_rss_mib
from elmo_runtime.corpus.job import embed_to_parquet
ray.init(num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False, logging_level="WARNING")
t1 = time.perf_counter()
peak, stop = {}, threading.Event()

def watch():  # the workers' peak RSS (VmHWM), read while they live
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and b"MapWorker" in open(f"/proc/{pid}/cmdline", "rb").read():
                    peak[pid] = max(peak.get(pid, 0), peak_rss_mib(pid))
            except OSError:
                pass
        stop.wait(0.2)

threading.Thread(target=watch, daemon=True).start()
report = embed_to_parquet(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[5]), threads=int(sys.argv[6]),
                          layers="top", force=True, progress=False)
t2 = time.perf_counter()
stop.set()
print(json.dumps({"cluster_start": t1 - t0, "seconds": t2 - t1, "rows": report.rows, "tokens": report.tokens,
                  "workers": len(report.workers), "peak_worker_mib": max(peak.values(), default=0)}))
"""


def run(code: str, *args) -> dict:
    return run_child(code, *args, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def bytes_per_token(package: Path, work: Path, lines: list[str]) -> list[dict]:
    """Every output choice of `elmo-embed` for the same sentences: file size / tokens."""
    from elmo_runtime.cli import embed_file
    from elmo_runtime.tokenize import tokenize

    (work / "sizes.txt").write_text("\n".join(lines) + "\n")
    tokens = sum(len(tokenize(line)) for line in lines)
    rows = []
    for layers in ("all", "top"):
        for pool in (None, "mean"):
            for dtype in ("float32", "float16"):
                for format in ("hdf5", "npz", "parquet"):
                    out = work / f"sizes.{format}"
                    embed_file(
                        package,
                        work / "sizes.txt",
                        out,
                        layers=layers,
                        pool=pool,
                        dtype=dtype,
                        format=format,
                        forget_sentences=True,
                        force=True,
                        progress=False,
                    )
                    rows.append(
                        {
                            "layers": layers,
                            "vectors": "sentence" if pool else "token",
                            "dtype": dtype,
                            "format": format,
                            "bytes_per_token": out.stat().st_size / tokens,
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="original")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes-only", action="store_true", help="only the bytes per token of each output")
    parser.add_argument("--no-sizes", action="store_true", help="leave out the bytes per token")
    parser.add_argument("--size-sentences", type=int, default=60, help="sentences written for the bytes per token")
    args = parser.parse_args()

    _, _, packages = prepare(args.preset, [args.precision])
    package = packages[args.precision]
    work = CACHE / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    text = [" ".join(s) for s in sentences()]
    lines = [text[i % len(text)] for i in range(args.sentences)]
    (work / "input.txt").write_text("\n".join(lines) + "\n")
    tokens = sum(len(line.split()) for line in lines)
    sizes = [] if args.no_sizes else bytes_per_token(package, work, text[: args.size_sentences])
    if args.sizes_only:
        print(json.dumps(sizes, indent=1))
        return

    single, cluster = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        single.append(run(_SINGLE, package, work / "input.txt", work / "single.hdf5", args.cpus))
        cluster.append(run(_RAY, package, work / "input.txt", work / "ray", args.cpus, args.cpus, 1))
    assert all(r["tokens"] == tokens for r in cluster), (tokens, cluster)
    single_s = statistics.median(r["seconds"] for r in single)
    ray_s = statistics.median(r["seconds"] for r in cluster)
    result = {
        "package": f"{args.preset} {args.precision}",
        "sentences": args.sentences,
        "tokens": tokens,
        "cpus": args.cpus,
        "repeats": args.repeats,
        "single_tokens_per_s": tokens / single_s,
        "ray_tokens_per_s": tokens / ray_s,
        "ray_vs_single": single_s / ray_s,
        "ray_vs_single_with_cluster_start": single_s
        / statistics.median(r["seconds"] + r["cluster_start"] for r in cluster),
        "ray_cluster_start_s": statistics.median(r["cluster_start"] for r in cluster),
        "ray_peak_worker_mib": max(r["peak_worker_mib"] for r in cluster),
        "load_average": os.getloadavg(),
        "bytes_per_token": sizes,
        "runs": {"single": single, "ray": cluster},
    }
    print(json.dumps(result, indent=1))
    (HERE / "RESULTS-corpus.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
