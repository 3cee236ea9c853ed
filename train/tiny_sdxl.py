"""A tiny, randomly initialised SDXL (and ControlNet) in diffusers format, built offline.

Why: tests and demos must exercise the exact loading code used for real SDXL
(`from_pretrained(base, subfolder=...)`) without reaching a model hub. Every component
keeps SDXL's shapes contract (two CLIP text encoders whose hidden states concatenate to the
UNet's cross-attention width, "text_time" added conditioning, an 8x VAE, an SDXL-style
scheduler config) but is small enough to build in seconds on two CPU cores.

CLI: ``python -m train.tiny_sdxl OUT_DIR [--seed N] [--overwrite] [--controlnet CN_OUT_DIR] [--vae-size S]``
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from common.process_exit import exit_without_teardown

logger = logging.getLogger(__name__)

VOCAB_SIZE = 1000
MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
TEXT_HIDDEN = 32  # each encoder; concatenated they give the UNet's cross_attention_dim
TIME_EMBED_DIM = 8  # addition_time_embed_dim: 6 micro-conditioning numbers x 8 + pooled 32 = 80
CONTROLNET_INIT_STD = 0.02

# Words the tiny BPE vocabulary learns merges for, weighted by how often they appear, so the
# prompts our tests and demos use (colour names, shapes, keyboard words) take few tokens.
_PRIORITY_WORDS = (
    "circle square triangle star heart hexagon ring dot line stripe shape background foreground "
    "keyboard key keys keycap keycaps skin skins label labels legend letter letters layout qwerty "
    "with on of and the a an in black white red green blue yellow orange purple pink brown grey gray "
    "gold golden silver cyan magenta violet navy teal olive maroon lime aqua beige ivory"
)
_COLOUR_WORDS = (
    "alice antique aquamarine azure bisque blanched almond blue violet burly wood cadet chartreuse "
    "chocolate coral cornflower corn silk crimson dark dodger fire brick floral forest fuchsia "
    "gainsboro ghost rod honey dew hot indian indigo khaki lavender blush lawn chiffon lemon light "
    "sea sky slate steel medium mint cream misty rose moccasin navajo old lace drab orchid pale "
    "turquoise papaya whip peach puff peru plum powder rebecca rosy royal saddle salmon sandy shell "
    "sienna snow spring tan thistle tomato wheat smoke"
)
_COMMON_WORDS = (
    "photo picture image render style art design pattern texture flat simple clean minimal modern "
    "retro vintage dark light bright soft bold thin thick small large big tiny center top bottom "
    "left right corner edge border frame outline filled solid gradient shadow glow matte glossy "
    "space enter shift control alt escape tab caps lock return delete backspace function number "
    "numbers symbol symbols font text print printed sharp readable quality high detailed"
)


# --------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (the byte-level base alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _word_counts() -> Counter[tuple[str, ...]]:
    """Training words as symbol tuples (last symbol carries CLIP's `</w>`), with frequencies."""
    table = _bytes_to_unicode()
    counts: Counter[tuple[str, ...]] = Counter()
    for weight, text in ((50, _PRIORITY_WORDS), (10, _COLOUR_WORDS), (3, _COMMON_WORDS)):
        for word in text.split():
            symbols = [table[b] for b in word.encode("utf-8")]
            symbols[-1] += "</w>"
            counts[tuple(symbols)] += weight
    return counts


def _learn_merges(base_vocab: list[str], target_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Deterministic BPE: merge the most frequent adjacent pair until the vocab has `target_size` tokens."""
    vocab, seen = list(base_vocab), set(base_vocab)
    merges: list[tuple[str, str]] = []
    words = _word_counts()
    while len(vocab) < target_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += freq
        if not pairs:
            raise RuntimeError(f"BPE corpus exhausted at {len(vocab)} tokens; add training words")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        if (joined := best[0] + best[1]) not in seen:
            vocab.append(joined)
            seen.add(joined)
        words = Counter({_merge_pair(w, best): f for w, f in words.items()})
    return vocab, merges


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's layout: 256 bytes, 256 bytes+`</w>`, merges, then <|startoftext|>, <|endoftext|> last."""
    alphabet = list(_bytes_to_unicode().values())
    base = alphabet + [c + "</w>" for c in alphabet]
    tokens, merges = _learn_merges(base, VOCAB_SIZE - 2)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], pad_token: str) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over the tiny vocab; SDXL pads tokenizer with EOS and tokenizer_2 with '!'."""
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


# --------------------------------------------------------------------------- models


def _text_config(vocab: dict[str, int], pad_token: str, hidden_act: str) -> CLIPTextConfig:
    """diffusers' tiny test CLIP config, with special-token ids taken from our vocab."""
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=TEXT_HIDDEN,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[pad_token],
    )


