"""ONNX Runtime on CUDA, measured in one run: parity, speed and memory against the PyTorch
reference on the same GPU, and the GPU batch budget (issue #16).

On a machine with a GPU, torch with CUDA and onnxruntime-gpu (`original`, fp32 and fp16):

    python3 benchmarks/gpu.py --prepare-only --work /tmp/elmo-gpu    # CPU work; may run beforehand
    PYTHONPATH=/tmp/ort-gpu:. python3 benchmarks/gpu.py --work /tmp/elmo-gpu --out OUT_DIR

(`/tmp/ort-gpu`: where `tools/ort_gpu_wheel.py install` put onnxruntime-gpu, ahead of any
CPU build; `.`: the checkout, which need not be installed. That script prints the device calls
that bring the wheel and run both lines.) The CPU dry run that the tests run
(`tests/test_gpu_bench.py`), every step on `tiny`:

    python benchmarks/gpu.py --device cpu --preset tiny --repeats 1 --batches 1 \\
        --sizes 4 8 --sentences 16 --budgets 64 128

One run, in order; after each step the results so far are written to OUT_DIR/gpu.md (tables)
and OUT_DIR/gpu.json (every figure), so a run cut short keeps what it measured:

1. Engines: for --device cuda, ONNX Runtime must offer CUDAExecutionProvider and torch must see
   a GPU, or the run stops there (exit 2): nothing is ever measured on the CPU in their place.
2. Packages: synthetic weights for the preset, exported by `export_package` (whose parity gate
   runs on the CPU), through `bench.prepare`: reused when the same exporter code made them.
3. Placement: one profiled run of each package's two graphs on the device. A matrix product or a
   Scan that ONNX Runtime put on the CPU while CUDA was asked for stops the run (exit 2); it
   places shape arithmetic on the CPU on purpose, so the CPU's share of node time is reported.
4. Parity on the device: `parity.check_parity(device=...)`, the export gate's own check (the
   parity sentences, every state mode, the precision's named tolerance: fp32 max abs, fp16 min
   cosine) with ONNX Runtime on the device, beside the gate's CPU figures from the manifest.
5. Speed: tokens/s on batches of 32 and 64 sentences of bench.py's text (the same batches for
   every engine) and the latency of one 20-token sentence, for the PyTorch reference on the
   device and each package through `Elmo` (one model call per batch, token cache off, outputs
   copied to the host for both), medians over --repeats after a warm-up; and the device memory
   each engine holds once its run is done, over what was held before it was loaded (ONNX
   Runtime's arena and torch's caching allocator keep their peak, so this is the peak footprint:
   weights, activations, workspaces; on the CPU, the growth of the RSS).
6. Batch budget: tokens/s and memory of `Elmo.embed` over the text repeated to at least twice
   the largest budget in positions, for each --budgets value (ascending, one session each
   precision: memory is the peak up to that budget).

Exit status: 0 when every parity check passed and every measurement ran; 1 when a check failed
(marked FAILED) or a measurement raised (its error is listed; the other engines are still
measured: a short GPU slot must not lose them all); 2 when the engines are not what was asked for.

Bringing onnxruntime-gpu to a GPU machine without network access: `tools/ort_gpu_wheel.py`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # the checkout, when it is not installed (as on the GPU machine)

import bench  # noqa: E402  (beside this file: its text, batches, timing and packages)

log = logging.getLogger("gpu")

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER = {"cuda": CUDA, "cpu": CPU}
REFERENCE = "PyTorch reference"
PRECISIONS = ("fp32", "fp16")
# Work that must run on the GPU for a CUDA measurement to mean anything. ONNX Runtime places
# shape arithmetic (Shape, Gather on shapes, Range, ...) on the CPU on purpose: not listed.
HEAVY_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "Conv",
        "Scan",
        "Loop",
        "Einsum",
        "FusedMatMul",
        "FusedConv",
        "MatMulNBits",
        "MatMulInteger",
        "DynamicQuantizeMatMul",
    }
)
# Their events span their subgraph's nodes, which are profiled too: counted once, not twice.
CONTROL_FLOW = frozenset({"Scan", "Loop", "If"})


class EngineError(RuntimeError):
    """The engines are not the ones asked for (no GPU, the CPU build, work placed on the CPU)."""


# -- engines --------------------------------------------------------------------------------


def check_engines(device: str) -> dict:
    """What runs: versions, where onnxruntime was imported from, the GPU.

    Raises:
        EngineError: device "cuda" and torch sees no GPU, or onnxruntime offers no CUDA provider.
    """
    import onnxruntime as ort
    import torch

    providers = ort.get_available_providers()
    info = {
        "device": device,
        "onnxruntime": ort.__version__,
        "onnxruntime_path": str(Path(ort.__file__).parent),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "providers": providers,
        "cpu": bench.machine().split(";")[0],
    }
    if device == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"--device cuda: torch {torch.__version__} sees no CUDA device")
        # A CUDA context first: it loads the CUDA and cuDNN libraries torch ships, which
        # onnxruntime-gpu's CUDA provider then finds already loaded.
        torch.zeros(1, device="cuda")
        if CUDA not in providers:
            raise EngineError(
                f"--device cuda: onnxruntime {ort.__version__} imported from {info['onnxruntime_path']} offers "
                f"no {CUDA} (only {', '.join(providers)}): that is a CPU build. Install onnxruntime-gpu "
                "(tools/ort_gpu_wheel.py) and put it first on PYTHONPATH"
            )
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return info


class MemoryGauge:
    """Memory held right now: the whole GPU's (cudaMemGetInfo) on CUDA, this process's RSS on the CPU."""

    def __init__(self, device: str):
        self.device = device

    def used(self) -> int:
        if self.device == "cuda":
            import torch

            gc.collect()
            free, total = torch.cuda.mem_get_info()
            return total - free
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


def release(device: str) -> None:
    """Free what a finished engine held, so the next engine's memory starts from the same level."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass
