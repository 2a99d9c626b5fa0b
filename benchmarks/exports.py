"""Size, parity and cost of every export: each model in each precision, through `elmo-export`.

Each export runs as its own `elmo-export` process (the command a user runs), timed from spawn
to exit, with its peak RSS (VmHWM). Parity is the export's own report (the
worst layer over the zero, warm and carried states), read back from the package's manifest.

    python benchmarks/exports.py                    # fixtures, default, small, original; writes RESULTS.md
    python benchmarks/exports.py --models default --no-write

Models: the TensorFlow fixtures (`../shared/fixtures`), the shipped default model
(`models/default-wordnet`), and the synthetic `small` and `original` (the weights bench.py uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from _common import ROOT, export_in_child
from bench import CACHE, machine
from results import write_section

from elmo_runtime import contract as C

FIXTURES = ROOT.parent / "shared" / "fixtures"


def sources(models: list[str]) -> dict[str, tuple[Path, Path]]:
    """`{model: (options.json, weights.hdf5)}`; synthetic weights are written once into the cache."""
    from elmo_export.synthetic import write_synthetic

    found = {}
    for model in models:
        if model in ("bilm-tf", "allennlp-elmo"):
            found[model] = (FIXTURES / model / "options.json", FIXTURES / model / "lm_weights.hdf5")
        elif model == "default":
            found[model] = (
                ROOT / "models" / "default-wordnet" / "options.json",
                ROOT / "models" / "default-wordnet" / "weights.hdf5",
            )
        else:
            weights_dir = CACHE / model / "weights"
            if not (weights_dir / "weights.hdf5").exists():
                write_synthetic(model, weights_dir, seed=0)
            found[model] = (weights_dir / "options.json", weights_dir / "weights.hdf5")
    return found


def export(options: Path, weights: Path, out: Path, precision: str) -> dict:
    """Run `elmo-export` once; -> seconds, peak RSS (GiB), size (MB) and the worst parity layer."""
    report = export_in_child(
        "--options", options, "--weights", weights, "-o", out, "--quantize", precision, "--force", "--no-progress", "-q"
    )
    manifest = json.loads((out / "elmo.json").read_text(encoding="utf-8"))
    layers = [layer for mode in manifest["parity"]["modes"] for layer in mode["layers"]]
    size = sum(entry["bytes"] for entry in manifest["files"].values()) + (out / "elmo.json").stat().st_size
    return {
        "seconds": report["wall_s"],
        "rss_gib": report["peak_rss_mib"] / 1024,
        "mb": size / 1e6,
        "max_abs": max(layer["max_abs"] for layer in layers),
        "mean_cos": min(layer["mean_cosine"] for layer in layers),
        "min_cos": min(layer["min_cosine"] for layer in layers),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | precision | size (MB) | % of fp32 | max abs | mean cos | min cos | export (s) | peak RSS (GiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fp32 = {r["model"]: r["mb"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        share = f"{100 * r['mb'] / fp32[r['model']]:.1f}" if r["model"] in fp32 else "—"
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['mb']:.2f} | {share} | {r['max_abs']:.1e} | "
            f"{r['mean_cos']:.6f} | {r['min_cos']:.6f} | {r['seconds']:.1f} | {r['rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bilm-tf", "allennlp-elmo", "default", "small", "original"])
    parser.add_argument("--precisions", nargs="+", default=list(C.PRECISIONS))
    parser.add_argument("--out", type=Path, default=CACHE / "exports", help="where the packages are written")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite RESULTS.md")
    args = parser.parse_args()

    rows = []
    for model, (options, weights) in sources(args.models).items():
        for precision in args.precisions:
            rows.append(
                {
                    "model": model,
                    "precision": precision,
                    **export(options, weights, args.out / f"{model}-{precision}", precision),
                }
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = (
        f"{date.today().isoformat()}, `python benchmarks/exports.py {' '.join(sys.argv[1:])}`. Machine: "
        f"{machine()}. Synthetic weights for `small` and `original`; parity: the worst layer of the export's "
        f"report; export: spawn to exit of `elmo-export`; peak RSS: that process.\n\n{table(rows)}"
    )
    print(text)
    if not args.no_write:
        write_section("exports.py", text)


if __name__ == "__main__":
    main()
