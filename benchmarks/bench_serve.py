"""elmo-serve under load from this machine, against `Elmo.embed` in-process on the same sentences.

    python benchmarks/bench_serve.py                        # default and original int8; writes RESULTS.md
    python benchmarks/bench_serve.py --models default --requests 500 --memory-requests 0 --no-write

For each model and server setting (`CONFIGS`): the server (`python -m elmo_runtime.serve`, its
own process on 127.0.0.1) gets 1, 8 and 32 concurrent clients, each sending one sentence per request
(`/embed`, pre-tokenized, sentence vectors: the mean of all layers). Throughput is compared with
one in-process `Elmo.embed` call on the same sentences (the runtime's own batches, sorted by
length: the best the runtime can do). Latency p50/p99 per request. The added latency: each
sentence alone, once in-process and once as a request (a fresh connection, the request's whole
round trip), in turn; the median of the differences. Each level runs in rounds (one in-process
pass, then the requests) and reports the median of the rounds' ratios. Memory:
the server's RSS after 1,000 requests and after 20,000. Two bounds on the ratio, measured apart:
the server's own work (`serve_stub.py`, the app around a model that answers at once) and the
batches 32 one-sentence clients allow (in-process, 32 sentences a call against all in one).

Inputs: the GPL-3 sentences of `bench.py` (223, median 25 tokens). Models: the shipped
default package, and `original` int8 (synthetic weights at the original architecture's
size, exported by `bench.prepare` into benchmarks/.cache: offline, speed does not depend on
the weights' values). The load generator (coroutines on one thread, keep-alive connections,
raw HTTP/1.1) runs on the same cores as the server: its CPU time is part of what the server's
throughput pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench import machine, prepare, sentences  # noqa: E402
from serve_process import Served  # noqa: E402

BEGIN, END = "<!-- bench_serve.py: begin -->", "<!-- bench_serve.py: end -->"
CLIENTS = (1, 8, 32)
# Server settings measured, by label: the defaults (one model thread using ONNX Runtime's threads,
# one per core), and one model thread per core with one ONNX Runtime thread each.
CONFIGS = {"defaults": [], "--workers 2 --threads 1": ["--workers", "2", "--threads", "1"]}


def package_of(model: str) -> str:
    if model == "default":
        return "default"
    return str(prepare(model, ["int8"])[2]["int8"])


class InProcess:
    """`Elmo.embed` in this process on the same sentences: the reference throughput and latency."""

    def __init__(self, package: str, token_lists: list[list[str]]):
        from elmo_runtime import Elmo

        self.elmo = Elmo(package, device="cpu")  # the runtime's defaults: ONNX Runtime's threads
        self.token_lists = token_lists
        self.elmo.embed(token_lists, layers="average", pool="mean")  # warm-up (and a warm token cache, as the server's)

    def throughput(self, repeats: int) -> float:
        """Sentences/s of one `embed` call over all the sentences (the median of `repeats` calls)."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.elmo.embed(self.token_lists, layers="average", pool="mean")
            times.append(time.perf_counter() - start)
        return len(self.token_lists) / statistics.median(times)

    def throughput_in_calls(self, size: int, repeats: int) -> float:
        """Sentences/s when the sentences come `size` at a time, in a shuffled order: the most a
        server can batch when `size` clients send one sentence each (median of `repeats`)."""
        order = list(self.token_lists)
        random.Random(0).shuffle(order)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(order), size):
                self.elmo.embed(order[i : i + size], layers="average", pool="mean")
            times.append(time.perf_counter() - start)
        return len(order) / statistics.median(times)

    def one_ms(self, tokens: list[str]) -> float:
        start = time.perf_counter()
        self.elmo.embed([tokens], layers="average", pool="mean")
        return (time.perf_counter() - start) * 1000


def added_latency(port: int, reference: InProcess, bodies: list[bytes]) -> dict:
    """One request alone against `Elmo.embed` of the same sentence in-process, taken in turn
    sentence by sentence (so both see the same machine load): medians and the median difference."""
    server_ms, local_ms = [], []
    for tokens, body in zip(reference.token_lists, bodies):
        local_ms.append(reference.one_ms(tokens))
        seconds, _ = load(port, [body], 1, 1)
        server_ms.append(seconds * 1000)
    return {
        "in_process_one_ms": round(statistics.median(local_ms), 2),
        "server_one_ms": round(statistics.median(server_ms), 2),
        "added_latency_ms": round(statistics.median(np.subtract(server_ms, local_ms)), 2),
    }