class Engine:
    name: str
    embed: Callable[[list[list[str]]], None]  # one batch, one model call, outputs on the host


def reference_engine(options: Path, weights: Path, device: str) -> Engine:
    import torch

    from elmo_export.weights import load_reference
    from elmo_runtime.chars import batch_to_char_ids

    model = load_reference(options, weights).to(device)
    where = {p.device.type for p in model.parameters()}
    if where != {device}:
        raise EngineError(f"the PyTorch reference's weights are on {where}, not {device}")

    def embed(batch: list[list[str]]) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(batch_to_char_ids(batch)).to(device)).layers.cpu()  # .cpu() waits for the GPU

    return Engine(REFERENCE, embed)


def open_package(package: Path, device: str, threads: int | None):
    """`Elmo` on `package`, on `device` and nowhere else."""
    from elmo_runtime import Elmo

    # device="cuda" is the runtime's strict mode: CUDA that does not start is an error, not the CPU.
    elmo = Elmo(package, device=device, threads=threads, token_cache=0)
    if elmo.providers[0] != PROVIDER[device]:
        raise EngineError(f"{package}: onnxruntime runs {elmo.providers}, not {PROVIDER[device]}")
    return elmo


def package_engine(package: Path, precision: str, device: str, threads: int | None) -> Engine:
    elmo = open_package(package, device, threads)

    def embed(batch: list[list[str]]) -> None:
        elmo.embed(batch, batch_size=len(batch), batch_tokens=1 << 20)

    return Engine(f"ONNX {precision}", embed)


# -- placement ------------------------------------------------------------------------------


