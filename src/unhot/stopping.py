"""Stopping a run gracefully: SIGTERM and SIGINT end training at the next step boundary.

Schedulers (SLURM, Kubernetes) send SIGTERM some time before SIGKILL; Ctrl-C sends SIGINT. While
:func:`stop_requests` is active, either signal only sets a flag; the training loop checks it
after every optimizer step, writes a checkpoint of the exact position in the epoch and raises
:class:`Stopped`, which the CLI reports on one line (exit status 128 + the signal's number). A
second Ctrl-C interrupts at once (KeyboardInterrupt; the last checkpoint is kept).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """Training stopped on a signal after writing ``checkpoint``; rerunning resumes it."""

    def __init__(self, signum: int, where: str, checkpoint: Path | None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        saved = f"saved {checkpoint}" if checkpoint is not None else "nothing new to save"
        super().__init__(f"stopped by {signal.Signals(signum).name} {where} ({saved}); run the "
                         f"same command again to resume")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopFlag:
    """The signal received while :func:`stop_requests` was active, if any."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_requests() -> Iterator[StopFlag]:
    """Within the block, SIGTERM and SIGINT set the yielded flag instead of ending the process;
    a second SIGINT raises KeyboardInterrupt. Outside the main thread (where Python cannot set
    handlers) the flag is never set."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signum = signum
        print(f"unhot: {signal.Signals(signum).name} received: stopping after this step "
              f"(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: loader workers ignore SIGTERM and SIGINT (a scheduler and a
    terminal signal the whole process group), so the main process can finish its step and save;
    workers still end with the main process."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
