"""Load test of ``python -m serve`` against a naive server, side by side in the same run.

Both servers run the tiny random SDXL + ControlNet (``train.tiny_sdxl``) on the CPU, each in its own
process with the same torch thread count, and get the same requests (a 64x64 control image,
``--steps`` steps, CFG 5, a different prompt and seed per request):

* ``naive``: diffusers' example pattern: one pipeline (``inference.pipeline``), FastAPI + uvicorn,
  one request at a time behind a lock, no queue bound, no batching;
* ``serve``: ``python -m serve`` (bounded queue, micro-batching up to ``--max-batch``).

A closed-loop load generator keeps ``concurrency`` requests in flight (1, 4, 16) and reports
P50/P95/P99 latency, throughput (images/s) and what was rejected (429), timed out (504 or client
timeout), failed or got no answer at all (lost). ``bare pipeline`` is ``inference.pipeline`` called
in-process for one image, the floor of the latency at concurrency 1. The machine may be shared, so
both servers stay up and the cells are interleaved: at concurrency 1 request by request (bare, naive,
serve, bare, ...), above it in ``--rounds`` alternating rounds.

    python bench/bench_serve.py [--steps 20] [--size 64] [--threads 1] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI, Request
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.host_memory import keep_freed_memory  # noqa: E402

logger = logging.getLogger("bench_serve")

PROMPTS = ["a red keyboard skin", "a blue keyboard skin", "a green keyboard skin", "a black keyboard skin"]
CLIENT_TIMEOUT_S = 600.0


@dataclass
class Row:
    server: str
    concurrency: int
    requests: int
    ok: int
    rejected: int
    timed_out: int
    failed: int
    lost: int
    p50_s: float
    p95_s: float
    p99_s: float
    throughput: float
    """Images per second over the whole run of this row."""
    wall_s: float


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _condition(size: int) -> bytes:
    array = np.zeros((size, size, 3), np.uint8)
    step = size // 8
    array[::step] = 255
    array[:, ::step] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- naive server


def naive_app(checkpoint: str, base: str) -> FastAPI:
    """diffusers' example server: one shared pipeline, one request at a time, images as PNG."""
    import torch
    from fastapi.responses import Response

    from inference.pipeline import GenerationSettings, generate, load_pipeline

    pipe = load_pipeline(base, checkpoint)
    lock = threading.Lock()
    app = FastAPI()

    def run(body: dict) -> bytes:
        condition = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB")
        settings = GenerationSettings(
            num_inference_steps=body["steps"], guidance_scale=body.get("guidance", 5.0)
        )
        with lock, torch.inference_mode():
            image = generate(pipe, [body["prompt"]], [condition], [body["seed"]], settings, batch_size=1)[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    @app.post("/generate")
    async def generate_route(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        return Response(await run_in_threadpool(run, await request.json()), media_type="image/png")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ready"}

    return app


def _naive_main(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as python -m serve and python -m inference do on the CPU
    uvicorn.run(naive_app(args.checkpoint, args.base), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


# --------------------------------------------------------------------------- load generation


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            logger.debug("not listening yet")
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def _server(command: list[str], threads: int) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([*command, "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(60)
            log.seek(0)
            logger.debug("server log:\n%s", log.read()[-3000:])


@dataclass
class _Tally:
    """Answers of one (server, concurrency) cell, summed over its interleaved rounds."""

    latencies: list[float] = field(default_factory=list)
    codes: list[int | str] = field(default_factory=list)
    sent: int = 0
    wall: float = 0.0

    def row(self, name: str, concurrency: int) -> Row:
        ok = self.codes.count(200)
        rejected = self.codes.count(429)
        timed_out = self.codes.count(504) + self.codes.count("timeout")
        failed = len(self.codes) - ok - rejected - timed_out
        p50, p95, p99 = (_percentile(self.latencies, q) for q in (50, 95, 99))
        lost = self.sent - len(self.codes)
        throughput = ok / self.wall if self.wall else float("nan")
        return Row(name, concurrency, self.sent, ok, rejected, timed_out, failed, lost, p50, p95, p99,
                   throughput, self.wall)  # fmt: skip


def _post(http: httpx.Client, url: str, body: dict, index: int, tally: _Tally, guard: threading.Lock) -> None:
    request = {**body, "prompt": PROMPTS[index % len(PROMPTS)], "seed": index}
    began = time.monotonic()
    try:
        code: int | str = http.post(url + "/generate", json=request).status_code
    except httpx.TimeoutException:
        code = "timeout"
    with guard:
        tally.codes.append(code)
        if code == 200:
            tally.latencies.append(time.monotonic() - began)


def _load(url: str, concurrency: int, total: int, body: dict, tally: _Tally) -> None:
    """Closed loop: ``concurrency`` clients, each sends its next request when the last is answered."""
    counter = iter(range(total))
    guard = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            while True:
                with guard:
                    index = next(counter, None)
                if index is None:
                    return
                _post(http, url, body, index, tally, guard)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.wall += time.monotonic() - began
    tally.sent += total


def _bare_pipeline(checkpoint: str, base: str, body: dict) -> Callable[[int], None]:
    """The pipeline called in-process for one image (no HTTP, no PNG): the floor of the latency."""
    import torch

    from inference.pipeline import GenerationSettings, generate, load_pipeline

    pipe = load_pipeline(base, checkpoint)
    condition = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB")
    settings = GenerationSettings(num_inference_steps=body["steps"], guidance_scale=body["guidance"])

    def call(index: int) -> None:
        with torch.inference_mode():
            generate(pipe, [PROMPTS[index % len(PROMPTS)]], [condition], [index], settings, 1)

    return call


def _sequential(urls: dict[str, str], bare: Callable[[int], None], body: dict, n: int) -> dict[str, _Tally]:
    """Concurrency 1, interleaved: bare call, naive request, serve request, bare call, ... so every
    system sees the same moments of a shared machine."""
    tallies = {name: _Tally() for name in ("bare pipeline", *urls)}
    guard = threading.Lock()
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        for index in range(n):
            began = time.monotonic()
            bare(index)
            bare_tally = tallies["bare pipeline"]
            bare_tally.latencies.append(time.monotonic() - began)
            bare_tally.codes.append(200)
            bare_tally.sent += 1
            bare_tally.wall += bare_tally.latencies[-1]
            for name, url in urls.items():
                began = time.monotonic()
                _post(http, url, body, index, tallies[name], guard)
                tallies[name].sent += 1
                tallies[name].wall += time.monotonic() - began
    return tallies


def _models(folder: Path) -> tuple[str, str]:
    from train.tiny_sdxl import build_tiny_controlnet, build_tiny_sdxl

    base = build_tiny_sdxl(folder / "sdxl", seed=0)
    return str(build_tiny_controlnet(base, folder / "controlnet", seed=0)), str(base)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| server | concurrency | requests | ok | 429 | 504/timeout | failed | lost | P50 s | P95 s | P99 s "
        "| img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        counts = f"{r.requests} | {r.ok} | {r.rejected} | {r.timed_out} | {r.failed} | {r.lost}"
        times = f"{r.p50_s:.3f} | {r.p95_s:.3f} | {r.p99_s:.3f} | {r.throughput:.2f}"
        lines.append(f"| {r.server} | {r.concurrency} | {counts} | {times} |")
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> dict[str, object]:
    """The issue's targets, computed from the rows."""
    by = {(r.server, r.concurrency): r for r in rows}
    bare, serve1 = by[("bare pipeline", 1)], by[("serve", 1)]
    top = max(r.concurrency for r in rows)
    speedup = by[("serve", top)].throughput / by[("naive", top)].throughput
    p95_ratio = serve1.p95_s / bare.p95_s
    return {
        f"throughput_ratio_c{top}": round(speedup, 2),
        "throughput_target_met": speedup >= 1.5,
        "p95_c1_vs_bare": round(p95_ratio, 3),
        "p95_target_met": p95_ratio <= 1.1,
        "no_request_lost": all(r.lost == 0 and r.failed == 0 for r in rows),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Both servers up at once (an idle one costs nothing); cells interleaved in rounds."""
    folder = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    checkpoint, base = _models(folder)
    body = {"image": base64.b64encode(_condition(args.size)).decode(), "steps": args.steps, "guidance": 5.0}
    common = ["--checkpoint", checkpoint, "--base", base, "--threads", str(args.threads)]
    naive = [sys.executable, __file__, "--naive-server", *common]
    serve = [sys.executable, "-m", "serve", *common, "--max-batch", str(args.max_batch),
             "--max-queue", str(args.max_queue)]  # fmt: skip
    bare = _bare_pipeline(checkpoint, base, body)
    with _server(naive, args.threads) as naive_url, _server(serve, args.threads) as serve_url:
        urls = {"naive": naive_url, "serve": serve_url}
        warm = _Tally()
        for url in urls.values():
            _load(url, 2, 2, body, warm)  # first calls allocate
        bare(0)
        tallies = {(name, 1): tally for name, tally in _sequential(urls, bare, body, args.sequential).items()}
        for concurrency in [c for c in args.concurrency if c > 1]:
            total = max(args.min_requests, args.requests_per_client * concurrency)
            for _ in range(args.rounds):
                for name, url in urls.items():
                    _load(
                        url,
                        concurrency,
                        total // args.rounds,
                        body,
                        tallies.setdefault((name, concurrency), _Tally()),
                    )
    rows = [
        tally.row(name, concurrency)
        for (name, concurrency), tally in sorted(
            tallies.items(),
            key=lambda item: (["bare pipeline", "naive", "serve"].index(item[0][0]), item[0][1]),
        )
    ]
    for row in rows:
        logger.info("%s", row)
    return {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "rows": [asdict(r) for r in rows],
        "verdicts": verdicts(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--min-requests", type=int, default=12)
    parser.add_argument("--sequential", type=int, default=12, help="requests per system at concurrency 1")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per concurrency > 1")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write settings, rows and verdicts here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the rows
    if args.naive_server:
        return _naive_main(args)
    import torch

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # the bare pipeline too, so the three differ only in how they serve
    result = run(args)
    rows = [Row(**r) for r in result["rows"]]  # type: ignore[arg-type]
    print(markdown(rows) if args.markdown else json.dumps(result, indent=2))
    print(json.dumps(result["verdicts"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
