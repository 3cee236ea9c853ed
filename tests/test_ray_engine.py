"""The Ray engine (``--engine ray``): same output as the local engine, shards, resume, actor pools, faults.

Real Ray throughout: an in-process ``ray.init(num_cpus=2, num_gpus=1)`` for the equivalence tests (the
GPU is a resource Ray schedules by, not hardware: no test uses CUDA), a
``ray.cluster_utils.Cluster`` losing a node mid-job, and a ``ray start --head`` cluster driven through
the CLI (both slow). Skipped where Ray is not installed (it is the optional extra ``.[ray]``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from test_glyph import _label_picture  # noqa: E402

from data.build_types import BuildFailed  # noqa: E402
from data.canny import CannySettings, canny_builder  # noqa: E402
from data.caption import CaptionSettings, build_captions  # noqa: E402
from data.fill import build_fill  # noqa: E402
from data.glyph import GlyphSettings, glyph_builder  # noqa: E402
from data.inputs import load_items  # noqa: E402
from data.ray_engine import RayOptions, map_unordered  # noqa: E402
from data.runner import run_builder  # noqa: E402
from data.shards import SHARDS_DIR  # noqa: E402
from data.tiny_blip import build_tiny_blip  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RAY_INIT = {"include_dashboard": False, "log_to_driver": False}

# --------------------------------------------------------------------------------------------------
# material


def _picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """Flat rectangles on a flat ground: clear Canny edges."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        pixels[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eleven good pictures (one with a caption, one a palette PNG) and two bad files among them."""
    folder = tmp_path_factory.mktemp("pictures")
    for index in range(11):
        picture = _picture(index)
        (picture.convert("P") if index == 4 else picture).save(folder / f"p{index:02d}.png")
    (folder / "p03.txt").write_text("红色 keyboard\n", encoding="utf-8")
    (folder / "p05b.png").write_bytes(b"")
    (folder / "p08b.png").write_bytes(b"not a picture")
    return folder


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One in-process Ray runtime with 2 CPUs and 1 GPU *resource* for the module (starting one takes
    ~10 s here), so actor pools are scheduled as on a GPU node. Ray gives its raylet 30 s to register,
    which an overloaded shared 2-core VM can miss: one more try then."""
    try:
        ray.init(num_cpus=2, num_gpus=1, **RAY_INIT)
    except Exception as exc:  # Ray raises a bare Exception for this timeout
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(num_cpus=2, num_gpus=1, **RAY_INIT)
    yield
    ray.shutdown()


def _image_files(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for d in ("images", "conditioning_images") for p in (out / d).rglob("*"))


def assert_same_build(local: Path, other: Path, name: str) -> None:
    """Byte for byte on the jsonl files (train, failed, journal, params), pixel for pixel on images."""
    for file in ("train.jsonl", "failed.jsonl", f".{name}_journal.jsonl", f"{name}_params.json"):
        assert (other / file).read_bytes() == (local / file).read_bytes(), file
    assert _image_files(other) == _image_files(local)
    for rel in _image_files(local):
        with Image.open(local / rel) as a, Image.open(other / rel) as b:
            assert a.mode == b.mode and a.size == b.size, rel
            assert np.array_equal(np.asarray(a), np.asarray(b)), rel


# --------------------------------------------------------------------------------------------------
# in-process Ray: equivalence, resume, actors


@pytest.mark.usefixtures("ray_local")
def test_canny_on_ray_equals_local_and_resumes_by_shard(pictures: Path, tmp_path: Path) -> None:
    items = load_items(pictures)
    settings = CannySettings()
    local = run_builder("canny", canny_builder, items, tmp_path / "local", settings, workers=2)
    options = RayOptions(shard_size=3, max_in_flight=2)
    on_ray = run_builder("canny", canny_builder, items, tmp_path / "ray", settings, engine=options)
    assert (on_ray.built, len(on_ray.failed)) == (local.built, len(local.failed)) == (11, 2)
    assert on_ray.notes == local.notes and on_ray.notes
    assert_same_build(tmp_path / "local", tmp_path / "ray", "canny")

    shards = tmp_path / "ray" / SHARDS_DIR
    assert len(list(shards.glob("part-*.done"))) == 5  # 13 items in shards of 3
    # A rerun skips the clean shards, reruns only the failed items of the two unclean ones.
    again = run_builder("canny", canny_builder, items, tmp_path / "ray", settings, engine=options)
    assert (again.built, again.kept, len(again.failed)) == (0, 11, 2)
    # A shard lost before its marker (a worker or the driver died) is redone, and only that one.
    (shards / "part-00000.done").unlink()
    (tmp_path / "ray" / "conditioning_images" / "p00.png").unlink()
    lost = run_builder("canny", canny_builder, items, tmp_path / "ray", settings, engine=options)
    assert (lost.built, lost.kept) == (1, 10), "the lost shard's other items were still valid"
    assert_same_build(tmp_path / "local", tmp_path / "ray", "canny")
    # The local engine resumes a Ray build (the merged journal is its own format).
    resumed = run_builder("canny", canny_builder, items, tmp_path / "ray", settings, workers=1)
    assert (resumed.built, resumed.kept) == (0, 11)


@pytest.mark.usefixtures("ray_local")
def test_strict_stops_on_ray(pictures: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="zero-byte file"):
        run_builder(
            "canny",
            canny_builder,
            load_items(pictures),
            tmp_path / "out",
            CannySettings(),
            strict=True,
            engine=RayOptions(shard_size=2, max_in_flight=1),
        )
    assert "zero-byte" in (tmp_path / "out" / "failed.jsonl").read_text(encoding="utf-8")


@pytest.mark.usefixtures("ray_local")
def test_glyph_on_an_actor_pool_equals_local(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    for index, text in enumerate(("删除 Delete", "发送 Send", "空格 Space")):
        _label_picture(folder / f"{index}.png", text)
    items = load_items(folder)
    settings = GlyphSettings(background="black")
    local = run_builder("glyph", glyph_builder, items, tmp_path / "local", settings, workers=2)
    options = RayOptions(shard_size=2, actor_pool=True, actors=2)
    on_ray = run_builder("glyph", glyph_builder, items, tmp_path / "ray", settings, engine=options)
    assert on_ray.built == local.built == 3
    assert_same_build(tmp_path / "local", tmp_path / "ray", "glyph")


@pytest.mark.usefixtures("ray_local")
def test_caption_batches_on_an_actor_pool_equal_local(tmp_path: Path) -> None:
    model = build_tiny_blip(tmp_path / "tiny-blip", seed=0)
    jsonl = build_fill(tmp_path / "fill", n=5, resolution=64, seed=0)
    (jsonl.parent / "images" / "00002.png").write_bytes(b"")
    settings = CaptionSettings(str(model), max_new_tokens=5)
    local = build_captions(jsonl, tmp_path / "local", settings, device="cpu", batch_size=2)
    options = RayOptions(shard_size=3, actors=1)  # device auto: the actor takes the GPU (CPU here: no CUDA)
    on_ray = build_captions(jsonl, tmp_path / "ray", settings, device="auto", batch_size=2, engine=options)
    assert (on_ray.built, len(on_ray.failed)) == (local.built, len(local.failed)) == (4, 1)
    assert_same_build(tmp_path / "local", tmp_path / "ray", "caption")


@pytest.mark.usefixtures("ray_local")
def test_map_unordered_bounds_what_is_in_flight() -> None:
    """Never more than ``max_in_flight`` submitted: the driver pulls the input lazily."""
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for value in range(12):
            pulled.append(value)
            yield value

    results = map_unordered(abs, source(), RayOptions(max_in_flight=3))
    first = next(results)
    assert len(pulled) <= 4 and first in range(12)
    assert sorted([first, *results]) == list(range(12))


def _where(_: int) -> tuple[tuple[str, ...], int]:
    """The GPUs Ray gave the task or actor running this, and its process."""
    return tuple(str(gpu) for gpu in ray.get_gpu_ids()), os.getpid()


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize(
    ("options", "on_gpu", "processes"),
    [
        (RayOptions(actor_pool=True, gpu_model=True), True, 1),  # caption: one actor per GPU
        (RayOptions(actor_pool=True), False, 2),  # glyph's CPU OCR: one actor per CPU, no GPU held
        (RayOptions(actor_pool=True, gpus=0.5), True, 2),  # asked for: two actors share the GPU
        (RayOptions(), False, None),  # CPU tasks
    ],
)
def test_gpus_go_to_actors_of_gpu_models(options: RayOptions, on_gpu: bool, processes: int | None) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _where, to the workers
    results = list(map_unordered(_where, range(8), options, actors=options.actor_pool))
    assert len(results) == 8
    assert {bool(gpus) for gpus, _ in results} == {on_gpu}
    if processes is not None:
        assert len({pid for _, pid in results}) == processes


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="shard size"):
        RayOptions(shard_size=0)


# --------------------------------------------------------------------------------------------------
# a fake multi-node cluster losing a node; a real `ray start` cluster through the CLI


@pytest.fixture(scope="module")
def many_pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for index in range(48):
        _picture(index, (320, 240)).save(folder / f"m{index:03d}.png")
    return folder


def _slow_canny(item, out, settings):  # type: ignore[no-untyped-def]
    """Canny that takes long enough for a node to be removed while shards are in flight."""
    time.sleep(0.25)
    return canny_builder(item, out, settings)


def _remove_after_first_shard(out: Path, remove: Callable[[], None], stop: threading.Event) -> None:
    """Watch ``out`` from a thread; remove the node as soon as the first shard is marked done."""
    while not stop.is_set():
        if list((out / SHARDS_DIR).glob("part-*.done")):
            remove()
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_node_lost_mid_job_loses_only_its_shards(many_pictures: Path, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    items = load_items(many_pictures)
    run_builder("canny", canny_builder, items, tmp_path / "local", CannySettings(), workers=2)
    ray.shutdown()  # the module's in-process runtime (ray_local) may still be up: this test joins its own
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, **RAY_INIT)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _slow_canny, to the workers
    removed: list[bool] = []

    def remove() -> None:
        cluster.remove_node(doomed, allow_graceful=False)
        removed.append(True)

    stop = threading.Event()
    watcher = threading.Thread(target=_remove_after_first_shard, args=(tmp_path / "ray", remove, stop))
    watcher.start()
    try:
        options = RayOptions(shard_size=4, max_in_flight=4, max_retries=5)
        summary = run_builder("canny", _slow_canny, items, tmp_path / "ray", CannySettings(), engine=options)
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the node was removed while the job ran"
    # A shard whose worker wrote its parts but died before answering is retried; the retry keeps what
    # the first attempt finished (counted as kept), so built + kept, not built, is the whole input.
    assert summary.written == 48 and not summary.failed
    assert_same_build(tmp_path / "local", tmp_path / "ray", "canny")


# A token-authenticated cluster, as Ray makes by default. A driver joining an explicit --ray-address
# must be told to authenticate (Ray never sends a token to a given address on its own).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _cli(*args: str, stderr: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **AUTH}
    command = [sys.executable, "-m", "data", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, text=True, stderr=stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def ray_head(port: int) -> Iterator[str]:
    """``ray start --head --block`` in its own process group (stopped by signalling that group only,
    never ``ray stop``, which would stop every Ray on the machine); yields the address to join."""
    temp = Path(tempfile.mkdtemp(prefix="sf-ray-"))  # short: Ray's socket paths must fit 107 bytes
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
    command += [f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"]
    head = subprocess.Popen(
        command,
        env={**os.environ, **AUTH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, "ray start --head exited"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)
        # `ray start` notes its address in /tmp/ray/ray_current_cluster, which a stopped head leaves
        # behind: a later ray.init() would then try to join that dead cluster instead of starting one.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.slow
def test_cli_on_a_ray_start_cluster_resumes_after_the_driver_is_killed(
    many_pictures: Path, tmp_path: Path
) -> None:
    local = _cli("canny", "--in", str(many_pictures), "--out", str(tmp_path / "local"), "--workers", "2")
    assert local.wait(120) == 0
    out = tmp_path / "ray"
    with ray_head(_free_port()) as address:
        args = ["canny", "--in", str(many_pictures), "--out", str(out), "--engine", "ray"]
        args += ["--ray-address", address, "--shard-size", "2", "--max-in-flight", "1"]
        driver = _cli(*args, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list((out / SHARDS_DIR).glob("part-*.done")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.05)
        driver.kill()  # the driver dies mid-job: the shards it finished stay done
        driver.wait(30)
        done_before = len(list((out / SHARDS_DIR).glob("part-*.done")))
        assert 1 <= done_before < 24
        rerun = _cli(*args, stderr=subprocess.PIPE)
        _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    counts = re.search(r"48 records in .* \((\d+) built, (\d+) kept from an earlier run\)", stderr)
    assert counts, stderr
    assert int(counts[2]) >= 2 * done_before and int(counts[1]) + int(counts[2]) == 48
    assert_same_build(tmp_path / "local", out, "canny")