def profile_events(package: Path, device: str, batch: list[list[str]], work: Path) -> list[dict]:
    """The node events of one profiled run of both graphs on `device`."""
    import onnxruntime as ort

    from elmo_runtime import contract as C
    from elmo_runtime.chars import batch_to_char_ids
    from elmo_runtime.package import load_manifest
    from elmo_runtime.runner import providers_for

    manifest = load_manifest(package)
    events = []

    def run(path: Path, feeds: dict) -> list:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(work / f"profile-{path.stem}")
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
        outputs = session.run(None, feeds)
        trace = Path(session.end_profiling())
        events.extend(e for e in json.loads(trace.read_text()) if e.get("cat") == "Node")
        trace.unlink()
        return outputs

    emb, mask = run(manifest.token_embedder_file, {C.CHAR_IDS: batch_to_char_ids(batch)})
    b, p, d, n = len(batch), manifest.projection_dim, manifest.dim, manifest.n_layers
    run(
        manifest.bilm_file,
        {
            C.TOKEN_EMBEDDINGS: emb,
            C.MASK: mask,
            C.INITIAL_H: np.zeros((n, 2, b, p), np.float32),
            C.INITIAL_C: np.zeros((n, 2, b, d), np.float32),
            C.SENTENCE_EDGES: np.asarray(C.WHOLE_SENTENCES, np.int64),
        },
    )
    return events


def summarize_placement(events: list[dict], expected: str) -> dict:
    """Node time per provider, and the work that ran anywhere but `expected`.

    Returns:
        `{"node_ms": {provider: ms}, "off_device_share": fraction of node time elsewhere,
        "off_device_ops": {op: events}, "heavy_off_device": [ops of HEAVY_OPS elsewhere]}`.
    """
    node_ms: Counter = Counter()
    off_ops: Counter = Counter()
    for e in events:
        provider, op = e["args"].get("provider", "?"), e["args"].get("op_name", "?")
        if op not in CONTROL_FLOW:
            node_ms[provider] += e.get("dur", 0) / 1000
        if provider != expected:
            off_ops[op] += 1
    total = sum(node_ms.values())
    off = total - node_ms[expected]
    return {
        "node_ms": dict(node_ms),
        "off_device_share": off / total if total else 0.0,
        "off_device_ops": dict(off_ops),
        "heavy_off_device": sorted(set(off_ops) & HEAVY_OPS),
    }


def check_placement(summary: dict, package: Path, expected: str) -> None:
    """Raises EngineError when heavy work ran anywhere but on `expected`."""
    if summary["heavy_off_device"]:
        raise EngineError(
            f"{package}: ONNX Runtime placed {', '.join(summary['heavy_off_device'])} off {expected} "
            f"({summary['off_device_share']:.0%} of node time elsewhere; ops elsewhere: {summary['off_device_ops']}): "
            "a measurement now would time the CPU"
        )


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Speed:
    engine: str
    tokens_per_s: dict[int, float]  # batch size -> tokens/s
    latency_ms: float
    memory_mib: float


def measure_speed(
    engine: Engine, batches: dict[int, list[list[list[str]]]], one: list[list[str]], repeats: int
) -> tuple[dict[int, float], float]:
    def run(batch_list):
        def go():
            for batch in batch_list:
                engine.embed(batch)

        return go

    tokens_per_s = {
        size: sum(len(s) for b in bl for s in b) / bench.median_time(run(bl), repeats) for size, bl in batches.items()
    }
    return tokens_per_s, 1000 * bench.median_time(run([one]), repeats * 3)


