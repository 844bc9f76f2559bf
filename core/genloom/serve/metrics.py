"""The server's Prometheus metrics, in one registry per app (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("genloom_queue_depth", "Rows or requests waiting for a batch", ["model"],
                                 registry=r)
        self.batch_size = Gauge("genloom_batch_size", "Rows in the running batch", ["model"], registry=r)
        self.tokens = Counter("genloom_generated_tokens", "Tokens generated (streaming models)", ["model"],
                              registry=r)
        self.tokens_per_second = Gauge("genloom_tokens_per_second", "Tokens per second of the last step",
                                       ["model"], registry=r)
        self.time_to_first_token = Histogram(
            "genloom_time_to_first_token_seconds", "From a request's arrival to its first text",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("genloom_request_latency_seconds", "From a request's arrival to its answer",
                                 ["model", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("genloom_requests", "Requests answered, by status", ["route", "status"],
                                registry=r)
