"""`accelerate launch`, with stop signals that reach the trainers and the trainers' exit status kept.

    python -m train.launch --config_file launch/accelerate/1gpu.yaml train/train_controlnet_sdxl.py \\
        --config configs/fill_tiny.yaml

Takes exactly `accelerate launch`'s arguments; accelerate parses them and picks the launcher. Plain
`accelerate launch` loses stops: with one process, accelerate up to 1.15 dies at once on SIGTERM and
leaves the trainer on its own, and 1.16 SIGKILLs its trainer 5 s after forwarding the SIGTERM, in the
middle of the step or the checkpoint; with several processes torchrun forwards SIGTERM/SIGINT but not
SIGUSR1, and kills the trainers 30 s later. Here:

- One process: accelerate's simple launcher is not used. Its command and environment are built by
  accelerate and the launcher process becomes the trainer (exec), so nothing can kill the trainer after
  a grace, and a signal to the launcher, to its process group or to the trainer reaches the trainer.
- Several processes: accelerate's torchrun launcher, told to forward SIGUSR1 too, and to wait
  `TORCH_ELASTIC_SHUTDOWN_TIMEOUT` seconds (here 600 unless set) before SIGKILL.
- SIGTERM, SIGINT and SIGUSR1 sent to this process go to the launcher's process group (the trainer or
  the torchrun agent); the trainers finish their step, write a checkpoint and exit 75.
- The exit status is the trainers' (75 after a signal-requested stop), not accelerate's blanket 1.
- The trainer's config is loaded here first (:mod:`train.launch_precheck`): a config problem is its
  list and exit status 2, not one message per rank wrapped in the launcher's tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from train.launch_precheck import precheck
from train.stop_signals import STATUS_FILE_ENV, STOP_SIGNALS

SHUTDOWN_TIMEOUT_S = "600"
FORWARDED_BY_TORCHRUN = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
_RUN_ACCELERATE = "import sys; from train.launch import run_accelerate; run_accelerate(sys.argv[1:])"


def _exec_trainer(args: argparse.Namespace) -> None:
    """Stands in for accelerate's `simple_launcher`: the same command and environment, run in place of
    the launcher instead of under it (accelerate 1.16's kills its trainer 5 s after a SIGTERM)."""
    from accelerate.utils import prepare_simple_launcher_cmd_env

    command, env = prepare_simple_launcher_cmd_env(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def run_accelerate(argv: Sequence[str]) -> None:
    """The launcher process: `accelerate launch` with its arguments, its config file and its choice of
    launcher, except that a one-process launch execs the trainer (see `_exec_trainer`)."""
    from accelerate.commands import launch as accelerate_launch

    accelerate_launch.simple_launcher = _exec_trainer
    parser = accelerate_launch.launch_command_parser()
    parser.prog = "python -m train.launch"
    accelerate_launch.launch_command(parser.parse_args(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if (refused := precheck(args)) is not None:
        return refused
    with tempfile.TemporaryDirectory(prefix="skinforge-launch-") as tmp:
        status = Path(tmp) / "status"
        env = {
            **os.environ,
            STATUS_FILE_ENV: str(status),
            "PET_SIGNALS_TO_HANDLE": os.environ.get("PET_SIGNALS_TO_HANDLE", FORWARDED_BY_TORCHRUN),
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get(
                "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S
            ),
        }
        launcher = subprocess.Popen(
            [sys.executable, "-c", _RUN_ACCELERATE, *args],
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the trainers once, through us
        )

        def forward(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):  # the launcher's group ended on its own
                os.killpg(launcher.pid, signum)

        for sig in STOP_SIGNALS:
            signal.signal(sig, forward)
        code = launcher.wait()
        reported = status.read_text(encoding="utf-8").strip() if status.is_file() else ""
    if code != 0 and reported:
        return int(reported)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
