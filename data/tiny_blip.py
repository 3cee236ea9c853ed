"""A tiny random-weight BLIP captioner, built locally, for tests and the demo (no download).

It is saved with ``save_pretrained`` and loaded back by :mod:`data.caption` through the same
``from_pretrained`` calls that real BLIP weights (e.g. ``Salesforce/blip-image-captioning-base``) go
through, so the captioning plumbing is tested for real; its captions are noise.

The tokenizer mirrors BLIP's: a lower-casing BERT WordPiece tokenizer plus a ``[DEC]`` token that
the decoder uses as BOS. With transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently builds a
6-token tokenizer, so the vocabulary is passed as a dict (``vocab=``).

    python -m data.tiny_blip models/tiny-blip
"""

from __future__ import annotations

import argparse
import logging
import shutil
import string
import tempfile
from pathlib import Path

import torch
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
)

from common.process_exit import exit_without_teardown

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SIZE", "build_tiny_blip", "tiny_blip_vocab"]

IMAGE_SIZE = 64
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BOS_TOKEN = "[DEC]"
_WORDS_TEXT = (
    "a keyboard skin of with and the on in blue red green yellow pink purple black white orange grey "
    "dark light cute cartoon flower star moon sky sea cat dog anime pattern gradient keys letters "
    "chinese text button buttons background iflyskin"
)
WORDS = tuple(_WORDS_TEXT.split())
MARKER = "model.safetensors"


def tiny_blip_vocab() -> dict[str, int]:
    """Specials, characters (plain and ``##`` continuation, so any word tokenizes), words, punctuation."""
    chars = list(string.ascii_lowercase + string.digits)
    tokens = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *WORDS, *",.!?-"]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def _processor() -> BlipProcessor:
    tokenizer = BertTokenizerFast(vocab=tiny_blip_vocab(), do_lower_case=True, model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _model(vocab_size: int, bos_id: int, sep_id: int, seed: int) -> BlipForConditionalGeneration:
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "encoder_hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "bos_token_id": bos_id,
        "eos_token_id": sep_id,
        "sep_token_id": sep_id,
        "pad_token_id": 0,
        "initializer_range": 0.1,  # larger than BLIP's 0.02 so random captions depend on the image
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 16,
        "initializer_range": 0.3,  # BLIP's default (1e-10) would make every image embed alike
    }
    torch.manual_seed(seed)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)
    return BlipForConditionalGeneration(config).eval()


def build_tiny_blip(out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny BLIP (model + processor) to ``out_dir``; an existing complete build is kept.

    Written into a sibling temp folder and renamed, so a reader never sees half a model.
    """
    out_dir = Path(out_dir).absolute()
    if (out_dir / MARKER).is_file() and not overwrite:
        return out_dir
    processor = _processor()
    tokenizer = processor.tokenizer
    model = _model(len(tokenizer), tokenizer.bos_token_id, tokenizer.sep_token_id, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp and safetensors make 0700/0600; share like a model cache
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("tiny BLIP (seed %d) written to %s", seed, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.tiny_blip", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_tiny_blip(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
