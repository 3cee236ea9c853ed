"""The ``POST /generate`` request: one pydantic model for JSON and multipart bodies alike.

JSON carries images as base64 strings, multipart as files; both become the same ``GenerateRequest``
whose images are raw bytes, so everything after parsing has one path. Limits that depend on the
running service (max steps, known checkpoints and schedulers) are checked in ``check_request``
against the config, with errors naming the field.

Sampling settings a request leaves out (``steps``, ``guidance``, ``scheduler``, the size) are the
checkpoint's own recipe, from its skinforge.yaml (``serve.recipe``): a ControlNet trained at 128² with
guidance 1 gets 128² and guidance 1, not SDXL's 1024² and 5. ``GET /checkpoints`` lists each checkpoint's
``defaults``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inference.settings import SCHEDULER_NAMES, SIZE_MULTIPLE
from serve.config import Limits
from serve.errors import RequestError

__all__ = ["BASE_SCHEDULER", "IMAGE_FIELDS", "GenerateRequest", "check_request", "parse_fields"]

IMAGE_FIELDS = ("image", "source_image")
BASE_SCHEDULER = "base"
"""``scheduler`` value asking for the base model's own scheduler, whatever the checkpoint's recipe says."""


class GenerateRequest(BaseModel):
    """Fields of ``POST /generate``; ``image`` is the control image, or ``source_image`` + ``preprocess``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str = ""
    image: bytes | None = None
    source_image: bytes | None = None
    preprocess: Literal["canny"] | None = None
    canny_low: int = Field(100, ge=0, le=1000)
    canny_high: int = Field(200, ge=0, le=1000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    """None: a random seed, returned in the metadata so the image can be made again."""
    steps: int | None = Field(None, ge=1)
    """None: the checkpoint's ``validation.num_inference_steps`` (20 without a recipe)."""
    guidance: float | None = Field(None, ge=0.0, le=50.0)
    """None: the checkpoint's ``validation.guidance_scale`` (5.0 without a recipe)."""
    conditioning_scale: float = Field(1.0, ge=0.0, le=5.0)
    control_start: float = Field(0.0, ge=0.0, le=1.0)
    control_end: float = Field(1.0, ge=0.0, le=1.0)
    width: int | None = None
    height: int | None = None
    """Both None: the condition's aspect at the checkpoint's training pixel count (``data.resolution``²;
    the condition's own size without a recipe); one None: the condition's size on that side."""
    scheduler: str | None = None
    """None: the checkpoint's ``validation.scheduler``, else the base's; ``base``: the base's."""
    checkpoint: str | None = None
    adaptive_steps: bool = False
    """Stop denoising once successive latents change less than ``adaptive_threshold`` (relative)."""
    adaptive_threshold: float = Field(0.02, gt=0.0, lt=1.0)
    timeout: float | None = Field(None, gt=0.0)
    """Seconds until 504, queue wait included (default: the service's)."""

    @model_validator(mode="after")
    def _one_condition(self) -> GenerateRequest:
        if (self.image is None) == (self.source_image is None):
            raise ValueError("give exactly one of image (the control image) or source_image (+ preprocess)")
        if self.source_image is not None and self.preprocess is None:
            raise ValueError("source_image needs preprocess (e.g. 'canny') to make the control image")
        if self.image is not None and self.preprocess is not None:
            raise ValueError("preprocess applies to source_image; image is used as the control image as is")
        if self.canny_low > self.canny_high:
            raise ValueError(f"canny_low ({self.canny_low}) must be <= canny_high ({self.canny_high})")
        if self.control_start >= self.control_end:
            raise ValueError(
                f"control_start ({self.control_start}) must be < control_end ({self.control_end})"
            )
        return self


def _field_of(error: dict[str, Any]) -> str:
    """The field a pydantic error is about; model-level errors name the first field they mention."""
    if error["loc"]:
        return str(error["loc"][0])
    message = str(error.get("msg", ""))
    names = [name for name in GenerateRequest.model_fields if name in message]
    return min(names, key=message.index) if names else "body"


def _decode_base64(field: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise RequestError(field, "must be a base64 string", 422)
    text = value.split(",", 1)[1] if value.startswith("data:") else value  # data URLs too
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(field, f"not valid base64 ({err})", 400) from err


def parse_fields(fields: dict[str, Any]) -> GenerateRequest:
    """A GenerateRequest from a JSON object or a multipart form.

    Images given as strings are base64 (JSON, or a text field of a form), as bytes they are the file
    itself (a form's file field). Empty form values count as absent (an HTML form sends "" for an
    empty number box).
    """
    data = {key: value for key, value in fields.items() if not (value == "" and key != "prompt")}
    for key in IMAGE_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], bytes):
            data[key] = _decode_base64(key, data[key])
    try:
        return GenerateRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise RequestError(_field_of(first), str(first["msg"]).removeprefix("Value error, ")) from err


def _check_side(field: str, value: int | None, limits: Limits) -> None:
    if value is None:
        return
    if not limits.min_side <= value <= limits.max_side:
        raise RequestError(field, f"must be between {limits.min_side} and {limits.max_side}, got {value}")
    if value % SIZE_MULTIPLE:
        raise RequestError(field, f"must be a multiple of {SIZE_MULTIPLE}, got {value}")


def check_request(request: GenerateRequest, limits: Limits, checkpoints: list[str]) -> None:
    """Limits of this service, checked before the request takes a queue slot."""
    if not request.prompt.strip():
        raise RequestError("prompt", "must not be empty")
    if len(request.prompt) > limits.max_prompt_chars:
        raise RequestError(
            "prompt", f"too long: {len(request.prompt)} characters, max {limits.max_prompt_chars}"
        )
    if len(request.negative_prompt) > limits.max_prompt_chars:
        raise RequestError("negative_prompt", f"too long: max {limits.max_prompt_chars} characters")
    if request.steps is not None and request.steps > limits.max_steps:
        raise RequestError("steps", f"must be <= {limits.max_steps}, got {request.steps}")
    _check_side("width", request.width, limits)
    _check_side("height", request.height, limits)
    if request.scheduler is not None and request.scheduler not in (BASE_SCHEDULER, *SCHEDULER_NAMES):
        names = ", ".join((BASE_SCHEDULER, *SCHEDULER_NAMES))
        raise RequestError("scheduler", f"unknown scheduler {request.scheduler!r}; one of {names}")
    if request.checkpoint is not None and request.checkpoint not in checkpoints:
        raise RequestError(
            "checkpoint", f"unknown checkpoint {request.checkpoint!r}; one of {', '.join(checkpoints)}"
        )
    if request.timeout is not None and request.timeout > limits.max_timeout_s:
        raise RequestError("timeout", f"must be <= {limits.max_timeout_s} s, got {request.timeout}")
