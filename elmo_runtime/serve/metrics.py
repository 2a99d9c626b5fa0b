"""Prometheus metrics named after text-embeddings-inference's (`te_*` there, `elmo_*` here).

Each app has its own registry, so that several servers in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from elmo_runtime.serve.batcher import BatchStats

# Seconds: a request on a small package takes about a millisecond, a long sentence on a large one seconds.
DURATION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class _TokenCacheCollector:
    """The token cache's hits and misses, read from the `Elmo` when scraped."""

    def __init__(self, cache):
        self._cache = cache

    def collect(self):
        hits = CounterMetricFamily("elmo_token_cache_hits", "Token embeddings found in the cache")
        misses = CounterMetricFamily("elmo_token_cache_misses", "Token embeddings computed (not in the cache)")
        hits.add_metric([], self._cache.hits)
        misses.add_metric([], self._cache.misses)
        return [hits, misses]


class Metrics:
    """The server's counters, gauges and histograms; `render()` is the /metrics body."""

    def __init__(self, token_cache=None):
        self.registry = r = CollectorRegistry()
        self.request_count = Counter("elmo_request_count", "Requests received", ["method"], registry=r)
        self.request_success = Counter("elmo_request_success", "Requests answered with 2xx", ["method"], registry=r)
        self.request_failure = Counter(
            "elmo_request_failure", "Requests refused or failed, by error type", ["err"], registry=r
        )
        self.embed_count = Counter("elmo_embed_count", "Inputs embedded", registry=r)
        self.queue_size = Gauge("elmo_queue_size", "Requests waiting for a batch", registry=r)
        self.in_flight = Gauge(
            "elmo_requests_in_flight", "Requests being served (the concurrency limit counts these)", registry=r
        )
        self.batch_size = Histogram("elmo_batch_next_size", "Requests per batch", buckets=SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram(
            "elmo_batch_next_tokens", "Token positions per batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.input_length = Histogram(
            "elmo_request_input_length", "Tokens per input", buckets=TOKEN_BUCKETS, registry=r
        )
        self.durations: dict[str, Histogram] = {}
        for stage, what in (
            ("request", "the whole request"),
            ("tokenization", "tokenization"),
            ("queue", "waiting in the queue"),
            ("inference", "the batch that ran it"),
        ):
            name = "elmo_request_duration" if stage == "request" else f"elmo_request_{stage}_duration"
            self.durations[stage] = Histogram(name, f"Seconds of {what}", buckets=DURATION_BUCKETS, registry=r)
        self.load_seconds = Gauge("elmo_model_load_seconds", "Seconds to load and verify the package", registry=r)
        if token_cache is not None:
            r.register(_TokenCacheCollector(token_cache))

    def batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.requests)
        self.batch_tokens.observe(stats.tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
