"""What the service is started with: the checkpoints, the device and speed options, and every limit.

One frozen object built by the CLI (or a test) and read everywhere else, so a limit has one source:
the request validator, the queue and the worker never disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inference.settings import SpeedSettings

__all__ = ["Limits", "ServeConfig"]


@dataclass(frozen=True)
class Limits:
    """Bounds on one request; anything outside them is a 4xx naming the field, never a worker crash."""

    max_steps: int = 100
    min_side: int = 64
    max_side: int = 2048
    max_image_bytes: int = 20 * 1024 * 1024
    """Encoded size of one uploaded image (base64 decoded)."""
    max_image_pixels: int = 4096 * 4096
    """Decoded size, checked from the header before decoding (a 50 kB PNG can be a gigapixel)."""
    max_prompt_chars: int = 2000
    max_prompt_tokens: int | None = None
    """None: the tokenizer's own limit (77 for SDXL's CLIP): longer prompts would be cut silently."""
    max_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.min_side <= self.max_side:
            raise ValueError(f"need 0 < min_side <= max_side, got {self.min_side} and {self.max_side}")
        if self.max_steps < 1 or self.max_image_bytes < 1 or self.max_image_pixels < 1:
            raise ValueError("max_steps, max_image_bytes and max_image_pixels must be >= 1")


@dataclass(frozen=True)
class ServeConfig:
    """The service's settings; ``checkpoints`` are folders as ``python -m inference`` takes them."""

    checkpoints: tuple[str, ...]
    base: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    """Default dtype of all components (None: fp16 on CUDA, fp32 on CPU); ``speed`` may set each."""
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    max_queue: int = 32
    """Requests waiting (not running); one more is answered 429."""
    max_batch: int = 4
    max_wait_ms: float = 0.0
    """How long a batch waits for same-shape company; 0 batches only what already waits, so a lone
    request never pays for batching."""
    timeout_s: float = 300.0
    """Default deadline of a request, queue wait included (504 past it)."""
    limits: Limits = field(default_factory=Limits)
    report: Path | None = None
    """A ``python -m inference`` output folder whose metrics.json the checkpoint gallery shows."""
    history_dir: Path | None = None
    """Where the playground autosaves its images and history.jsonl (None: no playground)."""
    faults: tuple[str, ...] = ()
    """Failures to inject into the real pipeline (tests of the degradation paths); see serve.faults."""

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("at least one checkpoint is needed")
        if self.max_queue < 1 or self.max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be >= 1, got {self.max_queue}, {self.max_batch}")
        if self.max_wait_ms < 0 or self.timeout_s <= 0:
            raise ValueError("max_wait_ms must be >= 0 and timeout_s > 0")
