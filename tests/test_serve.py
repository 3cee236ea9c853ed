"""The HTTP service on a real tiny SDXL + ControlNet, served by a real uvicorn on 127.0.0.1.

Every test talks HTTP to ``python -m serve``'s app (in a background thread, or a subprocess for the
CLI); nothing of the pipeline is mocked. Images are 64 px with a few steps to stay fast.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve.app import create_app
from serve.config import Limits, ServeConfig
from serve.images import canny_condition, read_png_metadata
from serve.testing import BackgroundServer

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
FAST = {"steps": 3, "seed": 1}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="session")
def condition_png() -> bytes:
    """A 64x64 control image: a white frame and a cross on black, as an edge map looks."""
    image = Image.new("RGB", (SIZE, SIZE))
    array = np.zeros((SIZE, SIZE, 3), np.uint8)
    array[8:56, 8] = array[8:56, 55] = array[8, 8:56] = array[55, 8:56] = 255
    array[32, 16:48] = array[16:48, 32] = 255
    image = Image.fromarray(array)
    return png(image)


@pytest.fixture(scope="session")
def source_png() -> bytes:
    """A photo-like source for the canny preprocess: colour blocks."""
    array = np.zeros((SIZE, SIZE, 3), np.uint8)
    array[:, :32] = (200, 40, 40)
    array[16:48, 16:48] = (40, 40, 200)
    return png(Image.fromarray(array))


@pytest.fixture(scope="session")
def serve_run(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A run folder as training leaves it: checkpoint-2 and checkpoint-4 (other weights), metrics.jsonl;
    plus an inference report (metrics.json) next to it."""
    from train.tiny_sdxl import build_tiny_controlnet

    run = tmp_path_factory.mktemp("serve") / "run"
    other = build_tiny_controlnet(tiny_sdxl_dir, run.parent / "cn_seed1", seed=1)
    for step, controlnet in ((2, tiny_controlnet_dir), (4, other)):
        folder = run / f"checkpoint-{step}"
        shutil.copytree(controlnet, folder / "controlnet")
        (folder / "skinforge.yaml").write_text(f"model:\n  base: {tiny_sdxl_dir}\n")
    (run / "metrics.jsonl").write_text(  # the trainer's keys
        "".join(
            json.dumps({"step": s, "loss/total": 1.0 / s, "loss/diffusion": 0.9 / s}) + "\n"
            for s in (1, 2, 3, 4)
        )
    )
    report = run.parent / "report"
    report.mkdir()
    summary = [{"checkpoint": "checkpoint-2", "step": 2, "edge_f1": 0.25, "fid": None}]
    (report / "metrics.json").write_text(json.dumps({"summary": summary}))
    return run


