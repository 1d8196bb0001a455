"""SIGTERM as an exception, so that a stopped command cleans up as an interrupted one does.

A scheduler's stop, `kill` and `timeout` send SIGTERM, whose default ends a Python process before
any `finally` block or exit handler runs: the servers and kernels a flow started and Prefect's
ephemeral API server (which Prefect stops at exit) were left running. While a flow runs, Prefect's
own handler marks the run crashed and then sends the signal again, to the handler that was there
before it: this one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_CODE = 128 + signal.SIGTERM  # 143: the shell's code for a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM, raised in the main thread. Not a `KeyboardInterrupt`: typer turns that into a
    silent exit 130, and `except Exception` must not catch it."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread; the handler there before is
    put back at its end (for a caller that runs a command in-process). Outside the main thread,
    where Python cannot set a handler, it does nothing."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
