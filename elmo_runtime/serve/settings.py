"""Every option of `elmo-serve`, typed; the command line maps one flag onto each field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeSettings:
    """What the server loads, where it listens, and the limits it enforces.

    Defaults follow text-embeddings-inference (TEI) where it has the same limit.

    Attributes:
        package: a package folder, "default" (shipped inside the runtime), a catalog name or
            "hf:owner/repo[@revision]": resolved as `Elmo(package)` resolves it.
        model_id: the name `/info` and `/v1/models` report (None: `package` as given).
        host, port: where to listen.
        device, threads: as for `Elmo` (threads: ONNX Runtime intra-op threads per model run).
        workers: batches the model runs at once, each on its own thread (one `Elmo`, shared).
            Left out, workers x threads fill the cores (`parallelism`): by default one worker
            per core with one thread each, which gave more throughput at 1, 8 and 32 clients
            and less added latency than one worker on all cores (benchmarks/RESULTS.md).
        batch_tokens: token positions per model run inside a server batch (None: the
            runtime's default, 512 on the CPU): the peak memory of one run follows it.
        max_batch_tokens: token positions (2 boundaries per sentence included, padding not) a
            server batch collects from the queue before it runs; at least one request always.
        max_batch_requests: requests one server batch may hold.
        max_wait_ms: how long the first request of a batch may wait for others to join it (as
            many as the last batch held; a lone client's requests never wait).
        max_concurrent_requests: requests in flight at once (queued, running or being
            answered); one more is refused with 429, never queued.
        max_client_batch_size: inputs per request (more: 413).
        max_input_tokens: tokens per input (more: 413, or cut with `truncate`).
        payload_limit: bytes of a request body (more: 413).
        layers: the layer mix of a sentence vector when a request does not choose one:
            "average" (the mean of all layers), "top", a layer index or a list of weights.
        api_key: when set, every route but /health and /ping needs `Authorization: Bearer <key>`.
        cors_allow_origin: origins browsers may call from (empty: no CORS headers).
        graceful_timeout: seconds SIGTERM waits for requests in flight before cancelling them.
        json_output: log lines as JSON objects.
        access_log: one log line per request.
        verify: check every file's sha256 when loading (the conformance vectors run either way).
    """

    package: str = "default"
    model_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    device: str = "auto"
    threads: int | None = None
    workers: int | None = None
    batch_tokens: int | None = None
    max_batch_tokens: int = 2048
    max_batch_requests: int = 64
    max_wait_ms: float = 2.0
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_input_tokens: int = 8192
    payload_limit: int = 2_000_000
    layers: str | int | list[float] = "average"
    api_key: str | None = field(default=None, repr=False)
    cors_allow_origin: tuple[str, ...] = ()
    graceful_timeout: float = 30.0
    json_output: bool = False
    access_log: bool = True
    verify: bool = True

    def parallelism(self) -> tuple[int, int]:
        """`(workers, threads)`: what was given, the rest filled so that workers x threads is the
        number of cores this process may use."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self.workers is None and self.threads is None:
            return cores, 1
        if self.workers is None:
            return max(1, cores // self.threads), self.threads
        return self.workers, self.threads or max(1, cores // self.workers)

    def __post_init__(self) -> None:
        for name in (
            "max_batch_tokens",
            "max_batch_requests",
            "max_concurrent_requests",
            "max_client_batch_size",
            "max_input_tokens",
            "payload_limit",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} is {value!r}; expected a positive integer")
        for name in ("max_wait_ms", "graceful_timeout"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)!r}; expected a number >= 0")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key is empty; leave it out to serve without a key")
