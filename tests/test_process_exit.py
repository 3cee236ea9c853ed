"""Command-line processes end without module teardown, but nothing written at exit is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

SCRIPT = """
import atexit, logging, sys
from pathlib import Path
from common.process_exit import exit_without_teardown

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
handler = logging.FileHandler(out / "log.txt", delay=False)
handler.terminator = ""  # left in the handler until logging.shutdown flushes and closes it
logging.getLogger().addHandler(handler)
logging.getLogger().warning("logged")
sys.stdout.write("no newline, still buffered")
exit_without_teardown(3)
"""


def _run(tmp_path: Path, *python_args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, *python_args, str(script), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exit_code_atexit_callbacks_logs_and_stdout_survive(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "no newline, still buffered"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "logged"


def test_under_a_profiler_it_exits_normally_so_the_profile_is_written(tmp_path: Path) -> None:
    profile = tmp_path / "run.prof"
    result = _run(tmp_path, "-m", "cProfile", "-o", str(profile))
    assert result.returncode == 0, result.stderr  # cProfile swallows SystemExit (its own behaviour)
    assert profile.is_file() and profile.stat().st_size > 0
    assert (tmp_path / "atexit.txt").read_text() == "ran"
