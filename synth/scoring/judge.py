"""Answer judges, one module for every caller (synthesis, rewards, evaluation).

A verdict is `correct`, `incorrect`, `undecided` or `judge_failed`. Rules decide only what they can
(an option letter or an option's text, one stated number, a yes/no opener, an exact text match);
where they cannot tell they say `undecided`, and the judge asks on: `math-verify` (math and number
answers, in a subprocess pool with a wall-clock time-out: its own `signal.alarm` fails off the main
thread, and Prefect runs tasks in threads), then the LLM judge behind an OpenAI-compatible endpoint
(the paper used Qwen2.5-72B-Instruct) with a strictly parsed yes/no reply. A verdict nobody could
give is `judge_failed`, counted apart by evaluation: never a silent 0 and never a silent 1.

A rule credits an answer only when nothing in it changes what it says: a bound (`at least 7`,
`7+`, `≥ 7`), a negation (`not A`, `≠ 7`), a hedge (`A or B`, `yes or no`, two different
`\\boxed{}` values), a scale (`7 million`), an operation (`7²`, `7!`, `2x`) or a normalization that
empties or changes a gold answer (`C++` is not `C`, `3-1` is not `31`). Such answers are undecided:
math-verify sees only the ones it can read without being fooled (it reads `7+` and `≠ 7` as 7), the
LLM judge sees the rest. Every rule is linear in the answer's length, and answers longer than
`JudgeConfig.max_answer_chars` are not judged at all (`judge_failed`).
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

from pydantic import Field

from curation.strict_config import StrictConfig
from synth.runtime.policy import MIN_REQUEST_TIMEOUT_S, EndpointUrl, RequestOptions

Outcome = Literal["correct", "incorrect", "undecided", "judge_failed"]

# Rules read at most this many characters of an answer (or a gold answer); longer ones are left
# undecided, so no rule's cost grows with what a policy chooses to write.
MAX_RULE_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    """A judge's verdict on one answer.

    `outcome`: `correct` | `incorrect` (decided), `undecided` (rules could not tell: only
    `rule_verdict` returns it), `judge_failed` (nobody could tell). `method`: what decided or
    failed (choice | number | yesno | text | math | llm | none). `detail`: why it is undecided or
    failed, for people reading trajectories. `math_verify`: on an undecided verdict, whether
    math-verify may decide it (False for bounds, negations, hedges and scales, which math-verify
    reads as the bare number: `7+` and `≠ 7` come back equal to 7)."""

    outcome: Outcome
    method: str
    detail: str = ""
    math_verify: bool = False

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


def _undecided(method: str, detail: str, math_verify: bool = False) -> Verdict:
    return Verdict("undecided", method, detail, math_verify)


class JudgeConfig(StrictConfig):
    """How answers are judged (the pipeline's `judge:` section, shared by every stage)."""

    math_timeout_s: float = Field(5.0, gt=0)
    math_workers: int = Field(1, ge=1)
    # Decimal places math-verify rounds floats to: values that differ beyond the sixth decimal are
    # not equal (math-verify's own default, 6, calls 1.0000001 and 1.0000002 equal).
    math_float_rounding: int = Field(10, ge=1)
    llm_url: EndpointUrl | None = None  # an OpenAI-compatible endpoint; None: rules and math-verify only
    llm_model: str | None = None  # the paper used Qwen2.5-72B-Instruct
    api_key_env: str | None = "OPENAI_API_KEY"
    llm_timeout_s: float = Field(60.0, ge=MIN_REQUEST_TIMEOUT_S)
    llm_max_retries: int = 4
    llm_request: RequestOptions = Field(default_factory=RequestOptions)  # extra fields, retries of 5xx
    # A text answer that rules cannot match (an answer that states no number to a number's gold,
    # such as `unknown`, is one), with no LLM judge to ask: judge_failed (nobody can tell a
    # paraphrase from a wrong answer), or a benchmark's own string rule: `exact` (normalized
    # equality decides, as VLMEvalKit's exact-match fallback) or `contains` (the gold's words inside
    # the prediction, as OCRBench scores).
    text_fallback: Literal["judge_failed", "exact", "contains"] = "judge_failed"
    # Answers longer than this are judge_failed without asking anyone: the bound on what rules,
    # math-verify and the LLM judge are given (the reward already caps perception and search
    # answers at 300 characters; reasoning answers have no reward cap).
    max_answer_chars: int = Field(MAX_RULE_CHARS, ge=1)


# ---------------------------------------------------------------------------------------------
# Canonical text: one spelling for characters that look alike


_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ"
_SUPERSCRIPT_RUN = re.compile(f"[{_SUPERSCRIPTS}]+")
_SUPERSCRIPT_PLAIN = str.maketrans(_SUPERSCRIPTS, "0123456789+-=()ni")
# Minus signs and dashes (U+2212 MINUS SIGN, hyphens, figure/en/em dashes, heavy minus, small
# hyphen-minus), the fraction slash and the Arabic decimal marks, which NFKC leaves alone.
_LOOKALIKES = str.maketrans({**{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2796\u02d7\ufe58\u2043"},
                             "\u2044": "/", "\u2215": "/", "\u066b": ".", "\u066c": ","})


def _caret(match: re.Match) -> str:
    run = match.group(0).translate(_SUPERSCRIPT_PLAIN)
    return f"^{run}" if len(run) == 1 else f"^{{{run}}}"


def _plain_char(ch: str) -> str:
    if ch.isascii():
        return ch
    if unicodedata.category(ch) == "Cf":  # zero-width spaces and joiners, soft hyphens, marks
        return ""
    if ch.isdecimal():  # Arabic-Indic, Devanagari, ... digits
        return str(unicodedata.decimal(ch))
    return ch


# Cyrillic and Greek capitals that look like Latin ones, mapped where they stand alone (`A В` is
# two option letters); inside a word they are left alone.
_CONFUSABLE_CAPITALS = str.maketrans("АВСЕНКМОРТХΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABCEHKMOPTXABEZHIKMNOPTYX")
_LONE_CONFUSABLE = re.compile(r"(?<![^\W\d_])[АВСЕНКМОРТХΑΒΕΖΗΙΚΜΝΟΡΤΥΧ](?![^\W\d_])")


def canonical(text: str) -> str:
    """`text` with look-alike characters spelled one way: NFKC (full-width letters and digits,
    non-breaking spaces, `½` → `1/2`), superscripts as powers (`7²` → `7^2`: NFKC alone would
    make it `72`), every minus sign and dash as `-`, Unicode digits as ASCII digits, and no
    invisible format characters; a lone Cyrillic or Greek capital that looks like a Latin one is that
    letter (`В` → `B`). Linear in the length of `text`."""
    if text.isascii():
        return text
    text = _SUPERSCRIPT_RUN.sub(_caret, text)
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    text = "".join(map(_plain_char, text))
    return _LONE_CONFUSABLE.sub(lambda m: m.group(0).translate(_CONFUSABLE_CAPITALS), text)


# ---------------------------------------------------------------------------------------------
# Text keys


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ARTICLE_WORDS = ("a", "an", "the")
# Punctuation that only separates or ends words: compared as a space. Anything else (`+`, `#`,
# `&`, `/`, `%`, ...) is part of what is written (`C++`, `C#`, `AT&T`), and punctuation between two
# digits is kept too (`3-1`, `3.1`, `3:1` and `31` are four answers).
_SEPARATORS = frozenset(".,;:!?'\"`()[]{}-_*…“”‘’«»¿¡")


def normalize_text(text: str) -> str:
    """Lower case, NFKC, no punctuation, no articles, single spaces (SQuAD's normalization).

    Lossy: `C++` becomes `c` and `3-1` becomes `31`, and a gold answer `A` or `The` becomes empty.
    Good for comparing sets of words; never used to decide that two answers are equal (that is
    `answer_key`)."""
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_key(text: str) -> str:
    """The form two answers are compared in: `canonical`, lower case, punctuation that only
    separates words as spaces (kept between digits), single spaces, and a leading article dropped
    when words follow it. `The Velmora Tower.` and `velmora tower` have one key; `C++` and `C`,
    `3-1` and `31`, `A` and `.`, `The` and `an`, `Vitamin A` and `Vitamin` do not."""
    text = canonical(text).lower()
    chars = list(text)
    for i, ch in enumerate(chars):
        if ch in _SEPARATORS and not (0 < i < len(chars) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()):
            chars[i] = " "
    words = "".join(chars).split()
    if len(words) > 1 and words[0] in _ARTICLE_WORDS:
        words = words[1:]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# \boxed{} answers

_BOXED = re.compile(r"\\boxed\s*\{")


def _boxes(text: str) -> list[tuple[int, int, int]]:
    """(start of `\\boxed`, start of its content, end of its content) of each outermost, closed
    `\\boxed{...}`, in order. One pass over `text`."""
    spans: list[tuple[int, int, int]] = []
    done = 0
    for match in _BOXED.finditer(text):
        if match.start() < done:
            continue  # inside the previous box
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            break  # unclosed: neither it nor anything after it is a box
        spans.append((match.start(), match.end(), i - 1))
        done = i
    return spans


def boxed_answers(text: str) -> list[str]:
    """The contents of the outermost `\\boxed{...}` of `text`, stripped, in order."""
    return [text[start:end].strip() for _, start, end in _boxes(text)]


def unwrap(text: str) -> str:
    """The content of the last `\\boxed{...}` (brace-balanced), else the text; without surrounding
    `$`, `\\(`/`\\)` or `\\[`/`\\]` and `\\text{}`/`\\mathrm{}` wrappers. (Two different boxed
    values are a hedge: `rule_verdict` checks that before it unwraps.)"""
    text = text.strip()
    spans = _boxes(text)
    if spans:
        text = text[spans[-1][1] : spans[-1][2]]
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)]
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}", r"\1", text)
    return text.strip()


