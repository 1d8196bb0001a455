"""A process-wide setting held at one value while any of several overlapping blocks runs.

`datasets` and `huggingface_hub` keep some behaviour in process-wide switches (progress bars,
offline mode). Our loads run in parallel threads (a scan task per source part), so one load must not
put a switch back under another that still needs it: the switch is counted. The first block to enter
saves what it finds and sets the value; the last to leave puts back what the first found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class CountedSwitch:
    """`read()` returns the setting's current value and `write(value)` sets it; `held(value)` is the
    context manager that holds it at `value` (see the module docstring). Thread-safe; one instance
    per setting."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        self._read, self._write = read, write
        self._lock = threading.Lock()
        self._active = 0  # blocks inside `held` now
        self._found: Any = None  # the value the first of them found

    @contextmanager
    def held(self, value: Any) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._found = self._read()
                self._write(value)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._write(self._found)
