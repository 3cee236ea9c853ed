"""Whether an SDXL base can be loaded now: a diffusers folder that exists, or a hub id that can be fetched.

Checked before anything heavy starts (the trainer's config validation, inference's ``--base``), so a
wrong path is one line naming it instead of diffusers' retried downloads ending in an ``OSError``.
"""

from __future__ import annotations

import socket
from pathlib import Path

HUB_PROBE_TIMEOUT_S = 3.0


def _looks_like_hub_id(value: str) -> bool:
    """`org/name` and nothing else: no leading ./ or ~, no backslash, exactly one slash."""
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and "\\" not in value


def _hub_problem(repo_id: str, where: str, hint: str) -> str | None:
    """Why `repo_id` cannot be loaded from the Hub now (offline, unreachable), or None. Checked before
    anything is encoded, instead of diffusers' retried HEAD requests ending in `OSError ... config.json`."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str):
        return None  # downloaded before: diffusers loads it from the cache
    if constants.HF_HUB_OFFLINE:
        return (
            f"{where}: {repo_id} is not a local folder (none here) nor in the Hugging Face cache, and "
            f"HF_HUB_OFFLINE is set: {hint}"
        )
    endpoint = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return (
            f"{where}: {repo_id} is not a local folder (none here), and the Hugging Face Hub ({endpoint}) "
            f"cannot be reached to download it ({exc.strerror or exc}): {hint}"
        )
    return None


def base_problem(base: str, where: str, hint: str) -> str | None:
    """Why ``base`` cannot be loaded as an SDXL base now (a diffusers folder that exists, or a hub id
    that can be fetched), or None. ``where`` names it and ``hint`` says how to fix it, in the caller's
    words: the trainer's config key, or inference's ``--base``."""
    if not base:
        return f"{where} is required: {hint}, or a hub id"
    path = Path(base).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return None
        return f"{where}: {base} is not a diffusers folder (no model_index.json): {hint}"
    if path.exists():
        return f"{where}: {base} is a file, not a diffusers folder: {hint}"
    if not _looks_like_hub_id(base) or Path(base.split("/")[0]).is_dir():  # a path, not an org/name
        return f"{where}: folder {base} does not exist: {hint}"
    return _hub_problem(base, where, hint)
