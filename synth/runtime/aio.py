"""Running the stages' event loops: on uvloop where it is installed (Linux, macOS).

The synthesis client spends most of its CPU in the event loop once hundreds of requests are in
flight; uvloop's loop costs less per callback and per socket than asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install: the standard loop works the same
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
