"""The bounded queue between the HTTP handlers and the one worker, and the micro-batcher on top of it.

Bounded on purpose: a full queue answers 429 at once instead of piling up requests that would all
time out. The worker takes the oldest job and every waiting job with the same ``BatchKey`` (up to
``max_batch``), optionally waiting ``max_wait`` for more; jobs of other shapes keep their place.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from serve.jobs import Job

__all__ = ["JobQueue", "QueueFull"]


class QueueFull(Exception):
    """No room; ``retry_after`` is the seconds a client should wait before trying again."""

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"queue full ({depth} requests waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class JobQueue:
    """FIFO of waiting jobs, at most ``max_size``; thread-safe."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.seconds_per_image = 1.0
        """Recent generation time per image, for Retry-After (the worker updates it)."""

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job) -> None:
        with self._changed:
            if len(self._jobs) >= self.max_size:
                raise QueueFull(len(self._jobs), self.retry_after())
            self._jobs.append(job)
            self._changed.notify_all()

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely drained by one slot (at least 1)."""
        return max(1, round(self.seconds_per_image * max(1, len(self._jobs) // 2)))

    def discard(self, job: Job) -> bool:
        """Take a job out of the queue (its client gave up); False when the worker has it already."""
        with self._changed:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            return True

    def close(self) -> None:
        """Wake the worker for shutdown; ``take`` then returns []."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def drain(self) -> list[Job]:
        """Remove and return every waiting job (shutdown)."""
        with self._changed:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def _pop_same(self, key: tuple, batch: list[Job], max_batch: int) -> None:
        for job in list(self._jobs):
            if len(batch) >= max_batch:
                return
            if job.key == key:
                self._jobs.remove(job)
                batch.append(job)

    def take(self, max_batch: int, max_wait: float) -> list[Job]:
        """Block until a job waits; return it with up to ``max_batch - 1`` more of the same key.

        With ``max_wait`` > 0 an incomplete batch waits that long for company.
        """
        with self._changed:
            while not self._jobs and not self._closed:
                self._changed.wait()
            if self._closed:
                return []
            batch = [self._jobs.popleft()]
            self._pop_same(batch[0].key, batch, max_batch)
            until = time.monotonic() + max_wait
            while len(batch) < max_batch and not self._closed and (left := until - time.monotonic()) > 0:
                self._changed.wait(left)
                self._pop_same(batch[0].key, batch, max_batch)
            return batch
