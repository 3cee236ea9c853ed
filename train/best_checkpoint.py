"""Keep the best validated ControlNet: `validation.select_best: <metric>`.

Diffusion trainers rotate checkpoints by count, so the step where a held-out metric peaked is often gone
by the end of a run. Here every validation's score of the chosen metric is compared with the best so far;
a better one writes the validated ControlNet, in diffusers format, to `RUN/best/` (outside checkpoint
rotation, atomically replaced) with `best/selection.json` naming the metric, step and score. The record
also travels in every checkpoint's `trainer_state.json` (`best`). On resume the folder on disk is the
truth: a `best/` written after the checkpoint resumed from is a real, scored ControlNet and stays until a
better score replaces it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from diffusers import ControlNetModel

from common.run_layout import BEST_DIR, SELECTION_FILE
from train.checkpointing import recover_replaced, save_controlnet

logger = logging.getLogger(__name__)

SELECTABLE: dict[str, tuple[str, bool]] = {
    "edge_f1_tolerant": ("validation/edge_f1_tolerant", True),
    "edge_f1": ("validation/edge_f1", True),
    "edge_ssim": ("validation/edge_ssim", True),
    "circle_iou": ("validation/circle_iou", True),
    "ocr_sentence_accuracy": ("validation/ocr_sentence_accuracy", True),
    "ocr_normalized_edit_distance": ("validation/ocr_normalized_edit_distance", True),
    "denoising_advantage": ("validation/denoising_advantage", True),
}
"""`validation.select_best` name -> (logged score key, higher is better). Every metric the validator logs
is a similarity (1 - NED for OCR), so higher is better throughout; the flag keeps a loss-like one possible."""


@dataclass(frozen=True)
class BestRecord:
    metric: str
    step: int
    score: float

    def beaten_by(self, score: float) -> bool:
        """Strictly better: a tie keeps the earlier (already saved) ControlNet."""
        higher = SELECTABLE[self.metric][1]
        return score > self.score if higher else score < self.score


def read_selection(output_dir: Path) -> BestRecord | None:
    """The record of `RUN/best/`, or None when there is no complete one."""
    path = Path(output_dir) / BEST_DIR / SELECTION_FILE
    if not path.is_file():
        return None
    try:
        return BestRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        logger.warning("Ignoring %s (%s): the next validation writes a new best", path, err)
        return None


class BestCheckpointKeeper:
    """Compares each validation's score with the best so far and writes `best/` when it is beaten."""

    def __init__(self, metric: str, output_dir: Path, record: BestRecord | None = None) -> None:
        if metric not in SELECTABLE:
            raise ValueError(f"validation.select_best={metric!r}: expected one of {sorted(SELECTABLE)}")
        self.metric = metric
        self.folder = Path(output_dir) / BEST_DIR
        recover_replaced(self.folder)
        on_disk = read_selection(output_dir)
        if on_disk is not None and on_disk.metric != metric:
            logger.warning(
                "%s holds the best by %s; this run selects by %s, so the next validation replaces it",
                self.folder,
                on_disk.metric,
                metric,
            )
            on_disk = None
        self.record = on_disk or (record if record is not None and record.metric == metric else None)

    def consider(
        self, step: int, scores: dict[str, float], controlnet: ControlNetModel, config_yaml: str
    ) -> bool:
        """Writes `controlnet` (the one `scores` measured) as the new best when it beats the record.
        Call on the main process. Returns whether it was written."""
        key = SELECTABLE[self.metric][0]
        if key not in scores:
            logger.warning("validation.select_best=%s: this validation logged no %s", self.metric, key)
            return False
        score = float(scores[key])
        if self.record is not None and not self.record.beaten_by(score):
            return False
        record = BestRecord(self.metric, step, score)
        save_controlnet(controlnet, self.folder, config_yaml, {SELECTION_FILE: asdict(record)})
        previous = f"step {self.record.step}: {self.record.score:.4f}" if self.record else "none yet"
        logger.info(
            "New best ControlNet by %s at step %d: %.4f (was %s): %s", key, step, score, previous, self.folder
        )
        self.record = record
        return True

    def to_json(self) -> dict[str, object] | None:
        return asdict(self.record) if self.record else None
