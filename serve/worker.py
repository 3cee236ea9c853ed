"""The one thread that owns the pipeline: takes batches from the queue, runs them, answers each job.

A single owner means no locks around the models and no two calls fighting for device memory; the
HTTP side only ever touches the queue and the jobs' futures. Whatever one batch raises is that
batch's answer (logged with its traceback); the loop itself never dies of a request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from serve.errors import Cancelled, DeadlineExceeded, ServeError
from serve.generation import BatchOutput, run_batch
from serve.jobqueue import JobQueue
from serve.jobs import Job, JobResult
from serve.metrics import ServeMetrics
from serve.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["Worker"]

_SMOOTHING = 0.3
"""Weight of the newest batch in the seconds-per-image estimate behind Retry-After."""


def _gave_up(job: Job, when: str) -> Cancelled:
    """Why nobody waits for ``job`` any more: its client left, or its deadline passed."""
    if job.cancel_reason == "client_disconnected":
        return Cancelled(f"the client disconnected {when}")
    return DeadlineExceeded(f"the request's deadline passed {when}")


class Worker:
    def __init__(
        self, registry: Registry, queue: JobQueue, metrics: ServeMetrics, max_batch: int, max_wait_s: float
    ) -> None:
        self.registry = registry
        self.queue = queue
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._thread = threading.Thread(target=self._run, name="serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running batch; waiting jobs are answered as cancelled."""
        self.queue.close()
        self._thread.join(timeout)
        for job in self.queue.drain():
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Cancelled("the service is shutting down"))

    def _run(self) -> None:
        while True:
            batch = self.queue.take(self.max_batch, self.max_wait_s)
            self.metrics.queue_depth.set(len(self.queue))
            if not batch:
                return
            live = self._claim(batch)
            if live:
                self._run_batch(live)

    def _claim(self, batch: list[Job]) -> list[Job]:
        """The jobs someone still waits for; the others are answered (or were cancelled) here."""
        live = []
        for job in batch:
            if not job.future.set_running_or_notify_cancel():
                self.metrics.errors.labels(_gave_up(job, "while queued").kind).inc()
            elif job.abandoned:
                error = _gave_up(job, "while queued")
                job.future.set_exception(error)
                self.metrics.errors.labels(error.kind).inc()
            else:
                live.append(job)
        return live

    def _run_batch(self, jobs: list[Job]) -> None:
        began = time.monotonic()
        for job in jobs:
            self.metrics.queue_wait_seconds.observe(began - job.enqueued)
        self.metrics.batch_size.observe(len(jobs))
        try:
            out = run_batch(self.registry, jobs)
        except ServeError as err:
            self._fail(jobs, err)
            return
        except Exception as err:  # one bad batch must never take the worker down
            logger.exception("batch of %d failed", len(jobs))
            self._fail(jobs, ServeError(f"internal error: {type(err).__name__}: {err}"))
            return
        seconds = time.monotonic() - began
        self.metrics.generation_seconds.observe(seconds)
        self.metrics.steps_run.observe(out.steps_run)
        self.metrics.steps_saved.inc(max(0, jobs[0].steps - out.steps_run) * len(jobs))
        for kind in out.fallbacks:
            self.metrics.fallbacks.labels(kind).inc()
        self.queue.seconds_per_image += _SMOOTHING * (seconds / len(jobs) - self.queue.seconds_per_image)
        for job, image in zip(jobs, out.images, strict=True):
            self.metrics.images.labels(job.checkpoint).inc()
            job.future.set_result(JobResult(image, self._metadata(job, out, began, seconds, len(jobs))))

    def _fail(self, jobs: list[Job], err: ServeError) -> None:
        if isinstance(err, Cancelled):
            logger.info("batch of %d stopped: %s", len(jobs), err.message)
        else:
            logger.warning("batch of %d failed: %s", len(jobs), err.message)
        for job in jobs:
            error = _gave_up(job, "while running") if isinstance(err, Cancelled) else err
            self.metrics.errors.labels(error.kind).inc()
            job.future.set_exception(error)

    def _metadata(
        self, job: Job, out: BatchOutput, began: float, seconds: float, batch: int
    ) -> dict[str, Any]:
        checkpoint = self.registry.checkpoints[job.checkpoint]
        return {
            **job.request_fields,
            "checkpoint": job.checkpoint,
            "checkpoint_step": checkpoint.source.step,
            "seed": job.seed,
            "width": job.size[0],
            "height": job.size[1],
            "steps": job.steps,
            "steps_run": out.steps_run,
            "scheduler": job.scheduler or "base",
            "scheduler_class": out.scheduler,
            "batch_size": batch,
            "fallbacks": out.fallbacks,
            "degraded": sorted(self.registry.degraded),
            "device": self.registry.device,
            "dtypes": self.registry.dtypes_in_use(job.checkpoint),
            "timings": {"queue_wait_s": round(began - job.enqueued, 4), "batch_s": round(seconds, 4)},
        }
