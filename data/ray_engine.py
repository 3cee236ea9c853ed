"""The Ray engine: the same builders as shards on a Ray cluster (``--engine ray``).

Nothing here knows a builder. The driver cuts the input into shards (:mod:`data.shards`), skips those
a previous run finished, and hands the rest to Ray with a bounded number in flight (it never submits
the whole corpus at once):

* CPU stages (resize, canny, compose, fill, skins) run each shard as a **task**. Ray retries a task
  whose worker or node died (``max_retries``); an exception raised by the builder itself is not retried
  but raised on the driver, as the local engine raises it.
* Model stages (glyph's OCR, caption's BLIP) run shards on a pool of **actors**: each is one long-lived
  process that loads its model once (the builders cache it per process) and takes shard after shard,
  with a GPU per actor when the cluster has GPUs and the model runs on one (caption; glyph's
  onnxruntime OCR runs on the CPU). A dead actor is restarted (on another node
  if its own is gone) and its calls retried.

Workers write images and the shard's parts straight into ``out``; only counts and failures travel
back. So ``out``, and every input path, must be the same path on every node: shared storage mounted at
one place (NFS, a cluster file system), and the driver's working directory too when paths are
relative. A worker lost mid-shard loses only its shards in flight (rewritten atomically on the retry);
a driver killed mid-job loses nothing that was marked done: rerun the same command.

Ray is an optional dependency (``pip install 'skinforge[ray]'``); this module imports it only when a
build runs on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from common.atomic import remove_stale_temp_files
from common.progress import progress_bar
from data.build_types import BuildFailed, BuildSummary, Item, log_summary, write_failures
from data.shards import ShardWork, make_shards, merge_shards, read_done, run_shard
from data.worker_setup import init_worker

logger = logging.getLogger(__name__)

__all__ = ["RayOptions", "connect", "map_unordered", "run_sharded"]

T = TypeVar("T")
R = TypeVar("R")
IN_FLIGHT_PER_SLOT = 2  # shards queued per CPU/GPU slot: the next one is ready when a worker frees up


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray. None of these decide the output, so they are not build settings: a build can
    be resumed with other options, or by the local engine."""

    address: str = "auto"  # "auto": the running cluster if there is one, else a local one; or host:port
    shard_size: int = 64  # records per shard; keep it when resuming (other sizes redo every shard)
    cpus: float = 1.0  # CPUs per task / actor
    gpus: float | None = None  # GPUs per task / actor; None: 1 per actor of a GPU model on a GPU cluster
    actors: int | None = None  # model stages: actor pool size; None: as many as the cluster fits
    max_in_flight: int | None = None  # shards submitted at once; None: 2 per slot the cluster fits
    max_retries: int = 3  # per shard, on worker or node loss
    actor_pool: bool = False  # a model stage: shards go to actors that keep the model loaded
    gpu_model: bool = False  # its model runs on a GPU when its actor has one (caption, not glyph's OCR)

    def __post_init__(self) -> None:
        counts = (self.shard_size, self.actors or 1, self.max_in_flight or 1)
        if min(counts) < 1 or self.cpus <= 0 or (self.gpus or 0) < 0 or self.max_retries < 0:
            raise ValueError(
                "Ray engine: shard size, actors and max in flight must be >= 1, CPUs > 0, GPUs and "
                f"retries >= 0; got {self}"
            )


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("--engine ray needs Ray: pip install 'skinforge[ray]'") from None
    return ray


