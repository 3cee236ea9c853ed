"""What a checkpoint was trained for, read from its skinforge.yaml: the defaults a request and the
playground start from, and an example condition and prompt of its own task.

A ControlNet trained at 128² with guidance 1 on circles draws noise at 512² and guidance 5 from a keyboard
grid, so whatever a request leaves out comes from the checkpoint's own recipe (``data.resolution``,
``validation.guidance_scale``, ``validation.num_inference_steps``, ``validation.scheduler``), and the
example is the first record of the run's own validation or training data when it can still be found.
No model is loaded here; a missing or odd field costs that default, never the service.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from data.fill import fill_record
from data.records import resolve_path
from inference.checkpoints import ControlNetSource, read_field, recipe_file, settle_file
from inference.settings import SCHEDULER_NAMES, GenerationSettings

logger = logging.getLogger(__name__)

__all__ = ["Recipe", "example", "keyboard_condition", "read_recipe"]

_DEFAULTS = GenerationSettings()


@dataclass(frozen=True)
class Recipe:
    """A checkpoint's sampling defaults and example; a checkpoint without skinforge.yaml gets
    inference's own defaults (``GenerationSettings``) and the condition's size."""

    resolution: int | None = None
    guidance: float = _DEFAULTS.guidance_scale
    steps: int = _DEFAULTS.num_inference_steps
    scheduler: str | None = None
    """None: the base model's own scheduler."""
    example_prompt: str | None = None
    example_condition: Path | None = None
    """The first record of the run's validation.jsonl, validation.prompts or data.train_jsonl."""
    text_task: bool = False
    """The run learned label text (``text_loss.enabled``): its fallback example is a keyboard."""


def _int(config: Path, section: str, key: str) -> int | None:
    value = read_field(config, section, key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _float(config: Path, section: str, key: str) -> float | None:
    value = read_field(config, section, key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _first_record(jsonl: Path) -> tuple[str, Path] | None:
    """Text and condition path of the first record of ``jsonl`` (one line read, not the whole file)."""
    try:
        with jsonl.open(encoding="utf-8") as handle:
            line = next((line for line in handle if line.strip()), "")
        record = json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("no example from %s: %s", jsonl, err)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("conditioning_image"), str):
        logger.warning("no example from %s: its first line has no conditioning_image", jsonl)
        return None
    condition = resolve_path(jsonl.parent, record["conditioning_image"])
    if not condition.is_file():
        logger.warning("no example from %s: %s is missing", jsonl, condition)
        return None
    text = record.get("text")
    return (text if isinstance(text, str) else ""), condition


def _example_record(config: Path) -> tuple[str, Path] | None:
    """The run's own first validation record, else its first validation prompt with its condition, else
    its first training record; None when none of them can be found any more."""
    jsonl = read_field(config, "validation", "jsonl")
    if isinstance(jsonl, str) and (path := settle_file(jsonl, config)) and (found := _first_record(path)):
        return found
    prompts = read_field(config, "validation", "prompts")
    images = read_field(config, "validation", "conditioning_images")
    first_image = images[0] if isinstance(images, list) and images else None
    if isinstance(prompts, list) and prompts and isinstance(first_image, str):
        image = settle_file(first_image, config)
        if image is not None:
            return str(prompts[0]), image
    train = read_field(config, "data", "train_jsonl")
    if isinstance(train, str) and (path := settle_file(train, config)):
        return _first_record(path)
    return None


def read_recipe(source: ControlNetSource) -> Recipe:
    """The recipe in ``source``'s skinforge.yaml (defaults where it says nothing)."""
    config = recipe_file(source)
    if config is None:
        return Recipe()
    scheduler = read_field(config, "validation", "scheduler")
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        logger.warning("%s: validation.scheduler %r is not one of %s; using the base's", config, scheduler,
                       ", ".join(SCHEDULER_NAMES))  # fmt: skip
        scheduler = None
    found = _example_record(config)
    return Recipe(
        resolution=_int(config, "data", "resolution"),
        guidance=_float(config, "validation", "guidance_scale") or _DEFAULTS.guidance_scale,
        steps=_int(config, "validation", "num_inference_steps") or _DEFAULTS.num_inference_steps,
        scheduler=scheduler if isinstance(scheduler, str) else None,
        example_prompt=found[0] if found else None,
        example_condition=found[1] if found else None,
        text_task=read_field(config, "text_loss", "enabled") is True,
    )


def keyboard_condition(size: int = 512) -> Image.Image:
    """A keyboard-like edge map (4x4 key outlines on black), the example of a run that learned labels."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    keys, margin = 4, size // 16
    pitch = (size - 2 * margin) // keys
    for row in range(keys):
        for column in range(keys):
            left, top = margin + column * pitch + 2, margin + row * pitch + 2
            draw.rectangle((left, top, left + pitch - 4, top + pitch - 4), outline=(255, 255, 255))
    return image


def example(recipe: Recipe) -> tuple[Image.Image, str]:
    """The example condition and prompt of the recipe's task: its own first record when found, else a
    keyboard for a run that learned labels, else a fill circle's outline and prompt (the toy task)."""
    side = recipe.resolution or 512
    if recipe.example_condition is not None:
        with Image.open(recipe.example_condition) as opened:
            return opened.convert("RGB"), recipe.example_prompt or ""
    if recipe.text_task:
        return keyboard_condition(side), "a keyboard skin"
    _, condition, text = fill_record(0, side, seed=0)
    return condition, text
