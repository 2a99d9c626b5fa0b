"""Footprint of a runtime-only install: disk, package sizes, import time, cold start, peak RSS.

    python benchmarks/footprint.py            # writes benchmarks/FOOTPRINT.md

What it does, all on this machine:

1. builds the project's wheel and installs it, with its declared dependencies only, into a
   fresh venv without pip or setuptools (`benchmarks/.cache/runtime-venv`): what
   `pip install elmo-onnx` gives an app; then sums the installed bytes per distribution;
2. exports the packages measured (the default model in `models/` at every precision, the
   `small` and `original` architectures with synthetic weights: sizes and speed do not depend
   on the weights' values) and records their sizes;
3. in that venv, fresh processes (medians of `--repeats`): `import elmo_runtime` alone, then
   the cold start of each package (spawn, import, `Elmo(package)`, the first embedding of one
   sentence), and the peak RSS (VmHWM) after that first embedding and after one batch of 32
   sentences of the benchmark text.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
VENV = CACHE / "runtime-venv"
sys.path.insert(0, str(HERE))
from _common import run_child  # noqa: E402

_SIZES = r"""
import json, os, sys
from importlib import metadata
sizes = {}
for dist in metadata.distributions():
    total = 0
    for f in dist.files or []:
        p = f.locate()
        if os.path.isfile(p):
            total += os.path.getsize(p)
    sizes[dist.metadata["Name"]] = total
print(json.dumps(sizes))
"""

_IMPORT = r"""
import json, sys, time
t = time.perf_counter()
from elmo_runtime import Elmo  # `import elmo_runtime` alone loads nothing: its names are lazy
took = time.perf_counter() - t
heavy = sorted({m.split('.')[0] for m in sys.modules} & {"torch", "elmo_export", "huggingface_hub", "onnx", "h5py"})
print(json.dumps({"import_s": took, "heavy": heavy}))
"""

_COLD = r"""
import json, sys, time
spawned = float(sys.argv[2])
t0 = time.time()
from elmo_runtime import Elmo
t1 = time.time()
elmo = Elmo(sys.argv[1], device="cpu")
t2 = time.time()
elmo.embed([["The", "cat", "sat", "on", "the", "mat", "."]])
t3 = time.time()
from _common import peak_rss_mib
first_hwm = peak_rss_mib()
elmo.embed(json.loads(open(sys.argv[3]).read()))
print(json.dumps({"start_s": t0 - spawned, "import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2,
                  "cold_s": t3 - spawned, "rss_first_mib": first_hwm, "rss_batch_mib": peak_rss_mib()}))
"""


def build_venv() -> dict[str, int]:
    """A fresh runtime-only venv from the project's wheel; its installed bytes per distribution."""
    shutil.rmtree(VENV, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = shutil.copytree(
            ROOT,
            Path(tmp) / "src",
            ignore=shutil.ignore_patterns(
                ".venv*", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".cache", "*.whl"
            ),
        )
        pip = [sys.executable, "-m", "pip"]
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", f"{tmp}/w", str(src)], check=True
        )
        (wheel,) = Path(tmp, "w").glob("*.whl")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True)
        subprocess.run([*pip, "--python", str(VENV / "bin" / "python"), "install", "-q", str(wheel)], check=True)
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", _SIZES], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def venv_bytes() -> int:
    """Every file under the venv (interpreter links, caches and all), as `du` would count them."""
    return sum(p.stat().st_size for p in VENV.rglob("*") if p.is_file() and not p.is_symlink())


def packages(presets: dict[str, list[str]]) -> dict[str, Path]:
    """The packages measured, exported when missing or when the exporter changed."""
    from bench import exporter_hash, prepare

    from elmo_export import export_package

    found = {"default": ROOT / "elmo_runtime" / "default"}
    for precision in ("fp32", "fp16", "int4"):
        out = CACHE / "default-wordnet" / precision
        stamp = CACHE / "default-wordnet" / f"{precision}.exporter-sha256"
        if not (out / "elmo.json").exists() or not stamp.exists() or stamp.read_text() != exporter_hash():
            models = ROOT / "models" / "default-wordnet"
            export_package(
                models / "options.json", models / "weights.hdf5", out, precision=precision, force=True, progress=False
            )
            stamp.write_text(exporter_hash())
        found[f"default-{precision}"] = out
    for preset, precisions in presets.items():
        _, _, exported = prepare(preset, precisions)
        found.update({f"{preset}-{p}": path for p, path in exported.items()})
    return found


