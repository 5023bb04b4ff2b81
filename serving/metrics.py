"""Prometheus metrics for ``GET /metrics``, in a registry of the server's own (not the global one)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "deepcloud_requests",
            "HTTP requests by route, model and status code.",
            ["route", "model", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deepcloud_request_duration_seconds",
            "Time from request start to the response's last byte, by route and model.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "deepcloud_batch_size",
            "Instances per forward pass, by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "deepcloud_queue_depth", "Requests waiting for a forward pass, by model.", ["model"], registry=self.registry
        )
        self.ready = Gauge("deepcloud_ready", "1 once every model is loaded and warmed up.", registry=self.registry)
        self.rejections = Counter(
            "deepcloud_rejected",
            "Connections and requests refused by a limit of "
            "serving/limits.py, by reason (header_too_large, body_timeout, ...).",
            ["reason"],
            registry=self.registry,
        )
        self._observers: dict[tuple[str, str], tuple] = {}

    def observe(self, route: str, model: str, code: int, seconds: float) -> None:
        # Labelled children cached: .labels() costs a lock and a dict build on every request otherwise.
        key = (route, model)
        observers = self._observers.get(key)
        if observers is None:
            observers = self._observers[key] = (self.latency.labels(route, model), {})
        latency, counters = observers
        counter = counters.get(code)
        if counter is None:
            counter = counters[code] = self.requests.labels(route, model, str(code))
        counter.inc()
        latency.observe(seconds)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def batch_observer(self, model: str):
        return self.batch_size.labels(model).observe

    def track_queue(self, model: str, depth) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def forget(self, model: str, history: bool = True) -> None:
        """Drop a retired model's queue gauge. Its counters stay (they are history) unless ``history`` is
        False: a multi-model endpoint loads and unloads models without end, and each would leave series."""
        with contextlib.suppress(KeyError):
            self.queue_depth.remove(model)
        if history:
            return
        with contextlib.suppress(KeyError):
            self.batch_size.remove(model)
        for route, labelled in [key for key in self._observers if key[1] == model]:
            _, counters = self._observers.pop((route, labelled))
            with contextlib.suppress(KeyError):
                self.latency.remove(route, model)
            for code in counters:
                with contextlib.suppress(KeyError):
                    self.requests.remove(route, model, str(code))

    def render(self) -> bytes:
        return generate_latest(self.registry)
