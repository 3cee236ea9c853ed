"""ControlNet++'s edge-adherence protocol (their evaluated ``canny`` task), step by step, so our numbers
can sit next to their table.

Followed: liming-ai/ControlNet_Plus_Plus at 9ffe2645 (``eval/eval.py``, ``eval/eval_edge.py``,
``requirements.txt``):

* both edge maps are kornia ``filters.canny`` with low 0.1 and high 0.2 on the RGB image scaled to
  [0, 1], as kornia 0.7.0 (their pinned version) computes it, whatever kornia is installed
  (inference.kornia070_canny; later kornia keeps other pixels on flat-colour images): on the source
  image, resized bicubically to the generated size first (eval.py L171 with ``--condition_column=image``,
  L339/L345; L176-178),
  and on each generated image (eval.py L226-228). Their ``canny_cv2`` task (cv2 100/200) is not what
  eval_edge.py scores;
* each map is written as ``to_pil_image(edges, 'L').convert('RGB')`` to a PNG (eval.py L179-180,
  L231-232, L260-261) and read back with ``.convert('L')`` (eval_edge.py L21-25);
* MS-SSIM: torchmetrics ``MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)`` of the maps / 255
  (eval_edge.py L28, L79), the mean over a prompt's seeds (one batch), then over prompts (L98-104);
* F1: the maps' 255s become 1 (eval_edge.py L31-32), then one torchmetrics ``BinaryF1Score`` over the
  flattened pixels of all seeds of a prompt pooled (L34, L81), then the mean over prompts (L98-104).
  Two empty maps score 0 (torchmetrics' ``zero_division``). The paper prints F1 × 100; so do we.

Their code cannot score MS-SSIM of images under 176 px a side (torchmetrics' 5 scales raise); we leave
it empty there (logged once per size), and a checkpoint's mean is empty when any of its images lacks it.

Per image we keep the F1's confusion counts (torchmetrics' own state), so the per-prompt pooling is a
``merge_state`` at aggregation and scores of unchanged images can be reused on a rerun.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchmetrics.classification import BinaryF1Score
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from inference.kornia070_canny import canny

__all__ = [
    "HIGH_THRESHOLD",
    "LOW_THRESHOLD",
    "ControlNetPPImage",
    "edge_map",
    "pooled_f1",
    "score_image",
    "summarize",
]

logger = logging.getLogger(__name__)

LOW_THRESHOLD = 0.1
HIGH_THRESHOLD = 0.2
"""Canny thresholds of ControlNet++'s ``canny`` task (eval.py L176-177)."""

_warned_sizes: set[tuple[int, int]] = set()
"""Image sizes whose missing MS-SSIM was logged: once per size, not once per image."""


@dataclass(frozen=True)
class ControlNetPPImage:
    """One generated image under the protocol."""

    stats: dict[str, int]
    """BinaryF1Score's state (tp, fp, tn, fn) for this image: pooled per prompt at aggregation."""
    f1: float
    """F1 × 100 of this image alone (a caption; the reported number pools a prompt's seeds)."""
    ms_ssim: float | None
    """None when the image is too small for 5-scale MS-SSIM (torchmetrics needs >= 176 px a side)."""


def _png_round_trip(edges: torch.Tensor) -> torch.Tensor:
    """An ``(H, W)`` 0/1 float map as ControlNet++ stores and reloads it: 0/255 uint8 'L' values."""
    # torchvision's to_pil_image(x, 'L') is x.mul(255).byte() as an 'L' image; they then save it as RGB.
    stored = Image.fromarray(edges.mul(255).byte().numpy(), "L").convert("RGB")
    buffer = io.BytesIO()
    stored.save(buffer, "PNG")
    buffer.seek(0)
    with Image.open(buffer) as png:
        return torch.from_numpy(np.array(png.convert("L")))


def edge_map(image: Image.Image) -> torch.Tensor:
    """kornia 0.7.0's Canny (0.1/0.2) of an RGB image after the PNG round trip: ``(H, W)`` uint8, 0 or 255."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).unsqueeze(0) / 255.0
    with torch.no_grad():
        _, edges = canny(pixels, LOW_THRESHOLD, HIGH_THRESHOLD)
    return _png_round_trip(edges[0, 0])


def _as_binary(grey: torch.Tensor) -> torch.Tensor:
    """eval_edge.py L31-32: 255 becomes 1, everything else is kept as it is."""
    binary = grey.clone()
    binary[binary == 255] = 1
    return binary


def _ms_ssim(pred: torch.Tensor, label: torch.Tensor) -> float | None:
    metric = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)
    try:
        value = metric((pred / 255.0).clip(0, 1)[None, None], (label / 255.0).clip(0, 1)[None, None])
    except ValueError as err:  # torchmetrics refuses images too small for its 5 scales
        size = (int(pred.shape[1]), int(pred.shape[0]))
        if size not in _warned_sizes:
            _warned_sizes.add(size)
            logger.warning("ControlNet++ MS-SSIM left empty for %dx%d images: %s", *size, err)
        return None
    return float(value)


def score_image(image: Image.Image, source: Image.Image) -> ControlNetPPImage:
    """A generated ``image`` against the Canny edges of the ``source`` its condition came from."""
    pred = edge_map(image)
    label = edge_map(source.convert("RGB").resize(image.size, Image.Resampling.BICUBIC))
    f1 = BinaryF1Score()
    f1.update(_as_binary(pred).flatten(), _as_binary(label).flatten())
    stats = {name: int(value.sum()) for name, value in f1.metric_state.items()}
    return ControlNetPPImage(stats, 100.0 * float(f1.compute()), _ms_ssim(pred, label))


def pooled_f1(stats: Iterable[Mapping[str, int]]) -> float:
    """F1 × 100 of the pixels of several images pooled (a prompt's seeds), from their BinaryF1Score state."""
    metric = BinaryF1Score()
    for state in stats:
        metric.merge_state({name: torch.tensor(value) for name, value in state.items()})
    with warnings.catch_warnings():  # merged state, not update(): torchmetrics would warn it saw no update
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        return 100.0 * float(metric.compute())


def summarize(rows: Sequence[Mapping[str, object]]) -> dict[str, float | None]:
    """A checkpoint's ControlNet++ numbers from its per-image rows: per record (prompt), F1 of the pixels
    of all its seeds pooled and the mean MS-SSIM of its seeds; then the mean over records.

    MS-SSIM is None when any image lacks it (too small); both are None when no row has the protocol.
    """
    records: dict[object, list[Mapping[str, object]]] = {}
    for row in rows:
        if row.get("controlnetpp_stats") is not None:
            records.setdefault(row["record"], []).append(row)
    if not records:
        return {"controlnetpp_edge_f1": None, "controlnetpp_edge_ms_ssim": None}
    f1 = [pooled_f1(row["controlnetpp_stats"] for row in group) for group in records.values()]  # type: ignore[misc]
    ssim_values = [[row.get("controlnetpp_edge_ms_ssim") for row in group] for group in records.values()]
    complete = all(value is not None for group in ssim_values for value in group)
    ssim = [sum(group) / len(group) for group in ssim_values] if complete else []  # type: ignore[arg-type]
    return {
        "controlnetpp_edge_f1": sum(f1) / len(f1),
        "controlnetpp_edge_ms_ssim": sum(ssim) / len(ssim) if ssim else None,
    }