@pytest.fixture(scope="session")
def best_run(tiny_sdxl_dir: Path, fill_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training run with ``validation.select_best``: checkpoint-0 (the untrained copy),
    checkpoint-2, the final ControlNet and best/; its recipe: 64², guidance 1.0, 2 steps, fill circles."""
    from training_helpers import run_training

    run = tmp_path_factory.mktemp("best_run") / "run"
    run_training([
        f"model.base={tiny_sdxl_dir}", f"data.train_jsonl={fill_jsonl}", "data.resolution=64",
        f"train.output_dir={run}", "train.batch_size=2", "train.lr_warmup_steps=0", "train.num_threads=2",
        "train.max_steps=2", "log.progress_bar=false", "log.tensorboard=false", "log.every_n_steps=1",
        "checkpoint.every_n_steps=2", "checkpoint.save_at_start=true", "validation.every_n_steps=1",
        "validation.num_inference_steps=2", "validation.guidance_scale=1.0", f"validation.jsonl={fill_jsonl}",
        "validation.max_records=2", "validation.denoising_advantage=false",
        "validation.select_best=edge_f1_tolerant",
    ])  # fmt: skip
    assert (run / "best" / "selection.json").is_file() and (run / "checkpoint-0").is_dir()
    return run


def config(run: Path, **overrides: object) -> ServeConfig:
    checkpoints = (str(run / "checkpoint-2"), str(run / "checkpoint-4"))
    return ServeConfig(checkpoints=checkpoints, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(serve_run: Path) -> BackgroundServer:
    """One service for the tests that do not need special settings (batches of up to 4)."""
    with BackgroundServer(create_app(config(serve_run, report=serve_run.parent / "report"))) as running:
        running.wait_ready()
        yield running


def generate(url: str, condition: bytes, json_answer: bool = False, **fields: object) -> httpx.Response:
    body = {"prompt": "a keyboard skin", "image": b64(condition), **fields}
    headers = {"accept": "application/json"} if json_answer else {}
    return httpx.post(url + "/generate", json=body, headers=headers, timeout=120)


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


# --------------------------------------------------------------------------- answers


def test_generate_png_with_metadata_headers(server: BackgroundServer, condition_png: bytes) -> None:
    answer = generate(server.url, condition_png, **FAST, guidance=4.0)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size == (SIZE, SIZE)
    metadata = json.loads(answer.headers["x-skinforge-metadata"])
    assert metadata["seed"] == 1 and answer.headers["x-seed"] == "1"
    assert metadata["checkpoint"] == "checkpoint-2" and metadata["checkpoint_step"] == 2
    assert (metadata["steps"], metadata["steps_run"], metadata["guidance"]) == (3, 3, 4.0)
    assert metadata["fallbacks"] == [] and metadata["scheduler"] == "base"
    assert read_png_metadata(answer.content) == metadata  # the file itself says how it was made


def test_json_answer_multipart_and_reproducibility(server: BackgroundServer, condition_png: bytes) -> None:
    as_png = generate(server.url, condition_png, **FAST)
    as_json = generate(server.url, condition_png, json_answer=True, **FAST)
    assert as_json.headers["content-type"] == "application/json"
    body = as_json.json()
    image = base64.b64decode(body["image"])
    assert body["metadata"]["seed"] == 1
    form = {
        "prompt": "a keyboard skin",
        "steps": "3",
        "seed": "1",
        "width": "",
    }  # "" = absent, as HTML forms send
    multipart = httpx.post(
        server.url + "/generate",
        data=form,
        files={"image": ("c.png", condition_png, "image/png")},
        timeout=120,
    )
    assert multipart.status_code == 200, multipart.text
    assert np.array_equal(pixels(as_png.content), pixels(image))  # same request, same picture
    assert np.array_equal(pixels(as_png.content), pixels(multipart.content))


def test_random_seed_is_reported(server: BackgroundServer, condition_png: bytes) -> None:
    first = generate(server.url, condition_png, steps=2)
    seed = int(first.headers["x-seed"])
    again = generate(server.url, condition_png, steps=2, seed=seed)
    assert np.array_equal(pixels(first.content), pixels(again.content))


def test_source_image_with_canny(server: BackgroundServer, source_png: bytes) -> None:
    fields = {
        "prompt": "a keyboard skin",
        "preprocess": "canny",
        "canny_low": "50",
        "canny_high": "150",
        **FAST,
    }
    answer = httpx.post(
        server.url + "/generate",
        data={k: str(v) for k, v in fields.items()},
        files={"source_image": ("s.png", source_png, "image/png")},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    metadata = json.loads(answer.headers["x-skinforge-metadata"])
    assert (metadata["preprocess"], metadata["canny_low"], metadata["canny_high"]) == ("canny", 50, 150)
    edges = canny_condition(Image.open(io.BytesIO(source_png)), 50, 150)  # the same condition, made here
    direct = generate(server.url, png(edges), **FAST)
    assert np.array_equal(pixels(answer.content), pixels(direct.content))


def test_other_checkpoint_and_scheduler(server: BackgroundServer, condition_png: bytes) -> None:
    first = generate(server.url, condition_png, **FAST)
    other = generate(server.url, condition_png, **FAST, checkpoint="checkpoint-4")
    assert other.headers["x-checkpoint"] == "checkpoint-4"
    assert not np.array_equal(pixels(first.content), pixels(other.content))
    unipc = generate(server.url, condition_png, **FAST, scheduler="unipc")
    metadata = json.loads(unipc.headers["x-skinforge-metadata"])
    assert (metadata["scheduler"], metadata["scheduler_class"]) == ("unipc", "UniPCMultistepScheduler")
    again = generate(server.url, condition_png, **FAST)  # the base's scheduler is untouched by the unipc call
    assert json.loads(again.headers["x-skinforge-metadata"])["scheduler_class"] == "EulerDiscreteScheduler"
    assert np.array_equal(pixels(first.content), pixels(again.content))


def test_concurrent_schedulers_do_not_share_state(server: BackgroundServer, condition_png: bytes) -> None:
    """Each call has its own scheduler: concurrent requests with different samplers (interleaved in the
    queue, same-sampler ones batched) give the pictures each gives alone (up to batched rounding)."""
    names = ["unipc", "euler", "dpm++2m", "ddim"]
    alone = {
        name: pixels(generate(server.url, condition_png, steps=4, seed=2, scheduler=name).content)
        for name in names
    }
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda name: (name, generate(server.url, condition_png, steps=4, seed=2, scheduler=name)),
                names * 2,
            )
        )
    for name, answer in answers:
        assert answer.status_code == 200, answer.text
        assert np.abs(pixels(answer.content) - alone[name]).max() <= 2, name


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"image": b64(b"not an image")}, 400, "image"),
        ({"image": "%%% not base64 %%%"}, 400, "image"),
        ({"steps": 101}, 422, "steps"),
        ({"steps": 0}, 422, "steps"),
        ({"width": 60}, 422, "width"),
        ({"height": 4096}, 422, "height"),
        ({"checkpoint": "checkpoint-9"}, 422, "checkpoint"),
        ({"scheduler": "lms"}, 422, "scheduler"),
        ({"prompt": "key " * 100}, 422, "prompt"),
        ({"prompt": ""}, 422, "prompt"),
        ({"guidance": -1}, 422, "guidance"),
        ({"control_start": 0.8, "control_end": 0.2}, 422, "control_start"),
        ({"preprocess": "canny"}, 422, "preprocess"),
        ({"colour": "red"}, 422, "colour"),
        ({"timeout": 10_000}, 422, "timeout"),
    ],
)
def test_bad_input_names_the_field(
    server: BackgroundServer, condition_png: bytes, fields: dict, status: int, field: str
) -> None:
    answer = generate(server.url, condition_png, **{**FAST, **fields})
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field, answer.json()
    assert field in answer.json()["error"]


def test_bad_bodies(server: BackgroundServer, condition_png: bytes) -> None:
    answer = httpx.post(
        server.url + "/generate", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.json()["field"]) == (400, "body")
    both = generate(server.url, condition_png, source_image=b64(condition_png), preprocess="canny")
    assert both.status_code == 422 and both.json()["field"] == "image"
    missing = httpx.post(server.url + "/generate", json={"image": b64(condition_png)})
    assert (missing.status_code, missing.json()["field"]) == (422, "prompt")
    assert generate(server.url, condition_png, **FAST).status_code == 200  # nothing above hurt the worker


def test_image_limits(serve_run: Path, condition_png: bytes) -> None:
    limits = Limits(max_image_bytes=len(condition_png) + 10, max_image_pixels=SIZE * SIZE)
    with BackgroundServer(create_app(config(serve_run, limits=limits))) as running:
        running.wait_ready()
        big = png(Image.effect_noise((SIZE, SIZE), 50).convert("RGB"))  # noise: larger file, same pixels
        assert len(big) > limits.max_image_bytes
        too_many_bytes = generate(running.url, big, **FAST)
        assert (too_many_bytes.status_code, too_many_bytes.json()["field"]) == (413, "image")
        too_many_pixels = generate(running.url, png(Image.new("RGB", (SIZE * 2, SIZE))), **FAST)
        assert (too_many_pixels.status_code, too_many_pixels.json()["field"]) == (413, "image")

        def chunked() -> Iterator[bytes]:  # no Content-Length: the body is counted as it streams in
            yield b'{"prompt": "a keyboard skin", "image": "'
            for _ in range(64):  # past 3 images' worth (base64) plus 1 MiB of fields
                yield b"A" * 65536
            yield b'"}'

        streamed = httpx.post(running.url + "/generate", content=chunked(), timeout=60)
        assert (streamed.status_code, streamed.json()["field"]) == (413, "body")
        assert generate(running.url, condition_png, **FAST).status_code == 200


# --------------------------------------------------------------------------- service endpoints


def test_checkpoints_gallery(server: BackgroundServer) -> None:
    body = httpx.get(server.url + "/checkpoints").json()
    assert body["default"] == "checkpoint-2"
    first, second = body["checkpoints"]
    assert (first["name"], first["step"], first["loss"], first["metrics"]) == (
        "checkpoint-2",
        2,
        0.5,
        {"edge_f1": 0.25},
    )  # fmt: skip  (loss: the trainer's loss/total at step 2)
    assert (second["name"], second["step"], second["loss"]) == ("checkpoint-4", 4, 0.25)
    assert "metrics" not in second
    # no recipe in their skinforge.yaml: inference's own defaults, the condition's size
    assert first["defaults"] == {"resolution": None, "guidance": 5.0, "steps": 20, "scheduler": "base"}
    assert first["label"] == "checkpoint-2" and "selected_by" not in first


def test_healthz_ready_only_after_load(serve_run: Path, condition_png: bytes) -> None:
    with BackgroundServer(create_app(config(serve_run, faults=("slow_load=1500",)))) as running:
        loading = httpx.get(running.url + "/healthz")
        assert (loading.status_code, loading.json()["status"]) == (503, "loading")
        early = generate(running.url, condition_png, **FAST)
        assert early.status_code == 503 and early.headers["retry-after"]
        assert metric(running.url, "skinforge_serve_ready") == 0
        running.wait_ready()
        assert httpx.get(running.url + "/healthz").json()["status"] == "ready"
        assert metric(running.url, "skinforge_serve_ready") == 1


def test_metrics_names(server: BackgroundServer, condition_png: bytes) -> None:
    generate(server.url, condition_png, **FAST)
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "skinforge_serve_request_seconds_bucket",
        "skinforge_serve_queue_wait_seconds_bucket",
        "skinforge_serve_queue_depth",
        "skinforge_serve_batch_size_bucket",
        "skinforge_serve_images_generated_total",
        "skinforge_serve_errors_total",
        'skinforge_serve_device_memory_bytes{kind="host_rss"}',
        "skinforge_serve_batch_seconds_bucket",
        "skinforge_serve_denoising_steps_bucket",
    ):
        assert name in text, name
    assert metric(server.url, "skinforge_serve_images_generated_total", checkpoint="checkpoint-2") >= 1


# --------------------------------------------------------------------------- queue, batching, deadlines


def test_micro_batching_same_shape(serve_run: Path, condition_png: bytes) -> None:
    """Same-shape requests share a pipeline call; other shapes wait for their own; pictures do not change."""
    with BackgroundServer(create_app(config(serve_run, max_batch=3, max_wait_ms=1000))) as running:
        running.wait_ready()
        alone = [pixels(generate(running.url, condition_png, steps=3, seed=s).content) for s in range(3)]
        wide = png(Image.new("RGB", (SIZE * 2, SIZE)))
        jobs = [(condition_png, s) for s in range(3)] + [(wide, 0)]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda job: generate(running.url, job[0], steps=3, seed=job[1]), jobs))
        sizes = [json.loads(a.headers["x-skinforge-metadata"])["batch_size"] for a in answers]
        assert sizes == [3, 3, 3, 1]
        for seed in range(3):
            assert (
                np.abs(pixels(answers[seed].content) - alone[seed]).max() <= 2
            )  # batched conv rounding only
        assert metric(running.url, "skinforge_serve_batch_size_count") == 3 + 2


def test_queue_full_answers_429(serve_run: Path, condition_png: bytes) -> None:
    """With one slot, a burst gets some 429s with Retry-After; every request gets an answer."""
    with BackgroundServer(create_app(config(serve_run, max_queue=1, max_batch=1))) as running:
        running.wait_ready()
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(lambda seed: generate(running.url, condition_png, steps=12, seed=seed), range(6))
            )
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 429}, codes
        assert codes.count(200) >= 2  # the running one and the queued one at least
        rejected = next(a for a in answers if a.status_code == 429)
        assert int(rejected.headers["retry-after"]) >= 1 and rejected.json()["kind"] == "queue_full"
        assert metric(running.url, "skinforge_serve_errors_total", kind="queue_full") == codes.count(429)


def test_deadline_answers_504_and_frees_the_worker(serve_run: Path, condition_png: bytes) -> None:
    with BackgroundServer(create_app(config(serve_run))) as running:
        running.wait_ready()
        began = time.monotonic()
        slow = generate(running.url, condition_png, steps=100, seed=0, timeout=0.5)
        assert slow.status_code == 504 and slow.json()["field"] == "timeout"
        assert time.monotonic() - began < 3
        fast = generate(
            running.url, condition_png, **FAST
        )  # the worker dropped the late batch at its next step
        assert fast.status_code == 200
        assert json.loads(fast.headers["x-skinforge-metadata"])["timings"]["queue_wait_s"] < 1.0
        assert metric(running.url, "skinforge_serve_errors_total", kind="deadline") == 1


def test_a_request_that_gives_up_in_the_queue_frees_its_slot(serve_run: Path, condition_png: bytes) -> None:
    with BackgroundServer(create_app(config(serve_run, max_queue=1, max_batch=1))) as running:
        running.wait_ready()
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(generate, running.url, condition_png, steps=60, seed=0)  # holds the worker
            deadline = time.monotonic() + 10
            while metric(running.url, "skinforge_serve_queue_wait_seconds_count") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            queued = generate(running.url, condition_png, steps=2, seed=1, timeout=0.3)  # waits, gives up
            assert queued.status_code == 504
            assert metric(running.url, "skinforge_serve_queue_depth") == 0
            accepted = pool.submit(generate, running.url, condition_png, steps=2, seed=2)  # the slot is free
            assert busy.result().status_code == 200
            assert accepted.result().status_code == 200
        assert metric(running.url, "skinforge_serve_errors_total", kind="deadline") == 1
        assert metric(running.url, "skinforge_serve_errors_total", kind="queue_full") == 0


def test_client_disconnect_cancels(serve_run: Path, condition_png: bytes) -> None:
    with BackgroundServer(create_app(config(serve_run))) as running:
        running.wait_ready()
        body = {"prompt": "a keyboard skin", "image": b64(condition_png), "steps": 100, "seed": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/generate", json=body, timeout=0.5)  # gives up, closes the connection
        deadline = time.monotonic() + 10
        while metric(running.url, "skinforge_serve_errors_total", kind="client_disconnected") < 1:
            assert time.monotonic() < deadline, "the server never noticed the client left"
            time.sleep(0.05)
        fast = generate(running.url, condition_png, **FAST)
        assert fast.status_code == 200
        assert json.loads(fast.headers["x-skinforge-metadata"])["timings"]["queue_wait_s"] < 1.0
        assert metric(running.url, "skinforge_serve_images_generated_total", checkpoint="checkpoint-2") == 1


@pytest.mark.parametrize("scheduler", [None, "unipc"])  # x0 from the step's output / from model_outputs
def test_adaptive_steps_stop_early(
    server: BackgroundServer, condition_png: bytes, scheduler: str | None
) -> None:
    saved_before = metric(server.url, "skinforge_serve_steps_saved_total")
    fields = {"steps": 30, "seed": 4, "scheduler": scheduler}
    full = generate(server.url, condition_png, **fields)
    adaptive = generate(server.url, condition_png, **fields, adaptive_steps=True, adaptive_threshold=0.05)
    metadata = json.loads(adaptive.headers["x-skinforge-metadata"])
    assert 30 * 0.25 <= metadata["steps_run"] < 30, metadata
    assert metadata["adaptive_threshold"] == 0.05
    difference = np.abs(pixels(full.content) - pixels(adaptive.content)).mean()
    assert difference < 10, difference  # the same picture, not a different one
    saved = metric(server.url, "skinforge_serve_steps_saved_total") - saved_before
    assert saved == 30 - metadata["steps_run"]


# --------------------------------------------------------------------------- CLI


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


@pytest.mark.slow
def test_cli_serves_and_rejects_bad_paths(serve_run: Path, condition_png: bytes, tmp_path: Path) -> None:
    wrong = subprocess.run(
        [sys.executable, "-m", "serve", "--checkpoint", str(tmp_path / "missing")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 2 and "does not exist" in wrong.stderr
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "serve",
        "--checkpoint",
        str(serve_run / "checkpoint-4"),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            if _healthy(url):
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        answer = generate(url, condition_png, **FAST)
        assert answer.status_code == 200 and answer.headers["x-checkpoint"] == "checkpoint-4"
    finally:
        process.terminate()
        code = process.wait(30)
    output = process.stdout.read() if process.stdout else ""
    assert code in (0, -15), output  # uvicorn shuts down gracefully, then re-raises SIGTERM
    assert "Finished server process" in output


def _start_cli(arguments: list[str]) -> tuple[subprocess.Popen, str]:
    """``python -m serve`` on a free port, once /healthz answers 200."""
    port = _free_port()
    command = [sys.executable, "-m", "serve", *arguments, "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(process.stdout.read() if process.stdout else "serve did not start")
        time.sleep(0.2)
    return process, url


@pytest.mark.slow
def test_cli_serves_a_runs_best_by_default_with_its_recipe(best_run: Path) -> None:
    """The README's ``--checkpoint RUN/checkpoint-* RUN``: checkpoint-0 comes first in the list, yet the
    default is the run's best/ (brought along by the run folder), and what a request leaves out is the
    run's recipe (64², guidance 1.0, 2 steps), not SDXL's defaults."""
    selection = json.loads((best_run / "best" / "selection.json").read_text())
    checkpoints = sorted(str(path) for path in best_run.glob("checkpoint-*"))
    assert Path(checkpoints[0]).name == "checkpoint-0"
    process, url = _start_cli(["--checkpoint", *checkpoints, str(best_run)])
    try:
        listed = httpx.get(url + "/checkpoints", timeout=10).json()
        names = [entry["name"] for entry in listed["checkpoints"]]
        assert names == ["checkpoint-0", "checkpoint-2", "final", "best"] and listed["default"] == "best"
        best = listed["checkpoints"][-1]
        assert best["label"] == f"best (step {selection['step']})" and best["step"] == selection["step"]
        assert best["selected_by"] == selection
        assert best["defaults"] == {"resolution": 64, "guidance": 1.0, "steps": 2, "scheduler": "base"}
        assert isinstance(best["loss"], float), "the gallery reads the trainer's loss/total"

        big = png(Image.new("RGB", (128, 128)))  # a 128² drawing for a ControlNet trained at 64²
        answer = generate(url, big, seed=0)
        metadata = json.loads(answer.headers["x-skinforge-metadata"])
        assert answer.status_code == 200 and answer.headers["x-checkpoint"] == "best"
        assert (metadata["steps"], metadata["guidance"], metadata["width"], metadata["height"]) == (
            2,
            1.0,
            64,
            64,
        )
        given = json.loads(
            generate(
                url, big, seed=0, steps=3, guidance=2.5, width=128, height=64, checkpoint="final"
            ).headers["x-skinforge-metadata"]
        )
        assert (given["checkpoint"], given["steps"], given["guidance"], given["width"]) == (
            "final",
            3,
            2.5,
            128,
        )
    finally:
        process.terminate()
        process.wait(30)
