"""Dataset builders on the local engine vs the Ray engine, where their time goes, and what 1 M skins cost.

Measures, on this machine:

* **records/s** of the ``canny`` builder (1024² PNG skins from ``bench_canny.py``) and the ``glyph``
  builder (generated skins composed at 1024², OCR with their known labels, as ``make skins-demo`` runs
  it): the local engine (``--workers`` processes) vs the Ray engine (an in-process ``ray.init`` with the
  same number of CPUs; shards of ``--canny-shard-size`` / ``--glyph-shard-size`` records: about a
  second of work each, small enough that both CPUs get shards, large enough that a shard's task round
  trip and its three marker/part writes are ~1 % of it; canny shards of 8 measured ~10 % slower).
  Rates are end to end, output folder fresh each time. The cluster's own start-up is excluded (a
  cluster runs for many builds; reported apart), but not the worker processes each build starts, as
  every CLI run, a new Ray job, starts its own. Canny is built at two sizes, which splits each engine's
  time into a start-up per build and a cost per record (what a corpus of millions pays). Interleaved
  rounds, the ratio taken within each round; the share of the CPU other processes used meanwhile is
  reported (the development VM is shared).
* **stages**, 1 core, median ms per record: decode (``read_image``), compute (the rest of the builder:
  Canny; OCR + label matching + rendering), encode (PNG), write (atomic write + placing the image).
* ``skins`` and ``compose`` records/s (local engine) while making the glyph input, for the estimate.
* **an estimate** of the time for 1 M skins at 1024² through skins → compose → canny → glyph on N nodes
  of C cores, from the measured core-seconds per record on the Ray engine.

    python bench/bench_builders.py [--canny-n 1000 3000] [--glyph-n 24] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_canny import CpuMeter, _median_ms, ensure_images  # noqa: E402

from common.atomic import atomic_write  # noqa: E402
from data.build_types import Built, Item  # noqa: E402
from data.canny import CannySettings, canny_builder, canny_edges  # noqa: E402
from data.compose_builder import build_compose  # noqa: E402
from data.glyph import GlyphSettings, glyph_builder  # noqa: E402
from data.image_io import encode_png, link_or_copy, read_image  # noqa: E402
from data.inputs import load_items  # noqa: E402
from data.known_labels import LABELS_FILE  # noqa: E402
from data.ray_engine import RayOptions, connect  # noqa: E402
from data.runner import run_builder  # noqa: E402
from data.skins_builder import build_skins  # noqa: E402
from data.worker_setup import init_worker  # noqa: E402

logger = logging.getLogger("bench")

NODE_CORES = 32  # cores per node in the estimate
NODES = (1, 8, 32, 128)
MILLION = 1_000_000
STAGE_SAMPLE = 30
OUTPUTS: dict[str, set[str]] = {}  # build label -> digests of the train.jsonl every run wrote (must be one)


def _timed_build(
    label: str, name: str, builder: Callable[..., Built], items: list[Item], settings: object, **run
) -> float:
    """Records/s of one fresh build of builder ``name``; ``label`` names the measurement."""
    out = Path(tempfile.mkdtemp(prefix=f"bench_{name}_", dir=run.pop("scratch")))
    began = time.perf_counter()
    summary = run_builder(name, builder, items, out, settings, **run)
    elapsed = time.perf_counter() - began
    assert summary.built == len(items) and not summary.failed, summary
    OUTPUTS.setdefault(label, set()).add(hashlib.sha256((out / "train.jsonl").read_bytes()).hexdigest())
    shutil.rmtree(out)
    return len(items) / elapsed


def _source(item: Item) -> str:
    return item.source if item.record is None else item.record.image


def stages(
    name: str, builder: Callable[..., Built], items: list[Item], settings: object, scratch: Path
) -> dict:
    """Median ms per record, 1 core: decode, encode (of the condition the builder wrote), write (atomic
    write + placing the image) measured apart; compute = the whole builder minus those."""
    init_worker(1)
    sample = items[:STAGE_SAMPLE]
    out = scratch / f"stages_{name}"
    whole = _median_ms(lambda item: builder(item, out, settings), sample)
    if name == "canny":
        made = {item.key: canny_edges(read_image(_source(item)).pixels, settings) for item in sample}  # type: ignore[arg-type]
        encode = lambda item: encode_png(made[item.key], 1, bilevel=True)  # noqa: E731
    else:
        made = {item.key: read_image(out / f"conditioning_images/{item.key}.png").pixels for item in sample}
        encode = lambda item: encode_png(made[item.key])  # noqa: E731
    shutil.rmtree(out)
    data = {item.key: encode(item) for item in sample}
    (scratch / "w").mkdir(exist_ok=True)

    def write(item: Item) -> None:
        with atomic_write(scratch / "w" / f"{item.key}.png", "wb", encoding=None) as handle:
            handle.write(data[item.key])
        link_or_copy(_source(item), scratch / "w" / f"i{item.key}.png")

    decode = _median_ms(lambda item: read_image(_source(item)), sample)
    encode_ms, write_ms = _median_ms(encode, sample), _median_ms(write, sample)
    shutil.rmtree(scratch / "w")
    return {
        "decode": decode,
        "compute": whole - decode - encode_ms - write_ms,
        "encode": encode_ms,
        "write": write_ms,
        "whole": whole,
    }


def glyph_input(root: Path, n: int, workers: int) -> tuple[Path, dict[str, float]]:
    """``n`` generated skins composed at 1024² (fresh each run: their rates go into the estimate)."""
    shutil.rmtree(root, ignore_errors=True)
    began = time.perf_counter()
    build_skins(root / "parts", n, seed=0, workers=workers)
    skins = n / (time.perf_counter() - began)
    began = time.perf_counter()
    build_compose(root / "parts", root / "composed", workers=workers)
    compose = n / (time.perf_counter() - began)
    return root / "composed", {"skins": skins, "compose": compose}


def estimate(core_seconds: dict[str, float]) -> list[str]:
    """Lines of the 1 M-skins estimate: sum of per-record core-seconds / (nodes * cores)."""
    total = sum(core_seconds.values())
    lines = [
        f"per record (core-seconds, measured): {', '.join(f'{k} {v:.3f}' for k, v in core_seconds.items())}; "
        f"chain {total:.3f}",
        f"1 M skins = {MILLION * total / 3600:.0f} core-hours on CPU",
    ]
    for nodes in NODES:
        hours = MILLION * total / (nodes * NODE_CORES) / 3600
        lines.append(f"{nodes} node{'s' if nodes > 1 else ''} x {NODE_CORES} cores: {hours:.1f} h")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--canny-n",
        type=int,
        nargs="+",
        default=[1000, 3000],
        help="canny build sizes (1024² PNG; default 1000 3000: two sizes split start-up from per record)",
    )
    parser.add_argument("--glyph-n", type=int, default=24, help="glyph records (composed 1024² skins)")
    parser.add_argument("--workers", type=int, default=2, help="local processes = Ray CPUs (2)")
    parser.add_argument("--canny-shard-size", type=int, default=64, help="canny records per Ray shard (64)")
    parser.add_argument(
        "--glyph-shard-size", type=int, default=1, help="glyph records per Ray shard (1: seconds each)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("data").setLevel(logging.WARNING)
    import ray

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench_builders_") as tmp:  # removed also on failure
        scratch = Path(tmp)
        canny_folder = Path(tempfile.gettempdir()) / "skinforge_bench_canny_png"  # shared with bench_canny.py
        ensure_images(canny_folder, max(args.canny_n), args.workers, "png")
        canny_items = load_items(canny_folder)
        composed, chain_rates = glyph_input(scratch / "glyph_input", args.glyph_n, args.workers)
        glyph_items = load_items(composed)
        labels = composed / LABELS_FILE
        glyph_settings = GlyphSettings(
            labels=str(labels), labels_sha256=hashlib.sha256(labels.read_bytes()).hexdigest()
        )
        builds = {
            f"canny {n}": (
                "canny",
                canny_builder,
                canny_items[:n],
                CannySettings(),
                RayOptions(shard_size=args.canny_shard_size),
            )
            for n in args.canny_n
        }
        builds |= {
            "glyph": (
                "glyph",
                glyph_builder,
                glyph_items,
                glyph_settings,
                RayOptions(shard_size=args.glyph_shard_size, actor_pool=True),
            ),
        }
        began = time.perf_counter()
        connect("local", num_cpus=args.workers)
        ray_start = time.perf_counter() - began
        results: dict[str, dict[str, list[tuple[float, float]]]] = {
            n: {"local": [], "ray": []} for n in builds
        }
        for round_ in range(args.repeats):
            for label, (name, builder, items, settings, options) in builds.items():
                runs = {"local": {"workers": args.workers}, "ray": {"engine": options}}
                for engine, run in runs.items():
                    with CpuMeter() as meter:
                        rate = _timed_build(label, name, builder, items, settings, scratch=scratch, **run)
                    results[label][engine].append((rate, meter.foreign))
                    logger.info(
                        "round %d %s %s: %.2f rec/s (others %.0f%% CPU)",
                        round_ + 1,
                        label,
                        engine,
                        rate,
                        100 * meter.foreign,
                    )
        ray.shutdown()
        assert all(len(hashes) == 1 for hashes in OUTPUTS.values()), "the engines wrote different train.jsonl"
        stage_ms: dict[str, dict] = {}
        for name, builder, items, settings, _ in builds.values():  # once per builder, not per size
            if name not in stage_ms:
                stage_ms[name] = stages(name, builder, items, settings, scratch)

    report = {
        "ray_start_s": ray_start,
        "chain_local_rates": chain_rates,
        "builders": {},
        "stages_ms": stage_ms,
    }
    rows = []
    for label, engines in results.items():
        local = statistics.median(r for r, _ in engines["local"])
        on_ray = statistics.median(r for r, _ in engines["ray"])
        ratios = [a[0] / b[0] for a, b in zip(engines["ray"], engines["local"], strict=True)]
        others = max(f for runs in engines.values() for _, f in runs)
        n = len(builds[label][2])
        rows.append((label, n, local, on_ray, ratios, others))
        report["builders"][label] = {
            "n": n,
            "local": local,
            "ray": on_ray,
            "ratios": ratios,
            "others_max": others,
        }
    split = start_up_and_per_record(results, sorted(args.canny_n)) if len(args.canny_n) > 1 else None
    report["canny_split"] = split
    canny_ray = report["builders"][f"canny {max(args.canny_n)}"]["ray"]
    core_seconds = {
        "skins": args.workers / chain_rates["skins"],
        "compose": args.workers / chain_rates["compose"],
        "canny": args.workers * split["per_record_s"]["ray"] if split else args.workers / canny_ray,
        "glyph": args.workers / report["builders"]["glyph"]["ray"],
    }
    report["estimate"] = estimate(core_seconds)
    print(_format(rows, stage_ms, chain_rates, ray_start, report["estimate"], args))
    if split:
        print(_format_split(split, args.workers))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def start_up_and_per_record(results: dict, sizes: list[int]) -> dict:
    """Each engine's build time as ``start-up + n x per-record`` from the smallest and largest canny
    builds of each round (medians over rounds), and the per-record Ray/local rate ratio per round.

    A build's start-up (the local engine's process pool; Ray's worker processes, which every new Ray
    job starts afresh, as each CLI run is) is paid once per build; the per-record cost is what a corpus
    of millions pays."""
    small, large = sizes[0], sizes[-1]
    fits: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    for engine, fit in fits.items():
        pairs = zip(results[f"canny {small}"][engine], results[f"canny {large}"][engine], strict=True)
        for (rate_small, _), (rate_large, _) in pairs:
            per_record = (large / rate_large - small / rate_small) / (large - small)
            fit.append((small / rate_small - small * per_record, per_record))
    ratios = [lo[1] / ra[1] for lo, ra in zip(fits["local"], fits["ray"], strict=True)]
    return {
        "sizes": [small, large],
        "start_up_s": {e: statistics.median(f[0] for f in fit) for e, fit in fits.items()},
        "per_record_s": {e: statistics.median(f[1] for f in fit) for e, fit in fits.items()},
        "per_record_ratio": ratios,
    }


def _format_split(split: dict, workers: int) -> str:
    start, per = split["start_up_s"], split["per_record_s"]
    ratios = split["per_record_ratio"]
    return (
        f"\ncanny, from the {split['sizes'][0]}- and {split['sizes'][1]}-record builds "
        f"(time = start-up + n x per record, {workers} CPUs):\n"
        f"* start-up per build: local {start['local']:.2f} s, Ray {start['ray']:.2f} s\n"
        f"* per record: local {1000 * per['local']:.2f} ms, Ray {1000 * per['ray']:.2f} ms; "
        f"Ray / local rate per record **{statistics.median(ratios):.2f}x** "
        f"({', '.join(f'{r:.2f}' for r in ratios)})"
    )


def _format(
    rows: list, stage_ms: dict, chain: dict, ray_start: float, lines: list[str], args: argparse.Namespace
) -> str:
    local_column = f"local, {args.workers} workers"
    ray_column = (
        f"Ray, {args.workers} CPUs (shards: canny {args.canny_shard_size}, glyph {args.glyph_shard_size})"
    )
    out = [
        f"| builder | records | {local_column} | {ray_column} | Ray / local (rounds) | others' CPU |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, n, local, on_ray, ratios, others in rows:
        ratio = f"**{statistics.median(ratios):.2f}x** ({', '.join(f'{r:.2f}' for r in ratios)})"
        out.append(f"| {name} | {n} | {local:.2f} rec/s | {on_ray:.2f} rec/s | {ratio} | <= {others:.0%} |")
    out += ["", "| stage, 1 core, median ms/record | " + " | ".join(stage_ms) + " |"]
    out.append("|---|" + "---:|" * len(stage_ms))
    for stage in ("decode", "compute", "encode", "write", "whole"):
        out.append(f"| {stage} | " + " | ".join(f"{v[stage]:.1f}" for v in stage_ms.values()) + " |")
    rates = f"skins {chain['skins']:.2f} rec/s, compose {chain['compose']:.2f} rec/s"
    out += ["", f"{rates} (local, {args.workers} workers); Ray start-up {ray_start:.1f} s", ""]
    out += [f"* {line}" for line in lines]
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
