"""The docs' reference pages, generated from the code so that they cannot drift from it.

- ``reference/config.md``: every section and key of the trainer's recipe, walked from the typed config
  dataclasses (``train.config.SkinforgeConfig``) with their types, defaults and attribute docstrings;
- ``reference/cli.md``: the ``--help`` of every command, as a user's shell prints it.

MkDocs runs this file as a hook (``hooks:`` in mkdocs.yml): the pages are added to the build in memory,
nothing is written into docs/. ``python docs/gen_reference.py OUT`` writes them into OUT instead, to
read them without building the site.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import logging
import os
import subprocess
import sys
import textwrap
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.gen_reference")

REPO = Path(__file__).resolve().parents[1]
CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"

# (title, the arguments after `python -m`) in the order the page lists them; `python -m data`'s
# subcommands are appended after it, read from its parser.
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -m data", ["data"]),
    ("python -m train.plan", ["train.plan"]),
    ("python -m train.launch", ["train.launch"]),
    ("python -m train.tiny_base", ["train.tiny_base"]),
    ("python -m inference", ["inference"]),
    ("python -m inference export", ["inference", "export"]),
    ("python -m serve", ["serve"]),
]
HELP_TIMEOUT_S = 1200  # a guard against a hung command; on a saturated 2-core machine an import takes minutes


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right after each annotated field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def format_type(hint: Any) -> str:
    """A type as a recipe's author reads it: Literal choices spelled out, None as `null`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if args and origin in (typing.Union, types.UnionType):
        return " \\| ".join("`null`" if a is type(None) else format_type(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join(format_type(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    return f"`{getattr(hint, '__name__', str(hint))}`"


def format_default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and not value:
        return '`""`'
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def table_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_page() -> str:
    """Every section of SkinforgeConfig and every key of it, from the dataclasses and their docs."""
    from train import config as config_module

    root = config_module.SkinforgeConfig
    lines = [
        "# Config reference",
        "",
        "Every key of a training recipe (`--config FILE`, then `section.key=value` overrides), generated",
        f"from the typed config in `train/config.py` ({root.__name__}). Types: `null` is YAML's empty",
        "value; paths are relative to the folder the command runs in.",
        "",
    ]
    for section in dataclasses.fields(root):
        cls = typing.get_type_hints(root)[section.name]
        hints = typing.get_type_hints(cls, vars(config_module))
        docs = field_docs(cls)
        lines += [f"## `{section.name}`", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        lines += ["| key | type | default | what |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            doc = table_cell(docs.get(f.name, ""))
            lines.append(
                f"| `{section.name}.{f.name}` | {format_type(hints[f.name])} | {format_default(f)} | {doc} |"
            )
        lines.append("")
    return "\n".join(lines)


def data_subcommands() -> list[str]:
    from data.__main__ import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    raise RuntimeError("python -m data has no subcommands: docs/gen_reference.py expects them")


def help_text(args: list[str]) -> str:
    """`python -m ARGS --help` as it prints in an 100-column terminal."""
    env = {**os.environ, "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", *args, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} --help exited {done.returncode}:\n{done.stderr}")
    return done.stdout.rstrip()


def cli_page() -> str:
    commands = list(COMMANDS)
    at = 1 + next(i for i, (_, args) in enumerate(commands) if args == ["data"])
    commands[at:at] = [(f"python -m data {sub}", ["data", sub]) for sub in data_subcommands()]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        helps = list(pool.map(help_text, [args for _, args in commands]))
    lines = [
        "# Command-line reference",
        "",
        "The `--help` of every command, generated when the site is built. The trainer itself",
        "(`train/train_controlnet_sdxl.py --config FILE [section.key=value ...]`) takes a recipe and",
        "overrides: its keys are the [config reference](config.md).",
        "",
    ]
    for title, text in zip([t for t, _ in commands], helps, strict=True):
        lines += [f"## `{title}`", "", "```text", text, "```", ""]
    return "\n".join(lines)


_PAGES: dict[str, str] = {}


def pages() -> dict[str, str]:
    """Both pages, made once per process (mkdocs serve rebuilds call the hook again)."""
    if not _PAGES:
        _PAGES[CONFIG_PAGE] = config_page()
        _PAGES[CLI_PAGE] = cli_page()
    return _PAGES


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages to the build."""
    from mkdocs.structure.files import File

    for uri, content in pages().items():
        files.append(File.generated(config, uri, content=content))
    log.info("gen_reference: generated %s", ", ".join(pages()))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the docs' generated reference pages into OUT.")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    for uri, content in pages().items():
        path = args.out / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n", encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
