"""VAE latents and text embeddings, encoded once per dataset and read back memory-mapped.

Each rank encodes its own slice of the records (no rank-0 bottleneck, no tensors sent between ranks) into
a safetensors shard, written atomically. A run that finds a complete cache with the same fingerprint
(model, dataset file, resolution, dtype) reuses it, so resumes and re-runs skip the encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from data.atomic import atomic_write_json
from data.records import Record, resolve_path
from train.prompt_encoding import encode_prompts
from train.sample_geometry import CropGeometry, to_tensor
from train.sdxl_models import FrozenSDXL

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
COMPLETE_MARKER = "complete.json"
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached tensors depend on; its hash names the cache folder."""

    base: str
    vae: str | None
    jsonl: str
    jsonl_bytes: int
    jsonl_mtime_ns: int
    num_records: int
    resolution: int
    dtype: str
    format: int = CACHE_FORMAT

    @classmethod
    def create(
        cls, base: str, vae: str | None, jsonl: Path, num_records: int, resolution: int, dtype: torch.dtype
    ) -> CacheSpec:
        stat = jsonl.stat()
        return cls(
            base,
            vae,
            str(jsonl.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            num_records,
            resolution,
            str(dtype).removeprefix("torch."),
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _load_target(root: Path, record: Record, resolution: int) -> tuple[torch.Tensor, CropGeometry]:
    with Image.open(resolve_path(root, record.image)) as image:
        geometry = CropGeometry.centre_crop(image.width, image.height, resolution)
        pixels = to_tensor(geometry.apply(image.convert("RGB")))
    return pixels * 2.0 - 1.0, geometry


@torch.no_grad()
def _encode_batch(
    frozen: FrozenSDXL, root: Path, records: Sequence[Record], resolution: int, device: torch.device
) -> dict[str, torch.Tensor]:
    loaded = [_load_target(root, r, resolution) for r in records]
    pixels = torch.stack([p for p, _ in loaded]).to(device, frozen.vae.dtype)
    latents = frozen.vae.encode(pixels).latent_dist.mode() * frozen.vae.config.scaling_factor
    prompt_embeds, pooled = encode_prompts(
        [r.text for r in records],
        (frozen.tokenizer, frozen.tokenizer_2),
        (frozen.text_encoder, frozen.text_encoder_2),
    )
    return {
        "latents": latents.float().cpu(),
        "prompt_embeds": prompt_embeds.cpu(),
        "pooled_embeds": pooled.cpu(),
        "time_ids": torch.stack([g.time_ids() for _, g in loaded]),
    }


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    to_store = {
        k: (v.to(dtype) if k in ("prompt_embeds", "pooled_embeds") else v) for k, v in tensors.items()
    }
    save_file({k: v.contiguous() for k, v in to_store.items()}, str(tmp))
    os.replace(tmp, path)


def build_encoded_cache(
    records: Sequence[Record],
    root: Path,
    spec: CacheSpec,
    frozen: FrozenSDXL,
    accelerator: Accelerator,
    cache_root: Path,
    batch_size: int,
) -> Path:
    """Encodes this rank's slice (unless a complete cache exists) and returns the cache folder."""
    folder = cache_root / spec.fingerprint()
    if (folder / COMPLETE_MARKER).is_file():
        logger.info("Reusing encoded cache %s", folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    dtype = getattr(torch, spec.dtype)
    device = accelerator.device
    for module in (frozen.vae, frozen.text_encoder, frozen.text_encoder_2):
        module.to(device)
    indices = list(range(rank, len(records), world))
    parts: list[dict[str, torch.Tensor]] = []
    bar = tqdm(
        total=len(indices), desc="encoding latents+prompts", disable=not accelerator.is_local_main_process
    )
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        part = _encode_batch(frozen, root, [records[i] for i in chunk], spec.resolution, device)
        part["indices"] = torch.tensor(chunk, dtype=torch.int64)
        parts.append(part)
        bar.update(len(chunk))
    bar.close()
    if parts:
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        _write_shard(folder / _shard_name(rank, world), merged, dtype)
    if accelerator.is_main_process:
        embeds, pooled = encode_prompts(
            [""], (frozen.tokenizer, frozen.tokenizer_2), (frozen.text_encoder, frozen.text_encoder_2)
        )
        _write_shard(
            folder / EMPTY_PROMPT_FILE,
            {"prompt_embeds": embeds[0].cpu(), "pooled_embeds": pooled[0].cpu()},
            dtype,
        )
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
        for shard_id, path in enumerate(self.shards):
            with safe_open(str(path), framework="pt") as handle:
                for row, index in enumerate(handle.get_tensor("indices").tolist()):
                    self._rows[index] = (shard_id, row)
        with safe_open(str(folder / EMPTY_PROMPT_FILE), framework="pt") as handle:
            self.empty_prompt = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        self._handles: dict[int, object] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": None}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._handles is None:
            self._handles = {i: safe_open(str(p), framework="pt") for i, p in enumerate(self.shards)}
        shard_id, row = self._rows[index]
        handle = self._handles[shard_id]
        keys = ("latents", "prompt_embeds", "pooled_embeds", "time_ids")
        return {k: handle.get_slice(k)[row] for k in keys}
