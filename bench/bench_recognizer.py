"""Recognizer benchmark: the torch text recognizer and the OCR backend, on CPU by default.

Measures, each as the median of ``--repeats`` timed runs after one warm-up run:

* recognizer forward (no grad) and forward + backward (gradient w.r.t. the input crops) for a batch of
  8 crops of 48x320;
* the CTC text loss, crops included, forward + backward, for 8 boxes on a 1024x1024 image;
* ONNX -> torch conversion (first use) and a cached load;
* rapidocr ``read`` per 1024x1024 synthetic skin (72 labels, Chinese and English).

The machine is shared: check ``pgrep -af bench_`` first. Runs during which other processes kept the
CPUs more than 15 % busy (from /proc/stat, minus our own CPU time) are left out of the medians; the
table says how many runs were quiet.

    python bench/bench_recognizer.py [--repeats 5] [--threads 2] [--device cpu] [--markdown]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recognizer.backends import load_ocr
from recognizer.ocr import OcrConfig
from recognizer.rec_cache import load_or_convert
from recognizer.shipped_models import shipped_model_path
from recognizer.synthetic import KEY_LABELS, render_keyboard
from recognizer.text_loss import TextLoss
from recognizer.torch_rec import RecognizerConfig, load_text_recognizer

logger = logging.getLogger("bench_recognizer")

BATCH, WIDTH, SKIN = 8, 320, 1024


FOREIGN_BUSY_LIMIT = 0.15


def _busy_and_total_s() -> tuple[float, float]:
    """Machine-wide busy and total CPU seconds since boot, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


@dataclass
class Timing:
    median_s: float
    quiet: int
    runs: int


def _time(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> Timing:
    """Median wall time of ``run`` over the runs that other processes did not disturb."""
    run()  # warm-up: oneDNN kernel selection, allocator
    sync()
    quiet, everything = [], []
    for _ in range(repeats):
        busy0, total0 = _busy_and_total_s()
        own0 = time.process_time()
        start = time.perf_counter()
        run()
        sync()
        elapsed = time.perf_counter() - start
        busy1, total1 = _busy_and_total_s()
        foreign = (busy1 - busy0) - (time.process_time() - own0)
        everything.append(elapsed)
        if foreign <= FOREIGN_BUSY_LIMIT * max(total1 - total0, 1e-9):
            quiet.append(elapsed)
    return Timing(statistics.median(quiet or everything), len(quiet), repeats)


@dataclass
class Row:
    name: str
    value: float
    unit: str
    timing: Timing | None = None
    """None for one-off measurements (conversion, load)."""

    @property
    def quiet(self) -> str:
        return "" if self.timing is None else f"{self.timing.quiet}/{self.timing.runs}"


def measure(repeats: int, threads: int, device: str, ocr_repeats: int) -> list[Row]:
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows: list[Row] = []

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        load_or_convert(shipped_model_path("rec"), Path(cache))
        rows.append(Row("ONNX -> torch conversion, first use", time.perf_counter() - start, "s"))
        start = time.perf_counter()
        recognizer = load_text_recognizer(RecognizerConfig(cache_dir=Path(cache)))
        rows.append(Row("recognizer load from cache", time.perf_counter() - start, "s"))
    recognizer.to(device)

    crops = torch.rand(BATCH, 3, 48, WIDTH, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1

    def forward() -> None:
        with torch.no_grad():
            recognizer(crops)

    def forward_backward() -> None:
        x = crops.clone().requires_grad_(True)
        recognizer(x).logsumexp(-1).mean().backward()

    for name, run in (("forward", forward), ("fwd+bwd", forward_backward)):
        timing = _time(run, repeats, sync)
        rows.append(Row(f"recognizer {name}, {BATCH}x3x48x{WIDTH}", 1e3 * timing.median_s, "ms", timing))

    skin = render_keyboard(KEY_LABELS * 3, size=(SKIN, SKIN), columns=6, font_size=30)
    image = torch.from_numpy(np.array(skin.image)).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
    text_loss = TextLoss(recognizer)

    def ctc_step() -> None:
        x = image.clone().requires_grad_(True)
        text_loss.ctc_loss(x, [skin.boxes[:BATCH]], [skin.texts[:BATCH]]).loss.backward()

    timing = _time(ctc_step, repeats, sync)
    rows.append(
        Row(
            f"CTC loss fwd+bwd incl. crops, {BATCH} boxes, {SKIN}² image", 1e3 * timing.median_s, "ms", timing
        )
    )

    ocr = load_ocr(OcrConfig(num_threads=threads))
    timing = _time(lambda: ocr.read([skin.image]), ocr_repeats, lambda: None)
    rows.append(Row(f"rapidocr read, {SKIN}² skin, {len(skin.texts)} labels", timing.median_s, "s", timing))
    (lines,) = ocr.read([skin.image])
    found = sum(line.text in set(skin.texts) for line in lines)
    logger.info(
        "rapidocr returned %d lines, %d of them exact labels (%d labels drawn)",
        len(lines),
        found,
        len(skin.texts),
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ocr-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = measure(args.repeats, args.threads, args.device, args.ocr_repeats)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads"
    )
    print(f"device: {args.device} ({machine}); medians of the quiet runs")
    if args.markdown:
        print("\n| measurement | median | quiet runs |\n|---|---:|---:|")
        for row in rows:
            print(f"| {row.name} | {row.value:.3g} {row.unit} | {row.quiet} |")
        return
    width = max(len(row.name) for row in rows)
    for row in rows:
        print(f"{row.name:<{width}}  {row.value:8.3g} {row.unit:<2}  {row.quiet}")


if __name__ == "__main__":
    main()