def _outside_boxes(text: str) -> str:
    spans = _boxes(text)
    if not spans:
        return ""
    pieces, last = [], 0
    for start, _, end in spans:
        pieces.append(text[last:start])
        last = end + 1
    pieces.append(text[last:])
    return " ".join(pieces)


# ---------------------------------------------------------------------------------------------
# Words and symbols that change what an answer says

_NEGATIONS = frozenset(("not no never none neither nor cannot without except excluding nothing but instead besides "
                         "non wrong incorrect false untrue").split())
_BOUNDS = frozenset(("more less fewer greater larger bigger smaller higher lower over under above below "
                     "beyond exceed exceeds exceeding within upto max maximum minimum nearly almost plus onwards "
                     "upwards than till until").split())
# Bounds of two words: `at least 7`, `at most 7` (`the most common is 7` states a value), `up to 7`.
_PAIR_BOUNDS = frozenset((("at", "least"), ("at", "most"), ("up", "to")))
_HEDGES = frozenset("or either maybe perhaps possibly unsure uncertain unclear between".split())
_APPROXIMATE = frozenset("about approximately approx around roughly circa ca ish estimated".split())
# Words that change the value of the number they go with.
_VALUE_WORDS = frozenset(("squared cubed factorial power root half halves quarter quarters thirds fourths fifths "
                          "tenths hundredths thousandths millionths fold double twice triple thrice reciprocal inverse "
                          "bc bce minus").split())
_EXPRESSION_WORDS = frozenset("sqrt pi log ln lg sin cos tan cot sec csc exp arcsin arccos arctan".split())
_BOUND_SYMBOLS = frozenset("<>≤≥≮≯≲≳⩽⩾≪≫")
_APPROX_SYMBOLS = frozenset("≈~∼≃≅")
# Combining marks that strike a character out (`7̸`, `A̶`), and Markdown's strikethrough `~~`.
_STRIKES = frozenset("\u0334\u0335\u0336\u0337\u0338\u20d2\u20d3\u20e0\u20e5\u20eb")
_HARMLESS_SYMBOLS = frozenset(".,:;()[]\"'`“”‘’′″-&°$€£¥₹¢")
_CURRENCY = frozenset("$€£¥₹¢")

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def _symbol_kind(ch: str) -> str | None:
    """negation | bound | list for a relation symbol, by its Unicode name (`≧`, `≰`, `∉`, `⊀` as
    well as `<`, `≥`, `≠`), or None."""
    if ch in _BOUND_SYMBOLS:
        return "bound"
    if ch.isascii() or unicodedata.category(ch) not in ("Sm", "Mn", "Me"):
        return None
    if ch in _STRIKES:
        return "negation"
    name = unicodedata.name(ch, "")
    if name.startswith("NOT ") or " NOT " in name or name.startswith("NEITHER "):
        return "negation"
    if any(word in name for word in ("LESS-THAN", "GREATER-THAN", "PRECEDES", "SUCCEEDS")):
        return "bound"
    if "PLUS-MINUS" in name or "MINUS-OR-PLUS" in name:
        return "list"
    return None


def _is_negation(word: str) -> bool:
    return word in _NEGATIONS or word.endswith(("n't", "n’t"))


