"""Canny builder throughput vs the bare ``cv2.Canny`` ceiling, measured in the same run.

Generates ``--n`` 1024² keyboard-skin-like images once (PNG, or JPEG q95 with ``--format jpg``):
gradient + sinusoid background with light texture noise, 4 rows of labelled keys; cached in
``--images``. Then it measures:

* **bare Canny, 1 core**: ``cv2.Canny`` over in-memory decoded arrays in this process (the same
  operation as the builder: thresholds, colour/gray), ``cv2.setNumThreads(1)``;
* **bare Canny, 2 cores**: the same in 2 processes at once, each over half the images;
* **builder**: ``data.runner.run_builder`` with ``canny_builder`` (read, decode, Canny, encode,
  atomic write, hard-link the image, journal, jsonl) on ``--workers`` processes into a fresh folder;
* **stages**: the builder's steps timed one by one in this process over a sample, to say where the
  time beyond Canny goes, plus the alternatives tried while tuning (PIL decode, PNG encoders).

The three rates are measured in ``--repeats`` interleaved rounds (the VM's speed drifts), and the
ratio is taken within each round. The development VM is shared, so rounds during which other
processes used more than 15 % of the CPU are left out (all are used if none was quiet). The bare
loops get the same worker setup as the builder (:mod:`data.worker_setup`).

    python bench/bench_canny.py [--n 1000] [--format png|jpg] [--gray] [--repeats 3] [--markdown]
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.atomic import atomic_write  # noqa: E402
from common.host_memory import keep_freed_memory  # noqa: E402
from data.canny import CannySettings, canny_builder, canny_edges  # noqa: E402
from data.image_io import encode_png, link_or_copy, read_image  # noqa: E402
from data.inputs import items_from_folder  # noqa: E402
from data.runner import run_builder  # noqa: E402
from data.worker_setup import init_worker  # noqa: E402

logger = logging.getLogger("bench")

SIZE = 1024
BARE_SAMPLE = 200  # distinct decoded images held in memory for the bare runs (~600 MB)
STAGE_SAMPLE = 60
TARGET = 0.6  # builder / bare 2-core ceiling (bench/RESULTS.md)
JPEG_QUALITY = 95
QUIET = 0.15  # a round counts if other processes used at most this share of the CPU meanwhile


def skin(index: int, size: int = SIZE) -> np.ndarray:
    """A deterministic keyboard-skin-like BGR image: smooth background, light texture, labelled keys."""
    rng = np.random.default_rng(index)
    top, bottom = rng.integers(0, 256, (2, 3))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = 12 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(1, 4) * yy))[:, :, None]
    pixels = top * (1 - ramp) + bottom * ramp + wave + rng.normal(0, 2, (size, size, 1))
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    key_w, key_h, top_y = size // 11, size // 9, size // 2
    for row in range(4):
        for col in range(10 - (row == 3) * 3):
            x, y = size // 40 + col * (key_w + 6), top_y + row * (key_h + 8)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(image, (x, y), (x + key_w, y + key_h), colour, -1, cv2.LINE_AA)
            label = chr(ord("A") + (row * 10 + col) % 26)
            cv2.putText(image, label, (x + key_w // 3, y + key_h * 2 // 3), 0, 1.4, (255, 255, 255), 3)
    return image


def _write_skin(path: Path) -> None:
    cv2.imwrite(str(path), skin(int(path.stem)), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def ensure_images(folder: Path, n: int, workers: int, suffix: str) -> list[Path]:
    """Generate the missing ``00000.png`` ... images (PNG at OpenCV's default level 3, or JPEG)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.{suffix}" for i in range(n)]
    missing = [path for path in paths if not path.exists()]
    if missing:
        logger.info("generating %d images in %s", len(missing), folder)
        with multiprocessing.get_context("forkserver").Pool(workers) as pool:
            pool.map(_write_skin, missing, chunksize=8)
    return paths


# --------------------------------------------------------------------------------------------------
# bare ceiling


_ARRAYS: list[np.ndarray] = []


def _load_arrays(paths: list[Path], gray: bool) -> None:
    """Decode the bare-run sample into memory (BGR, or gray when the builder runs in gray mode)."""
    _ARRAYS.clear()
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    _ARRAYS.extend(cv2.imread(str(p), flag) for p in paths[:BARE_SAMPLE])


def _bare_loop(args: tuple[int, int, int, int]) -> float:
    """Canny over ``count`` in-memory arrays starting at ``start``; returns seconds."""
    start, count, low, high = args
    began = time.perf_counter()
    for i in range(start, start + count):
        cv2.Canny(_ARRAYS[i % len(_ARRAYS)], low, high)
    return time.perf_counter() - began


def bare_rate(n: int, processes: int, low: int, high: int) -> float:
    """Images/s of bare Canny on ``processes`` cores (forked after the arrays are loaded: shared)."""
    per = n // processes
    jobs = [(k * per, per, low, high) for k in range(processes)]
    if processes == 1:
        return per / _bare_loop(jobs[0])
    # fork: inherit _ARRAYS; safe here because this process runs OpenCV single-threaded
    with multiprocessing.get_context("fork").Pool(processes, initializer=init_worker) as pool:
        pool.map(_bare_loop, [(0, 4, low, high)] * processes)  # warm-up
        began = time.perf_counter()
        pool.map(_bare_loop, jobs)
        return per * processes / (time.perf_counter() - began)


# --------------------------------------------------------------------------------------------------
# builder and stages


def builder_rate(paths: list[Path], settings: CannySettings, workers: int, scratch: Path) -> float:
    """Images/s of the full builder over ``paths`` into a fresh output folder."""
    items = items_from_folder(paths[0].parent)[: len(paths)]
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    summary = run_builder("canny", canny_builder, items, out, settings, workers=workers)
    elapsed = time.perf_counter() - began
    assert summary.built == len(items) and not summary.failed, summary
    return len(items) / elapsed


def _median_ms(fn: Callable[[Path], object], paths: list[Path]) -> float:
    times = []
    for path in paths:
        began = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def opencv_canny(bgr: np.ndarray, settings: CannySettings) -> np.ndarray:
    """cv2.Canny as users' scripts call it: on the RGB array (or its luma), blurred first if asked. What
    data.canny.canny_edges computes the faster way (tests/test_canny_edges.py holds them equal)."""
    pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY if settings.gray else cv2.COLOR_BGR2RGB)
    if settings.blur:
        pixels = cv2.GaussianBlur(pixels, (settings.blur, settings.blur), 0)
    return cv2.Canny(pixels, settings.low, settings.high)


