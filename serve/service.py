"""The service behind both front ends (HTTP routes and the playground): load, validate, enqueue.

``Service.submit`` turns a validated ``GenerateRequest`` into a queued ``Job`` (decoding and Canny
happen here, on the caller's thread, so bad images fail before taking a queue slot); the worker
answers the job's future. Loading runs in the background so ``/healthz`` can say "loading" meanwhile.
Settings a request leaves out come from its checkpoint's recipe (``serve.recipe``).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from typing import Any

from PIL import Image

from inference.settings import SIZE_MULTIPLE
from serve.config import ServeConfig
from serve.errors import RequestError, ServeError
from serve.faults import inject, parse_faults
from serve.images import canny_condition, decode_image
from serve.jobqueue import JobQueue
from serve.jobs import Job
from serve.metrics import ServeMetrics
from serve.recipe import Recipe
from serve.registry import Registry
from serve.schema import BASE_SCHEDULER, GenerateRequest, check_request
from serve.worker import Worker

logger = logging.getLogger(__name__)

__all__ = ["NotReady", "Service"]

_ECHOED = ("prompt", "negative_prompt", "conditioning_scale", "control_start", "control_end")


class NotReady(ServeError):
    status = 503
    kind = "not_ready"


class Service:
    """Registry + queue + worker + metrics; ``start`` loads in the background, ``stop`` shuts down."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.faults = parse_faults(config.faults)  # a typo fails the start, not the first request
        self.registry = Registry(
            list(config.checkpoints), config.base, config.device, config.dtype, config.speed, config.report
        )
        self.metrics = ServeMetrics(config.device)
        self.queue = JobQueue(config.max_queue)
        self.worker = Worker(
            self.registry, self.queue, self.metrics, config.max_batch, config.max_wait_ms / 1000
        )
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="serve-loader", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        began = time.monotonic()
        try:
            if self.faults.get("slow_load"):
                time.sleep(self.faults["slow_load"] / 1000)  # type: ignore[operator]
            self.registry.load()
            inject(self.registry, self.faults)
        except Exception as err:  # reported by /healthz; the process stays up to say why
            logger.exception("loading the checkpoints failed")
            self.load_error = f"{type(err).__name__}: {err}"
            return
        for kind in self.registry.degraded:  # accelerators that failed to load (xformers, compile)
            self.metrics.fallbacks.labels(kind).inc()
        self.worker.start()
        self.ready.set()
        self.metrics.ready.set(1)
        logger.info("ready in %.1f s", time.monotonic() - began)

    def stop(self) -> None:
        if self.ready.is_set():
            self.worker.stop()

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.ready.is_set():
            return 200, {"status": "ready", "checkpoints": self.registry.names, "queue": len(self.queue)}
        if self.load_error:
            return 503, {"status": "failed", "error": self.load_error}
        return 503, {"status": "loading"}

    # ------------------------------------------------------------------ requests

    def _condition(self, request: GenerateRequest) -> Image.Image:
        limits = self.config.limits
        if request.image is not None:
            return decode_image("image", request.image, limits)
        assert request.source_image is not None  # the schema requires one of them
        source = decode_image("source_image", request.source_image, limits)
        return canny_condition(source, request.canny_low, request.canny_high)

    def _size(self, request: GenerateRequest, condition: Image.Image, recipe: Recipe) -> tuple[int, int]:
        """Requested size; with neither side given and a training resolution, the condition's aspect at
        that many pixels (a 512² drawing for a 128² ControlNet is made at 128²); else the condition's own
        size (rounded down to a multiple of 8), within the limits."""
        limits = self.config.limits
        field = "image" if request.image is not None else "source_image"
        own_width, own_height = condition.width, condition.height
        if request.width is None and request.height is None and recipe.resolution is not None:
            scale = recipe.resolution / math.sqrt(own_width * own_height)
            own_width = max(SIZE_MULTIPLE, round(own_width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
            own_height = max(SIZE_MULTIPLE, round(own_height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        sides = []
        for name, given, own in (
            ("width", request.width, own_width),
            ("height", request.height, own_height),
        ):
            side = given if given is not None else own - own % SIZE_MULTIPLE
            if given is None and not limits.min_side <= side <= limits.max_side:
                raise RequestError(
                    field, f"its {name} {own} is outside {limits.min_side}..{limits.max_side}; pass {name}"
                )
            sides.append(side)
        return sides[0], sides[1]

    def _check_prompt_tokens(self, request: GenerateRequest) -> None:
        limit = self.config.limits.max_prompt_tokens or self.registry.max_prompt_tokens()
        for field in ("prompt", "negative_prompt"):
            text = getattr(request, field)
            if text and (tokens := self.registry.count_tokens(text)) > limit:
                raise RequestError(
                    field,
                    f"too long: {tokens} tokens, the text encoder reads {limit} (the rest would be cut)",
                )

    def make_job(self, request: GenerateRequest) -> Job:
        """A job for ``request``, or RequestError naming the bad field."""
        if not self.ready.is_set():
            raise NotReady("the checkpoints are still loading" if not self.load_error else self.load_error)
        check_request(request, self.config.limits, self.registry.names)
        self._check_prompt_tokens(request)
        checkpoint = request.checkpoint or self.registry.default
        recipe = self.registry.recipes[checkpoint]
        condition = self._condition(request)
        size = self._size(request, condition, recipe)
        steps = request.steps or min(recipe.steps, self.config.limits.max_steps)  # the schema: >= 1 or None
        guidance = request.guidance if request.guidance is not None else recipe.guidance
        scheduler = recipe.scheduler if request.scheduler is None else request.scheduler
        timeout = request.timeout or self.config.timeout_s
        echoed = {name: getattr(request, name) for name in _ECHOED} | {"guidance": guidance}
        if request.source_image is not None:
            echoed.update(
                preprocess=request.preprocess, canny_low=request.canny_low, canny_high=request.canny_high
            )
        if request.adaptive_steps:
            echoed["adaptive_threshold"] = request.adaptive_threshold
        return Job(
            checkpoint=checkpoint,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            condition=condition,
            seed=request.seed if request.seed is not None else secrets.randbelow(2**32),
            size=size,
            steps=steps,
            guidance=guidance,
            conditioning_scale=request.conditioning_scale,
            control_start=request.control_start,
            control_end=request.control_end,
            scheduler=None if scheduler == BASE_SCHEDULER else scheduler,
            adaptive_threshold=request.adaptive_threshold if request.adaptive_steps else None,
            deadline=time.monotonic() + timeout,
            request_fields=echoed,
        )

    def cancel(self, job: Job, reason: str) -> None:
        """The client left or the deadline passed: free its queue slot, or stop its batch at the next step."""
        job.cancel(reason)
        if self.queue.discard(job):  # never started: counted here, the worker will not see it
            self.metrics.errors.labels(reason).inc()
            self.metrics.queue_depth.set(len(self.queue))

    def submit(self, request: GenerateRequest) -> Job:
        """Validate and enqueue; raises RequestError, NotReady or jobqueue.QueueFull."""
        job = self.make_job(request)
        self.queue.put(job)
        self.metrics.queue_depth.set(len(self.queue))
        return job