# ---------------------------------------------------------------------------------------------
# Numbers: one stated value (digits, a fraction, a percentage, or number words)

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
# Scale words and suffixes after a number: `7 thousand`, `7 millions`, `7k`, `7bn`, `$7m`.
_SCALE_WORDS = {**_SCALES, **{f"{w}s": v for w, v in _SCALES.items()}, "dozen": 12, "dozens": 12, "lakh": 10**5, "crore": 10**7}
_SCALE_SUFFIXES = {"k": 1000, "K": 1000, "bn": 10**9, "mn": 10**6}
_CURRENCY_SUFFIXES = {"m": 10**6, "M": 10**6, "mil": 10**6, "mln": 10**6, "b": 10**9, "B": 10**9}
# Units: words that say what was counted or measured and leave the value alone. Any other word
# of two or more letters is read as a noun (`7 apples`); a lone letter that is no unit is a
# variable (`2x`), and a capital scale-or-unit letter without a currency (`7M`) is unclear.
_UNIT_WORDS = frozenset((
    "mm cm m km nm um μm in inch inches ft foot feet yd yds yard yards mi mile miles meter meters metre metres "
    "centimeter centimeters centimetre centimetres millimeter millimeters millimetre millimetres kilometer "
    "kilometers kilometre kilometres mg g kg lb lbs pound pounds oz ounce ounces gram grams kilogram kilograms ton "
    "tons tonne tonnes ms s sec secs second seconds min mins minute minutes h hr hrs hour hours day days week weeks "
    "month months year years yr yrs ml l liter liters litre litres gal gallon gallons deg degree degrees rad "
    "radian radians kelvin celsius fahrenheit dollar dollars usd cent cents eur euro euros gbp yuan rmb cny yen "
    "jpy rupee rupees inr px pixel pixels kb mb gb tb byte bytes bit bits mph kph kmh hz khz mhz ghz kw kwh "
    "cal kcal pa kpa atm sq square cubic acre acres hectare hectares ha am pm pcs pc pts pt").split())
_UNIT_LETTERS = frozenset("msghlLWVJK")
_ORDINAL_SUFFIXES = frozenset(("st", "nd", "rd", "th"))
_NUMBER_WORDS = frozenset({*_UNITS, *_TENS, *_SCALES})

_LATEX = [
    (re.compile(r"\\(?:leq|le|leqslant)(?![a-zA-Z])"), "≤"), (re.compile(r"\\(?:geq|ge|geqslant)(?![a-zA-Z])"), "≥"),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])"), "≠"), (re.compile(r"\\lt(?![a-zA-Z])"), "<"), (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\(?:approx|sim|simeq|cong)(?![a-zA-Z])"), "≈"), (re.compile(r"\\(?:pm|mp)(?![a-zA-Z])"), "±"),
    (re.compile(r"\\(?:times|cdot)(?![a-zA-Z])"), "×"), (re.compile(r"\\infty(?![a-zA-Z])"), "∞"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?"), "°"), (re.compile(r"\\%"), "%"), (re.compile(r"\{,\}|\\[,!]"), ""),
    (re.compile(r"\\[;: ]|\\quad|\\qquad"), " "), (re.compile(r"\\(?:left|right)(?![a-zA-Z])"), ""),
    (re.compile(r"<=|=<"), "≤"), (re.compile(r">=|=>"), "≥"), (re.compile(r"!=|=/=|=\\=|/="), "≠"), (re.compile(r"={2,}"), "="),
    (re.compile(r"\+/-|\+-(?=\s*\d)"), "±"), (re.compile(r"-/\+"), "∓"),
    (re.compile(r"\*\*|__"), ""),  # Markdown bold
    # A power of a unit is part of the unit (`7 m^2`, `9.8 m s^{-2}`), not a second number.
    (re.compile(r"(?<=[^\W\d_])\^\s*\{?\s*-?\d+\s*\}?"), ""),
]
_TOKENS = re.compile(
    r"(?P<frac>(?<![\w.])\d+[ \t]*/[ \t]*\d+(?![\w.]))"
    r"|(?P<num>(?<![\w.])(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.S,
)
_MAX_DIGITS = 400  # digits in one number, and the largest power of ten: beyond, math-verify decides


@dataclass(frozen=True)
class StatedNumber:
    """A number an answer states: its exact value, whether it was a percentage, its decimal places,
    the scale word or suffix applied (`7 thousand` and `7k`: value 7000, scale 1000), whether it was
    stated as approximate (`about 7`, `≈ 7`), and a known unit written with it (`7 cm`: "cm")."""

    value: Fraction
    percent: bool = False
    decimals: int = 0
    scale: int = 1
    approximate: bool = False
    unit: str | None = None

    @property
    def bare(self) -> Fraction:
        """The value without its scale word (`7 million`: 7)."""
        return self.value / self.scale


NotOneKind = Literal["several", "qualified", "expression", "too large", "math symbol", "unclear"]


@dataclass(frozen=True)
class NotOneNumber:
    """Why an answer does not state one plain number. `kind`: `several` (`3 or 4`, a range, a list,
    an equation whose sides differ), `qualified` (a bound, a negation, a hedge or a word that
    changes the value: `at least 7`, `no 7`, `7 squared`), `expression` (`4\\sqrt{2}`, `7²`, `7!`,
    `2x`: math-verify can read it), `too large` (more than 400 digits or a power of ten beyond 400:
    math-verify, under its time-out), `math symbol` (a mathematical symbol the rules do not read:
    `7 ∈`; math-verify may read it in a math answer, but it drops symbols it does not know, so a
    number answer stays undecided), `unclear` (a symbol or a scale-or-unit letter the rules do not
    know: `7M`, `#7`). `why`: for people reading trajectories."""

    kind: NotOneKind
    why: str

    @property
    def math_readable(self) -> bool:
        """Whether math-verify can decide it without reading it as a bare number."""
        return self.kind in ("expression", "too large")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _math_text(text: str) -> str:
    body = canonical(unwrap(text))
    for pattern, replacement in _LATEX:
        body = pattern.sub(replacement, body)
    return body.strip()


def _tokenize(body: str) -> list[_Token]:
    return [_Token(m.lastgroup or "other", m.group(0)) for m in _TOKENS.finditer(body)]


def _number_value(token: _Token) -> Fraction | NotOneNumber | None:
    """The value of a `num` or `frac` token, without building numbers beyond `_MAX_DIGITS`."""
    if token.kind == "frac":
        numerator, denominator = (p.strip() for p in token.text.split("/"))
        if len(numerator) > _MAX_DIGITS or len(denominator) > _MAX_DIGITS:
            return NotOneNumber("too large", "a fraction with more than 400 digits")
        return Fraction(int(numerator), int(denominator)) if int(denominator) else None
    mantissa, _, exponent = token.text.replace(",", "").lower().partition("e")
    if len(mantissa) > _MAX_DIGITS + 1 or len(exponent.lstrip("+-")) > 3 or (exponent and abs(int(exponent)) > _MAX_DIGITS):
        return NotOneNumber("too large", "more than 400 digits or a power of ten beyond 400")
    return Fraction(mantissa) * Fraction(10) ** int(exponent or 0)


