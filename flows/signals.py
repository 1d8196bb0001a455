"""SIGTERM and SIGINT as exceptions that say which signal came, so that a stopped command cleans up
and ends in one line.

A scheduler's stop, `kill` and `timeout` send SIGTERM, whose default ends a Python process before
any `finally` block or exit handler runs: the servers and kernels a flow started and Prefect's
ephemeral API server (which Prefect stops at exit) were left running. While a flow runs, Prefect's
own handler marks the run crashed and then sends the signal again, to the handler that was there
before it: this one. Ctrl-C in a terminal and `timeout` signal the whole process group, Prefect's
API server with it, which may stop before Prefect has recorded the crash: the errors its client
raises then are the signal's doing, not a failure of the run (`Stop.received` tells them apart).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EXIT_CODES = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}  # 143, 130: the shell's codes
SAID = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}


# Set once a stop signal has come (to any `Stop`): what Prefect's clients log after it, the API server
# gone with the process group, is the signal's doing (see `flows.prefect_env.show_run_lines`).
STOPPING = threading.Event()


class Terminated(BaseException):
    """SIGTERM, raised in the main thread. Not a `KeyboardInterrupt`: typer turns that into a
    silent exit 130, and `except Exception` must not catch it."""


@dataclass
class Stop:
    """Which stop signal the command received (`signal.SIGTERM`, `signal.SIGINT`), None before one."""

    received: int | None = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = signum
        STOPPING.set()
        if signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()


@contextlib.contextmanager
def stop_signals() -> Iterator[Stop]:
    """Within the block, SIGTERM raises `Terminated` and SIGINT `KeyboardInterrupt` (as by default) in
    the main thread, each recorded in the `Stop` yielded; the handlers there before are put back at
    its end (for a caller that runs a command in-process). Outside the main thread, where Python
    cannot set a handler, it sets none and `Stop.received` stays None."""
    stop = Stop()
    STOPPING.clear()  # a command run in-process after a stopped one starts afresh
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop._on_signal)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
