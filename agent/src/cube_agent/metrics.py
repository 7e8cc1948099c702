"""Prometheus metrics, one registry per app, label children looked up once and cached.

With several worker processes (`UV_CUBE_AGENT_WORKERS` > 1) the CLI sets
PROMETHEUS_MULTIPROC_DIR before any worker starts: prometheus_client then keeps every value
in per-process files there, and `/metrics` sums them, so any worker answers for all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_DIR))
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cube_agent_requests",
            "Requests answered, by endpoint and HTTP status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cube_agent_request_duration_seconds",
            "Time from request to the last byte of the answer (streams included)",
            ["route"],
            buckets=(
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
            ),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cube_agent_requests_in_flight",
            "Requests being answered",
            registry=self.registry,
            multiprocess_mode="livesum",  # summed over the live workers
        )
        self.upstream_errors = Counter(
            "cube_agent_upstream_errors",
            "Engine failures: unreachable (502) or timeout (504)",
            ["target", "kind"],
            registry=self.registry,
        )
        self.stream_chunks = Counter(
            "cube_agent_stream_chunks",
            "Chunks forwarded to clients in streamed answers",
            ["route"],
            registry=self.registry,
        )
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._chunks: dict[str, Counter] = {}

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

    def observe(self, route: str, status: int, seconds: float) -> None:
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