def _run_value(words: list[str]) -> tuple[int, int]:
    """(value, largest scale of a thousand or more) of one run of English number words."""
    total = current = 0
    largest = 1
    for word in words:
        if word in _UNITS or word in _TENS:
            current += _UNITS.get(word, 0) + _TENS.get(word, 0)
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            largest = max(largest, _SCALES[word])
            current = 0
    return total + current, largest


def _number_word_runs(tokens: list[_Token], start: int) -> list[tuple[int, int]]:
    """(first, last) token indices of each run of number words from `start` on (`one hundred and
    five`, `twenty-one`)."""
    runs: list[tuple[int, int]] = []
    i = start
    while i < len(tokens):
        if tokens[i].kind == "word" and tokens[i].text.lower() in _NUMBER_WORDS:
            first = last = i
            j = i + 1
            while j < len(tokens):
                kind, text = tokens[j].kind, tokens[j].text.lower()
                if kind == "word" and text in _NUMBER_WORDS:
                    last = j
                elif not (kind == "space" or text == "-" or (kind == "word" and text == "and")):
                    break
                j += 1
            runs.append((first, last))
            i = last + 1
        else:
            i += 1
    return runs


def _next(tokens: list[_Token], i: int, step: int = 1) -> int:
    """The index of the next non-space token from `i` (exclusive) in direction `step`, or -1."""
    i += step
    while 0 <= i < len(tokens) and tokens[i].kind == "space":
        i += step
    return i if 0 <= i < len(tokens) else -1


def _qualifier(text: str, lists: bool = True, bounds: bool = True) -> tuple[str, str] | None:
    """(kind, why) of the first negation, bound or hedge in `text`; kind is negation | bound |
    hedge | list (`or`, `either`, `between`, `±`: several values; skipped with `lists=False`;
    bounds skipped with `bounds=False`). Linear in the length of `text`."""
    previous = ""
    for match in _WORD.finditer(text):
        word, shown = match.group(0).lower(), match.group(0)
        if _is_negation(word):
            return "negation", f"a negation ({shown!r})"
        if bounds and (word in _BOUNDS or (previous, word) in _PAIR_BOUNDS):
            return "bound", f"a bound ({previous + ' ' if (previous, word) in _PAIR_BOUNDS else ''}{shown!r})"
        if word in _HEDGES and (lists or word not in ("or", "either", "between")):
            return ("list" if word in ("or", "either", "between") else "hedge"), f"a hedge ({shown!r})"
        previous = word
    if "~~" in text:
        return "negation", "a strikethrough ('~~')"
    for ch in text:
        kind = _symbol_kind(ch)
        if kind == "negation":
            return "negation", f"a negation ({ch!r})"
        if kind == "bound" and bounds:
            return "bound", f"a bound ({ch!r})"
        if kind == "list" and lists:
            return "list", f"a hedge ({ch!r})"
        if ch == "?":
            return "hedge", "a question mark"
    return None


def qualifier(text: str) -> str | None:
    """What in `text` makes it other than a plain statement of its answer: a negation (`not`,
    `no`, `wrong`, `≠`, `∉`, a strikethrough `~~` or a struck-out character), a bound (`at least`,
    `more than`, `over`, `<`, `≥`, any relation symbol by its Unicode name), a hedge (`or`,
    `maybe`, `±`, `?`), or None. Words and symbols only; linear in the length of `text`."""
    found = _qualifier(text)
    return found[1] if found else None


def stated_number(text: str) -> StatedNumber | NotOneNumber | None:
    """The one number `text` states, reading its final value after the last `=` (`12 - 5 = 7` is 7).

    Returns a `StatedNumber` when the answer is one number and nothing around it changes its value
    or makes it a bound, a negation or a hedge: words that only say what was counted (`7 apples`,
    `7 cm`, `$7`, `The answer is 7.`) are harmless; scale words and suffixes are applied (`7
    thousand` and `7k` are 7000); the sign may be any minus sign or dash (`−7`). A `NotOneNumber`
    says why not (`at least 7`, `7+`, `≠ 7`, `3 or 4`, `7²`, `2x`, `7M`, `1e9999999`); None when
    it states no number. Linear in the length of `text`; reads at most `MAX_RULE_CHARS`."""
    if len(text) > MAX_RULE_CHARS:
        return NotOneNumber("unclear", "too long for the rules")
    body = _math_text(text)
    said = _qualifier(body)
    if said:
        return NotOneNumber("several" if said[0] == "list" else "qualified", said[1])
    tokens = _tokenize(body)
    equals = [i for i, token in enumerate(tokens) if token.text == "="]
    if equals:
        sides = [_plain_side(tokens[a + 1 : b]) for a, b in zip([-1, *equals], [*equals, len(tokens)])]
        if len({value for value in sides if value is not None}) > 1:
            return NotOneNumber("several", CONTRADICTION)
    first = equals[-1] + 1 if equals else 0
    for i in range(first, len(tokens)):
        if _is_operation(tokens, i):
            return NotOneNumber("expression", f"an expression ({tokens[i].text!r})")
    return _read_number(tokens, first)


CONTRADICTION = "an equation whose sides are different numbers"


def _plain_side(tokens: list[_Token]) -> Fraction | None:
    """The value of one side of an equation when it is one number and nothing else."""
    solid = [t for t in tokens if t.kind != "space"]
    sign = 1
    if len(solid) == 2 and solid[0].text in ("+", "-"):
        sign, solid = (-1 if solid[0].text == "-" else 1), solid[1:]
    if len(solid) == 1 and solid[0].kind in ("num", "frac"):
        value = _number_value(solid[0])
        return sign * value if isinstance(value, Fraction) else None
    return None


_OPERAND_KINDS = ("num", "frac", "word")


def _is_operation(tokens: list[_Token], i: int) -> bool:
    """Whether token `i` is arithmetic (`^`, `×`, `√`, a LaTeX command, `x/2`, `3+4`, `7!`), as
    opposed to a compound unit (`km/h`), a sign (`+7`) or a bound (`7+`)."""
    text = tokens[i].text
    if tokens[i].kind != "other":
        return tokens[i].kind == "word" and text.lower() in _EXPRESSION_WORDS
    if text in "^√∛×·*÷∑∏∫∞|{}\\":
        return True
    before, after = _next(tokens, i, -1), _next(tokens, i)
    if text == "!":
        return i > 0 and (tokens[i - 1].kind in ("num", "frac") or tokens[i - 1].text == ")")
    if text == "/":
        return not (0 < i < len(tokens) - 1 and tokens[i - 1].kind == tokens[i + 1].kind == "word")
    if text == "+":
        return (before >= 0 and (tokens[before].kind in _OPERAND_KINDS or tokens[before].text == ")")
                and after >= 0 and (tokens[after].kind in _OPERAND_KINDS or tokens[after].text == "("))
    return False


