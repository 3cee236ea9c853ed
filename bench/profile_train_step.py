"""Where a training step's time goes, ours vs the diffusers reference, measured the same way for both.

Runs each trainer `--repeats` times (the setup of `bench_train_step.py`: tiny SDXL, 128 px, batch 4,
fp32, 2 threads) with a profiling `sitecustomize.py` that wraps, at class level and before either
script builds anything, the calls both trainers make: DataLoader `__next__`, `AutoencoderKL.encode`,
`ControlNetModel.forward`, `UNet2DConditionModel.forward`, `Accelerator.backward`,
`Accelerator.clip_grad_norm_`, the optimizer step (global pre/post hooks) and `Optimizer.zero_grad`.
Wall time inside each is summed over the steps after the warm-up; "other" is the rest of the
step-to-step interval (noise sampling, logging, loss, Python). The table shows per-phase medians over
the runs: on a VM whose speed drifts, compare shares.

The wrappers add a little overhead per call, so use `bench_train_step.py` for the step time itself.

    python bench/profile_train_step.py --reference /path/to/diffusers [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench_train_step import (
    TINY_VAE_OPTION,
    WARMUP_STEPS,
    Trainer,
    build_fixtures,
    child_env,
    our_trainer,
    prepare_reference,
    reference_trainer,
    run_once,
    wait_for_quiet,
)

logger = logging.getLogger("profile")

PROFILE_SITECUSTOMIZE = """
import atexit, functools, json, os, time
_path = os.environ.get("BENCH_PROFILE_OUT")
if _path:
    import torch.optim.optimizer as _optimizer
    import torch.utils.data.dataloader as _dataloader
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    _warmup = int(os.environ["BENCH_PROFILE_WARMUP"])
    _state = {"steps": [], "phases": {}, "depth": 0, "opt_start": 0.0}

    def _add(phase, seconds):
        if len(_state["steps"]) >= _warmup:
            _state["phases"][phase] = _state["phases"].get(phase, 0.0) + seconds

    def _timed(phase, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if _state["depth"]:  # a wrapped call inside another (e.g. forward inside forward)
                return fn(*args, **kwargs)
            _state["depth"] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _add(phase, time.perf_counter() - start)
                _state["depth"] -= 1
        return wrapper

    _dataloader._BaseDataLoaderIter.__next__ = _timed("data", _dataloader._BaseDataLoaderIter.__next__)
    AutoencoderKL.encode = _timed("vae encode", AutoencoderKL.encode)
    ControlNetModel.forward = _timed("controlnet fwd", ControlNetModel.forward)
    UNet2DConditionModel.forward = _timed("unet fwd", UNet2DConditionModel.forward)
    Accelerator.backward = _timed("backward", Accelerator.backward)
    Accelerator.clip_grad_norm_ = _timed("clip grad norm", Accelerator.clip_grad_norm_)
    _optimizer.Optimizer.zero_grad = _timed("zero_grad", _optimizer.Optimizer.zero_grad)

    def _pre(optimizer, args, kwargs):
        _state["opt_start"] = time.perf_counter()

    def _post(optimizer, args, kwargs):
        now = time.perf_counter()
        _add("optimizer step", now - _state["opt_start"])
        _state["steps"].append(now)

    _optimizer.register_optimizer_step_pre_hook(_pre)
    _optimizer.register_optimizer_step_post_hook(_post)

    @atexit.register
    def _dump():
        steps = _state["steps"][_warmup - 1 :]
        with open(_path, "w") as out:
            total = steps[-1] - steps[0]
            json.dump({"intervals": len(steps) - 1, "total": total, "phases": _state["phases"]}, out)
"""

BACKGROUND = "others' CPU use"
PHASES = (
    "data",
    "vae encode",
    "controlnet fwd",
    "unet fwd",
    "backward",
    "clip grad norm",
    "optimizer step",
    "zero_grad",
)


def profile(trainer: Trainer, work: Path, preload: Path, max_busy: float, label: str) -> dict[str, float]:
    """One instrumented run; returns seconds per step for each phase (after the warm-up)."""
    out = work / "runs" / f"{label}.json"

    def env(steps_file: Path) -> dict[str, str]:
        values = child_env(preload, work / "hf-home", steps_file)
        values.update(BENCH_PROFILE_OUT=str(out), BENCH_PROFILE_WARMUP=str(WARMUP_STEPS))
        return values

    wait_for_quiet(max_busy, 300.0)
    result = run_once(trainer, work / "runs" / label, env, 900.0)
    if result.returncode != 0:
        raise RuntimeError(f"{trainer.name} exited with {result.returncode}; see {work / 'runs'}")
    raw = json.loads(out.read_text())
    per_step = {k: v / raw["intervals"] for k, v in raw["phases"].items()}
    per_step["step (interval)"] = raw["total"] / raw["intervals"]
    per_step["other"] = per_step["step (interval)"] - sum(raw["phases"].values()) / raw["intervals"]
    per_step[BACKGROUND] = result.background
    return per_step


def profile_repeated(
    trainers: Sequence[Trainer], args: argparse.Namespace, work: Path, preload: Path
) -> dict[str, dict[str, float]]:
    """Per-phase medians over --repeats runs of each trainer, alternating which goes first."""
    runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in trainers}
    for repeat in range(args.repeats):
        for trainer in trainers if repeat % 2 == 0 else trainers[::-1]:
            label = f"profile-{trainer.name}-{repeat}"
            runs[trainer.name].append(profile(trainer, work, preload, args.max_busy, label))
    return {
        name: {key: statistics.median(r.get(key, 0.0) for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }


def render(results: dict[str, dict[str, float]]) -> None:
    """Milliseconds per step and share of the step, one column per trainer."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ms per step after the warm-up (share of the step); per-phase medians over runs")
    table.add_column("phase", no_wrap=True)
    for name in results:
        table.add_column(name, justify="right", no_wrap=True)
    for phase in (*PHASES, "other", "step (interval)"):
        cells = []
        for values in results.values():
            ms, step = 1000 * values.get(phase, 0.0), values["step (interval)"]
            cells.append(f"{ms:.1f} ({values.get(phase, 0.0) / step:.0%})")
        table.add_row(phase, *cells)
    table.add_row(BACKGROUND, *(f"{v[BACKGROUND]:.0%}" for v in results.values()))
    Console(width=100).print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, help="diffusers checkout (or bare git dir), or the script")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer; per-phase medians")
    parser.add_argument("--work-dir", type=Path, help="default: a temp dir, removed afterwards")
    parser.add_argument("--max-busy", type=float, default=0.15, help="wait until the CPUs are this idle")
    parser.add_argument("--tiny-vae", **TINY_VAE_OPTION)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="profile-train-step-"))).absolute()
    try:
        model, jsonl, parquet_dir = build_fixtures(work, args.tiny_vae)
        preload = work / "profile-preload"
        preload.mkdir(parents=True, exist_ok=True)
        (preload / "sitecustomize.py").write_text(PROFILE_SITECUSTOMIZE, encoding="utf-8")
        trainers = [our_trainer(model, jsonl, args.steps)]
        if args.reference:
            script, _ = prepare_reference(args.reference, work / "reference")
            trainers.append(reference_trainer(script, model, parquet_dir, args.steps))
        render(profile_repeated(trainers, args, work, preload))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
