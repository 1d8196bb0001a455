"""Normalization of questions and answers: Unicode, whitespace, answer types, choice letters.

Every source lands here before validation, so dedup, decontamination and the judges all see the
same text for the same question."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?(e[-+]?\d+)?%?$", re.I)
_LETTER = re.compile(r"^\(?([A-Z])[).:]?$")
_MATH_HINTS = ("\\frac", "\\sqrt", "^", "\\pi", "$", "\\cdot", "\\times")


def clean_text(text: str) -> str:
    """NFKC, no control characters, runs of whitespace collapsed (newlines kept as single ones)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


def is_number(answer: str) -> bool:
    return bool(answer) and bool(_NUMBER.match(answer.replace(" ", "")))


def infer_answer_type(answer: str, choices: list[str] | None) -> str:
    if choices:
        return "choice"
    if is_number(answer):
        return "number"
    if any(hint in answer for hint in _MATH_HINTS):
        return "math"
    return "text"


def normalize_choices(raw: Any) -> list[str] | None:
    """Choices as a list of option texts (a list, or a dict keyed by letter), without "A." prefixes."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, dict):
        raw = [raw[key] for key in sorted(raw)]
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"choices must be a list or a letter-keyed object, got {type(raw).__name__}")
    options = [re.sub(r"^\(?[A-Z][).:]\s+", "", clean_text(str(option))) for option in raw if option is not None and str(option).strip()]
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} choices: at most {len(LETTERS)}")
    return options or None


def normalize_answer(answer: str, answer_type: str, choices: list[str] | None) -> str:
    """A choice answer becomes its letter (from "B", "(B)", "B." or the option's text); a number
    loses thousands separators; everything loses stray whitespace."""
    answer = clean_text(answer)
    if answer_type == "choice" and choices:
        letter = _LETTER.match(answer.upper())
        if letter and LETTERS.index(letter.group(1)) < len(choices):
            return letter.group(1)
        folded = [c.casefold() for c in choices]
        if answer.casefold() in folded:
            return LETTERS[folded.index(answer.casefold())]
        raise ValueError(f"answer {answer!r} is neither a letter A-{LETTERS[len(choices) - 1]} nor one of the choices")
    if answer_type == "number" and is_number(answer):
        return answer.replace(",", "").replace(" ", "")
    return answer