def _read_number(tokens: list[_Token], first: int) -> StatedNumber | NotOneNumber | None:
    """Read the number of `tokens[first:]`; `tokens[:first]` are the left sides of an equation."""
    numbers = [i for i in range(first, len(tokens)) if tokens[i].kind in ("num", "frac")]
    if len(numbers) > 1:
        return NotOneNumber("several", "several numbers")
    runs = _number_word_runs(tokens, first)
    consumed: set[int] = set()
    scale, percent, decimals, negative, currency = 1, False, 0, False, False
    unit: str | None = None
    if numbers:
        at = numbers[0]
        value = _number_value(tokens[at])
        if not isinstance(value, Fraction):
            return value if value is not None else NotOneNumber("unclear", "a fraction over zero")
        number_text = tokens[at].text.replace(",", "").lower().split("e")[0]
        decimals = len(number_text.split(".")[1]) if "." in number_text else 0
        start = end = at
        consumed.add(at)
        for first_word, last_word in runs:  # the same number again in words: `7 (seven)`
            words = [t.text.lower() for t in tokens[first_word : last_word + 1] if t.kind == "word" and t.text.lower() in _NUMBER_WORDS]
            if words[0] not in _SCALE_WORDS and _run_value(words)[0] == value:
                consumed.update(range(first_word, last_word + 1))
    else:
        if len(runs) > 1:
            return NotOneNumber("several", "several numbers in words")
        if not runs:
            return _no_number(tokens[first:])
        start, end = runs[0]
        words = [t.text.lower() for t in tokens[start : end + 1] if t.kind == "word" and t.text.lower() in _NUMBER_WORDS]
        whole, largest = _run_value(words)
        value = Fraction(whole)
        scale = largest if largest >= 1000 else 1
        consumed.update(range(start, end + 1))
    # Before the number: a sign (`-7`, `−7`, `negative 7`) and a currency (`$7`).
    before = start - 1
    if before >= first and tokens[before].text in ("+", "-") and (before == first or tokens[before - 1].kind in ("space", "other")):
        negative = tokens[before].text == "-"
        consumed.add(before)
        before -= 1
    prev = _next(tokens, before + 1, -1)
    if prev >= first and tokens[prev].text in ("-", "+"):  # `- 7`, `Total - 7`, `- -7`
        return NotOneNumber("unclear", "a dash before the number: a minus sign or a separator")
    if prev >= first and tokens[prev].kind == "word" and tokens[prev].text.lower() in ("negative", "minus", "positive"):
        negative = tokens[prev].text.lower() != "positive"
        consumed.add(prev)
    currency = prev >= 0 and tokens[prev].text in _CURRENCY
    # Right after the number: a suffix (`7k`, `7cm`, `7th`, `2x`), a `+` (`7+`), then a scale word,
    # a percent, a unit.
    cursor = end
    if numbers and end + 1 < len(tokens) and tokens[end + 1].kind == "word":
        suffix = tokens[end + 1].text
        cursor = end + 1
        consumed.add(cursor)
        if suffix in _SCALE_SUFFIXES or (currency and suffix in _CURRENCY_SUFFIXES):
            scale = _SCALE_SUFFIXES.get(suffix) or _CURRENCY_SUFFIXES[suffix]
        elif suffix.lower() in _ORDINAL_SUFFIXES:
            pass
        elif suffix in ("M", "B", "G", "T", "b", "mil"):
            return NotOneNumber("unclear", f"{suffix!r} after the number: a scale or a unit")
        elif suffix.lower() in _UNIT_WORDS:
            unit = suffix.lower()
        elif len(suffix) == 1:
            return NotOneNumber("expression", f"{suffix!r} after the number: a variable or a constant")
        else:
            return NotOneNumber("unclear", f"{suffix!r} after the number")
    elif numbers and end + 1 < len(tokens) and tokens[end + 1].text == "+":
        return NotOneNumber("qualified", "a bound ('+' after the number)")
    nxt = _next(tokens, cursor)
    if numbers and scale == 1 and nxt >= 0 and tokens[nxt].kind == "word" and tokens[nxt].text.lower() in _SCALE_WORDS:
        scale = _SCALE_WORDS[tokens[nxt].text.lower()]
        consumed.add(nxt)
        nxt = _next(tokens, nxt)
    if numbers and scale != 1:
        value *= scale
    word = tokens[nxt].text.lower() if nxt >= 0 and tokens[nxt].kind == "word" else ""
    if nxt >= 0 and tokens[nxt].text == "%" or word in ("percent", "pct"):
        percent = True
        consumed.add(nxt)
    elif word == "per" and (following := _next(tokens, nxt)) >= 0 and tokens[following].text.lower() == "cent":
        percent = True
        consumed.update((nxt, following))
    elif unit is None and word and word in _UNIT_WORDS and (len(word) > 1 or tokens[nxt].text in _UNIT_LETTERS):
        unit = word  # `7 cm`, `7 min` (minutes: `min 7` elsewhere is a bound)
        consumed.add(nxt)
    elif nxt >= 0 and tokens[nxt].text == "°":
        following = nxt + 1
        if following < len(tokens) and tokens[following].text in ("C", "F", "K", "c", "f"):
            unit = "°" + tokens[following].text.upper()
            consumed.update((nxt, following))
    # Everything else, on both sides of the number.
    approximate = False
    for i in range(first, len(tokens)):
        if i in consumed or tokens[i].kind == "space":
            continue
        reading = _around(tokens[i])
        if isinstance(reading, NotOneNumber):
            return reading
        approximate = approximate or reading == "approximate"
    for i in range(first):
        if tokens[i].text.lower() in _APPROXIMATE or tokens[i].text in _APPROX_SYMBOLS:
            approximate = True
    return StatedNumber(-value if negative else value, percent, decimals, scale, approximate, unit)


