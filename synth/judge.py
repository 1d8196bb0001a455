"""Answer judges, one module for every caller (synthesis, rewards, evaluation).

A verdict is `correct`, `incorrect`, `undecided` or `judge_failed`. Rules decide only what they can
(an option letter or an option's text, one stated number, a yes/no opener, an exact text match);
where they cannot tell they say `undecided`, and the judge asks on: `math-verify` (math and number
answers, in a subprocess pool with a wall-clock time-out: its own `signal.alarm` fails off the main
thread, and Prefect runs tasks in threads), then the LLM judge behind an OpenAI-compatible endpoint
(the paper used Qwen2.5-72B-Instruct) with a strictly parsed yes/no reply. A verdict nobody could
give is `judge_failed`, counted apart by evaluation: never a silent 0 and never a silent 1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["correct", "incorrect", "undecided", "judge_failed"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class Verdict:
    """A judge's verdict on one answer.

    `outcome`: `correct` | `incorrect` (decided), `undecided` (rules could not tell: only
    `rule_verdict` returns it), `judge_failed` (nobody could tell). `method`: what decided or
    failed (choice | number | yesno | text | math | llm | none). `detail`: why it is undecided or
    failed, for people reading trajectories."""

    outcome: Outcome
    method: str
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.outcome == "correct"

    @property
    def decided(self) -> bool:
        return self.outcome in ("correct", "incorrect")

    @property
    def judge_failed(self) -> bool:
        return self.outcome == "judge_failed"


def _decided(correct: bool, method: str, detail: str = "") -> Verdict:
    return Verdict("correct" if correct else "incorrect", method, detail)


def _undecided(method: str, detail: str) -> Verdict:
    return Verdict("undecided", method, detail)


class JudgeConfig(BaseModel):
    """How answers are judged (the pipeline's `judge:` section, shared by every stage)."""

    model_config = ConfigDict(extra="forbid")

    math_timeout_s: float = Field(5.0, gt=0)
    math_workers: int = Field(1, ge=1)
    # Decimal places math-verify rounds floats to: values that differ beyond the sixth decimal are
    # not equal (math-verify's own default, 6, calls 1.0000001 and 1.0000002 equal).
    math_float_rounding: int = Field(10, ge=1)
    llm_url: str | None = None  # an OpenAI-compatible endpoint; None: rules and math-verify only
    llm_model: str | None = None  # the paper used Qwen2.5-72B-Instruct
    api_key_env: str | None = "OPENAI_API_KEY"
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 4
    # A text answer that rules cannot match, with no LLM judge to ask: judge_failed (nobody can
    # tell a paraphrase from a wrong answer), or a benchmark's own string rule: `exact` (normalized
    # equality decides, as VLMEvalKit's exact-match fallback) or `contains` (the gold's words inside
    # the prediction, as OCRBench scores).
    text_fallback: Literal["judge_failed", "exact", "contains"] = "judge_failed"


# ---------------------------------------------------------------------------------------------
# Normalization


def normalize_text(text: str) -> str:
    """Lower case, NFKC, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


_BOXED = re.compile(r"\\boxed\s*\{")


def unwrap(text: str) -> str:
    """The content of the last `\\boxed{...}` (brace-balanced), else the text; without surrounding
    `$`, `\\(`/`\\)` or `\\[`/`\\]` and `\\text{}`/`\\mathrm{}` wrappers."""
    text = text.strip()
    starts = [m.end() for m in _BOXED.finditer(text)]
    if starts:
        depth, start = 1, starts[-1]
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                text = text[start:i]
                break
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)]
    text = re.sub(r"\\(?:text|mathrm|textbf)\s*\{([^{}]*)\}", r"\1", text)
    return text.strip()


# ---------------------------------------------------------------------------------------------
# Numbers: one stated value (digits, a fraction, a percentage, or number words)

_NUMBER_TOKEN = re.compile(
    r"(?<![\w.])(?P<frac>[-+]?\d+\s*/\s*\d+)(?![\w.])"
    r"|(?<![\w.])(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+)(?P<pct>\s*(?:%|percent\b))?"
)
_EXPRESSION = re.compile(r"\\[a-zA-Z]+|\^|\bsqrt\b|\bpi\b|\blog\b|\bsin\b|\bcos\b|\btan\b|[a-zA-Z]\s*[*/]\s*\d|\d\s*[*/]\s*[a-zA-Z]")
_NEGATION = re.compile(r"\b(?:not|never|isn't|isnt|cannot|can't|neither|nor)\b", re.I)
_HEDGE = re.compile(r"\b(?:or|either|between)\b|\bto\b(?=\s*[-+]?\d)|\d\s*[-–]\s*\d", re.I)
_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


@dataclass(frozen=True)
class StatedNumber:
    """A number an answer states: its exact value, whether it was a percentage, its decimal places."""

    value: Fraction
    percent: bool = False
    decimals: int = 0


def _number_words(text: str) -> list[int]:
    """The values of the runs of English number words in `text` ("one hundred and five" = 105)."""
    values: list[int] = []
    total = current = 0
    in_run = False
    for word in re.findall(r"[a-z]+", text.lower().replace("-", " ")):
        if word in _UNITS or word in _TENS:
            current += _UNITS.get(word, 0) + _TENS.get(word, 0)
            in_run = True
        elif word in _SCALES and in_run:
            scale = _SCALES[word]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        elif word == "and" and in_run:
            continue
        elif in_run:
            values.append(total + current)
            total = current = 0
            in_run = False
    if in_run:
        values.append(total + current)
    return values


def stated_number(text: str) -> StatedNumber | None | Literal["several", "expression"]:
    """The one number `text` states, reading its final value after the last `=` (`12 - 5 = 7` is 7).

    Returns a `StatedNumber`; None when it states none; "several" when it states more than one
    (a hedge like `3 or 4`, a range, a list); "expression" when it is a mathematical expression
    (`4\\sqrt{2}`, `2^{10}`) that only math-verify can read."""
    body = unwrap(text).replace("\\%", "%").replace("\\,", "").replace("\\!", "").replace("$", "")
    if "=" in body:
        body = body.rsplit("=", 1)[1]
    body = body.strip().rstrip(".")
    if _EXPRESSION.search(body):
        return "expression"
    found = list(_NUMBER_TOKEN.finditer(body))
    if len(found) > 1 or (found and _HEDGE.search(body)):
        return "several"
    if len(found) == 1:
        match = found[0]
        if match.group("frac"):
            numerator, denominator = (int(p) for p in match.group("frac").replace(" ", "").split("/"))
            return StatedNumber(Fraction(numerator, denominator)) if denominator else None
        raw = match.group("num").replace(",", "")
        mantissa = raw.lower().split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return StatedNumber(Fraction(raw), bool(match.group("pct")), decimals)
    words = _number_words(body)
    if len(words) > 1:
        return "several"
    if words:
        return StatedNumber(Fraction(words[0]), "percent" in body.lower())
    return None


def number_verdict(prediction: str, gold: str) -> Verdict:
    """Rules for numeric answers. Only a prediction that states one number decides; integers
    compare exactly (no relative tolerance); a percentage against a plain number decides when the
    numbers are equal as written, and is undecided when they agree only after scaling by 100."""
    ref = stated_number(gold)
    if not isinstance(ref, StatedNumber):
        return _undecided("number", "the gold answer is not one plain number")
    if _NEGATION.search(prediction):
        return _undecided("number", "a negation")
    pred = stated_number(prediction)
    if pred == "several":
        return _undecided("number", "several answers")
    if pred == "expression":
        return _undecided("number", "an expression")
    if pred is None:
        return _undecided("number", "no number stated")
    if pred.value == ref.value:
        return _decided(True, "number")
    if pred.percent != ref.percent and (pred.value == ref.value * 100 or pred.value * 100 == ref.value):
        return _undecided("number", "a percentage against a fraction")
    if pred.decimals and abs(pred.value - ref.value) <= Fraction(1, 2 * 10**pred.decimals):
        return _undecided("number", "a rounded value")
    if ref.decimals and abs(pred.value - ref.value) <= Fraction(1, 2 * 10**ref.decimals):
        return _undecided("number", "more precise than the gold answer")
    return _decided(False, "number")


def is_plain_number(text: str) -> bool:
    """Whether `text` is nothing but one number (digits, a fraction, a percentage, number words)."""
    body = unwrap(text).strip().rstrip(".")
    if _NUMBER_TOKEN.fullmatch(body):
        return True
    words = re.findall(r"[a-z]+", body.lower().replace("-", " "))
    return bool(words) and all(w in _UNITS or w in _TENS or w in _SCALES or w == "and" for w in words)


# ---------------------------------------------------------------------------------------------
# Choices: an option letter or an option's text

_LETTER_ALONE = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LEADING_LABEL = re.compile(r"(?:\(([A-Za-z])\)|([A-Za-z])[.:)])\s*(.*)", re.S)
_ANSWER_PHRASE = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|would be|should be|:)?\s*\(?([A-Z])\)?(?![\w'])")
_NOT_A_LETTER = re.compile(r"\s(?!(?:or|and|nor|but)\b)[a-z]")  # after "A" or "I": an article or a pronoun
_LONE_LETTER = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")


def _letters(choices: list[str] | None) -> str:
    return string.ascii_uppercase[: len(choices)] if choices else string.ascii_uppercase


def _option_by_text(text: str, choices: list[str] | None, contains: bool) -> int | None:
    if not choices:
        return None
    wanted = normalize_text(text)
    options = [normalize_text(c) for c in choices]
    equal = [i for i, option in enumerate(options) if option and option == wanted]
    if len(equal) == 1:
        return equal[0]
    if contains and wanted:
        inside = [i for i, option in enumerate(options) if option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", wanted)]
        if len(inside) == 1:
            return inside[0]
    return None


def _article(text: str, match: re.Match) -> bool:
    """Whether the capital letter of `match` is the article A or the pronoun I ("A dog", "I think")."""
    return match.group(1) in ("A", "I") and _NOT_A_LETTER.match(text, match.end()) is not None


def choice_of(text: str, choices: list[str] | None) -> str | None | Literal["several"]:
    """The option a text names, as a letter; None when it names none; "several" for a hedge.

    In order: the option's text (an option's text beats a letter: `a dog` with options
    ["a cat", "a dog"] is B); a lone letter (`B`, `(B)`, `b.`); a leading label (`B. a dog`, with
    the text deciding if it names another option); an answer phrase (`The answer is B`); one
    option's text inside the sentence; one capital letter standing alone in the sentence (`I
    think it is C`). An article or the pronoun I is never an option letter, and a letter outside the
    options is ignored."""
    text = unwrap(text)
    letters = _letters(choices)
    by_text = _option_by_text(text, choices, contains=False)
    if by_text is not None:
        return letters[by_text]
    alone = _LETTER_ALONE.fullmatch(text.strip())
    if alone and alone.group(1).upper() in letters:
        return alone.group(1).upper()
    label = _LEADING_LABEL.match(text.strip())
    if label:
        letter = (label.group(1) or label.group(2)).upper()
        rest = label.group(3)
        named = _option_by_text(rest, choices, contains=False) if rest else None
        if named is not None:
            return letters[named]
        if letter in letters:
            return letter
    phrase = [m.group(1) for m in _ANSWER_PHRASE.finditer(text) if m.group(1) in letters and not _article(text, m)]
    if len(set(phrase)) == 1:
        return phrase[0]
    inside = _option_by_text(text, choices, contains=True)
    if inside is not None:
        return letters[inside]
    lone = set()
    for match in _LONE_LETTER.finditer(text):
        if match.group(1) in letters and not _article(text, match):
            lone.add(match.group(1))
    if len(lone) > 1 or len(set(phrase)) > 1:
        return "several"
    return lone.pop() if lone else None


def choice_verdict(prediction: str, gold: str, choices: list[str] | None) -> Verdict:
    ref = choice_of(gold, choices)
    if ref is None or ref == "several":
        return _undecided("choice", "the gold answer names no single option")
    pred = choice_of(prediction, choices)
    if pred == "several":
        return _undecided("choice", "several options")
    if pred is None:
        return _undecided("choice", "no option named")
    return _decided(pred == ref, "choice")


# ---------------------------------------------------------------------------------------------
# The rules together


def rule_verdict(prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    """What rules alone can say: `correct`, `incorrect`, or `undecided` where only math-verify or
    an LLM could tell (never `judge_failed`)."""
    if prediction is None or not prediction.strip():
        return _decided(False, "none", "no answer")
    if answer_type == "choice":
        verdict = choice_verdict(prediction, gold, choices)
        if verdict.decided or choices:
            return verdict
    gold_words = normalize_text(unwrap(gold))
    if gold_words in ("yes", "no"):
        opener = normalize_text(unwrap(prediction)).split()[:1]
        if opener and opener[0] in ("yes", "no"):
            return _decided(opener[0] == gold_words, "yesno")
        return _undecided("yesno", "the prediction does not open with yes or no")
    if answer_type == "math":
        if is_plain_number(gold) and isinstance(stated_number(prediction), StatedNumber):
            return number_verdict(prediction, gold)
        return _undecided("math", "an expression")
    if answer_type == "number" or is_plain_number(gold):
        verdict = number_verdict(prediction, gold)
        if verdict.decided or answer_type == "number":
            return verdict
    if normalize_text(unwrap(prediction)) == gold_words:
        return _decided(True, "text")
    return _undecided("text", "the texts differ")  # a paraphrase may still be right


def text_fallback_verdict(prediction: str, gold: str, rule: str) -> Verdict:
    """A benchmark's own string rule for a text answer no LLM judged (`JudgeConfig.text_fallback`)."""
    pred, ref = normalize_text(unwrap(prediction)), normalize_text(unwrap(gold))
    if rule == "contains":
        return _decided(bool(ref) and re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", pred) is not None, "text", "contains")
    return _decided(pred == ref, "text", "exact")


# ---------------------------------------------------------------------------------------------
# math-verify

_SQRT = re.compile(r"\bsqrt\s*\(")


def plain_math_to_latex(text: str) -> str:
    """Plain-text math as LaTeX math-verify reads (`pi/2` → `\\pi/2`, `sqrt(3)/2` → `\\sqrt{3}/2`,
    `x**2` → `x^2`); text that already has LaTeX commands is left as it is."""
    if "\\" in text:
        return text
    out = text.replace("**", "^")
    while (match := _SQRT.search(out)) is not None:
        depth, end = 1, match.end()
        while end < len(out) and depth:
            depth += {"(": 1, ")": -1}.get(out[end], 0)
            end += 1
        if depth:
            break
        out = out[: match.start()] + "\\sqrt{" + out[match.end() : end - 1] + "}" + out[end:]
    out = re.sub(r"\bpi\b|π", r"\\pi", out)
    out = re.sub(r"\b(?:infinity|inf)\b|∞", r"\\infty", out)
    return out


def _as_math(text: str) -> str:
    text = plain_math_to_latex(unwrap(text))
    return text if "$" in text else f"${text}$"


def verify_math(gold: str, prediction: str, timeout_s: int, float_rounding: int = 10) -> bool | None:
    """math-verify on one pair, in a worker process on its main thread. True or False when
    math-verify decides; None when it cannot: an unparsable side, its own time-out or error, or a
    False for two numbers it cannot tell apart at its working precision (a huge power tower written
    two ways differs by an imprecise zero, and math-verify answers False)."""
    from math_verify import parse, verify

    try:
        gold_parsed = parse(_as_math(gold), parsing_timeout=timeout_s, raise_on_error=True)
        pred_parsed = parse(_as_math(prediction), parsing_timeout=timeout_s, raise_on_error=True)
        if not gold_parsed or not pred_parsed:
            return None
        if verify(gold_parsed, pred_parsed, float_rounding=float_rounding, timeout_seconds=timeout_s, raise_on_error=True):
            return True
        return None if _indistinguishable(gold_parsed[0], pred_parsed[0]) else False
    except Exception:  # math-verify's TimeoutException and errors alike: nobody decided
        return None


def _indistinguishable(gold, prediction) -> bool:
    """Two numbers whose difference is below their magnitude's working precision (30 digits)."""
    try:
        import sympy

        if not (isinstance(gold, sympy.Basic) and isinstance(prediction, sympy.Basic) and gold.is_number and prediction.is_number):
            return False
        a, b = sympy.N(gold, 30), sympy.N(prediction, 30)
        scale = max(abs(a), abs(b))
        return bool(scale > 10**15 and abs(a - b) <= scale * sympy.Float("1e-25"))
    except Exception:
        return True  # the magnitudes could not even be compared: not a decision either way


class MathVerifier:
    """math-verify in a process pool; a pair that runs past the wall-clock limit is abandoned and
    the pool recycled, so one pathological expression cannot stall a stage. `check` returns True,
    False, or None (not decided: a time-out, a crashed worker, an error inside math-verify)."""

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, fn: Callable[..., bool | None] = verify_math,
                 float_rounding: int = 10) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.fn = fn
        self.float_rounding = float_rounding
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def check(self, gold: str, prediction: str) -> bool | None:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded process
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        future = self._pool.submit(self.fn, gold, prediction, max(1, int(self.timeout_s)), float_rounding=self.float_rounding)
        try:
            return future.result(timeout=self.timeout_s + 30)  # worker start-up (spawn + sympy) included
        except Exception:  # time-out, a crashed worker, an error inside math-verify
            self._recycle()
            return None

    def _recycle(self) -> None:
        if self._pool is not None:
            # The executor cannot cancel a running call: stop its workers outright.
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------------------------------------
# The LLM judge

_YES_NO = re.compile(r"[*\s]*(?:\\boxed\{\s*)?(yes|no)(?:\s*\})?[\s.!*]*", re.I)


def parse_yes_no(reply: str) -> bool | None:
    """The LLM judge's verdict, parsed strictly: the reply is the one word yes or no (any case,
    optionally in `\\boxed{}`, bold, or followed by a full stop); anything else is None."""
    match = _YES_NO.fullmatch(reply.strip())
    return None if match is None else match.group(1).lower() == "yes"


def judge_prompt(question: str, gold: str, prediction: str) -> str:
    """The LLM judge's prompt (`synth/prompts/judge.txt`) filled in."""
    template = (resources.files("synth") / "prompts" / "judge.txt").read_text()
    return template.format(question=question, gold=gold, prediction=prediction)


class Judge:
    """Rules, then math-verify, then the LLM judge where configured. Share one per stage; close it.

    `judge` returns a decided `Verdict` or a `judge_failed` one, never `undecided`."""

    def __init__(self, cfg: JudgeConfig | None = None) -> None:
        self.cfg = cfg or JudgeConfig()
        self.math = MathVerifier(self.cfg.math_workers, self.cfg.math_timeout_s, float_rounding=self.cfg.math_float_rounding)
        self._llm = None
        if self.cfg.llm_url:
            from synth.policy import EndpointPolicy

            if not self.cfg.llm_model:
                raise ValueError("judge.llm_model: required with judge.llm_url")
            api_key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
            self._llm = EndpointPolicy(self.cfg.llm_url, self.cfg.llm_model, api_key=api_key,
                                       timeout_s=self.cfg.llm_timeout_s, max_retries=self.cfg.llm_max_retries, max_in_flight=64)

    async def judge(self, question: str, prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
        verdict = rule_verdict(prediction, gold, answer_type, choices)
        if verdict.decided:
            return verdict
        assert prediction is not None  # an empty prediction is decided by the rules
        if verdict.method in ("math", "number") and verdict.detail not in ("several answers", "a negation"):
            equal = await asyncio.to_thread(self.math.check, gold, prediction)
            if equal is True or (equal is False and self._llm is None):
                return _decided(equal, "math")
            if self._llm is None:
                return Verdict("judge_failed", "math", "math-verify could not decide (time-out, error or unparsable)")
        if self._llm is not None:
            return await self._ask_llm(question, prediction, gold)
        if verdict.method == "text" and self.cfg.text_fallback != "judge_failed":
            return text_fallback_verdict(prediction, gold, self.cfg.text_fallback)
        return Verdict("judge_failed", verdict.method, f"undecided by rules ({verdict.detail}) and no LLM judge configured")

    async def _ask_llm(self, question: str, prediction: str, gold: str) -> Verdict:
        try:
            generation = await self._llm.generate(
                [{"role": "user", "content": [{"type": "text", "text": judge_prompt(question, gold, prediction)}]}], [],
                stop=[], max_tokens=8, temperature=0.0,
            )
        except Exception as exc:
            return Verdict("judge_failed", "llm", f"the LLM judge failed: {type(exc).__name__}")
        said = parse_yes_no(generation.text)
        if said is None:
            return Verdict("judge_failed", "llm", f"the LLM judge replied {generation.text[:40]!r}, not yes or no")
        return _decided(said, "llm")

    async def aclose(self) -> None:
        self.math.close()
        if self._llm is not None:
            await self._llm.aclose()