def load(port: int, bodies: list[bytes], clients: int, requests: int) -> tuple[float, list[float]]:
    """`clients` connections send `requests` bodies in all, in turn -> (seconds, each request's seconds).

    The clients are coroutines on one thread, each a keep-alive connection writing raw HTTP/1.1
    and reading the reply by its Content-Length: the lightest load generator Python offers, so
    that most of the CPU goes to the server.
    """
    return asyncio.run(_load(port, bodies, clients, requests))


async def _load(port: int, bodies: list[bytes], clients: int, requests: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures: list[int] = []
    counter = iter(range(requests))
    heads = [
        b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
        for body in bodies
    ]

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in counter:  # shared: each request goes to whichever client is free
            start = time.perf_counter()
            writer.write(heads[i % len(heads)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(
                next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                failures.append(status)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: statuses {sorted(set(failures))}")
    return seconds, latencies


def run_model(
    model: str,
    token_lists: list[list[str]],
    requests: int,
    memory_requests: int,
    repeats: int,
    log_dir: Path,
    config: str,
) -> dict:
    """Each level in `repeats` rounds, a round being one in-process pass over the sentences and then
    `requests` requests to the server: the ratio is taken round by round (both sides saw the same
    machine load) and the median of the rounds' ratios reported."""
    package = package_of(model)
    reference = InProcess(package, token_lists)
    bodies = [json.dumps({"inputs": [tokens], "normalize": False}).encode() for tokens in token_lists]
    log = log_dir / f"serve-{model}-{len(config)}.log"
    server = Served(package, *CONFIGS[config], log=log).wait_ready()
    row = {"model": model, "server": config}
    try:
        load(server.port, bodies, 8, len(bodies))  # warm-up: every sentence once
        for clients in CLIENTS:
            rounds = [level_round(server.port, reference, bodies, clients, requests) for _ in range(repeats)]
            ms = np.concatenate([r["latencies"] for r in rounds]) * 1000
            row[f"c{clients}"] = {
                "in_process_sentences_per_s": round(statistics.median(r["in_process"] for r in rounds), 1),
                "sentences_per_s": round(statistics.median(r["server"] for r in rounds), 1),
                "ratio": round(statistics.median(r["server"] / r["in_process"] for r in rounds), 3),
                "ratios": [round(r["server"] / r["in_process"], 3) for r in rounds],
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
            }
            print(model, config, clients, row[f"c{clients}"], flush=True)
        row.update(added_latency(server.port, reference, bodies))
        if memory_requests:
            row["memory"] = memory(server, bodies, memory_requests)
            print(model, row["memory"], flush=True)
    finally:
        server.stop()
    row["http_only"] = http_only(package, bodies, requests, repeats, log_dir, row[f"c{CLIENTS[-1]}"])
    whole, in_calls = reference.throughput(repeats), reference.throughput_in_calls(CLIENTS[-1], repeats)
    row["http_only"]["batching_ratio"] = round(in_calls / whole, 3)
    print(model, "HTTP only", row["http_only"], flush=True)
    return row


def http_only(package: str, bodies: list[bytes], requests: int, repeats: int, log_dir: Path, level: dict) -> dict:
    """The server's own work, measured apart: `serve_stub.py` (the same app around a model that
    answers at once) under the most clients. Its requests/s bound what any model can reach: with
    the model's in-process rate r and this rate h sharing the same cores, the ratio to in-process
    cannot pass 1 / (1 + r / h)."""
    stub = Served(
        package, log=log_dir / "serve-stub.log", program=[sys.executable, str(HERE / "serve_stub.py")]
    ).wait_ready()
    try:
        load(stub.port, bodies, 8, len(bodies))
        rates = [requests / load(stub.port, bodies, CLIENTS[-1], requests)[0] for _ in range(repeats)]
    finally:
        stub.stop()
    per_s = statistics.median(rates)
    return {
        "clients": CLIENTS[-1],
        "requests_per_s": round(per_s, 1),
        "ceiling_ratio": round(1 / (1 + level["in_process_sentences_per_s"] / per_s), 3),
    }


def level_round(port: int, reference: InProcess, bodies: list[bytes], clients: int, requests: int) -> dict:
    """One in-process pass, then `requests` requests from `clients` clients: each one's sentences/s."""
    in_process = reference.throughput(1)
    seconds, latencies = load(port, bodies, clients, requests)
    return {"in_process": in_process, "server": requests / seconds, "latencies": np.array(latencies)}


def memory(server: Served, bodies: list[bytes], total: int) -> dict:
    """Server RSS (MiB) after 1,000 requests and after `total` (8 clients; a fresh count from here)."""
    load(server.port, bodies, 8, 1000)
    after_1k = server.rss_kib() / 1024
    load(server.port, bodies, 8, total - 1000)
    return {
        "requests": total,
        "rss_after_1k_mib": round(after_1k, 1),
        "rss_after_total_mib": round(server.rss_kib() / 1024, 1),
    }


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "## elmo-serve under load",
        "",
        f"{date.today().isoformat()}, `python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}`. "
        f"Machine: {machine()}. Load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "on 2 cores (medians; the load generator runs on the same cores as the server).",
        "",
        "Server: `elmo-serve PACKAGE` with the settings in the column (defaults: one model thread with ONNX "
        "Runtime's default threads, --max-wait-ms 2, --max-batch-tokens 2048, access log on); clients send "
        "one pre-tokenized GPL sentence per `/embed` "
        f"request, {args.requests} requests per level. In-process: one `Elmo.embed` over the 223 sentences "
        "(the runtime's batches, its default threads), same layer mix and pooling. Each level runs "
        f"{args.repeats} rounds of one in-process pass then the requests; the ratio is the median of the "
        "rounds' ratios (both sides of a round saw the same machine load), the sentences/s columns the "
        "medians of each side.",
        "",
        "| model | server | in-process sentences/s | clients | server sentences/s | x in-process | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        for clients in CLIENTS:
            c = row[f"c{clients}"]
            lines.append(
                f"| {row['model']} | {row['server']} | {c['in_process_sentences_per_s']:,.0f} | {clients} | "
                f"{c['sentences_per_s']:,.0f} | {c['ratio']:.2f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} |"
            )
    lines += [
        "",
        "| model | server | one sentence in-process, median ms | one request alone, median ms | added ms (median) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['model']} | {r['server']} | {r['in_process_one_ms']:.2f} | {r['server_one_ms']:.2f} | "
        f"{r['added_latency_ms']:.2f} |"
        for r in rows
    ]
    lines += http_only_table(rows)
    measured = [r for r in rows if "memory" in r]
    if measured:
        lines += [
            "",
            "| model | server | requests | server RSS after 1,000 (MiB) | after all (MiB) |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['model']} | {r['server']} | {r['memory']['requests']:,} | {r['memory']['rss_after_1k_mib']:.1f} | "
            f"{r['memory']['rss_after_total_mib']:.1f} |"
            for r in measured
        ]
    return "\n".join(lines) + "\n"


def http_only_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        f"What bounds the ratio at {CLIENTS[-1]} clients. The server's own work apart (`serve_stub.py`: the same "
        "app, batcher, JSON and access log around a model that answers at once): with the model sharing the same "
        "cores, the ratio cannot pass 1 / (1 + in-process rate / this rate). The batches such a load allows: "
        f"in-process, the sentences shuffled and embedded {CLIENTS[-1]} a call, against one call over all of them "
        "(one-sentence requests from that many clients can never be batched wider). Their product estimates "
        "what a server can reach there (an estimate: each factor is itself a noisy median).",
        "",
        f"| model | server | HTTP only, requests/s | HTTP ceiling | in calls of {CLIENTS[-1]} / one call "
        "| product | measured x in-process |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    return lines + [
        f"| {r['model']} | {r['server']} | {h['requests_per_s']:,.0f} | {h['ceiling_ratio']:.2f} | "
        f"{h['batching_ratio']:.2f} | {h['ceiling_ratio'] * h['batching_ratio']:.2f} | "
        f"{r[f'c{CLIENTS[-1]}']['ratio']:.2f} |"
        for r in rows
        for h in [r["http_only"]]
    ]


def write_results(section: str) -> None:
    results = HERE / "RESULTS.md"
    old = results.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{section}{END}\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) + 1 :]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    results.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "original"])
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency level")
    parser.add_argument("--memory-requests", type=int, default=20_000, help="0: no memory run")
    parser.add_argument("--memory-models", nargs="+", default=["default"], help="models the memory run is for")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per level")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    token_lists = sentences()
    log_dir = HERE / ".cache" / "serve-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in args.models:
        for i, config in enumerate(args.configs):  # memory: with the first settings only
            memory_requests = args.memory_requests if m in args.memory_models and i == 0 else 0
            rows.append(run_model(m, token_lists, args.requests, memory_requests, args.repeats, log_dir, config))
    section = table(rows, args)
    print(section)
    (log_dir / "bench_serve.json").write_text(json.dumps(rows, indent=1))
    if not args.no_write:
        write_results(section)


if __name__ == "__main__":
    main()