def budget_text(text: list[list[str]], largest: int) -> list[list[str]]:
    """The benchmark text repeated until it holds at least twice `largest` positions."""
    from elmo_runtime.batching import batch_cost

    positions = sum(batch_cost(1, len(s)) for s in text)
    return text * max(1, -(-2 * largest // positions))


def measure_budgets(
    elmo, budgets: list[int], text: list[list[str]], repeats: int, gauge: MemoryGauge, before: int
) -> list[dict]:
    n_tokens = sum(map(len, text))
    rows = []
    for budget in sorted(budgets):
        seconds = bench.median_time(lambda: elmo.embed(text, batch_tokens=budget), repeats)
        rows.append(
            {"budget": budget, "tokens_per_s": n_tokens / seconds, "memory_mib": (gauge.used() - before) / 2**20}
        )
    return rows


# -- the report -----------------------------------------------------------------------------


def tables(result: dict) -> str:
    info = result["engines"]
    lines = [
        f"# ONNX Runtime on {info['device'].upper()}",
        "",
        f"{result['date']}, `python3 benchmarks/gpu.py {result['args']}`",
        "",
        f"Machine: {info.get('gpu', 'no GPU')}; {info['cpu']}; Python {info['python']}, onnxruntime "
        f"{info['onnxruntime']} ({info['onnxruntime_path']}), torch {info['torch']}. Preset "
        f"`{result['preset']}`, synthetic weights.",
        "",
    ]
    if result.get("placement"):
        lines += [
            "Placement (one profiled run of both graphs):",
            "",
            "| package | node time off the device | ops off the device |",
            "| --- | ---: | --- |",
        ]
        for precision, p in result["placement"].items():
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(p["off_device_ops"].items())) or "none"
            lines.append(f"| {precision} | {p['off_device_share']:.1%} | {ops} |")
        lines.append("")
    if result.get("parity"):
        lines += [
            "Parity with the PyTorch reference on the parity sentences (worst over state modes and layers):",
            "",
            "| package | tolerance | CPU max abs | CPU min cosine | device max abs | device min cosine | device |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for precision, p in result["parity"].items():
            lines.append(
                f"| {precision} | {p['tolerance']} | {p['cpu']['max_abs']:.2e} | {p['cpu']['min_cosine']:.6f} | "
                f"{p['device']['max_abs']:.2e} | {p['device']['min_cosine']:.6f} | "
                f"{'passed' if p['passed'] else 'FAILED: ' + '; '.join(p['failures'][:3])} |"
            )
        lines.append("")
    if result.get("speed"):
        lines += _speed_lines(result)
    if result.get("budgets"):
        lines += _budget_lines(result)
    if result.get("errors"):
        lines += ["Failed measurements:", "", *(f"- {e}" for e in result["errors"]), ""]
    return "\n".join(lines)


def _speed_lines(result: dict) -> list[str]:
    sizes = list(result["speed"][0]["tokens_per_s"])
    ref = next((r for r in result["speed"] if r["engine"] == REFERENCE), None)
    head = "".join(f" batch {s} tokens/s | x ref |" for s in sizes)
    lines = [
        f"Speed ({result['repeats']} repeats, medians; memory: held after the run, over before loading):",
        "",
        f"| engine |{head} batch 1, {bench.LATENCY_TOKENS} tokens (ms) | x ref | memory (MiB) |",
        "| --- |" + " ---: | ---: |" * len(sizes) + " ---: | ---: | ---: |",
    ]
    for r in result["speed"]:
        cells = "".join(
            f" {r['tokens_per_s'][s]:,.0f} | {ratio(r['tokens_per_s'][s], ref and ref['tokens_per_s'][s])} |"
            for s in sizes
        )
        lines.append(
            f"| {r['engine']} |{cells} {r['latency_ms']:.1f} | "
            f"{ratio(ref and ref['latency_ms'], r['latency_ms'])} | {r['memory_mib']:,.0f} |"
        )
    lines.append("")
    return lines


def _budget_lines(result: dict) -> list[str]:
    lines = [
        f"Batch budget (`Elmo.embed` over {result['budget_tokens']:,} tokens of the text, positions per batch):",
        "",
        "| package | budget | tokens/s | memory (MiB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for precision, rows in result["budgets"].items():
        best = max(r["tokens_per_s"] for r in rows)
        for r in rows:
            mark = " (best)" if r["tokens_per_s"] == best else ""
            lines.append(f"| {precision} | {r['budget']:,} | {r['tokens_per_s']:,.0f}{mark} | {r['memory_mib']:,.0f} |")
    lines.append("")
    return lines


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}" if a and b else "n/a"


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "gpu.md").write_text(tables(result), encoding="utf-8")


def attempt(result: dict, what: str, measure: Callable):
    """`measure()`, or None with the error recorded in `result["errors"]`: in a short GPU slot one
    engine that fails must not lose the others' figures. EngineError still stops the run."""
    try:
        return measure()
    except EngineError:
        raise
    except Exception as e:
        log.exception("%s failed", what)
        result["errors"].append(f"{what}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
        return None


# -- the run --------------------------------------------------------------------------------


def prepare(preset: str, precisions: list[str], work: Path) -> tuple[Path, Path, dict[str, Path]]:
    """`bench.prepare` under a lock on `work`: a run started while a `--prepare-only` run in the
    background is still exporting waits for it, then finds its packages."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    with (work / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return bench.prepare(preset, precisions, cache=work)


def run(
    device: str,
    preset: str,
    precisions: list[str],
    repeats: int,
    n_batches: int,
    sizes: list[int],
    budgets: list[int],
    threads: int | None,
    work: Path,
    out: Path,
    n_sentences: int | None = None,
    args: str = "",
) -> dict:
    """Every step of the module docstring; returns the result also written to `out`.

    Raises:
        EngineError: the engines are not the ones asked for.
    """
    started = time.perf_counter()
    result: dict = {
        "date": date.today().isoformat(),
        "args": args,
        "preset": preset,
        "repeats": repeats,
        "engines": check_engines(device),
        "errors": [],
    }
    log.info("engines: %s", result["engines"])
    write(result, out)

    t = time.perf_counter()
    options, weights, packages = prepare(preset, precisions, work)
    result["prepare_s"] = time.perf_counter() - t
    log.info("weights and packages ready in %.0f s", result["prepare_s"])

    text = bench.sentences()[:n_sentences]
    gauge = MemoryGauge(device)
    result["placement"] = {}
    for precision, package in packages.items():
        summary = summarize_placement(profile_events(package, device, text[:8], work), PROVIDER[device])
        result["placement"][precision] = summary
        write(result, out)
        check_placement(summary, package, PROVIDER[device])

    run_parity(result, options, weights, packages, precisions, device, out)
    batches = {size: bench.throughput_batches(text, n_batches, size) for size in sizes}
    one = [bench.latency_sentence(text)]
    makers = {REFERENCE: lambda: reference_engine(options, weights, device)}
    makers.update({f"ONNX {p}": lambda p=p: package_engine(packages[p], p, device, threads) for p in precisions})
    run_speed(result, makers, batches, one, repeats, device, gauge, out)
    run_budgets(result, packages, budget_text(text, max(budgets)), budgets, repeats, device, threads, gauge, out)
    result["total_s"] = time.perf_counter() - started
    write(result, out)
    return result


def run_parity(
    result: dict, options, weights, packages: dict[str, Path], precisions: list[str], device: str, out: Path
) -> None:
    """Each package's parity on `device` with the PyTorch reference, beside its export-time (CPU) check."""
    from elmo_export.parity import ParityReport, check_parity, reference_outputs, tolerance_for
    from elmo_export.weights import load_reference
    from elmo_runtime.package import load_manifest

    t = time.perf_counter()
    model = load_reference(options, weights)  # on the CPU: the yardstick, as at export
    manifest = load_manifest(packages[precisions[0]])
    warm = (manifest.warm_h, manifest.warm_c) if manifest.initial_state_mode == "warm" else None
    reference = reference_outputs(model, warm)
    result["parity"] = {}
    for precision, package in packages.items():
        on_device = attempt(
            result,
            f"parity of {precision} on {device}",
            lambda model=model, reference=reference: check_parity(
                model, package, precision, reference=reference, device=device, raise_on_failure=False
            ),
        )
        if on_device is None:
            continue
        gate = ParityReport.from_dict(load_manifest(package).parity)
        tolerance = {k: v for k, v in asdict(tolerance_for(precision, model.options)).items() if v is not None}
        result["parity"][precision] = {
            "tolerance": ", ".join(f"{k} {v:g}" for k, v in tolerance.items()),
            "cpu": gate.worst(),
            "device": on_device.worst(),
            "passed": on_device.passed,
            "failures": on_device.failures,
        }
        log.info("parity of %s on %s: %s", precision, device, "passed" if on_device.passed else on_device.failures)
        write(result, out)
    del model, reference
    result["parity_s"] = time.perf_counter() - t


def run_speed(
    result: dict,
    makers: dict[str, Callable[[], Engine]],
    batches: dict,
    one: list,
    repeats: int,
    device: str,
    gauge: MemoryGauge,
    out: Path,
) -> None:
    """Throughput and latency of each engine, with the memory it holds."""
    result["speed"] = []

    def speed_of(make: Callable[[], Engine]) -> Speed:
        before = gauge.used()
        engine = make()
        tokens_per_s, latency_ms = measure_speed(engine, batches, one, repeats)
        return Speed(engine.name, tokens_per_s, latency_ms, (gauge.used() - before) / 2**20)

    for name, make in makers.items():
        release(device)
        speed = attempt(result, f"speed of {name} on {device}", lambda: speed_of(make))
        if speed is not None:
            result["speed"].append(asdict(speed))
            log.info(
                "%s: %s tokens/s, %.1f ms, %.0f MiB",
                name,
                {k: round(v) for k, v in speed.tokens_per_s.items()},
                speed.latency_ms,
                speed.memory_mib,
            )
        write(result, out)


def run_budgets(
    result: dict,
    packages: dict[str, Path],
    long_text: list,
    budgets: list[int],
    repeats: int,
    device: str,
    threads: int | None,
    gauge: MemoryGauge,
    out: Path,
) -> None:
    """`Elmo.embed`'s speed and memory over `long_text` at each batch budget."""
    result["budget_tokens"] = sum(map(len, long_text))
    result["budgets"] = {}
    for precision, package in packages.items():
        release(device)
        before = gauge.used()
        rows = attempt(
            result,
            f"budgets of {precision} on {device}",
            lambda: measure_budgets(open_package(package, device, threads), budgets, long_text, repeats, gauge, before),
        )
        if rows is not None:
            result["budgets"][precision] = rows
        write(result, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=sorted(PROVIDER), default="cuda")
    parser.add_argument("--preset", default="original")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="batches of each size in the throughput runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="sentences per batch")
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[1024, 2048, 4096, 8192, 16384],
        help="token positions per batch for the budget runs",
    )
    parser.add_argument(
        "--sentences", type=int, default=None, help="only the text's first N sentences (dry runs; default: all 223)"
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per session (default: all)")
    parser.add_argument("--work", type=Path, default=bench.CACHE, help="weights and packages (reused between runs)")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="only make the weights and export the packages (CPU work: while the wheel travels)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where gpu.md and gpu.json go (default: WORK/gpu-DEVICE)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out or args.work / f"gpu-{args.device}"
    if args.prepare_only:
        prepare(args.preset, args.precisions, args.work)
        return 0
    try:
        result = run(
            args.device,
            args.preset,
            args.precisions,
            args.repeats,
            args.batches,
            args.sizes,
            args.budgets,
            args.threads,
            args.work,
            out,
            args.sentences,
            " ".join(sys.argv[1:] if argv is None else argv),
        )
    except EngineError as e:
        print(f"gpu.py: {e}", file=sys.stderr)
        return 2
    print(tables(result))
    failed = [p for p, r in result["parity"].items() if not r["passed"]]
    if failed or result["errors"]:
        print(
            f"gpu.py: parity FAILED on {args.device} for {', '.join(failed) or 'none'}; "
            f"{len(result['errors'])} measurements failed (see the tables)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