def connect(address: str = "auto", num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, unless this process already has (e.g. ``ray.init`` in a test).
    ``auto`` joins the cluster that ``ray start`` runs on this machine, else starts a local one (with
    ``num_cpus``, default all cores); ``local`` always starts a local one."""
    ray = _ray()
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)
            return
        except ConnectionError:
            logger.info("no running Ray cluster found; starting a local one")
            address = "local"
    if address != "local":
        ray.init(address=address, **quiet)
        return
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
            return
        except Exception as exc:  # Ray raises a bare Exception when its raylet misses its fixed 30 s
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            logger.warning("Ray's local start timed out (an overloaded machine?); trying once more")
            ray.shutdown()


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """The driver's working directory, so relative input and output paths mean the same here."""
    previous = os.getcwd()
    if Path(path).is_dir():
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _call(fn: Callable[[T], R], cwd: str, threads: int, arg: T) -> R:
    """What a task or actor runs: the worker set-up the local engine's pool does, then ``fn``."""
    init_worker(threads)
    with _working_dir(cwd):
        return fn(arg)


class _Actor:
    """A pool actor: one process that keeps its builder's model loaded between shards."""

    def __init__(self, fn: Callable[[Any], Any], cwd: str, threads: int) -> None:
        self.run = partial(_call, fn, cwd, threads)

    def call(self, arg: Any) -> Any:
        return self.run(arg)


def _slots(options: RayOptions, gpus: float) -> int:
    """How many tasks or actors of this size the cluster fits at once (at least 1)."""
    resources = _ray().cluster_resources()
    fits = resources.get("CPU", 1.0) / options.cpus
    if gpus:
        fits = min(fits, resources.get("GPU", 0.0) / gpus)
    return max(1, int(fits))


def _gpus(options: RayOptions, actors: bool) -> float:
    """GPUs per task or actor: as asked, else one per actor of a model that runs on a GPU (caption's
    BLIP) when the cluster has GPUs. Everything else takes none: a GPU its OCR (onnxruntime on the CPU)
    or Canny never touches would only cap the pool at the cluster's GPU count."""
    if options.gpus is not None:
        return options.gpus
    wanted = actors and options.gpu_model
    return 1.0 if wanted and _ray().cluster_resources().get("GPU", 0.0) >= 1 else 0.0


def map_unordered(
    fn: Callable[[T], R], args: Iterable[T], options: RayOptions, *, actors: bool = False
) -> Iterator[R]:
    """``fn`` over ``args`` on the cluster, results as they finish. Tasks (``actors=False``) or an actor
    pool; at most ``max_in_flight`` submitted at once. Leaving the loop early cancels the rest."""
    ray = _ray()
    connect(options.address)
    gpus = _gpus(options, actors)
    slots = _slots(options, gpus)
    limit = options.max_in_flight or IN_FLIGHT_PER_SLOT * slots
    resources = {"num_cpus": options.cpus, "num_gpus": gpus}
    setup = (ray.put(fn), os.getcwd(), max(1, int(options.cpus)))  # fn shipped once, not per shard
    pending: dict[Any, int | None] = {}  # object ref -> the actor it runs on (None for a task)
    pool: list[Any] = []
    if actors:
        actor_class = ray.remote(_Actor).options(
            **resources, max_restarts=options.max_retries, max_task_retries=options.max_retries
        )
        pool = [actor_class.remote(*setup) for _ in range(options.actors or slots)]
        limit = options.max_in_flight or IN_FLIGHT_PER_SLOT * len(pool)
        load = dict.fromkeys(range(len(pool)), 0)
    else:
        task = ray.remote(_call).options(**resources, max_retries=options.max_retries, retry_exceptions=False)
    todo = iter(args)
    try:
        while True:
            while len(pending) < limit and (arg := next(todo, _END)) is not _END:
                if actors:
                    index = min(load, key=load.__getitem__)  # the least busy actor
                    load[index] += 1
                    pending[pool[index].call.remote(arg)] = index
                else:
                    pending[task.remote(*setup, arg)] = None
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                if index is not None:
                    load[index] -= 1
                yield ray.get(ref)
    finally:  # also on a strict failure or Ctrl-C: nothing keeps running for a driver that left
        for ref in pending:
            ray.cancel(ref, force=not actors)
        for actor in pool:
            ray.kill(actor)


_END = object()


def run_sharded(
    name: str,
    work: ShardWork,
    items: Sequence[Item],
    out: Path,
    options: RayOptions,
    *,
    strict: bool = False,
) -> BuildSummary:
    """Build ``out`` (prepared by the caller) from ``items`` as shards on Ray; merge; log the summary."""
    shards = make_shards(items, options.shard_size)
    summary = BuildSummary(name, out / "train.jsonl")
    todo = []
    for shard in shards:
        done = read_done(out, shard)
        if done is not None and done.clean:
            summary.kept += done.kept
        else:
            todo.append(shard)
    logger.info(
        "%s: %d shards of <= %d records, %d to build", name, len(shards), options.shard_size, len(todo)
    )
    failures = []
    bar = progress_bar(len(items), name, "rec", initial=summary.kept)
    try:
        with (
            bar,
            contextlib.closing(
                map_unordered(partial(run_shard, work, out), todo, options, actors=options.actor_pool)
            ) as results,
        ):
            for result in results:
                summary.built += result.built
                summary.kept += result.kept
                failures += result.failed
                bar.update(result.items)
                if strict and result.failed:
                    raise BuildFailed(result.failed[0])
    except BuildFailed:
        write_failures(out / "failed.jsonl", failures)
        raise
    summary.failed, summary.skipped, summary.notes = merge_shards(out, name, shards)
    # Every shard is done and no task writes any more: what a worker lost mid-write (a dead node's
    # half-written image) is garbage now; its retry wrote the real file.
    remove_stale_temp_files(out)
    log_summary(summary)
    return summary
