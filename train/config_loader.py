"""Typed dataclass configs from YAML with dotted CLI overrides.

Every problem found while loading (unknown keys, wrong types, bad override syntax) is collected and
reported at once, with the closest valid key suggested, so a user fixes a recipe in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_INVALID = object()
"""Returned for a value of the wrong type: the field keeps its default, so later checks still run."""


class ConfigError(ValueError):
    """Raised with every problem of a config at once."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


def suggest(name: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-5` -> (['train', 'lr'], 1e-5); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Writes dotted overrides into a nested dict in place; returns syntax problems."""
    problems = []
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except (ValueError, yaml.YAMLError) as err:
            problems.append(str(err))
            continue
        node = tree
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"override {text!r}: '{key}' is not a section")
                break
            node = child
        else:
            node[keys[-1]] = value
    return problems


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _to_float(value: int | str, where: str, problems: list[str]) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string; users write learning rates that way, so accept it."""
    try:
        return float(value)
    except ValueError:
        problems.append(f"{where}: expected float, got str {value!r}")
        return _INVALID


def _literal_from_bool(value: Any, choices: tuple[Any, ...]) -> Any:
    """YAML 1.1 reads a bare `no` (mixed_precision: no) as False; and on/off switches that grew more
    settings (gradient_checkpointing: none|controlnet|unet|both) still accept true/false."""
    if value is False and "no" in choices:
        return "no"
    if isinstance(value, bool) and {"none", "both"} <= set(choices):
        return "both" if value else "none"
    return value


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Checks and converts one YAML value to the annotated type, appending problems."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, problems) if len(inner) == 1 else value
    if origin is Literal:
        value = _literal_from_bool(value, get_args(tp))
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            problems.append(f"{where}: {value!r} is not one of {choices}")
            return _INVALID
        return value
    if origin in (list, tuple, Sequence, typing.Sequence):
        (item_tp, *_) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {type(value).__name__} {value!r}")
            return _INVALID
        items = [_convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else items
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where, problems)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        return _to_float(value, where, problems)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return _INVALID
    return value


def build_dataclass(cls: type[T], tree: Any, where: str, problems: list[str]) -> T:
    """Builds `cls` from a nested dict; unknown keys and bad types are appended to `problems`."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        problems.append(f"{where or 'config'}: expected a mapping, got {type(tree).__name__}")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            prefix = f"{where}." if where else ""
            hint = suggest(str(key), names)
            problems.append(f"unknown key '{path}'" + (hint.replace("'", f"'{prefix}", 1) if hint else ""))
            continue
        converted = _convert(value, hints[key], path, problems)
        if converted is not _INVALID:
            kwargs[key] = converted
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"], str(path))
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError([f"invalid YAML: {err}"], str(path)) from err
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(["the top level must be a mapping of sections"], str(path))
    return tree or {}


def to_dict(config: Any) -> dict[str, Any]:
    """The plain nested dict of a config, for saving next to checkpoints."""
    return dataclasses.asdict(config)
