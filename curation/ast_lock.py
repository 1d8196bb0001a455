"""One process-wide lock for building Python ASTs off the main thread.

CPython before 3.11.8 (3.12 before 3.12.2) keeps the AST constructor's recursion depth in state
that every thread shares, so two threads building ASTs at once (`ast.parse`, `ast.literal_eval`,
`numpy.load` reading a .npy header) can raise `SystemError: AST constructor recursion depth
mismatch` (cpython gh-106905, fixed by PR 113035). Shard tasks run side by side on Prefect's
thread runner, so the project's own calls that build ASTs take `AST_LOCK`; on a fixed CPython the
lock only costs an uncontended acquire.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

AST_LOCK = threading.Lock()


def literal_eval(text: str) -> Any:
    """`ast.literal_eval(text)` under `AST_LOCK`; raises what it raises (ValueError, SyntaxError, ...)."""
    with AST_LOCK:
        return ast.literal_eval(text)
