"""Package load and per-sentence latency: the browser (onnxruntime-web, wasm, 1 thread and 2),
Node.js (js/, onnxruntime-node) and Python (elmo_runtime), on the same machine.

    python benchmarks/bench_browser.py [--package NAME=DIR ...] [--repeats 3] [--json OUT]

Each client loads the package (files read, sha256 checked, sessions created: the load a user
waits for), embeds one warm-up sentence, then the parity sentences one at a time, `repeats`
times; the table gives the median load of 3 and the median and 90th percentile per sentence.
Needs node, npm (js/ installed) and /usr/bin/chromium, as tests/test_browser.py does.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elmo_runtime import Elmo  # noqa: E402
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE  # noqa: E402

JS = ROOT / "js"


def sentences() -> list[list[str]]:
    """The first 20 parity sentences (tokenized, 1 to 60 tokens)."""
    lines = (ROOT / "elmo_export" / "data" / "parity_sentences.txt").read_text(encoding="utf-8").splitlines()
    return [line.split(" ") for line in lines if line.strip() and not line.startswith("#")][:20]


def python(package: Path, threads: int | None, batch: list, repeats: int) -> dict:
    loads = []
    for _ in range(3):
        t = time.perf_counter()
        elmo = Elmo(package, device="cpu", threads=threads, token_cache=0)
        loads.append(1000 * (time.perf_counter() - t))
    elmo.embed([batch[0]])
    times = []
    for _ in range(repeats):
        for s in batch:
            t = time.perf_counter()
            elmo.embed([s])
            times.append(1000 * (time.perf_counter() - t))
    return {"loadMs": float(np.median(loads)), "times": times}


def node(package: Path, threads: int, batch: list, repeats: int) -> dict:
    runs = [
        json.loads(
            subprocess.run(
                ["node", str(JS / "test" / "bench.mjs")],
                capture_output=True,
                text=True,
                check=True,
                input=json.dumps(
                    {
                        "package": str(package),
                        "threads": threads,
                        "sentences": batch,
                        "repeats": repeats if k == 0 else 0,
                    }
                ),
            ).stdout
        )
        for k in range(3)
    ]
    return {"loadMs": float(np.median([r["loadMs"] for r in runs])), "times": runs[0]["times"]}


def browser(url: str, name: str, threads: int, batch: list, repeats: int) -> dict:
    runs = []
    for k in range(3):
        with tempfile.TemporaryDirectory() as profile:
            request = {
                "url": url,
                "packageUrl": f"/package/{name}/",
                "threads": threads,
                "userDataDir": profile,
                **({"bench": {"sentences": batch, "repeats": repeats}} if k == 0 else {}),
            }
            done = subprocess.run(
                ["node", str(JS / "test" / "browser.mjs")],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout))
    assert all(f"{threads} thread(s)" in r["status"] for r in runs), runs[0]["status"]
    return {"loadMs": float(np.median([r["loadMs"] for r in runs])), "times": runs[0]["bench"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--package", action="append", default=[], help="NAME=DIR (default: default=the shipped package)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    packages = dict(p.split("=", 1) for p in args.package) or {"default": str(SHIPPED_PACKAGE)}
    batch = sentences()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, directory in packages.items():
            (Path(root) / name).symlink_to(Path(directory).resolve())
        server = subprocess.Popen(
            ["node", str(JS / "bin" / "serve.js"), "--package", root, "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        try:
            url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
            for name, directory in packages.items():
                package = Path(directory)
                runs = {
                    "Python, 1 thread": python(package, 1, batch, args.repeats),
                    "Python, 2 threads": python(package, 2, batch, args.repeats),
                    "Node.js, 1 thread": node(package, 1, batch, args.repeats),
                    "Node.js, 2 threads": node(package, 2, batch, args.repeats),
                    "browser (wasm), 1 thread": browser(url, name, 1, batch, args.repeats),
                    "browser (wasm), 2 threads": browser(url, name, 2, batch, args.repeats),
                }
                for client, r in runs.items():
                    rows.append(
                        {
                            "package": name,
                            "client": client,
                            "load_ms": round(r["loadMs"], 1),
                            "median_ms": round(float(np.median(r["times"])), 2),
                            "p90_ms": round(float(np.percentile(r["times"], 90)), 2),
                            "sentences": len(r["times"]),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    tokens = sum(map(len, batch)) / len(batch)
    print(
        f"\n{platform.processor() or platform.machine()}, {len(batch)} sentences of {tokens:.1f} tokens on average, "
        f"{args.repeats} repeats\n"
    )
    print("| package | client | load (ms) | per sentence, median (ms) | p90 (ms) |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['package']} | {r['client']} | {r['load_ms']:.0f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
