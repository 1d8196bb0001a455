""""Did you mean": the closest of a fixed set of choices to a name a user got wrong. One rule for
every message that refuses such a name: a config's settings and unknown fields, the command line's
per-source options (`--source jsonl:x.jsonl,category=perceptoin`), category names in rows and in
category-keyed settings."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[_\-.\s]+", name.lower()) if w]


def _word_matches(word: str, choice_word: str) -> bool:
    """`word` is an abbreviation of `choice_word` (`conc`, `concurrency`) or a longer form of it of at
    least 3 letters (`tools`, `tool`: a plural or other ending typed on the name's stem)."""
    return choice_word.startswith(word) or (len(choice_word) >= 3 and word.startswith(choice_word))


def _words_begin(given: str, choice: str) -> bool:
    """The words of `given` begin (or extend the stem of) as many words of `choice` in a row, one
    word each (`no-tools` in `no-tool-free-control`, `tool-free` in it too; `max` in `max-tokens`;
    not `max-turn` in `max-tokens-per-turn`, whose words between are not typed)."""
    typed, words = _words(given), _words(choice)
    # a first word of one letter (`-n`) begins too many names to tell which was meant
    return bool(typed) and len(typed[0]) >= 2 and any(all(_word_matches(word, words[start + i]) for i, word in enumerate(typed))
                               for start in range(len(words) - len(typed) + 1))


def _initials(given: str, choice: str) -> bool:
    """`given` is one word spelling the initials of `choice`'s two or more words (`lr`, `learning_rate`)."""
    typed, words = _words(given), _words(choice)
    return len(typed) == 1 and len(words) >= 2 and typed[0] == "".join(w[0] for w in words)


def closest(given: Any, choices: Iterable[str], n: int = 1) -> list[str]:
    """At most `n` of `choices` closest to `given` (case and surrounding spaces ignored), best first.
    First the choices whose initials `given` spells (`lr` names `learning_rate`), then those whose
    words `given`'s words begin, in a row (`no-tools` names `no-tool-free-control`, `sft` names
    `train_sft`, `max` names `max-tokens` and `max-turns`; not from a first word of one letter), when
    there are 1 to 3 of them in all (more says too little to tell which was meant); else `difflib`'s
    similarity ratio at least 0.6 (`studnet-url` names `student-url`); [] when `given` is not a
    string or nothing is close. Ties in either rule go by the similarity ratio, then by name."""
    if not isinstance(given, str):
        return []
    choices, wanted = list(choices), given.strip().lower()
    if not wanted:
        return []

    def ratio(choice: str) -> float:
        return difflib.SequenceMatcher(None, wanted, choice.lower()).ratio()

    spelt = sorted((c for c in choices if _initials(wanted, c)), key=lambda c: (-ratio(c), c))
    begun = sorted((c for c in choices if c not in spelt and _words_begin(wanted, c)), key=lambda c: (-ratio(c), c))
    if 1 <= len(spelt) + len(begun) <= 3:
        return (spelt + begun)[:n]
    return difflib.get_close_matches(wanted, choices, n=n, cutoff=0.6)


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

