"""The browser playground (Gradio, mounted at ``/ui``): generate, compare checkpoints, keep a history.

It runs on the service's own queue and worker (``Service.submit``), so playground users and API
clients share one pipeline, one batcher and the same limits. Every output is autosaved by
``serve.history`` (PNG with metadata text chunks + a history.jsonl line) and can be re-run from the
history tab with exactly its settings and condition.

It opens on the default checkpoint (a run's best, else its final weights) with that checkpoint's own
recipe (size, guidance, steps, scheduler from its skinforge.yaml, see ``serve.recipe``) and an example of
its own task (the first record of its run's data: a circle outline and its colours for fill runs), so
the first press of Generate shows what the checkpoint learned. Small outputs are shown enlarged with
sharp pixels (the saved file keeps its size).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import gradio as gr
from PIL import Image

from inference.settings import SCHEDULER_NAMES
from serve.errors import ServeError
from serve.history import History
from serve.jobqueue import QueueFull
from serve.recipe import Recipe, example
from serve.schema import BASE_SCHEDULER, GenerateRequest, parse_fields
from serve.service import Service

logger = logging.getLogger(__name__)

__all__ = ["CSS", "DISPLAY_SIDE", "build_playground"]

DISPLAY_SIDE = 384
"""Pixels the output is shown at, at least: a 128² image at its own size is a thumbnail."""
CSS = f"""
#output img {{ min-width: {DISPLAY_SIDE}px; min-height: {DISPLAY_SIDE}px; width: 100%; height: 100%;
  object-fit: contain; image-rendering: pixelated; }}
#condition img {{ image-rendering: pixelated; }}
"""
"""The playground's style (mounted with it): the output enlarged in display only, nearest neighbour."""
_SETTING_FIELDS = (
    "prompt", "negative_prompt", "steps", "guidance", "conditioning_scale", "control_start", "control_end",
    "width", "height", "scheduler", "adaptive_threshold",
)  # fmt: skip


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _condition(uploaded: Image.Image | None, drawn: Any) -> Image.Image:
    """The uploaded image, else the drawn one; a message naming what to do when there is neither."""
    condition = uploaded if uploaded is not None else _editor_image(drawn)
    if condition is None:
        raise gr.Error("Upload or draw a control image first (or press 'Example condition').")
    return condition


