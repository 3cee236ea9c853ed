"""The trainer's command line takes `--config FILE` and dotted overrides; other `--flags` are mistakes.

Users coming from diffusers' script write `--max_train_steps 10` or `--learning_rate 1e-4`. Instead
of argparse's bare "unrecognized arguments" (or the value `10` taken for a malformed override), each
flag is named with the override that does it here: `--max_steps 10` -> `train.max_steps=10`.
"""

from __future__ import annotations

from collections.abc import Sequence

from train.config import SkinforgeConfig, load_config
from train.config_loader import ConfigError, KeyHints
from train.smoke import SMOKE_FLAG, smoke_overrides

__all__ = ["config_from_args", "flag_problems"]

KNOWN_FLAGS = ("--config", "-h", "--help", SMOKE_FLAG)


def _as_override(target: str, value: str | None) -> str:
    if "=" in target:  # the alias names the value too (use_8bit_adam -> train.optimizer=adamw_8bit)
        return target
    return f"{target}={value if value is not None else '...'}"


def flag_problems(argv: Sequence[str], hints: KeyHints) -> tuple[list[str], list[str]]:
    """``(argv without the unknown flags and their values, one problem per unknown flag)``."""
    kept: list[str] = []
    problems: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        name, eq, inline = token.partition("=")
        if not token.startswith("-") or name in KNOWN_FLAGS or token == "-":
            kept.append(token)
            if name == "--config" and not eq and index + 1 < len(argv):
                kept.append(argv[index + 1])
                index += 1
            index += 1
            continue
        value: str | None = inline if eq else None
        following = argv[index + 1] if index + 1 < len(argv) else None
        if not eq and following is not None and not following.startswith("-") and "=" not in following:
            value = following  # `--max_steps 10`: the 10 belongs to the flag, not to the overrides
            index += 1
        index += 1
        found = hints.lookup(name)
        if found is None:
            problems.append(
                f"unknown option {name}: the trainer takes --config FILE and dotted overrides "
                "(section.key=value, e.g. train.max_steps=10)"
            )
        else:
            override = _as_override(found[0], value)
            problems.append(f"unknown option {name}: overrides are dotted here, write {override}")
    return kept, problems


def config_from_args(
    config: str, overrides: Sequence[str], flag_errors: Sequence[str], smoke: bool = False
) -> SkinforgeConfig:
    """The trainer's config (``smoke``: the :mod:`train.smoke` preset first, the overrides after it);
    ConfigError listing the unknown flags with the config's own problems."""
    if smoke:
        overrides = [*smoke_overrides(config), *overrides]
    try:
        loaded = load_config(config, overrides)
    except ConfigError as err:
        raise ConfigError([*flag_errors, *err.problems], err.source) from None
    if flag_errors:
        raise ConfigError(flag_errors, "the command line")
    return loaded
