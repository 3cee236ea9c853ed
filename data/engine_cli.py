"""``--engine local|ray`` and the Ray engine's flags, shared by every builder subcommand."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data.ray_engine import RayOptions

__all__ = ["add_engine_args", "engine_options"]


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """The engine flags (:class:`data.ray_engine.RayOptions`, which checks them); none of them changes
    the output. A model stage's subcommand sets ``parser.set_defaults(ray_actor_pool=True)`` after this."""
    parser.set_defaults(ray_actor_pool=False)
    group = parser.add_argument_group("engine", "where the work runs (the output is the same)")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: processes on this machine (default); ray: shards on a Ray cluster",
    )
    group.add_argument(
        "--ray-address",
        default="auto",
        help="Ray cluster to join: auto (the one `ray start` runs here, else a new local one), "
        "local (always a new local one), or HOST:PORT of the head",
    )
    group.add_argument(
        "--shard-size", type=int, default=64, help="records per shard (64; keep it when resuming)"
    )
    group.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per Ray task or actor (1)")
    group.add_argument(
        "--ray-gpus",
        type=float,
        default=None,
        help="GPUs per Ray task or actor (default: 1 per caption actor when the cluster has GPUs and "
        "--device is not cpu, else 0)",
    )
    group.add_argument(
        "--ray-actors",
        type=int,
        default=None,
        help="model stages: actors (default: as many as fit)",
    )
    group.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="shards submitted at once (default 2 per slot)",
    )
    group.add_argument(
        "--max-retries", type=int, default=3, help="retries of a shard lost with its worker or node (3)"
    )


def engine_options(args: argparse.Namespace) -> RayOptions | None:
    """The Ray engine's options from :func:`add_engine_args` flags; None for the local engine."""
    if args.engine == "local":
        return None
    from data.ray_engine import RayOptions

    return RayOptions(
        address=args.ray_address,
        shard_size=args.shard_size,
        cpus=args.ray_cpus,
        gpus=args.ray_gpus,
        actors=args.ray_actors,
        max_in_flight=args.max_in_flight,
        max_retries=args.max_retries,
        actor_pool=args.ray_actor_pool,
    )