def _editor_image(value: Any) -> Image.Image | None:
    """The picture of a gr.Sketchpad/ImageEditor value (its composite: background plus drawn layers)."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    composite = value.get("composite") if isinstance(value, dict) else None
    if composite is None and isinstance(value, dict):
        composite = value.get("background")
    return composite if isinstance(composite, Image.Image) else None


class Playground:
    """The handlers; each returns what its Gradio outputs show."""

    def __init__(self, service: Service, history: History) -> None:
        self.service = service
        self.history = history

    # ---------------------------------------------------------------- checkpoints

    def gallery_rows(self) -> list[list[Any]]:
        """Checkpoint (label; the default marked), step, training loss, and what it was scored."""
        rows = []
        default = self.service.registry.default
        for entry in self.service.registry.describe()["checkpoints"]:
            metrics = entry.get("metrics") or {}
            shown = [f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, int | float)]
            selected = entry.get("selected_by") or {}
            if isinstance(selected.get("score"), int | float):
                shown.insert(0, f"kept as best by {selected.get('metric')}: {selected['score']:.3f}")
            name = entry.get("label", entry["name"]) + (" (default)" if entry["name"] == default else "")
            loss = entry.get("loss")
            rows.append([name, entry.get("step"), None if loss is None else round(loss, 4), ", ".join(shown)])
        return rows

    def recipe(self, name: str) -> Recipe:
        return self.service.registry.recipes[name]

    def recipe_settings(self, name: str) -> tuple[int, float, str, int, int]:
        """Steps, guidance, scheduler, width and height of ``name``'s recipe (when it is picked)."""
        recipe = self.recipe(name)
        side = recipe.resolution or 0
        return recipe.steps, recipe.guidance, recipe.scheduler or BASE_SCHEDULER, side, side

    def example(self, name: str) -> tuple[Image.Image, str]:
        """The example condition and prompt of ``name``'s own task."""
        return example(self.recipe(name))

    # ---------------------------------------------------------------- generation

    def _request(
        self, fields: dict[str, Any], condition: Image.Image, canny: bool, low: int, high: int
    ) -> GenerateRequest:
        image_field = (
            {"source_image": _png(condition), "preprocess": "canny"} if canny else {"image": _png(condition)}
        )
        canny_fields = {"canny_low": int(low), "canny_high": int(high)} if canny else {}
        return parse_fields({**fields, **image_field, **canny_fields})

    def _run(self, request: GenerateRequest, condition: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
        """Generate through the service's queue and autosave; ServeError/QueueFull become gr.Error."""
        try:
            job = self.service.submit(request)
            result = job.future.result(timeout=max(1.0, job.deadline - job.enqueued) + 5)
        except QueueFull as err:
            raise gr.Error(f"Busy: {err}") from err
        except ServeError as err:
            raise gr.Error(err.message) from err
        entry = self.history.save(result.image, job.condition, result.metadata)
        return result.image, entry

    @staticmethod
    def _fields(
        prompt: str, negative: str, seed: float, steps: float, guidance: float, scale: float, start: float,
        end: float, scheduler: str, width: float, height: float, adaptive: bool, threshold: float,
    ) -> dict[str, Any]:  # fmt: skip
        fields: dict[str, Any] = {
            "prompt": prompt, "negative_prompt": negative or "", "steps": int(steps), "guidance": guidance,
            "conditioning_scale": scale, "control_start": start, "control_end": end,
            "scheduler": scheduler,
            "width": int(width) or None, "height": int(height) or None,
            "seed": None if seed is None or seed < 0 else int(seed),
        }  # fmt: skip
        if adaptive:
            fields.update(adaptive_steps=True, adaptive_threshold=threshold)
        return fields

    def generate(
        self,
        checkpoint: str,
        uploaded: Image.Image | None,
        drawn: Any,
        canny: bool,
        low: float,
        high: float,
        *settings: Any,
    ) -> tuple:
        condition = _condition(uploaded, drawn)
        fields = {**self._fields(*settings), "checkpoint": checkpoint}
        try:
            request = self._request(fields, condition, canny, int(low), int(high))
        except ServeError as err:
            raise gr.Error(err.message) from err
        image, entry = self._run(request, condition)
        return image, entry, self.history_items(), f"Saved {entry['image_path']} in {self.history.folder}"

    def compare(
        self,
        checkpoints: list[str],
        uploaded: Image.Image | None,
        drawn: Any,
        canny: bool,
        low: float,
        high: float,
        *settings: Any,
    ) -> tuple:
        """One condition and prompt through several checkpoints (same seed), side by side."""
        condition = _condition(uploaded, drawn)
        if not checkpoints:
            raise gr.Error("Pick at least one checkpoint to compare.")
        fields = self._fields(*settings)
        if fields["seed"] is None:  # one seed for all, or the comparison compares noise
            fields["seed"] = int.from_bytes(_png(condition)[-8:], "big") % 2**32
        try:
            requests = [self._request({**fields, "checkpoint": name}, condition, canny, int(low), int(high))
                        for name in checkpoints]  # fmt: skip
            jobs = [self.service.submit(request) for request in requests]  # all queued at once
        except QueueFull as err:
            raise gr.Error(f"Busy: {err}") from err
        except ServeError as err:
            raise gr.Error(err.message) from err
        outputs = []
        for name, job in zip(checkpoints, jobs, strict=True):
            try:
                result = job.future.result(timeout=max(1.0, job.deadline - job.enqueued) + 5)
            except ServeError as err:
                raise gr.Error(f"{name}: {err.message}") from err
            entry = self.history.save(result.image, job.condition, result.metadata)
            outputs.append(
                (result.image, f"{name} (step {entry.get('checkpoint_step')}) seed {entry['seed']}")
            )
        return outputs, self.history_items()

    # ---------------------------------------------------------------- history

    def history_items(self) -> list[tuple[str, str]]:
        entries = self.history.entries()
        return [
            (
                str(self.history.path(e, "image_path")),
                f"#{e['index']} {e.get('checkpoint')} seed {e.get('seed')}",
            )
            for e in reversed(entries)
        ]

    def select(self, event: gr.SelectData) -> tuple[dict[str, Any], int]:
        entries = self.history.entries()
        entry = entries[len(entries) - 1 - event.index]  # the gallery shows the newest first
        return entry, entry["index"]

    def rerun(self, index: float | None) -> tuple:
        if index is None or index < 0:
            raise gr.Error("Select an image of the history first.")
        entry = self.history.entries()[int(index)]
        condition = Image.open(self.history.path(entry, "condition_path")).convert("RGB")
        fields = {key: entry[key] for key in _SETTING_FIELDS if key in entry}
        if "adaptive_threshold" in fields:
            fields["adaptive_steps"] = True
        fields.update(seed=entry["seed"], checkpoint=entry["checkpoint"], image=_png(condition))
        try:
            request = parse_fields(fields)
        except ServeError as err:
            raise gr.Error(err.message) from err
        image, new = self._run(request, condition)
        return image, new, self.history_items()


def build_playground(service: Service, history: History) -> gr.Blocks:
    """The Gradio app; mount it with ``gr.mount_gradio_app(app, blocks, path="/ui")``."""
    ui = Playground(service, history)
    registry = service.registry
    names, default = registry.names, registry.default
    choices = [(registry.label(name), name) for name in names]
    recipe = ui.recipe(default)
    example_image, example_prompt = ui.example(default)
    first_steps, first_guidance, first_scheduler, first_width, first_height = ui.recipe_settings(default)
    with gr.Blocks(title="skinforge playground", analytics_enabled=False) as blocks:
        gr.Markdown("## skinforge ControlNet playground")
        with gr.Tab("Generate"):
            gr.Dataframe(
                headers=["checkpoint", "step", "loss", "eval metrics"], value=ui.gallery_rows,
                label="Checkpoints", interactive=False,
            )  # fmt: skip
            with gr.Row():
                with gr.Column():
                    checkpoint = gr.Dropdown(choices, value=default, label="Checkpoint", elem_id="checkpoint")
                    with gr.Tab("Upload"):
                        uploaded = gr.Image(
                            example_image,
                            type="pil",
                            format="png",  # Gradio's default webp would blur a 2-px outline
                            label="Control image",
                            sources=["upload", "clipboard"],
                            elem_id="condition",
                        )
                    with gr.Tab("Draw"):
                        drawn = gr.Sketchpad(type="pil", label="Draw the control image", elem_id="sketch")
                    example = gr.Button("Example condition", elem_id="example")
                    with gr.Row():
                        canny = gr.Checkbox(False, label="Apply Canny to the uploaded image", elem_id="canny")
                        low = gr.Number(100, label="Canny low", precision=0)
                        high = gr.Number(200, label="Canny high", precision=0)
                    prompt = gr.Textbox(example_prompt, label="Prompt", elem_id="prompt")
                    negative = gr.Textbox("", label="Negative prompt")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed (-1: random)", precision=0, elem_id="seed")
                        steps = gr.Slider(
                            1, service.config.limits.max_steps, first_steps, step=1, label="Steps",
                            elem_id="steps",
                        )  # fmt: skip
                    with gr.Accordion("Settings", open=False, elem_id="settings"):
                        guidance = gr.Slider(
                            0, 20, first_guidance, step=0.5, label="Guidance", elem_id="guidance"
                        )
                        scale = gr.Slider(0, 2, 1.0, step=0.05, label="Conditioning scale")
                        start = gr.Slider(0, 1, 0.0, step=0.05, label="Control start")
                        end = gr.Slider(0, 1, 1.0, step=0.05, label="Control end")
                        scheduler = gr.Dropdown(
                            [BASE_SCHEDULER, *SCHEDULER_NAMES], value=first_scheduler, label="Scheduler",
                            elem_id="scheduler",
                        )  # fmt: skip
                        trained = f"trained at {recipe.resolution}²" if recipe.resolution else None
                        width = gr.Number(first_width, label="Width (0: the condition's)", info=trained,
                                          precision=0, elem_id="width")  # fmt: skip
                        height = gr.Number(first_height, label="Height (0: the condition's)", info=trained,
                                           precision=0, elem_id="height")  # fmt: skip
                        adaptive = gr.Checkbox(False, label="Adaptive steps (stop when the latents settle)")
                        threshold = gr.Number(0.02, label="Adaptive threshold")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    output = gr.Image(
                        type="pil", format="png", label="Output", elem_id="output", interactive=False,
                        height=DISPLAY_SIDE + 48, buttons=["download"],
                    )  # fmt: skip
                    saved = gr.Markdown(elem_id="saved")
                    metadata = gr.JSON(label="Metadata (saved with the image)", elem_id="metadata")
            with gr.Group():
                gr.Markdown("### Compare checkpoints (same condition, prompt, seed and settings)")
                chosen = gr.CheckboxGroup(
                    choices, value=names, label="Checkpoints", elem_id="compare-checkpoints"
                )
                compare = gr.Button("Compare", elem_id="compare")
                compared = gr.Gallery(label="Side by side", columns=max(2, len(names)), elem_id="compared")
        with gr.Tab("History"):
            refresh = gr.Button("Refresh")
            history_gallery = gr.Gallery(
                value=ui.history_items, label=f"Saved in {history.folder}", columns=6, elem_id="history"
            )
            picked = gr.Number(-1, label="Selected index", precision=0, interactive=False, elem_id="picked")
            picked_metadata = gr.JSON(label="Metadata", elem_id="picked-metadata")
            rerun = gr.Button("Re-run selected", elem_id="rerun")
            rerun_output = gr.Image(type="pil", format="png", label="Re-run", interactive=False)
        settings = [
            prompt, negative, seed, steps, guidance, scale, start, end, scheduler, width, height,
            adaptive, threshold,
        ]  # fmt: skip
        example.click(ui.example, checkpoint, [uploaded, prompt])
        checkpoint.change(ui.recipe_settings, checkpoint, [steps, guidance, scheduler, width, height])
        run.click(ui.generate, [checkpoint, uploaded, drawn, canny, low, high, *settings],
                  [output, metadata, history_gallery, saved])  # fmt: skip
        compare.click(
            ui.compare, [chosen, uploaded, drawn, canny, low, high, *settings], [compared, history_gallery]
        )
        refresh.click(ui.history_items, None, history_gallery)
        history_gallery.select(ui.select, None, [picked_metadata, picked])
        rerun.click(ui.rerun, picked, [rerun_output, picked_metadata, history_gallery])
    return blocks
