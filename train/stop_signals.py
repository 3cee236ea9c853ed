"""A graceful stop on SIGTERM, SIGINT or SIGUSR1: finish the current step, write a checkpoint, exit 75.

Job schedulers end jobs with SIGTERM (SLURM at its time limit, `docker stop`, spot preemption), SLURM's
`--signal` sends SIGUSR1 ahead of the limit, and Ctrl-C sends SIGINT. The first such signal asks for a
stop at the next step boundary; every rank then agrees on one step to stop after (ranks can be told at
different moments, and one that stopped while another went on into a collective would hang both). A
second signal exits at once, with the default action of that signal. Copies of one request arrive
within a moment of each other (the scheduler signals every process and the launcher forwards the same
signal), so signals within `ECHO_WINDOW_S` of the first are that same request.

Ranks agree through the process group's key-value store (one round trip per step, no collective): the
first rank to see a request at the end of step s publishes "stop after s + 1"; no rank can finish step
s + 1 before that rank has taken part in it (its gradients are all-reduced), so every rank reads the
decision in time.

Launchers that kill their trainers a fixed time after a stop signal (accelerate 1.16's one-process
launcher after 5 s, torchrun after `TORCH_ELASTIC_SHUTDOWN_TIMEOUT`, 30 s by default) lose a stop whose
step and checkpoint take longer; older accelerate exits at once and a scheduler that ends the job with
its launcher takes the trainer with it. `install` names the launcher's grace at start and the command
without that limit, `python -m train.launch`.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import psutil
import torch.distributed as dist
from packaging.version import Version

logger = logging.getLogger(__name__)

EXIT_STOPPED = 75
"""Exit status after a signal-requested stop with its checkpoint written (EX_TEMPFAIL: resume me)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
ECHO_WINDOW_S = 2.0
STATUS_FILE_ENV = "SKINFORGE_EXIT_STATUS_FILE"
"""Set by `python -m train.launch`: where the trainer writes its exit status, which launchers lose."""
SLOW_STOP_ENV = "SKINFORGE_TEST_SLOW_STOP_S"
"""Tests only: seconds to sleep between a stop decision and its checkpoint, a step or a save slower than
any launcher's grace without a model large enough to make it so."""
SAFE_LAUNCH = "python -m train.launch (the same arguments as accelerate launch)"
ACCELERATE_KILLS_SINCE = Version("1.16.0")
ACCELERATE_GRACE_S = 5.0
"""accelerate >= 1.16's one-process launcher: SIGTERM to the trainer, SIGKILL 5 s later."""
TORCHRUN_DEFAULT_GRACE_S = 30.0
_KEY_COUNT = "skinforge/stop_requests"
_KEY_AT = "skinforge/stop_after_step"
_PR_SET_PDEATHSIG = 1


class StopRequest:
    """The stop signals' handler and the ranks' agreement on when to stop."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._at = 0.0
        self._published = False
        self._stop_after: int | None = None

    def install(self) -> None:
        """Handles the stop signals in this process (call from the main thread)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        if os.environ.get("RANK", "0") == "0":
            report_launcher_grace()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signal is None:
            self.signal, self._at = signal.Signals(signum), now
            logger.warning(
                "%s received: stopping after the current step and writing a checkpoint "
                "(a second signal exits at once)",
                self.signal.name,
            )
            return
        if now - self._at < ECHO_WINDOW_S:
            return  # the same request reaching this process a second way
        os.write(2, f"{signal.Signals(signum).name} again: exiting at once\n".encode())
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def stop_after(self, step: int) -> bool:
        """Call on every rank at the end of every step: True when the run stops after `step`."""
        stop = self._decide(step)
        if stop and (slow := os.environ.get(SLOW_STOP_ENV)):
            logger.warning("%s=%s: sleeping before the stop's checkpoint", SLOW_STOP_ENV, slow)
            time.sleep(float(slow))
        return stop

    def _decide(self, step: int) -> bool:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.requested
        store = dist.distributed_c10d._get_default_store()
        if self.requested and not self._published:
            self._published = True
            if store.add(_KEY_COUNT, 1) == 1:
                store.set(_KEY_AT, str(step + 1))
        if self._stop_after is None and store.check([_KEY_AT]):
            self._stop_after = int(store.get(_KEY_AT))
            if self.signal is None:
                logger.warning(
                    "Another rank received a stop signal: stopping after step %d", self._stop_after
                )
        return self._stop_after is not None and step >= self._stop_after


def _parent_is_accelerate_launch() -> bool:
    """True when the parent process is `accelerate launch` (or `accelerate-launch`): its one-process
    launcher, since a torchrun worker's parent is the torchrun agent."""
    try:
        command = psutil.Process(os.getppid()).cmdline()
    except psutil.Error:
        return False
    names = [Path(arg).name for arg in command]
    return (
        "accelerate-launch" in names
        or "accelerate.commands.launch" in names
        or any(name == "accelerate" and after == "launch" for name, after in itertools.pairwise(names))
    )


def report_launcher_grace() -> None:
    """Logs, at start, how long this process's launcher lets a stop run before it kills the trainer,
    when it does, and the command that has no such limit."""
    under_wrapper = bool(os.environ.get(STATUS_FILE_ENV))
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker: accelerate's multi-process launcher
        grace = float(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", TORCHRUN_DEFAULT_GRACE_S))
        logger.log(
            logging.INFO if under_wrapper else logging.WARNING,
            "torchrun kills the trainers %g s after a stop signal (TORCH_ELASTIC_SHUTDOWN_TIMEOUT): a stop "
            "whose step and checkpoint take longer loses the work since the last checkpoint%s",
            grace,
            "" if under_wrapper else f"; {SAFE_LAUNCH} gives them 600 s and forwards SIGUSR1",
        )
        return
    if under_wrapper or not _parent_is_accelerate_launch():
        return
    import accelerate

    if Version(accelerate.__version__) >= ACCELERATE_KILLS_SINCE:
        logger.warning(
            "accelerate launch %s kills this trainer %g s after a SIGTERM or Ctrl-C reaches the launcher "
            "(docker stop, SLURM's time limit, a kill of its process group): a stop whose step and "
            "checkpoint take longer loses the work since the last checkpoint. %s runs the trainer "
            "without that limit",
            accelerate.__version__,
            ACCELERATE_GRACE_S,
            SAFE_LAUNCH,
        )
    else:
        logger.warning(
            "accelerate launch %s exits at once on a stop signal and leaves this trainer to stop on its "
            "own: a scheduler or container that ends the job with its launcher (SLURM's time limit, "
            "docker stop) kills it before its checkpoint. %s waits for the trainer",
            accelerate.__version__,
            SAFE_LAUNCH,
        )


def stop_with_parent() -> None:
    """Linux: a SIGTERM (a graceful stop) when the launcher that started this process dies, so a killed
    `accelerate launch` does not leave its trainers writing on their own."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def report_exit_status(code: int) -> None:
    """Tells `python -m train.launch` the status (accelerate's launchers turn every failure into 1)."""
    path = os.environ.get(STATUS_FILE_ENV)
    if path:
        Path(path).write_text(str(code), encoding="utf-8")
