"""``python -m inference export``: a trained ControlNet as other tools take it.

ComfyUI, AUTOMATIC1111's ControlNet extension and Forge load a diffusers-layout SDXL ControlNet from one
``.safetensors`` file (they detect ``controlnet_cond_embedding.conv_in.weight`` and convert the keys
themselves), so no key conversion is needed, only the right file. The export folder holds::

    <name>.safetensors                 the single file: diffusers keys, the recipe and step in its metadata
    config.json                        \\ the diffusers folder itself: ControlNetModel.from_pretrained(out)
    diffusion_pytorch_model.safetensors / and a Hub upload of the folder both work
    skinforge.yaml                     the run's recipe (`python -m inference --checkpoint out` reads it)
    README.md                          a Hugging Face model card (inference.model_card)
    samples.png                        a sample grid, when the run or its report has one

Every file is written into a hidden folder first and moved into place, so an interrupted export never
leaves a truncated file under a final name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from common.run_layout import STATE_FILE
from data.stats import dataset_stats, format_stats
from inference.checkpoints import CONFIG_FILE, FINAL_NAME, ControlNetSource, model_field, resolve_checkpoint
from inference.model_card import CardFacts, render_card

logger = logging.getLogger(__name__)

__all__ = ["BEST_DIR", "DETECTED_KEY", "EXPORT_DTYPES", "Export", "export_controlnet", "main"]

PROG = "python -m inference export"
BEST_DIR = "best"
"""Where `validation.select_best` keeps a run's best ControlNet (a diffusers folder)."""
SELECTION_FILE = "selection.json"
"""In best/: the metric, step and score it was selected by."""
DETECTED_KEY = "controlnet_cond_embedding.conv_in.weight"
"""The key ComfyUI / A1111 / Forge look for to treat a file as a diffusers-layout ControlNet."""
EXPORT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
DEFAULT_LICENSE = "openrail++"
"""SDXL's licence (CreativeML Open RAIL++-M), which a ControlNet copied from its UNet inherits."""
_REPORT_GRID = "grid.png"
_METRICS_FILE = "metrics.json"
_REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Export:
    """What an export wrote."""

    folder: Path
    single_file: Path
    card: Path
    step: int | None


@dataclass(frozen=True)
class _Weights:
    """The ControlNet to export and what its run recorded about it."""

    source: ControlNetSource
    run: Path
    label: str
    """final, checkpoint-N, best (or the bare folder's name)."""
    step: int | None
    record: Path | None
    """The skinforge.yaml describing these weights."""
    best: dict[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err})") from err
    return data if isinstance(data, dict) else None


def _first_record(folders: list[Path]) -> Path | None:
    return next((f / CONFIG_FILE for f in folders if (f / CONFIG_FILE).is_file()), None)


