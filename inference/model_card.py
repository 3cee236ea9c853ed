"""The README.md of an exported ControlNet: a Hugging Face Hub model card that says what it is and how
it was made.

The YAML header is what the Hub indexes (base model, license, tags, pipeline, library); it is written
by ``huggingface_hub``'s own ``ModelCardData`` so the Hub reads it back unchanged. The body is for the
person deciding whether to use the weights: how to load them (diffusers, ComfyUI / A1111 / Forge), the
training recipe from the run's skinforge.yaml, the dataset's statistics, the evaluation table with the
protocol behind each number, and a sample grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

__all__ = ["CARD_TAGS", "CardFacts", "render_card"]

CARD_TAGS = ("controlnet", "diffusers", "sdxl", "stable-diffusion-xl", "text-to-image", "skinforge")
PIPELINE_TAG = "text-to-image"
LIBRARY = "diffusers"
_RECIPE_KEYS = (
    ("model", "base"),
    ("model", "controlnet"),
    ("model", "condition_embedding_init"),
    ("data", "resolution"),
    ("data", "buckets"),
    ("data", "empty_prompt_prob"),
    ("train", "max_steps"),
    ("train", "batch_size"),
    ("train", "gradient_accumulation_steps"),
    ("train", "lr"),
    ("train", "lr_scheduler"),
    ("train", "optimizer"),
    ("train", "mixed_precision"),
    ("train", "seed"),
    ("ema", "enabled"),
    ("text_loss", "enabled"),
)
"""The recipe lines shown first; the whole skinforge.yaml follows in a folded block."""
_METRIC_COLUMNS = (
    ("images", "images"),
    ("edge_f1", "edge F1"),
    ("edge_f1_tolerant", "edge F1 (tolerant)"),
    ("edge_ssim", "edge SSIM"),
    ("sentence_accuracy", "sentence accuracy"),
    ("normalized_edit_distance", "NED"),
    ("controlnetpp_edge_f1", "ControlNet++ edge F1 x100"),
    ("controlnetpp_edge_ms_ssim", "ControlNet++ MS-SSIM"),
    ("anytext_sentence_accuracy", "AnyText sentence accuracy"),
    ("anytext_normalized_edit_distance", "AnyText NED"),
    ("clip_score", "CLIP score"),
    ("fid", "FID"),
)


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered by the exporter; None where the run did not record it."""

    name: str
    """The exported model's name (its .safetensors file is ``<name>.safetensors``)."""
    base_model: str
    """The Hub id of the base SDXL (or, for a local base, its folder name)."""
    license: str
    dtype: str
    step: int | None
    checkpoint: str
    """Which weights of the run these are: final, checkpoint-N, best."""
    config: Mapping[str, Any] | None = None
    config_text: str | None = None
    dataset_stats: str | None = None
    metrics: Mapping[str, Any] | None = None
    """A batch run's metrics.json."""
    metrics_data: str | None = None
    """The dataset the evaluation ran on (report.json's ``data``), as shown."""
    best: Mapping[str, Any] | None = None
    """How ``best`` was chosen: its step and score as the run recorded them."""
    grid: str | None = None
    """A sample image next to the card (relative file name)."""
    tags: Sequence[str] = field(default_factory=lambda: list(CARD_TAGS))


def _header(facts: CardFacts) -> str:
    data = ModelCardData(
        base_model=facts.base_model,
        license=facts.license,
        tags=list(facts.tags),
        pipeline_tag=PIPELINE_TAG,
        library_name=LIBRARY,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _usage(facts: CardFacts) -> list[str]:
    return [
        "## Use it",
        "",
        "With diffusers (this folder, or its `diffusers/` subfolder when it is a skinforge export):",
        "",
        "```python",
        "import torch",
        "from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline",
        "",
        f'controlnet = ControlNetModel.from_pretrained("path/to/{facts.name}", torch_dtype=torch.float16)',
        "pipe = StableDiffusionXLControlNetPipeline.from_pretrained(",
        f'    "{facts.base_model}", controlnet=controlnet, torch_dtype=torch.float16',
        ")",
        "```",
        "",
        f"ComfyUI, AUTOMATIC1111's ControlNet extension and Forge: put `{facts.name}.safetensors` in their "
        "ControlNet model folder (`models/controlnet`); they recognise the diffusers layout themselves.",
        "",
    ]


def _value(value: object) -> str:
    return "none" if value is None else f"`{value}`"


def _recipe(facts: CardFacts) -> list[str]:
    lines = ["## Training", ""]
    which = f"Weights: **{facts.checkpoint}**" + (f", step {facts.step}" if facts.step is not None else "")
    lines += [f"{which}; exported in {facts.dtype}.", ""]
    if facts.best:
        shown = ", ".join(f"{key} {_value(value)}" for key, value in facts.best.items())
        lines += [f"Chosen by validation as the best checkpoint of the run: {shown}.", ""]
    if facts.config is None:
        return [*lines, "The run recorded no skinforge.yaml, so the recipe is unknown.", ""]
    lines += ["| setting | value |", "|---|---|"]
    for section, key in _RECIPE_KEYS:
        part = facts.config.get(section)
        if isinstance(part, Mapping) and key in part:
            lines.append(f"| {section}.{key} | {_value(part[key])} |")
    lines.append("")
    if facts.config_text:
        lines += [
            "<details><summary>The whole recipe (skinforge.yaml)</summary>",
            "",
            "```yaml",
            facts.config_text.rstrip(),
            "```",
            "",
            "</details>",
            "",
        ]
    return lines


def _dataset(facts: CardFacts) -> list[str]:
    if not facts.dataset_stats:
        return []
    return ["## Dataset", "", "```text", facts.dataset_stats.rstrip(), "```", ""]


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _evaluation(facts: CardFacts) -> list[str]:
    if not facts.metrics:
        return []
    rows = [row for row in facts.metrics.get("summary", []) if isinstance(row, Mapping)]
    columns = [
        (key, label) for key, label in _METRIC_COLUMNS if any(row.get(key) is not None for row in rows)
    ]
    lines = ["## Evaluation", ""]
    if facts.metrics_data:
        lines += [f"On `{facts.metrics_data}` (`python -m inference`).", ""]
    lines += [
        "| checkpoint | step | " + " | ".join(label for _, label in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        name = str(row.get("checkpoint"))
        shown = f"**{name}** (these weights)" if name == facts.checkpoint else name
        cells = [shown, _cell(row.get("step")), *(_cell(row.get(key)) for key, _ in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    protocols = facts.metrics.get("protocols")
    if isinstance(protocols, Mapping) and protocols:
        lines += ["Protocols:", ""]
        for name, about in protocols.items():
            if isinstance(about, Mapping):
                follows, comparable = about.get("follows"), about.get("comparable_with")
                lines.append(f"- **{name}**: follows {follows}; comparable with {comparable}.")
        lines.append("")
    return lines


def _samples(facts: CardFacts) -> list[str]:
    return ["## Samples", "", f"![samples]({facts.grid})", ""] if facts.grid else []


def render_card(facts: CardFacts) -> ModelCard:
    """The model card; ``ModelCard`` parses the header, so a malformed one fails here, not on the Hub."""
    body = [
        f"# {facts.name}",
        "",
        f"An SDXL ControlNet trained with skinforge on `{facts.base_model}`.",
        "",
        *_usage(facts),
        *_recipe(facts),
        *_dataset(facts),
        *_evaluation(facts),
        *_samples(facts),
    ]
    return ModelCard(_header(facts) + "\n".join(body))
