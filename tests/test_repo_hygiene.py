"""What the repository carries is the project, not the machine or the diary it was made on: no tracked text
file names an absolute path of a particular machine (its /work, /tmp, home or /root folders), and none
tells its history as work periods or issue numbers (git keeps the history)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A machine's own folders, as they appear in a command or a recorded path. `/tmp/` counts only where it
# begins a path (not inside a longer one such as `.../tmp/...`).
MACHINE_PATH = re.compile(r"(?<![\w./-])(?:/work/|/tmp/|/root/|/home/(?!user\b|USER\b|<)[A-Za-z0-9_.-]+/)")
# History told as work periods or issue numbers: "session 5", "sessions 1-3", "issue 14", "(issue #7)".
DIARY = re.compile(r"\b(?:sessions?|issues?)\s+#?\d+", re.IGNORECASE)

# Explicit exceptions, each a (file, text on the line) pair with the reason it is not a machine's path or
# a diary. Keep this short: fix the file instead where you can.
ALLOWED: dict[tuple[str, str], str] = {
    ("tests/test_ray_engine.py", "/tmp/ray/"): "Ray's own fixed session folder, the same on every machine",
}

BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".safetensors", ".bin", ".onnx", ".ttf", ".ttc"}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    files = []
    for name in filter(None, names):
        path = REPO / name.decode()
        if path.suffix.lower() in BINARY_SUFFIXES or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:
            files.append(path)
    return files


def findings(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    """`file:line: text` for every match not covered by ALLOWED (this file, which spells the patterns and
    their examples out, is not scanned)."""
    found = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not pattern.search(line):
                continue
            if any(rel == file and snippet in line for file, snippet in ALLOWED):
                continue
            found.append(f"{rel}:{number}: {line.strip()[:160]}")
    return found


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = tracked_text_files()
    assert len(found) > 100, "git ls-files should list the project's files"
    return found


def test_no_tracked_file_names_a_machine_path(files: list[Path]) -> None:
    bad = findings(MACHINE_PATH, files)
    assert not bad, "absolute paths of a machine (use relative paths or placeholders):\n" + "\n".join(bad)


def test_no_tracked_file_tells_history_as_sessions_or_issue_numbers(files: list[Path]) -> None:
    bad = findings(DIARY, files)
    assert not bad, "history belongs in git, not in the files:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        ("python bench/x.py --out /tmp/x", True),
        ("--reference /work/.mirror/huggingface+diffusers/repo", True),
        ("cache at /home/alice/.cache/skinforge", True),
        ("ssh root@node: ls /root/models", True),
        ("under ~/.cache/skinforge/encoded", False),
        ("runs/x/tmp/file and build/tmp/", False),
        ("/home/user/ and /home/<user>/ are placeholders", False),
        ("--model /shared/models/blip-large", False),
    ],
)
def test_machine_path_pattern(line: str, flagged: bool) -> None:
    assert bool(MACHINE_PATH.search(line)) is flagged


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        ("Session 5's VM gave 0.65", True),
        ("measured in sessions 1-3", True),
        ("the text loss (issue 14)", True),
        ("see issue #7", True),
        ("a known issue with fp16 VAEs", False),
        ("session cookies of the playground", False),
    ],
)
def test_diary_pattern(line: str, flagged: bool) -> None:
    assert bool(DIARY.search(line)) is flagged


def test_every_allowance_still_matches_its_file() -> None:
    """An allowance whose text is gone from its file is stale: remove it, so the list stays small."""
    stale = [
        f"{file}: {snippet!r}"
        for file, snippet in ALLOWED
        if not (REPO / file).is_file() or snippet not in (REPO / file).read_text(encoding="utf-8")
    ]
    assert not stale, "stale entries in ALLOWED:\n" + "\n".join(stale)
