"""VAE latents and text embeddings, encoded once per (encoders, dataset, geometry), read back mapped.

Each rank encodes its own slice of the records (no rank-0 bottleneck, no tensors sent between ranks, no
collective that could time out while one rank encodes) into safetensors shards of at most `SHARD_RECORDS`
records, each written atomically, so a killed encoding continues where it stopped. The folder is named
by the fingerprint of everything the tensors depend on; any later run or resume with the same
fingerprint reuses it without loading the VAE or the text encoders.

Latents of one shard are stored per bucket (`latents.<h>x<w>`), since aspect-ratio buckets give them
different shapes; prompt embeddings and SDXL time ids are per record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from common.atomic import atomic_write_json
from common.diffusion import to_tensor
from data.records import Record, resolve_path
from train.buckets import Size, bucket_sizes, nearest_bucket
from train.config import DataConfig, ModelConfig
from train.prompt_encoding import encode_prompts
from train.sample_geometry import CropGeometry
from train.sdxl_models import PromptEncoders

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
COMPLETE_MARKER = "complete.json"
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
SHARD_RECORDS = 1024
ENCODER_PARTS = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def default_cache_root() -> Path:
    return Path(os.environ.get("SKINFORGE_CACHE") or Path.home() / ".cache" / "skinforge" / "encoded")


def _folder_identity(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file: replaced weights change it, without hashing GBs."""
    return [
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def encoder_identity(cfg: ModelConfig) -> str:
    """What the VAE and text encoders are: their files for local folders, the id and revision otherwise."""
    base = Path(cfg.base).expanduser()
    parts = {"base": cfg.base, "vae": cfg.vae, "revision": cfg.revision, "variant": cfg.variant}
    if base.is_dir():
        parts |= {p: _folder_identity(base / p) for p in ENCODER_PARTS if p != "vae" or not cfg.vae}
    if cfg.vae and Path(cfg.vae).expanduser().is_dir():
        parts["vae_files"] = _folder_identity(Path(cfg.vae).expanduser())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _images_digest(root: Path, records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        path = resolve_path(root, record.image)
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached tensors depend on; its hash names the cache folder."""

    encoders: str
    jsonl: str
    jsonl_bytes: int
    jsonl_mtime_ns: int
    num_records: int
    images: str
    """Digest of every target image's path, size and mtime: an image replaced in place re-encodes."""
    resolution: int
    buckets: tuple[Size, ...]
    """The canvases samples are fitted into; one square for unbucketed training."""
    dtype: str
    format: int = CACHE_FORMAT

    @classmethod
    def create(
        cls, model: ModelConfig, data: DataConfig, jsonl: Path, records: Sequence[Record], dtype: torch.dtype
    ) -> CacheSpec:
        stat = jsonl.stat()
        if data.buckets:
            buckets = tuple(bucket_sizes(data.resolution, data.bucket_step, data.bucket_max_ratio))
        else:
            buckets = ((data.resolution, data.resolution),)
        return cls(
            encoder_identity(model),
            str(jsonl.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            len(records),
            _images_digest(jsonl.parent, records),
            data.resolution,
            buckets,
            str(dtype).removeprefix("torch."),
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def geometry(self, width: int, height: int) -> CropGeometry:
        """How an image of this size is fitted into its bucket."""
        return CropGeometry.cover(width, height, nearest_bucket(width, height, self.buckets))


@dataclass
class Encoders:
    vae: AutoencoderKL
    prompts: PromptEncoders


def _latents_key(size: Size) -> str:
    return f"latents.{size[0]}x{size[1]}"


def _shard_name(world: int, rank: int, part: int) -> str:
    return f"shard-w{world:05d}-r{rank:05d}-p{part:05d}.safetensors"


def _save_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _load_pixels(root: Path, record: Record, geometry: CropGeometry) -> torch.Tensor:
    with Image.open(resolve_path(root, record.image)) as image:
        return to_tensor(geometry.apply(image.convert("RGB"))) * 2.0 - 1.0


def _geometries(
    root: Path, records: dict[int, Record], spec: CacheSpec
) -> dict[Size, dict[int, CropGeometry]]:
    """Each record's fit into its bucket, grouped by bucket; reads only the image headers."""
    by_bucket: dict[Size, dict[int, CropGeometry]] = defaultdict(dict)
    for index, record in records.items():
        with Image.open(resolve_path(root, record.image)) as image:
            geometry = spec.geometry(image.width, image.height)
        by_bucket[geometry.target_size][index] = geometry
    return by_bucket


@torch.no_grad()
def _encode_records(
    encoders: Encoders, root: Path, records: dict[int, Record], spec: CacheSpec, batch_size: int
) -> dict[str, torch.Tensor]:
    """One shard's tensors: latents grouped by bucket, prompt embeddings and time ids per record."""
    dtype = getattr(torch, spec.dtype)
    vae = encoders.vae
    out: dict[str, torch.Tensor] = {}
    order: list[int] = []
    time_ids: list[torch.Tensor] = []
    for size, geometries in sorted(_geometries(root, records, spec).items()):
        indices = list(geometries)
        latents = []
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            pixels = torch.stack([_load_pixels(root, records[i], geometries[i]) for i in chunk])
            encoded = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
            latents.append((encoded * vae.config.scaling_factor).to(dtype).cpu())
        out[_latents_key(size)] = torch.cat(latents)
        out[f"rows.{size[0]}x{size[1]}"] = torch.tensor(indices, dtype=torch.int64)
        order += indices
        time_ids += [geometries[i].time_ids() for i in indices]
    embeds, pooled = [], []
    for start in range(0, len(order), batch_size):
        e, p = encode_prompts([records[i].text for i in order[start : start + batch_size]], encoders.prompts)
        embeds.append(e.to(dtype).cpu())
        pooled.append(p.to(dtype).cpu())
    return out | {
        "indices": torch.tensor(order, dtype=torch.int64),
        "time_ids": torch.stack(time_ids),
        "prompt_embeds": torch.cat(embeds),
        "pooled_embeds": torch.cat(pooled),
    }


def _clear_foreign_shards(folder: Path, world: int) -> None:
    """Shards of an unfinished encoding with another world size split the records differently."""
    for path in folder.glob("shard-*.safetensors"):
        if not path.name.startswith(f"shard-w{world:05d}-"):
            path.unlink()


def build_encoded_cache(
    records: Sequence[Record],
    root: Path,
    spec: CacheSpec,
    load_encoders: Callable[[], Encoders],
    accelerator: Accelerator,
    cache_root: Path,
    batch_size: int,
    rebuild: bool = False,
) -> Path:
    """The cache folder for `spec`, encoding this rank's slice first unless a complete cache exists.

    The encoders are loaded (by `load_encoders`) only when something has to be encoded.
    """
    folder = cache_root / spec.fingerprint()
    complete = (folder / COMPLETE_MARKER).is_file() and not rebuild
    accelerator.wait_for_everyone()  # every rank has looked before anyone clears the folder
    if complete:
        logger.info("Reusing encoded cache %s", folder)
        return folder
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        if rebuild and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _clear_foreign_shards(folder, world)
    accelerator.wait_for_everyone()
    mine = list(range(rank, len(records), world))
    parts = [mine[i : i + SHARD_RECORDS] for i in range(0, len(mine), SHARD_RECORDS)]
    todo = [(n, p) for n, p in enumerate(parts) if not (folder / _shard_name(world, rank, n)).is_file()]
    logger.info("Encoding %d of %d records into %s", sum(len(p) for _, p in todo), len(mine), folder)
    encoders = load_encoders() if todo or accelerator.is_main_process else None
    bar = tqdm(
        total=sum(len(p) for _, p in todo),
        desc="encoding latents+prompts",
        disable=not accelerator.is_local_main_process,
    )
    for n, part in todo:
        tensors = _encode_records(encoders, root, {i: records[i] for i in part}, spec, batch_size)
        _save_atomic(folder / _shard_name(world, rank, n), tensors)
        bar.update(len(part))
    bar.close()
    if accelerator.is_main_process:
        embeds, pooled = encode_prompts([""], encoders.prompts)
        dtype = getattr(torch, spec.dtype)
        _save_atomic(
            folder / EMPTY_PROMPT_FILE,
            {"prompt_embeds": embeds[0].to(dtype).cpu(), "pooled_embeds": pooled[0].to(dtype).cpu()},
        )
    del encoders
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the VAE and text encoders are not needed again: give their memory back
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(folder / COMPLETE_MARKER, {"spec": asdict(spec), "world_size": world})
    accelerator.wait_for_everyone()
    return folder


class EncodedCache:
    """Read side of the cache: record index -> tensors, from memory-mapped shards.

    File handles are opened lazily in each process, so the object pickles into DataLoader workers.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shards = sorted(folder.glob("shard-*.safetensors"))
        self._rows: dict[int, tuple[int, int]] = {}
        self._latents: dict[int, tuple[str, int]] = {}
        for shard_id, path in enumerate(self.shards):
            with safe_open(str(path), framework="pt") as handle:
                for row, index in enumerate(handle.get_tensor("indices").tolist()):
                    self._rows[index] = (shard_id, row)
                for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    if key.startswith("rows."):
                        group = key.replace("rows.", "latents.", 1)
                        for pos, index in enumerate(handle.get_tensor(key).tolist()):
                            self._latents[index] = (group, pos)
        with safe_open(str(folder / EMPTY_PROMPT_FILE), framework="pt") as handle:
            self.empty_prompt = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        self._handles: dict[int, object] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": None}

    def bucket(self, index: int) -> Size:
        """(height, width) of the canvas record `index` was encoded at."""
        height, width = self._latents[index][0].removeprefix("latents.").split("x")
        return int(height), int(width)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._handles is None:
            self._handles = {i: safe_open(str(p), framework="pt") for i, p in enumerate(self.shards)}
        shard_id, row = self._rows[index]
        handle = self._handles[shard_id]
        group, pos = self._latents[index]
        sample = {k: handle.get_slice(k)[row] for k in ("prompt_embeds", "pooled_embeds", "time_ids")}
        return sample | {"latents": handle.get_slice(group)[pos]}
