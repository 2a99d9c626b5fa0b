"""Dynamic batching: requests queue, are packed under a token budget and run as one `Elmo.embed`.

Why this never changes a vector: `Elmo` starts every sentence from the same LSTM state, and
its fp32 and int8 packages give bit-identical vectors for a sentence whatever else is in the
call (tests/test_batch_invariance.py); a server batch is one such call per layer mix.

Model threads (`workers`, default one; ONNX Runtime's intra-op threads do the parallel work
inside each) run the batches; the event loop keeps parsing, tokenizing and answering
meanwhile. Requests are taken first in, first out, and answered as their batch completes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np

log = logging.getLogger(__name__)

# Positions the model adds around each sentence (<S> and </S>): a sentence of n tokens costs n + 2.
BOUNDARY_TOKENS = 2
# Under load, a batch may wait for company up to this share of the last batch's run time when
# that is longer than --max-wait-ms. With a large model (`original` int8: 200 ms a batch of 32)
# the clients of the last batch come back over several milliseconds; cut at 2 ms, they split
# into two batches a cycle (18 requests a batch on average at 32 clients, against 31 with a
# 10 ms wait; throughput 0.79x -> 0.85x in-process). A small model's batches take a few ms, so
# the share stays under --max-wait-ms and nothing changes there.
COMPANY_SHARE = 0.05


@dataclass(eq=False)
class Job:
    """One request's sentences, waiting for (or holding) their vectors.

    `key` groups jobs that can share one `Elmo.embed` call: the same layers and pooling.
    """

    tokens: list[list[str]]
    layers: object
    pool: str | None
    key: Hashable
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    queue_time: float = 0.0
    inference_time: float = 0.0
    cancelled: bool = False

    @property
    def cost(self) -> int:
        return sum(len(t) + BOUNDARY_TOKENS for t in self.tokens)


@dataclass
class BatchStats:
    """What one server batch was, for the metrics."""

    requests: int
    sentences: int
    tokens: int
    seconds: float


class Batcher:
    """The queue between the HTTP handlers and the model.

    Args:
        embed: `Elmo.embed` (or any function with its signature).
        max_batch_tokens, max_batch_requests: a batch takes requests while both hold (always one).
        max_wait_ms: how long the oldest queued request may wait for company (as many requests
            as the last batch held) before its batch runs; longer when `COMPANY_SHARE` of the
            last batch's run time is.
        batch_tokens: passed to `embed` as the budget of each model run.
        on_batch: called on the event loop with each batch's `BatchStats`.
        workers: batches run at once, each on its own thread of the one `Elmo` (which is
            thread-safe); the next batch is formed when a thread is free, so it gathers
            whatever queued meanwhile.
    """

    def __init__(
        self,
        embed: Callable,
        max_batch_tokens: int,
        max_batch_requests: int,
        max_wait_ms: float,
        batch_tokens: int | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
    ):
        self._embed = embed
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self.max_wait = max_wait_ms / 1000.0
        self.batch_tokens = batch_tokens
        self._on_batch = on_batch or (lambda stats: None)
        self._pending: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="elmo-serve-model")
        self._free = asyncio.Semaphore(workers)  # model threads not running a batch
        self._task: asyncio.Task | None = None
        self._closing = False
        # Requests in the last batch; before the first, a full batch: the first request waits `max_wait`.
        self._last_size = max_batch_requests
        self._last_seconds = 0.0  # the last batch's run time

    def __len__(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="elmo-serve-batcher")
        self._task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        """Run what is queued, then stop (the server has stopped accepting by now)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(self, tokens: list[list[str]], layers: object, pool: str | None, key: Hashable) -> Job:
        """Queue one request's sentences; await `job.future` for their arrays, in order."""
        job = Job(tokens, layers, pool, key, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wakeup.set()
        return job

    def cancel(self, job: Job) -> None:
        """Forget a job whose client has gone: out of the queue, or its result dropped when it comes."""
        job.cancelled = True
        try:
            self._pending.remove(job)
        except ValueError:
            pass  # already taken into a running batch

    async def _loop(self) -> None:
        running: set[asyncio.Task] = set()
        while True:
            if not self._pending:
                if self._closing:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._free.acquire()  # a model thread is free: form the next batch now, not earlier
            if not self._pending:
                self._free.release()
                continue
            await self._wait_for_company()
            batch = self._take()
            if not batch:
                self._free.release()
                continue
            self._last_size = len(batch)
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _run_batch(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        for job in batch:
            job.queue_time = started - job.enqueued
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)
        finally:
            self._free.release()
        seconds = time.perf_counter() - started
        self._last_seconds = seconds
        for job, result in zip(batch, results):
            job.inference_time = seconds
            if job.cancelled or job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        stats = BatchStats(len(batch), sum(len(j.tokens) for j in batch), sum(j.cost for j in batch), seconds)
        self._on_batch(stats)

    async def _wait_for_company(self) -> None:
        """Until as many requests as the last batch held are queued, the batch is full, or its
        oldest request has waited `max_wait` (or `COMPANY_SHARE` of the last batch's run time).

        Clients that each wait for their answer before sending again come back together after a
        batch: waiting for as many as last time keeps them in one batch. A lone client's batch
        held one request, so its next request runs at once.
        """
        deadline = self._pending[0].enqueued + max(self.max_wait, COMPANY_SHARE * self._last_seconds)
        while not self._closing and not self._full() and len(self._pending) < self._last_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _full(self) -> bool:
        if len(self._pending) >= self.max_batch_requests:
            return True
        return sum(job.cost for job in self._pending) >= self.max_batch_tokens

    def _take(self) -> list[Job]:
        batch, tokens = [], 0
        while self._pending and len(batch) < self.max_batch_requests:
            job = self._pending[0]
            if batch and tokens + job.cost > self.max_batch_tokens:
                break
            self._pending.popleft()
            if not job.cancelled:
                batch.append(job)
                tokens += job.cost
        return batch

    def _run(self, batch: list[Job]) -> list[list[np.ndarray] | BaseException]:
        """On the model thread: one `embed` call per layer mix, each job's arrays split back out."""
        results: list = [None] * len(batch)
        groups: dict[Hashable, list[int]] = {}
        for i, job in enumerate(batch):
            groups.setdefault(job.key, []).append(i)
        for members in groups.values():
            first = batch[members[0]]
            sentences = [tokens for i in members for tokens in batch[i].tokens]
            try:
                vectors = self._embed(sentences, layers=first.layers, pool=first.pool, batch_tokens=self.batch_tokens)
            except Exception as e:
                log.error("a batch of %d requests failed (%s); running them one by one", len(members), e)
                for i in members:
                    results[i] = self._run_alone(batch[i])
                continue
            start = 0
            for i in members:
                n = len(batch[i].tokens)
                results[i] = vectors[start : start + n]
                start += n
        return results

    def _run_alone(self, job: Job) -> list[np.ndarray] | BaseException:
        """One request's own `embed` call: a request that breaks the model fails alone (its 424),
        not the others that shared its batch (vectors do not depend on the batch: the same bits)."""
        try:
            return self._embed(job.tokens, layers=job.layers, pool=job.pool, batch_tokens=self.batch_tokens)
        except Exception as e:
            log.error("a request of %d sentences failed: %s", len(job.tokens), e)
            return e


def _report_crash(task: asyncio.Task) -> None:
    # The loop only ends when stopped; an exception here is a bug, and requests would wait forever.
    if not task.cancelled() and task.exception() is not None:
        log.critical("the batcher stopped: %r; requests can no longer be answered", task.exception())
