"""`accelerate launch`, with stop signals that reach the trainers and the trainers' exit status kept.

    python -m train.launch --config_file launch/accelerate/1gpu.yaml train/train_controlnet_sdxl.py \\
        --config configs/fill_tiny.yaml

Takes exactly `accelerate launch`'s arguments. Plain `accelerate launch` loses stop signals: with one
process, SIGTERM or SIGUSR1 kills the launcher at once and leaves the trainer running on its own (a
requeued job then has two writers), and with several processes torchrun forwards SIGTERM/SIGINT but not
SIGUSR1, and kills the trainers 30 s later, often in the middle of their checkpoint. Here:

- SIGTERM, SIGINT and SIGUSR1 sent to this process go to the launcher's process group; the launcher
  ignores them (one process: the trainer, in that group, gets them) or forwards them once (torchrun,
  told to forward SIGUSR1 too); the trainers finish their step, write a checkpoint and exit 75.
- torchrun waits `TORCH_ELASTIC_SHUTDOWN_TIMEOUT` seconds (here 600 unless set) before SIGKILL.
- The exit status is the trainers' (75 after a signal-requested stop), not accelerate's blanket 1.
- The trainer's config is loaded here first (:mod:`train.launch_precheck`): a config problem is its
  list and exit status 2, not one message per rank wrapped in the launcher's tracebacks.
"""

from __future__ import annotations

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


def _ignore_stop_signals() -> None:
    """In the launcher before exec: torchrun installs its own handlers over these, accelerate's simple
    launcher keeps them ignored (so it waits for its trainer), and the trainer installs its own."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if (refused := precheck(args)) is not None:
        return refused
    accelerate = Path(sys.executable).with_name("accelerate")
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
            [str(accelerate), "launch", *args],
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the trainers once, through us
            preexec_fn=_ignore_stop_signals,
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