def _around(token: _Token) -> NotOneNumber | str | None:
    """What one token beside the number does: a `NotOneNumber` when it changes the value or what
    the answer says, "approximate", or None (harmless). Negations, bounds, hedges and operations
    were ruled out before."""
    text, lower = token.text, token.text.lower()
    if token.kind == "word":
        if lower in _APPROXIMATE:
            return "approximate"
        if lower in _VALUE_WORDS or lower == "negative":
            return NotOneNumber("qualified", f"a word that changes the value ({text!r})")
        if lower in _NUMBER_WORDS or lower in _SCALE_WORDS or lower in ("percent", "pct"):
            return NotOneNumber("several", f"another number or scale ({text!r})")
        if lower == "min":
            return NotOneNumber("qualified", "a bound ('min')")
        if len(text) == 1 and lower not in ("a", "i") and text not in _UNIT_LETTERS:
            return NotOneNumber("expression", f"a letter ({text!r}): a variable or a constant")
        return None  # a noun, a unit or a framing word: `There are 7 apples.`
    if text in _APPROX_SYMBOLS:
        return "approximate"
    if text in _HARMLESS_SYMBOLS or text in ("%", "!", "+", "/"):  # `/` here is a unit's (`km/h`): see _is_operation
        return None
    if text.isdigit():
        return NotOneNumber("unclear", "digits inside a word")
    if unicodedata.category(text) == "Sm":
        return NotOneNumber("math symbol", f"a mathematical symbol ({text!r})")
    return NotOneNumber("unclear", f"an unknown symbol ({text!r})")


def _no_number(tokens: list[_Token]) -> NotOneNumber | None:
    """An answer without a number: an expression when it has digits glued to letters (`A7`)."""
    if any(token.kind == "other" and token.text.isdigit() for token in tokens):
        return NotOneNumber("expression", "digits inside a word")
    return None


def number_verdict(prediction: str, gold: str) -> Verdict:
    """Rules for numeric answers. Only a prediction that states one number decides (see
    `stated_number`); integers compare exactly (no relative tolerance); a percentage against a plain
    number decides when the numbers are equal as written, and is undecided when they agree only after
    scaling by 100; a scale word one side writes and the other does not (`7 million` against 7) is
    undecided, as are different units (`7 cm` against `7 m`) and an approximate value that is not
    exactly the gold (`about 7` against 7.2)."""
    ref = stated_number(gold)
    if not isinstance(ref, StatedNumber) or ref.approximate:
        readable = isinstance(ref, NotOneNumber) and ref.math_readable
        return _undecided("number", "the gold answer is not one plain number", math_verify=readable and qualifier(_math_text(prediction)) is None)
    pred = stated_number(prediction)
    if pred is None:
        return _undecided("number", NO_NUMBER)
    if isinstance(pred, NotOneNumber):
        return _undecided("number", pred.why, math_verify=pred.math_readable)
    if pred.unit and ref.unit and pred.unit != ref.unit:
        return _undecided("number", f"different units ({pred.unit!r}, {ref.unit!r})")
    if pred.value == ref.value:
        return _decided(True, "number")
    if pred.approximate:
        return _undecided("number", "an approximate value")
    if (pred.scale == 1) != (ref.scale == 1) and pred.bare == ref.bare:
        return _undecided("number", "a scale word one side writes and the other does not")
    if pred.percent != ref.percent and (pred.value == ref.value * 100 or pred.value * 100 == ref.value):
        return _undecided("number", "a percentage against a fraction", math_verify=True)
    if pred.decimals and abs(pred.value - ref.value) <= Fraction(1, 2 * 10**pred.decimals):
        return _undecided("number", "a rounded value", math_verify=True)
    if ref.decimals and abs(pred.value - ref.value) <= Fraction(1, 2 * 10**ref.decimals):
        return _undecided("number", "more precise than the gold answer", math_verify=True)
    return _decided(False, "number")


NO_NUMBER = "no number stated"

_PLAIN_NUMBER = re.compile(
    r"[-+]?\s*(?:\d+\s*/\s*\d+|(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:%|percent)?\.?"
)


def is_plain_number(text: str) -> bool:
    """Whether `text` is nothing but one number (digits, a fraction, a percentage, number words)."""
    if len(text) > MAX_RULE_CHARS:
        return False
    body = _math_text(text)
    if _PLAIN_NUMBER.fullmatch(body):
        return True
    body = body.rstrip(".")
    words = re.findall(r"[a-z]+", body.lower())
    return bool(words) and all(w in _NUMBER_WORDS or w == "and" for w in words) and not re.search(r"[^a-zA-Z\s-]", body)


# ---------------------------------------------------------------------------------------------
# Choices: an option letter or an option's text

_LETTER_ALONE = re.compile(r"\s*\(?([A-Za-z])\)?[.:)]?\s*")
_LEADING_LABEL = re.compile(r"\s*(?:\(([A-Za-z])\)|([A-Za-z])[.:)])\s*(.*)", re.S)
_LONE_CAPITAL = re.compile(r"(?<![\w'’])([A-Z])(?![\w'’])")
# "I" before a lower-case word is the pronoun ("I think"); "A" is the article only where a sentence
# starts ("A dog", "Yes. A dog"): mid-sentence the article is "a", and "option A option B" names
# two letters. A word that could only follow a letter ("A or B", "A is right") keeps it a letter.
_NOT_A_LETTER = re.compile(r"\s+(?!(?:or|and|nor|but|is|was)\b)[a-z]")
_SENTENCE_START = frozenset(".!?:;(\"“\n")

ChoiceReading = str | None | Literal["several", "negated"]


def _letters(choices: list[str] | None) -> str:
    return string.ascii_uppercase[: len(choices)] if choices else string.ascii_uppercase


def _article(text: str, match: re.Match) -> bool:
    """Whether the capital letter of `match` is the article A or the pronoun I ("A dog", "I think")."""
    if match.group(1) not in ("A", "I") or _NOT_A_LETTER.match(text, match.end()) is None:
        return False
    if match.group(1) == "I":
        return True
    before = match.start() - 1
    while before >= 0 and text[before] in " \t":  # each run of spaces is scanned once, by the letter after it
        before -= 1
    return before < 0 or text[before] in _SENTENCE_START


def _option_pattern(key: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + r"[\W_]+".join(re.escape(word) for word in key.split()) + r"(?!\w)", re.I)


def _name_options(text: str, keys: list[str]) -> tuple[str, set[int]]:
    """(`text` with each option's text blanked out, the options whose text it contains). Longer
    matches win over the matches inside them (`dark red` over `red`)."""
    spans = []
    for index, key in enumerate(keys):
        if key:
            spans.extend((m.start(), m.end(), index) for m in _option_pattern(key).finditer(text))
    spans.sort(key=lambda s: (s[0] - s[1], s[0]))
    taken = bytearray(len(text))
    named: set[int] = set()
    chars = list(text)
    for start, end, index in spans:
        if any(taken[start:end]):
            continue
        taken[start:end] = b"\x01" * (end - start)
        named.add(index)
        chars[start:end] = " " * (end - start)
    return "".join(chars), named