def _best_facts(run: Path) -> tuple[int | None, dict[str, Any]]:
    """The best checkpoint's step and how it was chosen (metric, score), from best/selection.json,
    best/trainer_state.json or the run's trainer_state.json (its ``best`` entry); plain values only."""
    entry = (_read_json(run / STATE_FILE) or {}).get("best")
    facts = {
        **(entry if isinstance(entry, dict) else {}),
        **(_read_json(run / BEST_DIR / STATE_FILE) or {}),
        **(_read_json(run / BEST_DIR / SELECTION_FILE) or {}),
    }
    plain = {k: v for k, v in facts.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    step = plain.get("step")
    shown = {k: v for k, v in plain.items() if k in ("metric", "score")}
    return (step if isinstance(step, int) else None), shown


def _weights(checkpoint: str | Path, best: bool) -> _Weights:
    """Resolve what to export; for ``best``, the run's best/ (a clear error when the run has none)."""
    path = Path(checkpoint).absolute()
    if best:
        if not (path / BEST_DIR).is_dir():
            raise ValueError(
                f"{path} has no {BEST_DIR}/ folder: training writes it with validation.select_best=<metric> "
                "(the checkpoint with the best validation score); export the run's final weights or a "
                "checkpoint-N without --best"
            )
        source = resolve_checkpoint(path / BEST_DIR)
        step, chosen = _best_facts(path)
        record = _first_record([source.controlnet_dir, path / BEST_DIR, path])
        base = source.base or (model_field(record, "base") if record else None)
        source = dataclasses.replace(source, base=base, step=step)
        return _Weights(source, path, BEST_DIR, step, record, chosen)
    source = resolve_checkpoint(path)
    folder = source.controlnet_dir
    if source.final or source.step is not None:  # runs/X/controlnet or runs/X/checkpoint-N/controlnet
        run = folder.parent if source.final else folder.parent.parent
        record = _first_record([folder, folder.parent])
    else:  # a bare ControlNet folder
        run, record = folder, _first_record([folder])
    return _Weights(source, run, source.name, source.step, record)


def _default_name(weights: _Weights) -> str:
    plain = weights.label == FINAL_NAME or weights.run == weights.source.controlnet_dir
    name = weights.run.name if plain else f"{weights.run.name}-{weights.label}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "controlnet"


def _base_model_id(base: str | None, given: str | None) -> str:
    """The card's base_model: the user's, else the base when it is a Hub id, else its folder's name."""
    if given:
        return given
    if not base:
        return "unknown"
    if not Path(base).expanduser().exists() and base.count("/") == 1:
        return base
    logger.warning(
        "the base %s is a local folder; the card names it %s: pass --base-model with its Hub id before "
        "uploading",
        base,
        Path(base).name,
    )
    return Path(base).name


def _dataset_stats(config: dict[str, Any]) -> str | None:
    """`python -m data stats` of the training set, when it is still where the run read it."""
    data = config.get("data")
    jsonl = Path(data["train_jsonl"]) if isinstance(data, dict) and data.get("train_jsonl") else None
    if jsonl is None or not jsonl.is_file():
        return None
    logger.info("Reading the statistics of the training set %s", jsonl)
    lines = format_stats(dataset_stats(jsonl)).splitlines()[1:]  # the first line is the local path
    return "\n".join([f"{jsonl.parent.name}/{jsonl.name}", *lines])


def _find_report(weights: _Weights, report: Path | None) -> Path | None:
    """--report, else `reports/<run>` (where the command printed after training writes) if present."""
    if report is not None:
        if not (report / _METRICS_FILE).is_file():
            raise FileNotFoundError(
                f"--report {report}: no {_METRICS_FILE} there (a python -m inference output)"
            )
        return report
    for root in (Path.cwd(), weights.run.parent.parent):
        candidate = root / "reports" / weights.run.name
        if (candidate / _METRICS_FILE).is_file():
            logger.info("Evaluation from %s", candidate)
            return candidate
    return None


def _sample_grid(weights: _Weights, report: Path | None) -> Path | None:
    """The report's grid, else the run's validation grid at the exported step, else its latest one."""
    if report is not None and (report / _REPORT_GRID).is_file():
        return report / _REPORT_GRID
    validation = weights.run / "validation"
    if weights.step is not None and (validation / f"step-{weights.step:06d}.png").is_file():
        return validation / f"step-{weights.step:06d}.png"
    grids = sorted(validation.glob("step-*.png"))
    return grids[-1] if grids else None


def _metadata(weights: _Weights, name: str, dtype: str, base_model: str, config_text: str | None) -> dict:
    """safetensors metadata: strings only (the format allows nothing else)."""
    metadata = {
        "format": "pt",
        "skinforge.name": name,
        "skinforge.checkpoint": weights.label,
        "skinforge.dtype": dtype,
        "skinforge.base_model": base_model,
    }
    if weights.step is not None:
        metadata["skinforge.step"] = str(weights.step)
    if config_text is not None:
        metadata["skinforge.config"] = config_text
    return metadata


def _publish(staging: Path, out: Path) -> None:
    """Move each staged file into ``out`` (replacing an earlier export's)."""
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)