def size_mb(package: Path) -> float:
    return sum(f.stat().st_size for f in package.iterdir() if f.is_file()) / 1e6


def fresh(code: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["ELMO_ONNX_OFFLINE"] = "1"
    return run_child(code, *args, python=VENV / "bin" / "python", env=env, cwd=CACHE)


def _report(
    args: argparse.Namespace,
    load: tuple[float, float, float],
    dists: dict[str, int],
    total: int,
    pkgs: dict[str, Path],
    imports: list[dict],
    rows: dict[str, dict],
) -> list[str]:
    """The lines of FOOTPRINT.md: install sizes, package sizes, import time, cold starts."""
    mib = 1024 * 1024
    lines = [
        "# Footprint of a runtime-only install",
        "",
        f"`python benchmarks/footprint.py` ({time.strftime('%Y-%m-%d %H:%M')}; load average before the run "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on this 2-core machine, shared with other jobs; medians of "
        f"{args.repeats} fresh processes).",
        "",
        f"Installed: **{total / mib:.1f} MiB** for the whole venv (`pip install elmo-onnx` into a venv made "
        f"without pip or setuptools; the default package included). By distribution:",
        "",
        "| distribution | MiB |",
        "| --- | ---: |",
    ]
    for name, size in sorted(dists.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {size / mib:.1f} |")
    lines += ["", "Package sizes (all files, MB):", "", "| package | precision | MB |", "| --- | --- | ---: |"]
    for name, path in pkgs.items():
        model, _, precision = name.partition("-")
        lines.append(f"| {model} | {precision or 'int8 (shipped)'} | {size_mb(path):.2f} |")
    heavy = sorted({m for r in imports for m in r["heavy"]})
    import_s = statistics.median(r["import_s"] for r in imports)
    lines += [
        "",
        f"`from elmo_runtime import Elmo` in a fresh process: {import_s:.3f} s "
        f"(modules it pulls in among torch, elmo_export, huggingface_hub, onnx, h5py: {heavy or 'none'}).",
        "",
        "Cold start (spawn to first embedding of a 7-token sentence) and peak RSS (VmHWM) after that "
        "embedding and after one batch of 32 sentences of the benchmark text:",
        "",
        "| package | interpreter start (s) | import (s) | load (s) | first embedding (s) | cold start (s) | "
        "peak RSS, first (MiB) | peak RSS, batch of 32 (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['start_s']:.2f} | {r['import_s']:.2f} | {r['load_s']:.2f} | {r['first_s']:.2f} | "
            f"{r['cold_s']:.2f} | {r['rss_first_mib']:.0f} | {r['rss_batch_mib']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "FOOTPRINT.md")
    parser.add_argument(
        "--cold",
        nargs="+",
        default=["default", "small-int8", "original-int8"],
        help="the packages whose cold start and peak RSS are measured",
    )
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    load = os.getloadavg()

    dists = build_venv()
    total = venv_bytes()
    presets = {"small": ["fp32", "fp16", "int8", "int4"], "original": ["int8"]}
    presets = {p: v for p, v in presets.items() if any(c.startswith(p + "-") for c in args.cold)}
    pkgs = packages(presets)
    from bench import sentences, throughput_batches

    workload = CACHE / "footprint-batch.json"
    workload.write_text(json.dumps(throughput_batches(sentences(), 1)[0]))

    imports = [fresh(_IMPORT) for _ in range(args.repeats)]
    rows = {}
    for name in args.cold:
        runs = [fresh(_COLD, str(pkgs[name]), repr(time.time()), str(workload)) for _ in range(args.repeats)]
        rows[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    lines = _report(args, load, dists, total, pkgs, imports, rows)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
