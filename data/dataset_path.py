"""The one rule for where a dataset's records are: a jsonl file, or a dataset folder holding train.jsonl.

The builders write ``<out>/train.jsonl`` and accept the folder as input; the trainer's
``data.train_jsonl`` / ``validation.jsonl`` and inference's ``--data`` take the same two spellings
through :func:`dataset_jsonl`, so a user can hand any command the folder a builder made.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATASET_JSONL", "dataset_jsonl", "folder_problem"]

DATASET_JSONL = "train.jsonl"
"""The records file a builder writes into its output folder."""


def dataset_jsonl(path: str | Path) -> Path:
    """``path/train.jsonl`` when ``path`` is a folder holding one, else ``path`` unchanged (a file, or
    something missing that the caller reports in its own words)."""
    path = Path(path)
    inner = path / DATASET_JSONL
    return inner if path.is_dir() and inner.is_file() else path


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as records when it is a folder without train.jsonl, else None."""
    path = Path(path)
    if not path.is_dir() or (path / DATASET_JSONL).is_file():
        return None
    jsonls = sorted(p.name for p in path.glob("*.jsonl") if p.is_file())
    found = f"; it holds {', '.join(jsonls)}: pass one of those" if jsonls else ""
    return f"{path} is a folder without {DATASET_JSONL} (not a dataset a builder wrote){found}"
