"""Per-model serving metrics: request count by status, latency histogram, batch sizes.

Recorded in the gateway's own Prometheus registry (``GET /metrics`` on the app, text exposition
format, works without any Ray metrics setup) and, with ``ray_metrics: true``, also as Ray Serve
custom metrics, which Ray exports next to Serve's built-in ones (``ray_serve_*``) on each node's
metrics port.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE  # noqa: F401
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServingMetrics:
    """The gateway's metrics; ``render()`` is the ``/metrics`` body."""

    def __init__(self, export_to_ray: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "raynlp_requests",
            "Predict requests per model and HTTP status.",
            ("model", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "raynlp_request_latency_seconds",
            "Time from a validated request to its answer, per model.",
            ("model",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "raynlp_batch_size",
            "Items per model call (@serve.batch) that answered each item, per model.",
            ("model",),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # Off by default: on a 2-core machine Ray's metrics agent cost ~10% of the throughput.
        self._ray = _ray_metrics() if export_to_ray else None

    def record(self, model: str, status: int, seconds: float | None = None,
               batch_sizes: list[int] | None = None) -> None:  # fmt: skip
        self.requests.labels(model, str(status)).inc()
        if seconds is not None:
            self.latency.labels(model).observe(seconds)
        for size in batch_sizes or ():
            self.batch_size.labels(model).observe(size)
        if self._ray is not None:
            requests, latency, batch = self._ray
            requests.inc(tags={"model": model, "status": str(status)})
            if seconds is not None:
                latency.observe(seconds * 1000.0, tags={"model": model})
            for size in batch_sizes or ():
                batch.observe(size, tags={"model": model})

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _ray_metrics():
    """The same three metrics as Ray Serve custom metrics (None outside a Serve replica)."""
    try:
        from ray.serve import metrics

        return (
            metrics.Counter(
                "raynlp_requests", "Predict requests per model and status.", ("model", "status")
            ),
            metrics.Histogram(
                "raynlp_request_latency_ms",
                "Request latency per model (ms).",
                boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
                tag_keys=("model",),
            ),
            metrics.Histogram(
                "raynlp_batch_size",
                "Items per model call.",
                boundaries=list(BATCH_BUCKETS),
                tag_keys=("model",),
            ),
        )
    except Exception:  # not in a Ray worker (unit tests): Prometheus registry only
        return None
