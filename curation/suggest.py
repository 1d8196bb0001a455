""""Did you mean": the closest of a fixed set of choices to a name a user got wrong. One rule for
every message that refuses such a name: a config's settings and unknown fields, the command line's
per-source options (`--source jsonl:x.jsonl,category=perceptoin`), category names in rows and in
category-keyed settings."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any


def closest(given: Any, choices: Iterable[str], n: int = 1) -> list[str]:
    """At most `n` of `choices` closest to `given` (case and surrounding spaces ignored; `difflib`'s
    similarity ratio at least 0.6), best first; else the choices that have `given` as a whole part
    (`sft` names `train_sft`); [] when `given` is not a string or nothing is close."""
    if not isinstance(given, str):
        return []
    choices, wanted = list(choices), given.strip().lower()
    found = difflib.get_close_matches(wanted, choices, n=n, cutoff=0.6)
    if found or not wanted:
        return found
    return [c for c in choices if wanted in re.split(r"[_\-.\s]+", c.lower())][:n]


def did_you_mean(given: Any, choices: Iterable[str], n: int = 1) -> str:
    """`; did you mean 'tools'?` (`'a' or 'b'` with `n` > 1) to add to a message refusing `given`;
    "" when no choice is close."""
    found = closest(given, choices, n)
    return f"; did you mean {' or '.join(repr(c) for c in found)}?" if found else ""


def literal_message(error: dict[str, Any]) -> str:
    """pydantic's message for a value that is none of a setting's choices (a `literal_error` of
    `ValidationError.errors()`), with the closest choice (`opening: tool`: did you mean 'tools'?;
    `TOOLS` too, as choices are lower case)."""
    allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
    return error["msg"] + did_you_mean(error.get("input"), allowed)