def stage_times(paths: list[Path], settings: CannySettings, scratch: Path) -> dict[str, float]:
    """Median ms per image of each builder step (and tuning alternatives), 1 core."""
    cv2.setNumThreads(1)
    sample = paths[:STAGE_SAMPLE]
    decoded = {p: read_image(p).pixels for p in sample}
    edges = {p: canny_edges(decoded[p], settings) for p in sample}
    encoded = {p: encode_png(edges[p], settings.compression, bilevel=True) for p in sample}
    target = scratch / "stage"
    target.mkdir(exist_ok=True)

    def write(p: Path) -> None:
        with atomic_write(target / p.name, "wb", encoding=None) as handle:
            handle.write(encoded[p])

    def decode_pil(p: Path) -> object:
        with Image.open(io.BytesIO(p.read_bytes())) as image:
            return np.asarray(image.convert("RGB"))

    return {
        "read + decode (read_image: data.png_fast for these PNGs, else cv2.imdecode)": _median_ms(
            read_image, sample
        ),
        "canny (data.canny.canny_edges: per-channel gradients in stripes, then cv2.Canny)": _median_ms(
            lambda p: canny_edges(decoded[p], settings), sample
        ),
        f"encode edges (1-bit PNG: numpy packbits + zlib level {settings.compression})": _median_ms(
            lambda p: encode_png(edges[p], settings.compression, bilevel=True), sample
        ),
        "write edges (atomic: temp + fsync + rename)": _median_ms(write, sample),
        "place image (hard link)": _median_ms(lambda p: link_or_copy(p, target / f"img_{p.name}"), sample),
        "alt: decode with OpenCV (cv2.imdecode, the path before png_fast)": _median_ms(
            lambda p: cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED), sample
        ),
        "alt: decode with PIL instead": _median_ms(decode_pil, sample),
        "alt: cv2.Canny of the RGB (or gray) image, OpenCV's own channel loop (the path before)": _median_ms(
            lambda p: opencv_canny(decoded[p], settings), sample
        ),
        "alt: encode edges with OpenCV's 1-bit PNG writer, level 1": _median_ms(
            lambda p: cv2.imencode(
                ".png", edges[p], [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1]
            ),
            sample,
        ),
        "alt: encode edges as 8-bit PNG, level 1": _median_ms(lambda p: encode_png(edges[p], 1), sample),
        "alt: encode edges as 8-bit PNG, level 3 (OpenCV default)": _median_ms(
            lambda p: encode_png(edges[p], 3), sample
        ),
    }


# --------------------------------------------------------------------------------------------------
# report


def _process_cpu() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds)} of every process, from /proc/<pid>/stat."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., utime, stime
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _is_ours(pid: int, table: dict[int, tuple[int, float]]) -> bool:
    me = os.getpid()
    while pid > 1 and pid in table:
        if pid == me:
            return True
        pid = table[pid][0]
    return False


