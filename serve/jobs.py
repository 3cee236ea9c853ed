"""One request on its way through the service: its inputs, deadline, cancellation and result.

The result travels in a ``concurrent.futures.Future`` so both sides can wait on it: the HTTP handler
through asyncio, the playground from its own thread. The future's own protocol settles the race
between a client giving up and the worker starting the job: ``cancel`` only succeeds while the job
still waits, and the worker claims a job with ``set_running_or_notify_cancel``. A job already running
is stopped through ``cancelled`` (checked after every denoising step).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

__all__ = ["BatchKey", "Job", "JobResult"]

BatchKey = tuple[Any, ...]
"""Jobs with equal keys can share one pipeline call: same checkpoint, size and sampling settings."""


@dataclass(frozen=True)
class JobResult:
    image: Image.Image
    metadata: dict[str, Any]


@dataclass
class Job:
    """A generation request after validation: the condition image is decoded, the seed fixed."""

    checkpoint: str
    prompt: str
    negative_prompt: str
    condition: Image.Image
    seed: int
    size: tuple[int, int]
    """(width, height) of the output."""
    steps: int
    guidance: float
    conditioning_scale: float
    control_start: float
    control_end: float
    scheduler: str | None
    adaptive_threshold: float | None
    deadline: float
    """time.monotonic() after which nobody waits for the answer."""
    request_fields: dict[str, Any] = field(default_factory=dict)
    """The request's settings, echoed into the metadata."""
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[JobResult] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""

    @property
    def key(self) -> BatchKey:
        return (
            self.checkpoint,
            self.size,
            self.steps,
            self.guidance,
            self.conditioning_scale,
            self.control_start,
            self.control_end,
            self.negative_prompt,
            self.scheduler,
            self.adaptive_threshold,
        )

    def cancel(self, reason: str) -> None:
        """Give up on the job: drop it from the queue, or stop its batch once all of it gave up."""
        self.cancel_reason = reason
        self.cancelled.set()
        self.future.cancel()

    @property
    def abandoned(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline
