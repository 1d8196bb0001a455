"""Answer judges, one module for every caller: rules first, then math-verify for math answers.

A verdict says how it was decided; `judge_failed` marks a verdict no judge could give (never a
silent 0). The LLM judge for free-form answers joins here in the synthesis issue.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    method: str  # choice | number | text | math | none
    judge_failed: bool = False


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def parse_number(text: str) -> float | None:
    cleaned = text.strip().rstrip(".").replace("$", "").replace("%", "").strip()
    match = _NUMBER.fullmatch(cleaned) or _NUMBER.search(cleaned)
    if not match:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def _is_plain_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text.strip().rstrip(".").replace("$", "").replace("%", "").strip()))


def _choice_letter(text: str, choices: list[str] | None) -> str | None:
    text = text.strip()
    match = re.fullmatch(r"\(?([A-Za-z])[).:]?(?:\s.*)?", text, re.S)
    if match:
        return match.group(1).upper()
    if choices:  # the answer may be the option's text rather than its letter
        for i, choice in enumerate(choices):
            if normalize_text(choice) == normalize_text(text):
                return string.ascii_uppercase[i]
    return None


def _math_equal(prediction: str, gold: str) -> Verdict:
    from math_verify import parse, verify

    # math-verify's own time-outs use signal.alarm, which fails off the main thread (Prefect
    # runs tasks in threads): disable them here; the synthesis issue moves this into a
    # subprocess pool with an outer wall-clock time-out.
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${prediction}$", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return Verdict(False, "math", judge_failed=not gold_parsed)
        return Verdict(bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), "math")
    except Exception:  # math-verify raises many sympy errors on odd input
        return Verdict(False, "math", judge_failed=True)


def judge_answer(prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    """Is `prediction` right for `gold`? Rules by answer type; math through math-verify."""
    if prediction is None or not prediction.strip():
        return Verdict(False, "none")
    if answer_type == "choice":
        pred, ref = _choice_letter(prediction, choices), _choice_letter(gold, choices)
        if pred is None or ref is None:
            return Verdict(normalize_text(prediction) == normalize_text(gold), "text")
        return Verdict(pred == ref, "choice")
    if answer_type == "math" and not (_is_plain_number(prediction) and _is_plain_number(gold)):
        return _math_equal(prediction, gold)
    if answer_type in ("number", "math"):
        pred, ref = parse_number(prediction), parse_number(gold)
        if ref is None or not _is_plain_number(gold):
            return Verdict(False, "number", judge_failed=True)
        return Verdict(pred is not None and math.isclose(pred, ref, rel_tol=1e-4, abs_tol=1e-6), "number")
    return Verdict(normalize_text(prediction) == normalize_text(gold), "text")
