"""Adaptive steps of ``python -m serve``: steps saved and how much the picture changes.

For every record of a fill dataset (the demo's data, ``data fill``) and each threshold, the same
request (prompt, condition, seed) is made twice through the service over HTTP: with all ``--steps``
and with ``adaptive_steps``. Reported per (scheduler, threshold): mean steps run and saved, and the
adaptive image against the full-step one: SSIM of the grey images, and exact/±2 px Canny edge F1
(``inference.metrics``, the report's own edge metric); plus both images' edge F1 against the
condition, so a quality drop in the metric the project reports is visible too.

    python bench/bench_serve_adaptive.py [--checkpoint CKPT --base SDXL] [--records 12] [--markdown]

Without ``--checkpoint`` it uses the tiny random SDXL + ControlNet (pictures are noise-like; the
ratios still say how far early stopping moves them).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data.fill import build_fill  # noqa: E402
from data.records import read_records, resolve_path  # noqa: E402
from inference.metrics import EdgeSettings, canny, condition_edges, edge_f1  # noqa: E402
from serve.app import create_app  # noqa: E402
from serve.config import ServeConfig  # noqa: E402
from serve.testing import BackgroundServer  # noqa: E402

logger = logging.getLogger("bench_serve_adaptive")


def _generate(url: str, body: dict) -> tuple[np.ndarray, dict]:
    answer = httpx.post(url + "/generate", json=body, headers={"accept": "application/json"}, timeout=600)
    answer.raise_for_status()
    data = answer.json()
    image = Image.open(io.BytesIO(base64.b64decode(data["image"]))).convert("RGB")
    return np.asarray(image), data["metadata"]


def _scores(adaptive: np.ndarray, full: np.ndarray, condition: np.ndarray, edges: EdgeSettings) -> dict:
    gray = [np.asarray(Image.fromarray(a).convert("L"), dtype=np.float64) for a in (adaptive, full)]
    canny_a, canny_f = (canny(Image.fromarray(a), edges.low, edges.high) for a in (adaptive, full))
    return {
        "ssim": structural_similarity(gray[0], gray[1], data_range=255.0),
        "edge_f1": edge_f1(canny_a, canny_f),
        "edge_f1_2px": edge_f1(canny_a, canny_f, 2),
        "cond_f1_2px_full": edge_f1(canny_f, condition, 2),
        "cond_f1_2px_adaptive": edge_f1(canny_a, condition, 2),
    }


def measure(url: str, data: Path, args: argparse.Namespace) -> list[dict]:
    records = read_records(data)[: args.records]
    edges = EdgeSettings()
    rows = []
    for scheduler in args.schedulers:
        full_images = {}
        for index, record in enumerate(records):
            condition = resolve_path(data.parent, record.conditioning_image)
            body = {
                "prompt": record.text, "image": base64.b64encode(Path(condition).read_bytes()).decode(),
                "steps": args.steps, "seed": index, "scheduler": None if scheduler == "base" else scheduler,
            }  # fmt: skip
            full_images[index] = (body, _generate(url, body)[0], condition)
        for threshold in args.thresholds:
            cells = []
            for body, full, condition_path in full_images.values():
                adaptive, metadata = _generate(
                    url, {**body, "adaptive_steps": True, "adaptive_threshold": threshold}
                )
                with Image.open(condition_path) as condition:
                    target = condition_edges(condition, (full.shape[1], full.shape[0]), edges)
                cells.append({"steps_run": metadata["steps_run"], **_scores(adaptive, full, target, edges)})
            row = {"scheduler": scheduler, "threshold": threshold, "images": len(cells), "steps": args.steps}
            row.update({key: float(np.mean([c[key] for c in cells])) for key in cells[0]})
            row["steps_saved_pct"] = 100 * (1 - row["steps_run"] / args.steps)
            logger.info("%s", row)
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| scheduler | threshold | steps run (of N) | saved | SSIM vs full | edge F1 vs full (exact / ±2 px) "
        "| edge F1 vs condition ±2 px (full → adaptive) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        steps = f"{r['steps_run']:.1f} of {r['steps']} | {r['steps_saved_pct']:.0f} %"
        lines.append(
            f"| {r['scheduler']} | {r['threshold']} | {steps} "
            f"| {r['ssim']:.3f} | {r['edge_f1']:.3f} / {r['edge_f1_2px']:.3f} "
            f"| {r['cond_f1_2px_full']:.3f} → {r['cond_f1_2px_adaptive']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: a tiny random ControlNet)")
    parser.add_argument("--base", help="base SDXL (default: model.base of the checkpoint, or the tiny one)")
    parser.add_argument("--data", type=Path, help="fill-format jsonl (default: a fresh 128 px fill dataset)")
    parser.add_argument("--records", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    parser.add_argument("--schedulers", nargs="+", default=["base", "unipc"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="bench_adaptive_"))
    data = args.data or build_fill(folder / "fill", n=args.records, resolution=128, seed=1)
    checkpoint, base = args.checkpoint, args.base
    if checkpoint is None:
        from train.tiny_sdxl import build_tiny_controlnet, build_tiny_sdxl

        base = base or str(build_tiny_sdxl(folder / "sdxl", seed=0))
        checkpoint = str(build_tiny_controlnet(base, folder / "controlnet", seed=0))
    config = ServeConfig(checkpoints=(checkpoint,), base=base, max_batch=1)
    with BackgroundServer(create_app(config)) as running:
        running.wait_ready()
        rows = measure(running.url, data, args)
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
