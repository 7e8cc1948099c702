"""Prometheus metrics, one registry per app.

One process (the default): the request-path metrics are plain numbers, turned into metric
families only when `/metrics` is scraped (a custom collector, prometheus_client's own API).
prometheus_client's metric objects take a lock and several calls per update: on the proxy's
hot path that was ~4 % of a request's CPU (measured, make bench).

With several worker processes (`UV_CUBE_AGENT_WORKERS` > 1) the CLI sets
PROMETHEUS_MULTIPROC_DIR before any worker starts: every update then goes at once into
prometheus_client's per-process files there, and `/metrics` sums them, so any worker
answers for all.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# The label is the endpoint without the /{domain} prefix; anything else is "other" so that
# scanners cannot blow up the number of series.
KNOWN_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        *(
            f"/api/{n}"
            for n in (
                "chat",
                "generate",
                "tags",
                "show",
                "embed",
                "embeddings",
                "ps",
                "version",
                "pull",
                "delete",
                "create",
                "copy",
                "push",
            )
        ),
        "/health",
        "/ready",
        "/metrics",
        "/admin/routes",
        "/attestation",
    }
)


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    # /{domain}/v1/... or /{domain}/api/...
    second = path.find("/", 1)
    if second > 0 and path[second:] in KNOWN_ROUTES:
        return path[second:]
    return "other"


REQUESTS = ("cube_agent_requests", "Requests answered, by endpoint and HTTP status")
LATENCY = (
    "cube_agent_request_duration_seconds",
    "Time from request to the last byte of the answer (streams included)",
)
IN_FLIGHT = ("cube_agent_requests_in_flight", "Requests being answered")
CHUNKS = ("cube_agent_stream_chunks", "Chunks forwarded to clients in streamed answers")
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
_LE = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]


class Metrics:
    """What the handlers count: `started()` as a request comes in, `observe()` when it is
    answered, `add_chunks()` when a stream ends; `exposition()` is the `/metrics` text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_DIR))
        self.registry = CollectorRegistry(auto_describe=True)
        # Rare (failures only): a prometheus_client metric in either mode.
        self.upstream_errors = Counter(
            "cube_agent_upstream_errors",
            "Engine failures: unreachable (502) or timeout (504)",
            ["target", "kind"],
            registry=self.registry,
        )
        self.in_flight = 0
        self._requests: dict[tuple[str, int], int] = {}
        # per route: the count in each bucket (not cumulative), then +Inf, then the sum
        self._latency: dict[str, list[float]] = {}
        self._chunks: dict[str, int] = {}
        self._shared = _Shared(self.registry) if self.multiprocess else None
        if self._shared is None:
            self.registry.register(_Collector(self))

    def exposition(self) -> bytes:
        """The text `/metrics` answers: this process's registry, or every worker's files."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """A worker that stops takes its live gauges (in flight) out of the sums."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

    def started(self) -> None:
        self.in_flight += 1
        if self._shared is not None:
            self._shared.in_flight.inc()

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One request answered (it leaves the in-flight count)."""
        self.in_flight -= 1
        if self._shared is not None:
            self._shared.observe(route, status, seconds)
            return
        key = (route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = [0] * (len(BUCKETS) + 2)
        hist[bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def add_chunks(self, route: str, count: int) -> None:
        if not count:
            return
        if self._shared is not None:
            self._shared.chunks(route).inc(count)
            return
        self._chunks[route] = self._chunks.get(route, 0) + count


class _Collector:
    """The plain numbers of one process as metric families, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(*REQUESTS, labels=["route", "status"])
        for (route, status), count in list(m._requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(*LATENCY, labels=["route"])
        for route, hist in list(m._latency.items()):
            cumulative, buckets = 0.0, []
            for le, count in zip(_LE, hist[:-1], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            latency.add_metric([route], buckets, hist[-1])
        yield latency
        yield GaugeMetricFamily(*IN_FLIGHT, value=m.in_flight)
        chunks = CounterMetricFamily(*CHUNKS, labels=["route"])
        for route, count in list(m._chunks.items()):
            chunks.add_metric([route], count)
        yield chunks


class _Shared:
    """Several workers: prometheus_client metrics, written through to the shared files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(*REQUESTS, ["route", "status"], registry=registry)
        self.latency = Histogram(*LATENCY, ["route"], buckets=BUCKETS, registry=registry)
        # summed over the live workers
        self.in_flight = Gauge(*IN_FLIGHT, registry=registry, multiprocess_mode="livesum")
        self.stream_chunks = Counter(*CHUNKS, ["route"], registry=registry)
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._chunks: dict[str, Counter] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.in_flight.dec()
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = self.latency.labels(route)
        hist.observe(seconds)

    def chunks(self, route: str) -> Counter:
        child = self._chunks.get(route)
        if child is None:
            child = self._chunks[route] = self.stream_chunks.labels(route)
        return child
