"""ELMoForManyLangs at the released size: export cost, package sizes and speed against `original`.

One run, synthetic weights (cost and speed do not depend on their values) in the exact on-disk
layout of a released model (`write_synthetic_manylangs("released")`: 2 x 4096 cells,
projection 512, 7 filter widths up to 1024, 2 highway layers, 50-d chars, 100-d words) with a
word dictionary of `--words` entries (150,000 by default: released models hold 71k to 140k+):

- export: wall time and peak RSS (VmHWM) of one `elmo-export DIR` process per precision;
- sizes: each package, and its word table (a Gather input: it stays float under int8/int4);
- speed: ELMoForManyLangs packages against `original` packages (the same LSTM: 2 x 4096 / 512)
  on the same token lists (the GNU GPL v3, `bench.sentences()`), throughput at batch 32 and
  the latency of one 20-token sentence, token cache off (every token goes through the token
  embedder), medians over repeats after a warm-up, 2 threads per session.

    python benchmarks/bench_manylangs.py                  # writes benchmarks/RESULTS-manylangs.md
    python benchmarks/bench_manylangs.py --precisions fp32 int8 --repeats 3 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (the English benchmark's inputs, packages and helpers)
from _common import export_in_child  # noqa: E402

from elmo_runtime import contract as C  # noqa: E402

CACHE = HERE / ".cache" / "manylangs"


def model_dir(words: int) -> Path:
    from elmo_export.synthetic import _MANYLANGS_WORDS, write_synthetic_manylangs

    directory = CACHE / f"released-{words}w"
    if not (directory / "encoder.pkl").exists():
        write_synthetic_manylangs(
            "released", directory, seed=0, architecture_file=False, extra_words=words - 4 - len(_MANYLANGS_WORDS)
        )
    return directory


def export(directory: Path, precision: str) -> tuple[Path, dict]:
    """Export in a fresh process: `(package, {seconds, peak_rss_mib})`."""
    package = CACHE / f"pkg-{precision}"
    args = [str(directory), "-o", str(package), "--quantize", precision, "--force", "--no-progress", "-q"]
    report = export_in_child(*args)
    return package, report


def word_table_mb(package: Path) -> float:
    """Bytes of the word table initializer in the token embedder's external data, in MB."""
    import onnx

    model = onnx.load(str(package / "token_embedder.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        if "word_embedding" in tensor.name:
            info = {e.key: e.value for e in tensor.external_data}
            return int(info["length"]) / 1e6 if "length" in info else len(tensor.raw_data) / 1e6
    raise ValueError(f"{package}: no word table")


def speed(package: Path, batches: list, one: list[str], repeats: int, threads: int) -> tuple[float, float]:
    """(batch-32 tokens/s, batch-1 20-token latency ms), token cache off, zero state."""
    from elmo_runtime import Elmo

    elmo = Elmo(package, device="cpu", threads=threads, token_cache=0)
    n_tokens = sum(len(s) for b in batches for s in b)
    t = bench.median_time(lambda: [elmo.embed(b) for b in batches], repeats)  # the runtime's own batching
    latency = bench.median_time(lambda: elmo.embed([one]), repeats)
    return n_tokens / t, latency * 1000


def _report(
    args: argparse.Namespace,
    load: tuple[float, float, float],
    export_rows: list[tuple],
    speed_rows: list[tuple],
    n_batches: int,
) -> list[str]:
    """The lines of RESULTS-manylangs.md: the export table, then the speed table."""
    lines = [
        "# ELMoForManyLangs benchmark",
        "",
        f"{time.strftime('%Y-%m-%d')}, `python benchmarks/bench_manylangs.py`; {bench.machine()}",
        f"Load average at the start (1, 5, 15 min): {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} (a shared machine: "
        "read the ratios, measured side by side, more than the absolute figures).",
        "",
        f"Released-size synthetic model, {args.words:,} words in `word.dic`. Export: one `elmo-export DIR` process "
        "per precision (parity gate included), peak RSS = VmHWM.",
        "",
        "| precision | export (s) | peak RSS (GiB) | package (MB) | word table (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {p} | {s:.1f} | {r / 1024:.2f} | {size:.1f} | {w:.1f} |" for p, s, r, size, w in export_rows]
    lines += [
        "",
        f"Speed, same token lists for both ({n_batches} batches of {bench.BATCH} sentences of the GPL; "
        f"one {bench.LATENCY_TOKENS}-token sentence), token cache off, medians of {args.repeats}:",
        "",
        "| precision | model | batch 32 tokens/s | x original | batch 1, 20 tokens (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    base = {p: t for p, n, t, _ in speed_rows if n.startswith("original")}
    lines += [f"| {p} | {n} | {t:,.0f} | {t / base[p]:.2f} | {ms:.1f} |" for p, n, t, ms in speed_rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=list(C.PRECISIONS), choices=C.PRECISIONS)
    parser.add_argument("--words", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args()
    load = os.getloadavg()

    directory = model_dir(args.words)
    export_rows, packages = [], {}
    for precision in args.precisions:
        package, report = export(directory, precision)
        packages[precision] = package
        export_rows.append(
            (
                precision,
                report["seconds"],
                report["peak_rss_mib"],
                bench.package_size_mb(package),
                word_table_mb(package),
            )
        )
        print(f"exported {precision}: {report['seconds']:.1f} s, {report['peak_rss_mib']:.0f} MiB", flush=True)

    sentences = bench.sentences()
    batches = bench.throughput_batches(sentences, args.batches)
    one = bench.latency_sentence(sentences)
    _, _, english = bench.prepare("original", [p for p in args.precisions if p in ("fp32", "int8")])
    speed_rows = []
    for precision in [p for p in args.precisions if p in ("fp32", "int8")]:
        for name, package in (
            ("original (English, bytes)", english[precision]),
            ("ELMoForManyLangs (dictionary + words)", packages[precision]),
        ):
            tok_s, ms = speed(package, batches, one, args.repeats, args.threads)
            speed_rows.append((precision, name, tok_s, ms))
            print(f"speed {precision} {name}: {tok_s:.0f} tokens/s, {ms:.1f} ms", flush=True)

    lines = _report(args, load, export_rows, speed_rows, len(batches))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (HERE / "RESULTS-manylangs.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
