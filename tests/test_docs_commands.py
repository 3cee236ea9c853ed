"""Every command the docs show runs, or says what it needs.

The `bash` blocks of README.md, of the docs pages (in the site's order) and of bench/RESULTS.md (which the
Benchmarks page includes) run in order, each as `bash -euo pipefail`, in one scratch folder that holds
the repository's recipes, launchers and the shipped tiny base, with .venv's python first on PATH: the
README's tour first, then each page, so a page may use what the tour built (`datasets/tour`,
`runs/tour`). A block whose first line is `# needs: ...` (a GPU, real weights, a cluster, ...) is not
run; the fast tests check that every such marker is one of NEEDS.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# What a block may say it needs, i.e. why a CPU test machine cannot run it.
NEEDS = {
    "gpu",
    "real weights",
    "cluster",
    "slurm",
    "paddle venv",
    "network",
    "a fresh clone",
    "long run",
}
NEEDS_LINE = re.compile(r"^#\s*needs:\s*(?P<what>[^(]+?)\s*(?:\(.*\))?\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<lang>[\w+-]*)\s*$")
# What the scratch folder links from the repository: the paths the commands name.
LINKED = ("assets", "configs", "launch", "scripts", "bench", "train")
BLOCK_TIMEOUT_S = 1800
# Generated while the site builds (docs/gen_reference.py): no file, no commands.
GENERATED = {"reference/config.md", "reference/cli.md"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str

    @property
    def needs(self) -> list[str] | None:
        """The `# needs:` marker's items, or None for a block the test runs."""
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        match = NEEDS_LINE.match(first)
        if not match:
            return None
        return [item.strip() for item in match["what"].split(",")]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def nav_pages() -> list[str]:
    """The docs pages in the site's order (mkdocs.yml's nav), generated ones left out."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    found: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)

    walk(nav)
    return [page for page in found if page not in GENERATED]


def pages() -> list[str]:
    """README.md, the docs pages, and bench/RESULTS.md (included by the Benchmarks page), in run order."""
    return ["README.md", *(f"docs/{p}" for p in nav_pages()), "bench/RESULTS.md"]


def bash_blocks(page: str) -> list[Block]:
    """The fenced `bash` blocks of a Markdown file, dedented (blocks inside list items are indented)."""
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        closing = re.compile(rf"^\s*{opening['fence']}\s*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page}:{i + 1}: a code block that never closes")
        if opening["lang"] in ("bash", "sh", "shell", "console"):
            code = textwrap.dedent("\n".join(lines[i + 1 : j]))
            blocks.append(Block(page, i + 1, code))
        i = j + 1
    return blocks


ALL_BLOCKS = [block for page in pages() for block in bash_blocks(page)]


def test_every_docs_page_is_in_the_site_and_checked() -> None:
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == set(nav_pages()), "docs pages and mkdocs.yml's nav differ"
    benchmarks = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert '--8<-- "bench/RESULTS.md"' in benchmarks, "the Benchmarks page includes bench/RESULTS.md"


def test_every_block_runs_or_says_what_it_needs() -> None:
    wrong = [
        f"{block}: {block.needs} (known: {sorted(NEEDS)})"
        for block in ALL_BLOCKS
        if block.needs is not None and not set(block.needs) <= NEEDS
    ]
    assert not wrong, "unknown `# needs:` markers:\n" + "\n".join(wrong)
    shell_only = [str(b) for b in ALL_BLOCKS if b.code.lstrip().startswith("$ ")]
    assert not shell_only, f"blocks written as a prompt transcript, not as commands: {shell_only}"
    runnable = [b for b in ALL_BLOCKS if b.needs is None]
    assert any(b.page == "README.md" for b in runnable), "the README's tour runs"
    assert len(runnable) >= 10


def test_the_readme_tour_goes_from_data_to_a_served_checkpoint() -> None:
    tour = "\n".join(b.code for b in bash_blocks("README.md") if b.needs is None)
    for step in ("python -m data fill", "python -m train.launch", "python -m inference ", "inference export"):
        assert step in tour, step
    assert "python -m serve" in tour


def run_block(block: Block, workspace: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        # As in the repository's root, where `python -m` finds the checkout's packages first.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "SKINFORGE_CACHE": str(workspace / ".cache" / "encoded"),
        "XDG_CACHE_HOME": str(workspace / ".cache"),
    }
    started = time.monotonic()
    # Output into files and the block in its own process group: what a block leaves running (a server
    # started with `&` before a failing line) neither holds a pipe open nor outlives the block.
    logs = workspace / ".block-logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=workspace,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            returncode: int | str = process.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = f"nothing: it ran past {BLOCK_TIMEOUT_S} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    print(f"{block}: {time.monotonic() - started:.0f} s")  # where the slow test's time goes (pytest -s)
    if returncode != 0:
        raise AssertionError(
            f"{block} exited {returncode}:\n{block.code}\n--- stdout (end)\n{stdout[-4000:]}"
            f"\n--- stderr (end)\n{stderr[-6000:]}"
        )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder shaped like the repository's root, after the README's tour has run in it."""
    work = tmp_path_factory.mktemp("docs")
    for name in LINKED:
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    for block in bash_blocks("README.md"):
        if block.needs is None:
            run_block(block, work)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in pages() if p != "README.md"])
def test_the_commands_of_each_page_run(page: str, workspace: Path) -> None:
    for block in bash_blocks(page):
        if block.needs is None:
            run_block(block, workspace)


@pytest.mark.slow
def test_the_readme_tour_leaves_a_report_an_export_and_a_served_image(workspace: Path) -> None:
    assert (workspace / "reports/tour/report.html").is_file()
    assert list((workspace / "exports/tour").glob("*.safetensors")), "the single-file export"
    assert (workspace / "exports/tour/README.md").is_file(), "the model card"
    assert (workspace / "tour.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the served image"