def _text_encoders(vocab: dict[str, int]) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """SDXL's pair: CLIP-L style (quick_gelu, no projection) and OpenCLIP-bigG style (gelu, projection)."""
    text_encoder = CLIPTextModel(_text_config(vocab, EOS_TOKEN, "quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab, "!", "gelu"))
    return text_encoder.eval(), text_encoder_2.eval()


def _unet_config(sample_size: int = 16) -> dict[str, Any]:
    """diffusers' SDXL test UNet: 2 levels, cross-attention on 2 x 32 text features, text_time embedding.
    `sample_size` is the latent side of the default resolution (16: 128 px through an 8x VAE)."""
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "transformer_layers_per_block": (1, 2),
        "use_linear_projection": True,
        "cross_attention_dim": 2 * TEXT_HIDDEN,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * TIME_EMBED_DIM + TEXT_HIDDEN,
        "norm_num_groups": 32,
    }


VAE_SIZES: dict[str, dict[str, Any]] = {
    "small": {"block_out_channels": (8, 16, 16, 16), "norm_num_groups": 4},
    "test": {"block_out_channels": (32, 64, 64, 64), "norm_num_groups": 32},
    "trained": {"block_out_channels": (16, 32, 64, 64), "norm_num_groups": 8},
    "trained4x": {"block_out_channels": (16, 32, 64), "norm_num_groups": 8},
}
"""Tiny VAE widths. "small" (0.08 M parameters, the default) keeps tests, the demo and the text loss's
decode cheap. "test" (1.25 M) is diffusers' SDXL test VAE (32, 64) widened to 4 blocks: with it the folder
is ~13 MB and its encoder ~30 % of a reference training step; the training-step benchmark
(bench/bench_train_step.py) measures on it. At SDXL size the VAE encoder (fp32 in diffusers'
script) is a large share of a step too; the small VAE would make re-encoding look almost free. "trained"
(0.98 M) is the VAE of the trained base (`train.tiny_base`): wider at its deeper levels, to reconstruct
keyboard skins at 128². "trained4x" (0.5 M) has 3 blocks, so it downsamples 4x, not 8x: the demo's circles
base (`train.tiny_base --recipe circles`), where a 2 px outline at 128² must land on a 32² latent grid
to be drawn where it is; diffusers' pipelines read the factor from the VAE config."""


def vae_downscale(size: str) -> int:
    """How many pixels one latent covers per side: 2^(blocks - 1), as diffusers' pipelines compute it."""
    return 2 ** (len(VAE_SIZES[size]["block_out_channels"]) - 1)


def _vae(size: str) -> AutoencoderKL:
    """4 blocks (8x, like SDXL's VAE) or 3 (4x); `VAE_SIZES[size]` decides."""
    blocks = len(VAE_SIZES[size]["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        latent_channels=4,
        **VAE_SIZES[size],
        sample_size=128,
        scaling_factor=0.13025,
        force_upcast=True,
    ).eval()


def _scheduler() -> EulerDiscreteScheduler:
    """SDXL base's scheduler_config.json values (DDPMScheduler.from_config accepts them too)."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global CPU RNG for module init without disturbing the caller's RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_pipeline(seed: int, vae_size: str, resolution: int = 128) -> StableDiffusionXLPipeline:
    """The random tiny SDXL in memory; identical weights for the same seed and VAE size. `resolution`
    (pixels) sets the UNet's `sample_size`, which pipelines take as their default size."""
    vocab, merges = _vocab_and_merges()
    with _seeded(seed):
        unet = UNet2DConditionModel(**_unet_config(resolution // vae_downscale(vae_size))).eval()
    with _seeded(seed + 1):
        vae = _vae(vae_size)
    with _seeded(seed + 2):
        text_encoder, text_encoder_2 = _text_encoders(vocab)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer(vocab, merges, EOS_TOKEN),
        tokenizer_2=_tokenizer(vocab, merges, "!"),
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


# --------------------------------------------------------------------------- atomic writing


def write_atomically(out_dir: Path, marker: str, overwrite: bool, write: Callable[[Path], None]) -> Path:
    """Build into a sibling temp dir and rename it into place, so readers never see half a model.

    `marker` names the file whose presence means `out_dir` already holds a complete build.
    """
    out_dir = Path(out_dir).absolute()
    if (out_dir / marker).is_file() and not overwrite:
        logger.info("%s already built; leaving it untouched", out_dir)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists but holds no {marker}; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write(tmp)
        _make_readable(tmp)
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _make_readable(root: Path) -> None:
    """mkdtemp makes a 0700 dir and safetensors writes 0600 files; a shared model cache wants 755/644."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename `tmp` to `out_dir`; an old `out_dir` is moved aside first and deleted after."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "model")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # Another process won the race and put a complete build there: use theirs.
        if not out_dir.is_dir():
            raise
        logger.info("%s appeared while building; keeping the existing one", out_dir)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- public API


def build_tiny_sdxl(
    out_dir: str | Path, seed: int = 0, overwrite: bool = False, vae_size: str = "small"
) -> Path:
    """Write a tiny random-weight SDXL pipeline folder (diffusers layout, safetensors) to `out_dir`.

    If `out_dir` already holds a complete build (model_index.json) and not `overwrite`, it is returned
    untouched. Same `seed` gives identical weights. `vae_size` is a key of `VAE_SIZES`.
    """
    if vae_size not in VAE_SIZES:
        raise ValueError(f"vae_size={vae_size!r}: expected one of {sorted(VAE_SIZES)}")

    def write(tmp: Path) -> None:
        logger.info("Building tiny SDXL (seed %d, %s VAE) into %s", seed, vae_size, out_dir)
        tiny_pipeline(seed, vae_size).save_pretrained(tmp, safe_serialization=True)

    return write_atomically(Path(out_dir), "model_index.json", overwrite, write)


def _perturb_zero_convs(controlnet: ControlNetModel, std: float) -> None:
    """ControlNet's output convs start at zero (no effect); small weights make it act like a trained one."""
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    zero_convs.append(controlnet.controlnet_cond_embedding.conv_out)
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=std)
            torch.nn.init.normal_(conv.bias, std=std)


def build_tiny_controlnet(
    sdxl_dir: str | Path, out_dir: str | Path, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write a ControlNet made from the tiny UNet, with non-zero output convs, to `out_dir` (safetensors)."""

    def write(tmp: Path) -> None:
        logger.info("Building tiny ControlNet (seed %d) from %s into %s", seed, sdxl_dir, out_dir)
        unet = UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet")
        with _seeded(seed):
            controlnet = ControlNetModel.from_unet(unet)
            _perturb_zero_convs(controlnet, CONTROLNET_INIT_STD)
        controlnet.save_pretrained(tmp, safe_serialization=True)

    return write_atomically(Path(out_dir), "config.json", overwrite, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.tiny_sdxl",
        description="Build a tiny random-weight SDXL (and optionally a ControlNet) for offline tests.",
    )
    parser.add_argument(
        "out_dir", type=Path, metavar="OUT_DIR", help="folder for the SDXL pipeline (diffusers layout)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if OUT_DIR is complete")
    parser.add_argument("--controlnet", type=Path, metavar="CN_OUT_DIR", help="also build a ControlNet here")
    parser.add_argument(
        "--vae-size", choices=sorted(VAE_SIZES), default="small", help="VAE widths (default small)"
    )
    args = parser.parse_args(argv)
    sdxl_dir = build_tiny_sdxl(args.out_dir, seed=args.seed, overwrite=args.overwrite, vae_size=args.vae_size)
    logger.info("Tiny SDXL at %s", sdxl_dir)
    if args.controlnet is not None:
        cn_dir = build_tiny_controlnet(sdxl_dir, args.controlnet, seed=args.seed, overwrite=args.overwrite)
        logger.info("Tiny ControlNet at %s", cn_dir)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_without_teardown(main())