class CpuMeter:
    """Share of the machine's CPU that *other* processes used during a measurement (their CPU time
    from /proc, excluding this process tree), so a disturbed number is recognisable on a shared VM.
    Other processes that start and end within the measurement are not seen."""

    def __enter__(self) -> CpuMeter:
        self.start, self.began = _process_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, end = time.perf_counter() - self.began, _process_cpu()
        used = sum(
            cpu - self.start.get(pid, (0, 0.0))[1] for pid, (_, cpu) in end.items() if not _is_ours(pid, end)
        )
        self.foreign = max(0.0, used / (wall * (os.cpu_count() or 1)))


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    """(rate, share of the machine's CPU that other processes used meanwhile)."""
    with CpuMeter() as meter:
        rate = fn()
    return rate, meter.foreign


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Run every measurement once per round, ``repeats`` rounds: the VM's speed drifts by up to 2x
    over minutes, so ratios are taken within a round, never across rounds."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for round_ in range(repeats):
        for name, fn in runs.items():
            results[name].append(timed(fn))
            rate, foreign = results[name][-1]
            logger.info("round %d: %s %.1f img/s (others: %.0f%% CPU)", round_ + 1, name, rate, 100 * foreign)
    return results


def report(rows: list[tuple[str, str]], stages: dict[str, float], markdown: bool) -> str:
    if markdown:
        lines = ["| measurement | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
        lines += ["", "| builder stage, 1 core, median | ms/image |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in stages.items()]
        return "\n".join(lines)
    width = max(len(k) for k in [*dict(rows), *stages])
    lines = [f"{k:<{width}}  {v}" for k, v in rows] + ["", "builder stages (1 core, median ms/image):"]
    lines += [f"  {k:<{width}}  {v:7.2f}" for k, v in stages.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="builder processes (default 2)")
    parser.add_argument("--gray", action="store_true", help="benchmark the --gray mode")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="input image format (png)")
    parser.add_argument("--images", type=Path, help="image cache folder (default: a per-format temp folder)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate; the median is shown (3)")
    parser.add_argument("--markdown", action="store_true", help="print tables as markdown")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("data").setLevel(logging.WARNING)

    args.images = args.images or Path(tempfile.gettempdir()) / f"skinforge_bench_canny_{args.format}"
    paths = ensure_images(args.images, args.n, args.workers, args.format)
    keep_freed_memory()  # the bare loops get the same malloc settings as the builder's workers
    cv2.setNumThreads(1)
    settings = CannySettings(gray=args.gray)
    with tempfile.TemporaryDirectory(dir=args.images.parent) as tmp:
        scratch = Path(tmp)
        _load_arrays(paths, args.gray)
        runs = {
            "bare1": lambda: bare_rate(args.n, 1, settings.low, settings.high),
            "bare2": lambda: bare_rate(args.n, 2, settings.low, settings.high),
            "builder": lambda: builder_rate(paths, settings, args.workers, scratch),
        }
        results = interleaved(runs, args.repeats)
        _ARRAYS.clear()
        stages = stage_times(paths, settings, scratch)
    print(report(summary_rows(args, settings, paths, results), stages, args.markdown))
    return 0


def quiet_rounds(results: dict[str, list[tuple[float, float]]]) -> list[int]:
    """Rounds in which other processes used at most QUIET of the CPU during every measurement."""
    rounds = range(len(results["builder"]))
    return [i for i in rounds if all(runs[i][1] <= QUIET for runs in results.values())]


def summary_rows(
    args: argparse.Namespace,
    settings: CannySettings,
    paths: list[Path],
    results: dict[str, list[tuple[float, float]]],
) -> list[tuple[str, str]]:
    """Medians over the quiet rounds; the ratio is taken within each round, then the median."""
    quiet = quiet_rounds(results)
    used = quiet or list(range(len(results["builder"])))  # none quiet: report all, say so
    rounds = f"{len(quiet)} of {len(results['builder'])}" + ("" if quiet else " (so all are shown)")

    def rate(name: str) -> str:
        median = statistics.median(results[name][i][0] for i in used)
        return f"{median:.0f} img/s"

    ratios = [results["builder"][i][0] / results["bare2"][i][0] for i in used]
    sizes = [p.stat().st_size for p in paths[:STAGE_SAMPLE]]
    canny = f"bare cv2.Canny {settings.low}/{settings.high} ({'gray' if args.gray else 'colour'})"
    return [
        ("images", f"{args.n} x {SIZE}², {args.format}, median {statistics.median(sizes) / 1e6:.2f} MB"),
        (f"quiet rounds (others used <= {QUIET:.0%} CPU throughout)", rounds),
        (f"{canny}, 1 core", rate("bare1")),
        (f"{canny}, 2 cores", rate("bare2")),
        (f"canny builder, {args.workers} workers, end to end", rate("builder")),
        (
            "builder / bare 2-core ceiling",
            f"median {statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)}); "
            f"target >= {TARGET}x",
        ),
    ]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
