"""Prometheus metrics of the service (``GET /metrics``), in a registry of its own per app.

A registry per app (not prometheus-client's global one) lets tests run several services in one
process and read exact counts. Names are prefixed ``skinforge_serve_``.
"""

from __future__ import annotations

import resource
import sys

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
_STEP_BUCKETS = (1, 2, 4, 8, 12, 16, 20, 25, 30, 40, 50, 75, 100)


def _rss_bytes() -> float:
    """Resident memory of this process (current, from /proc; peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return float(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


class ServeMetrics:
    """Every metric the issue asks for; the worker and the routes update them."""

    def __init__(self, device: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "skinforge_serve_request_seconds", "Time from request to answer (queue wait included)",
            ["status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait_seconds = Histogram(
            "skinforge_serve_queue_wait_seconds", "Time a request waited for the worker",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.generation_seconds = Histogram(
            "skinforge_serve_batch_seconds", "Time of one batch on the device (denoise + decode)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("skinforge_serve_queue_depth", "Requests waiting for the worker", registry=r)
        self.batch_size = Histogram(
            "skinforge_serve_batch_size", "Requests per pipeline call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.images = Counter(
            "skinforge_serve_images_generated", "Images generated", ["checkpoint"], registry=r
        )
        self.errors = Counter(
            "skinforge_serve_errors", "Requests not answered with an image, by kind", ["kind"], registry=r
        )
        self.fallbacks = Counter(
            "skinforge_serve_fallbacks",
            "Degradations taken instead of failing, by kind",
            ["kind"],
            registry=r,
        )
        self.steps_run = Histogram(
            "skinforge_serve_denoising_steps", "Denoising steps run per batch (adaptive steps stop early)",
            buckets=_STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.steps_saved = Counter(
            "skinforge_serve_steps_saved", "Denoising steps skipped by adaptive steps", registry=r
        )
        self.ready = Gauge("skinforge_serve_ready", "1 once every checkpoint is loaded", registry=r)
        memory = Gauge(
            "skinforge_serve_device_memory_bytes", "Memory in use: host RSS, and on CUDA allocated/reserved",
            ["kind"], registry=r,
        )  # fmt: skip
        memory.labels("host_rss").set_function(_rss_bytes)
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device).index
            memory.labels("cuda_allocated").set_function(lambda: float(torch.cuda.memory_allocated(index)))
            memory.labels("cuda_reserved").set_function(lambda: float(torch.cuda.memory_reserved(index)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
