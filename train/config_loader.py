"""Typed dataclass configs from YAML with dotted CLI overrides.

Every problem found while loading (unknown keys, wrong types, bad override syntax) is collected and
reported at once, with a fix: the closest valid key by spelling, or by meaning (:class:`KeyHints`: the
names other trainers use, such as ``learning_rate`` for ``lr``), or the section's keys when nothing is
close; and a problem whose value came from a command-line override says so
(:func:`blame_overrides`), so a user fixes a recipe in one pass, in the right place.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
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
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


def suggest(name: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


@dataclasses.dataclass(frozen=True)
class KeyHints:
    """What an unknown key probably meant.

    ``aliases`` maps other names for a setting to its dotted key (``learning_rate`` -> ``train.lr``;
    a target may carry a value, ``use_8bit_adam`` -> ``train.optimizer=adamw_8bit``); ``paths`` maps
    every field name to the dotted keys holding it, so a key put in the wrong section is found.
    """

    aliases: Mapping[str, str]
    paths: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, root: type, aliases: Mapping[str, str]) -> KeyHints:
        """Hints for the config dataclass ``root`` (its fields and nested sections)."""
        paths: dict[str, list[str]] = {}

        def walk(tp: type, prefix: str) -> None:
            for f in dataclasses.fields(tp):  # type: ignore[arg-type]
                path = f"{prefix}{f.name}"
                paths.setdefault(f.name, []).append(path)
                hint = get_type_hints(tp)[f.name]
                if dataclasses.is_dataclass(hint):
                    walk(hint, path + ".")  # type: ignore[arg-type]

        walk(root, "")
        return cls(aliases, {name: tuple(found) for name, found in paths.items()})

    def lookup(self, key: str) -> tuple[str, float] | None:
        """The dotted key (maybe with a value) that ``key`` names by meaning, or by field name in another
        section, and how close the match was (1.0 exact); close misspellings count (``learnig_rate``)."""
        name = key.strip().lstrip("-").replace("-", "_").lower()
        close = difflib.get_close_matches(name, [*self.aliases, *self.paths], n=1, cutoff=0.8)
        if not close:
            return None
        target = self.aliases.get(close[0]) or self.paths[close[0]][0]
        return target, _similarity(name, close[0])

    def hint(self, where: str, key: str, names: Sequence[str]) -> str:
        """' (did you mean ...?)' by spelling in the section or by meaning, whichever is closer; else the
        section's keys."""
        prefix = f"{where}." if where else ""
        close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
        spelled = (f"{prefix}{close[0]}", _similarity(key, close[0])) if close else None
        meant = self.lookup(key)
        best = max((c for c in (spelled, meant) if c is not None), key=lambda c: c[1], default=None)
        if best is not None:
            return f" (did you mean '{best[0]}'?)"
        section = f"'{where}'" if where else "the top level"
        return f" (keys of {section}: {', '.join(names)})"


def overridden_keys(overrides: Sequence[str]) -> dict[str, str]:
    """``{dotted key: override text}`` of the well-formed overrides, to blame them by name."""
    keys = {}
    for text in overrides:
        key, sep, _ = text.partition("=")
        if sep and key.strip():
            keys[key.strip()] = text
    return keys


def blame_overrides(problems: Sequence[str], overrides: Sequence[str]) -> tuple[list[str], int]:
    """Each problem naming a key set on the command line (or the unknown section of one: `key 'trian'`
    of `trian.x=1`) gets "(from the command line: k=v)"; also returns how many did."""
    keys = overridden_keys(overrides)
    blamed, count = [], 0
    for problem in problems:
        texts = [text for key, text in keys.items() if _names(problem, key)]
        if texts:
            count += 1
            problem += f" (from the command line: {', '.join(texts)})"
        blamed.append(problem)
    return blamed, count


def _names(problem: str, key: str) -> bool:
    parts = key.split(".")
    sections = [".".join(parts[:n]) for n in range(1, len(parts))]
    return bool(re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", problem)) or any(
        f"key '{section}'" in problem for section in sections
    )


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


def _convert(value: Any, tp: Any, where: str, problems: list[str], hints: KeyHints | None = None) -> Any:
    """Checks and converts one YAML value to the annotated type, appending problems."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, problems, hints) if len(inner) == 1 else value
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
        return build_dataclass(tp, value, where, problems, hints)
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


def build_dataclass(
    cls: type[T], tree: Any, where: str, problems: list[str], hints: KeyHints | None = None
) -> T:
    """Builds `cls` from a nested dict; unknown keys (with ``hints``' suggestions) and bad types are
    appended to `problems`."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        problems.append(f"{where or 'config'}: expected a mapping, got {type(tree).__name__}")
        return cls()
    key_hints, types_of = hints, get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in tree.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            if key_hints is not None:
                problems.append(f"unknown key '{path}'" + key_hints.hint(where, str(key), names))
                continue
            prefix = f"{where}." if where else ""
            hint = suggest(str(key), names)
            problems.append(f"unknown key '{path}'" + (hint.replace("'", f"'{prefix}", 1) if hint else ""))
            continue
        converted = _convert(value, types_of[key], path, problems, key_hints)
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