def choice_of(text: str, choices: list[str] | None) -> ChoiceReading:
    """The option a text names, as a letter; None when it names none; "several" for a hedge (two
    options, `A or B`, `(A) or (B)`, `A) B) C) D)`, `A: cat or dog`); "negated" for a negation
    (`Not A`, `It is not A`).

    In order: a label with an option's text (`B. green`; a label with another option's text, `A.
    dog`, names two options); one option's text, exactly (an option's text beats a letter: `a dog`
    with options ["a cat", "a dog"] is B); a lone letter (`B`, `(B)`, `b.`); else the sentence:
    every option whose text it contains (the longest match wins) and every capital letter standing
    alone (`I think it is C`, `The answer is B`) must name the same option, with no negation or
    hedge outside the options' texts. An article or the pronoun I is never an option letter, and a
    letter outside the options is ignored."""
    text = canonical(unwrap(text)).replace("**", "").strip()
    letters = _letters(choices)
    keys = [answer_key(c) for c in choices] if choices else []
    label = _LEADING_LABEL.fullmatch(text)
    if label and label.group(3).strip():  # `B. green`; `A. dog` names two options
        letter = (label.group(1) or label.group(2)).upper()
        rest = answer_key(label.group(3))
        named = [i for i, option in enumerate(keys) if option and option == rest]
        if len(named) == 1:
            return letters[named[0]] if letters[named[0]] == letter else "several"
    key = answer_key(text)
    exact = [i for i, option in enumerate(keys) if option and option == key]
    if len(exact) == 1:
        return letters[exact[0]]
    alone = _LETTER_ALONE.fullmatch(text)
    if alone:
        letter = alone.group(1).upper()
        return letter if letter in letters else None
    masked, named_options = _name_options(text, keys)
    said = _qualifier(masked, bounds=False)  # `higher`, `over` describe options; they bound no letter
    if said:
        return "negated" if said[0] == "negation" else "several"
    found = {letters[i] for i in named_options}
    for match in _LONE_CAPITAL.finditer(masked):
        if match.group(1) in letters and not _article(text, match):
            found.add(match.group(1))
    if len(found) > 1:
        return "several"
    return found.pop() if found else None


NO_OPTION = "no option named"


def choice_verdict(prediction: str, gold: str, choices: list[str] | None) -> Verdict:
    ref = choice_of(gold, choices)
    if ref in (None, "several", "negated"):
        return _undecided("choice", "the gold answer names no single option")
    pred = choice_of(prediction, choices)
    if pred == "several":
        return _undecided("choice", "several options")
    if pred == "negated":
        return _undecided("choice", "a negation")
    if pred is None:
        return _undecided("choice", NO_OPTION)
    return _decided(pred == ref, "choice")


# ---------------------------------------------------------------------------------------------
# Yes/no, text, math


_YES_NO_HEDGES = frozenset("or either maybe perhaps possibly probably unsure uncertain unclear depends".split())


def yes_no_verdict(prediction: str, gold: str) -> Verdict:
    """A yes/no gold answer: a prediction that opens with yes or no decides, unless it also says the
    other (`Yes or no`, `yes, no`, `No doubt, yes`) or hedges (`Yes, or maybe not`, `Yes?`)."""
    words = answer_key(unwrap(prediction)).split()
    if not words or words[0] not in ("yes", "no"):
        return _undecided("yesno", "the prediction does not open with yes or no")
    other = "no" if words[0] == "yes" else "yes"
    if other in words or any(w in _YES_NO_HEDGES for w in words) or "?" in prediction:
        return _undecided("yesno", "a hedge between yes and no")
    return _decided(words[0] == gold, "yesno")


def text_verdict(prediction: str, gold: str) -> Verdict:
    """Equal `answer_key`s decide; anything else (a paraphrase may still be right) is undecided."""
    ref = answer_key(unwrap(gold))
    if not ref:
        return _undecided("text", "the gold answer has no words to compare")
    if answer_key(unwrap(prediction)) == ref:
        return _decided(True, "text")
    return _undecided("text", "the texts differ")


def math_verdict(prediction: str, gold: str) -> Verdict:
    """Math answers: two plain numbers compare as numbers; anything else goes to math-verify, except
    a prediction with a bound, a negation or a hedge the gold does not have (math-verify reads `7+`
    and `≠ 7` as 7), a word that changes the value (`7 squared`) or an equation between two
    different numbers (`3 = 7`: math-verify reads its right side). `2 or 3` does go to
    math-verify: it reads it as the set {2, 3}, which is not 2."""
    pred = stated_number(prediction)
    if is_plain_number(gold) and isinstance(pred, StatedNumber):
        return number_verdict(prediction, gold)
    said = _qualifier(_math_text(prediction), lists=False)
    if said and not _qualifier(_math_text(gold)):
        return _undecided("math", said[1])
    if isinstance(pred, NotOneNumber) and (pred.kind in ("qualified", "unclear") or pred.why == CONTRADICTION):
        # `7 squared`, `7#`: words and symbols math-verify drops; `3 = 7`: it reads the right side
        return _undecided("math", pred.why)
    return _undecided("math", "an expression", math_verify=True)


# ---------------------------------------------------------------------------------------------
# The rules together


def rule_verdict(prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None,
                 max_chars: int = MAX_RULE_CHARS) -> Verdict:
    """What rules alone can say: `correct`, `incorrect`, or `undecided` where only math-verify or
    an LLM could tell (never `judge_failed`). An answer or a gold answer longer than `max_chars`
    (at most `MAX_RULE_CHARS`) is undecided. Two different `\\boxed{}` values are a hedge; a box
    with a negation, a bound or a hedge outside it (`not \\boxed{7}`) is undecided."""
    if prediction is None or not prediction.strip():
        return _decided(False, "none", "no answer")
    method = {"choice": "choice", "number": "number", "math": "math"}.get(answer_type, "text")
    if max(len(prediction), len(gold)) > min(max_chars, MAX_RULE_CHARS):
        return _undecided(method, "too long for the rules")
    if not canonical(prediction).strip():  # only invisible characters
        return _decided(False, "none", "no answer")
    boxed = boxed_answers(prediction)
    if len({re.sub(r"\s+", "", b) for b in boxed}) > 1:
        return _undecided(method, "several boxed answers")
    # math-verify reads only the box, so a list outside it (`roots 2 or 3: \boxed{2, 3}`) is harmless there.
    if boxed and (said := _qualifier(_math_text(_outside_boxes(prediction)), lists=answer_type != "math")):
        return _undecided(method, f"{said[1]} outside the box")
    if answer_type == "choice":
        verdict = choice_verdict(prediction, gold, choices)
        if verdict.decided or choices or verdict.detail != NO_OPTION:
            return verdict
    gold_key = answer_key(unwrap(gold))
    if gold_key in ("yes", "no"):
        return yes_no_verdict(prediction, gold_key)
    if answer_type == "math":
        return math_verdict(prediction, gold)
    if answer_type == "number" or is_plain_number(gold):
        verdict = number_verdict(prediction, gold)
        if verdict.decided or answer_type == "number" or verdict.detail != NO_NUMBER:
            return verdict
    return text_verdict(prediction, gold)