def export_controlnet(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "fp16",
    best: bool = False,
    report: str | Path | None = None,
    name: str | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> Export:
    """Export a run's final weights, a checkpoint, a bare ControlNet folder or (``best``) the run's best/
    into ``out``; see the module docstring for what is written. Raises ValueError / FileNotFoundError for
    bad input before any weight is read."""
    from diffusers import ControlNetModel

    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    weights = _weights(checkpoint, best)
    out = Path(out).absolute()
    name = name or _default_name(weights)
    report_dir = _find_report(weights, Path(report) if report is not None else None)
    config_text = weights.record.read_text(encoding="utf-8") if weights.record else None
    config = yaml.safe_load(config_text) if config_text else None
    config = config if isinstance(config, dict) else None
    base_id = _base_model_id(weights.source.base, base_model)

    logger.info("Loading %s in %s", weights.source.controlnet_dir, dtype)
    model = ControlNetModel.from_pretrained(weights.source.controlnet_dir, torch_dtype=EXPORT_DTYPES[dtype])
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    if DETECTED_KEY not in state:
        raise ValueError(f"{weights.source.controlnet_dir} has no {DETECTED_KEY}: not an SDXL ControlNet")

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        single = staging / f"{name}.safetensors"
        save_file(state, single, metadata=_metadata(weights, name, dtype, base_id, config_text))
        model.save_pretrained(staging, safe_serialization=True)
        if config_text is not None:
            (staging / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        grid = _sample_grid(weights, report_dir)
        if grid is not None:
            shutil.copyfile(grid, staging / SAMPLES_FILE)
        report_json = _read_json(report_dir / _REPORT_FILE) if report_dir else None
        data = report_json.get("data") if report_json else None
        facts = CardFacts(
            name=name,
            base_model=base_id,
            license=license,
            dtype=dtype,
            step=weights.step,
            checkpoint=weights.label,
            config=config,
            config_text=config_text,
            dataset_stats=_dataset_stats(config) if config else None,
            metrics=_read_json(report_dir / _METRICS_FILE) if report_dir else None,
            metrics_data=f"{Path(data).parent.name}/{Path(data).name}" if isinstance(data, str) else None,
            best=weights.best,
            grid=SAMPLES_FILE if grid is not None else None,
        )
        render_card(facts).save(staging / CARD_FILE)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "Exported %s to %s (%s, %s)", weights.source.controlnet_dir, out, f"{name}.safetensors", dtype
    )
    return Export(out, out / f"{name}.safetensors", out / CARD_FILE, weights.step)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a trained ControlNet for ComfyUI / A1111 / Forge (one .safetensors), diffusers "
        "(from_pretrained on the folder) and the Hugging Face Hub (a model card README.md).",
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="RUN_OR_CKPT",
        help="run folder (its final weights), checkpoint-N folder or diffusers ControlNet folder",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="export folder")
    parser.add_argument(
        "--dtype", choices=list(EXPORT_DTYPES), default="fp16", help="weights' dtype (default: fp16)"
    )
    parser.add_argument(
        "--best", action="store_true",
        help="the run's best/ checkpoint (written in training by validation.select_best=<metric>)",
    )  # fmt: skip
    parser.add_argument(
        "--report", type=Path,
        help="a python -m inference output folder whose metrics.json goes into the card (default: "
        "reports/<run name> if present)",
    )  # fmt: skip
    parser.add_argument("--name", help="file and card name (default: the run's name, plus the checkpoint's)")
    parser.add_argument(
        "--base-model", help="the base SDXL's Hub id for the card (default: model.base when it is one)"
    )
    parser.add_argument(
        "--license", default=DEFAULT_LICENSE,
        help=f"the card's licence (default: {DEFAULT_LICENSE}, SDXL's, which its ControlNets inherit)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the export CLI; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        done = export_controlnet(
            args.checkpoint, args.out, args.dtype, args.best, args.report, args.name, args.base_model,
            args.license,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    logger.info("Single file: %s; model card: %s", done.single_file, done.card)
    return 0
