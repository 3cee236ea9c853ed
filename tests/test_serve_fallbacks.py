"""Graceful degradation of the service, each path reached by a failure injected into the real pipeline.

``serve.faults`` raises the same exceptions a GPU would (``torch.OutOfMemoryError`` from the UNet or
the VAE decoder, NaNs from a float16 VAE, a failing ``torch.compile`` backend) from hooks on the loaded
modules; the service's own fallback code handles them. xformers is really missing on this machine.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import test_serve
from test_serve import FAST, config, generate, metric, pixels

from inference.settings import SpeedSettings
from serve.app import create_app
from serve.testing import BackgroundServer

serve_run = test_serve.serve_run
condition_png = test_serve.condition_png


@pytest.fixture(scope="module")
def fp16_safe_base(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL with a VAE that says it is float16-safe (as sdxl-vae-fp16-fix does): loaded in
    float16 as asked, where the base's own VAE config would make inference upcast it."""
    base = tmp_path_factory.mktemp("fp16vae") / "sdxl"
    shutil.copytree(tiny_sdxl_dir, base)
    vae_config = base / "vae" / "config.json"
    vae_config.write_text(json.dumps({**json.loads(vae_config.read_text()), "force_upcast": False}))
    return base


def _metadata(answer: httpx.Response) -> dict:
    assert answer.status_code == 200, answer.text
    return json.loads(answer.headers["x-skinforge-metadata"])


def _serve(run: Path, **overrides: object) -> BackgroundServer:
    return BackgroundServer(create_app(config(run, **overrides)))


def test_oom_while_denoising_retries_with_smaller_batches(serve_run: Path, condition_png: bytes) -> None:
    """A batch of 3 images (6 UNet rows with guidance) runs out of memory above 2 rows: halves, then
    single images, all answered; the pictures are the ones a lone request gives."""
    with _serve(serve_run, max_batch=3, max_wait_ms=400, faults=("oom_denoise_above=2",)) as running:
        running.wait_ready()
        alone = pixels(generate(running.url, condition_png, **FAST).content)
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(lambda seed: generate(running.url, condition_png, steps=3, seed=seed), (1, 2, 3))
            )
        for answer in answers:
            metadata = _metadata(answer)
            assert metadata["batch_size"] == 3 and "oom_smaller_batch" in metadata["fallbacks"]
        assert np.abs(pixels(answers[0].content) - alone).max() <= 2
        assert (
            metric(running.url, "skinforge_serve_fallbacks_total", kind="oom_smaller_batch") == 2
        )  # 3 -> 1+2 -> 1+1


def test_oom_with_nothing_left_is_a_clear_503(serve_run: Path, condition_png: bytes) -> None:
    with _serve(serve_run, faults=("oom_denoise",)) as running:
        running.wait_ready()
        answer = generate(running.url, condition_png, **FAST)
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.json()["kind"] == "out_of_memory" and "out of device memory" in answer.json()["error"]
        assert metric(running.url, "skinforge_serve_errors_total", kind="out_of_memory") == 1
        assert httpx.get(running.url + "/healthz").status_code == 200  # the worker lives on


def test_an_unexpected_error_is_a_500_and_the_worker_goes_on(serve_run: Path, condition_png: bytes) -> None:
    with _serve(serve_run, faults=("error_once",)) as running:
        running.wait_ready()
        failed = generate(running.url, condition_png, **FAST)
        assert failed.status_code == 500 and failed.json()["kind"] == "internal"
        assert "RuntimeError" in failed.json()["error"]
        assert generate(running.url, condition_png, **FAST).status_code == 200
        assert metric(running.url, "skinforge_serve_errors_total", kind="internal") == 1


def test_oom_while_decoding_uses_vae_tiling(serve_run: Path, condition_png: bytes) -> None:
    with _serve(serve_run, faults=("oom_decode_untiled",)) as running:
        running.wait_ready()
        first = _metadata(generate(running.url, condition_png, **FAST))
        assert first["fallbacks"] == ["oom_vae_tiling"]
        assert _metadata(generate(running.url, condition_png, **FAST))["fallbacks"] == ["oom_vae_tiling"]
        assert metric(running.url, "skinforge_serve_fallbacks_total", kind="oom_vae_tiling") == 2
    with _serve(serve_run, faults=("oom_decode",)) as running:
        running.wait_ready()
        answer = generate(running.url, condition_png, **FAST)
        assert answer.status_code == 503 and "even in tiles" in answer.json()["error"]


def test_fp16_vae_nan_decodes_in_fp32(serve_run: Path, condition_png: bytes, fp16_safe_base: Path) -> None:
    speed = SpeedSettings(vae_dtype="float16")
    with _serve(serve_run, base=str(fp16_safe_base), speed=speed, faults=("nan_vae_fp16",)) as running:
        running.wait_ready()
        answer = generate(running.url, condition_png, **FAST)
        metadata = _metadata(answer)
        assert metadata["fallbacks"] == ["vae_fp32"] and metadata["dtypes"]["vae"] == "float32"
        image = pixels(answer.content)
        assert image.std() > 5  # a picture, not the black square NaNs become
        later = _metadata(generate(running.url, condition_png, **FAST))
        assert later["fallbacks"] == [] and later["degraded"] == ["vae_fp32"]
        assert metric(running.url, "skinforge_serve_fallbacks_total", kind="vae_fp32") == 1
        assert httpx.get(running.url + "/checkpoints").json()["degraded"] == ["vae_fp32"]


def test_compile_failure_runs_eager(serve_run: Path, condition_png: bytes) -> None:
    with _serve(serve_run, speed=SpeedSettings(compile=True), faults=("compile_error",)) as running:
        running.wait_ready()
        assert all(c["compiled"] for c in httpx.get(running.url + "/checkpoints").json()["checkpoints"])
        metadata = _metadata(generate(running.url, condition_png, **FAST))
        assert metadata["fallbacks"] == ["compile_eager"]
        other = _metadata(generate(running.url, condition_png, **FAST, checkpoint="checkpoint-4"))
        assert other["fallbacks"] == [] and other["degraded"] == [
            "compile_eager"
        ]  # every checkpoint went eager
        gallery = httpx.get(running.url + "/checkpoints").json()
        assert not any(c["compiled"] for c in gallery["checkpoints"])
        assert metric(running.url, "skinforge_serve_fallbacks_total", kind="compile_eager") == 1


def test_missing_xformers_falls_back_to_sdpa(serve_run: Path, condition_png: bytes) -> None:
    if importlib.util.find_spec("xformers") is not None:
        pytest.skip("xformers is installed here; its absence cannot be observed")
    with _serve(serve_run, speed=SpeedSettings(attention="xformers")) as running:
        running.wait_ready()
        metadata = _metadata(generate(running.url, condition_png, **FAST))
        assert metadata["degraded"] == ["attention_sdpa"]
        assert metric(running.url, "skinforge_serve_fallbacks_total", kind="attention_sdpa") == 1