def text_fallback_verdict(prediction: str, gold: str, rule: str) -> Verdict:
    """A benchmark's own string rule for a text answer no LLM judged (`JudgeConfig.text_fallback`),
    on `answer_key`s. `contains` needs the gold's words inside the prediction's, and is no verdict
    (`judge_failed`) on a prediction that negates or hedges (`not Paris`, `Paris or Rome`); a gold
    of one character is compared exactly (it would be inside almost anything)."""
    pred, ref = answer_key(unwrap(prediction)), answer_key(unwrap(gold))
    if rule == "contains" and len(ref) > 1:
        said = qualifier(canonical(unwrap(prediction)))
        if said and not qualifier(canonical(unwrap(gold))):
            return Verdict("judge_failed", "text", f"contains: {said}")
        return _decided(re.search(rf"(?<!\S){re.escape(ref)}(?!\S)", pred) is not None, "text", "contains")
    return _decided(bool(ref) and pred == ref, "text", "exact")


# ---------------------------------------------------------------------------------------------
# math-verify

_SQRT = re.compile(r"\bsqrt\s*\(")


def plain_math_to_latex(text: str) -> str:
    """Plain-text math as LaTeX math-verify reads (`pi/2` → `\\pi/2`, `sqrt(3)/2` → `\\sqrt{3}/2`,
    `x**2` → `x^2`); text that already has LaTeX commands is left as it is."""
    text = text.replace("+/-", "\\pm ").replace("-/+", "\\mp ")  # math-verify reads `7 +/- 1` as 1
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
    # canonical first: math-verify reads `7²` as 7 and `−7` (U+2212) as 7.
    text = plain_math_to_latex(canonical(unwrap(text)))
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
    """The LLM judge's prompt (`synth/scoring/prompts/judge.txt`) filled in."""
    template = (resources.files("synth.scoring") / "prompts" / "judge.txt").read_text()
    return template.format(question=question, gold=gold, prediction=prediction)


class Judge:
    """Rules, then math-verify, then the LLM judge where configured. Share one per stage; close it.

    `judge` returns a decided `Verdict` or a `judge_failed` one, never `undecided`."""

    def __init__(self, cfg: JudgeConfig | None = None) -> None:
        self.cfg = cfg or JudgeConfig()
        self.math = MathVerifier(self.cfg.math_workers, self.cfg.math_timeout_s, float_rounding=self.cfg.math_float_rounding)
        self._llm = None
        if self.cfg.llm_url:
            from synth.runtime.policy import EndpointPolicy

            if not self.cfg.llm_model:
                raise ValueError("judge.llm_model: required with judge.llm_url")
            api_key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
            self._llm = EndpointPolicy(self.cfg.llm_url, self.cfg.llm_model, api_key=api_key, timeout_s=self.cfg.llm_timeout_s,
                                       max_retries=self.cfg.llm_max_retries, max_in_flight=64, options=self.cfg.llm_request,
                                       api_key_env=self.cfg.api_key_env)

    async def preflight(self) -> None:
        """Check the LLM judge's endpoint, when one is configured, with a real judge request
        (`synth.runtime.preflight`); raises `EndpointError` with one line. Stages call it before work starts."""
        if self._llm is None:
            return
        from synth.runtime.preflight import StageRequest, preflight

        request = StageRequest(self._judge_messages("What is 2 + 2?", "4", "4"), [], [], 8, 0.0,
                               request_setting="judge.llm_request", prefix_setting="judge", flags=False)
        await preflight(self._llm, "judge", request, setting="judge.llm_url")

    @staticmethod
    def _judge_messages(question: str, gold: str, prediction: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "text", "text": judge_prompt(question, gold, prediction)}]}]

    async def judge(self, question: str, prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
        """Rules, then math-verify where the rules allow it (`Verdict.math_verify`), then the LLM
        judge; an answer longer than `max_answer_chars` is `judge_failed` without asking anyone."""
        if prediction is not None and len(prediction) > self.cfg.max_answer_chars:
            return Verdict("judge_failed", "none", f"an answer of {len(prediction)} characters: over judge.max_answer_chars "
                                                   f"({self.cfg.max_answer_chars})")
        verdict = rule_verdict(prediction, gold, answer_type, choices, max_chars=self.cfg.max_answer_chars)
        if verdict.decided:
            return verdict
        assert prediction is not None  # an empty prediction is decided by the rules
        if verdict.math_verify:
            equal = await asyncio.to_thread(self.math.check, gold, prediction)
            if equal is True or (equal is False and self._llm is None):
                return _decided(equal, "math")
            if self._llm is None:
                return Verdict("judge_failed", "math", "math-verify could not decide (time-out, error or unparsable)")
        if self._llm is not None:
            return await self._ask_llm(question, prediction, gold)
        # An answer that states no number to a number's gold ("unknown") is text too.
        if (verdict.method == "text" or verdict.detail == NO_NUMBER) and self.cfg.text_fallback != "judge_failed":
            return text_fallback_verdict(prediction, gold, self.cfg.text_fallback)
        return Verdict("judge_failed", verdict.method, f"undecided by rules ({verdict.detail}) and no LLM judge configured")

    async def _ask_llm(self, question: str, prediction: str, gold: str) -> Verdict:
        try:
            generation = await self._llm.generate(self._judge_messages(question, gold, prediction), [], stop=[], max_tokens=8, temperature=0.0)
        except Exception as exc:
            from synth.runtime.policy import describe_error

            return Verdict("judge_failed", "llm", f"the LLM judge failed: {describe_error(exc)}")
        said = parse_yes_no(generation.text)
        if said is None:
            return Verdict("judge_failed", "llm", f"the LLM judge replied {generation.text[:40]!r}, not yes or no")
        return _decided(said, "llm")

    async def aclose(self) -> None:
        self.math.close()
        if self._llm is not None:
            await self._llm.aclose()


def check_judge(cfg: JudgeConfig) -> None:
    """The LLM judge's preflight (`Judge.preflight`) with a judge of its own, closed afterwards: for
    callers whose shared judge serves other event loops (GRPO's rollouts). Raises `EndpointError`."""
    from synth.runtime import aio

    async def check() -> None:
        judge = Judge(cfg)
        try:
            await judge.preflight()
        finally:
            await judge.aclose()

    if cfg.llm_url:
        aio.run(check())
