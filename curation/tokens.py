"""The tokens that near-duplicate removal and decontamination compare, one tokenizer for both, and
the tokens among them that carry a question's meaning exactly.

Tokens (`question_tokens`): words lower-cased (NFKC, casefold). Numbers are single tokens in every
notation: "3.5", ".5", "1,000" (as "1000"), "1e3", "2.5e-4"; digits inside a word stay in it
("h2o", "cm2"). Superscripts and subscripts keep what they mean: "x²" is "x ^ 2" and "x₂" is "x_2"
(NFKC alone would make "10²" the number 102). A prime is a token of its own ("f'(2)" is "f ′ ( 2
)"), told apart from an apostrophe ("what's", "rock 'n' roll") by where it stands. Every other
character that is not a word character or a space is a token of its own, so operators, relation
symbols and brackets are compared ("48 + 12" and "48 - 12" differ); "×", "÷", "−" and the fraction
slash are read as "*", "/", "-" and "/" ("48 × 12" is "48 * 12", "½" is "1 / 2"). Dropped: the
punctuation that ends or separates clauses, quotation marks and apostrophes (`. , ; : ? ¿ ¡`,
quotes), and the hyphen that joins two words ("five-digit" is "five digit"), so "What is 48 + 12?"
and "what is 48 + 12" are the same. Contractions are split as words: "isn't" is "is not", "can't"
"can not", "what's" "what 's" (an enclitic keeps its apostrophe, so its letter is not a variable).

Meaning tokens (`meaning_tokens`): the tokens two questions must share, in order, to be near
duplicates, because changing one changes the question however alike the rest is ("What is 48 + 12?"
and "What is 48 - 12?" are different problems):

- numbers, and any token with a digit in it ("h2o" / "h3o", "cm2" / "cm3", "x_2");
- symbols: operators, relation symbols, brackets, primes, currency, "%";
- `MEANING_WORDS`: operator and relation words ("plus", "minus", "greater", "left", "above"),
  number words ("forty", "twelve", "half", "third"), negations ("not", "no", "never", "without") and
  quantifiers ("all", "some", "only"), comparatives and superlatives of size and amount;
- single letters, as variables and labels ("value of x" / "value of y", "option B"), except the
  words "a" and "i", which count only beside a symbol or a number ("a + b", "f(a)", "i^2").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence

_DROPPED = ".,;:?¿¡'\"`´"

# Quotation marks (Unicode's initial and final quote punctuation: “ ” « » ‘ ...) become spaces; the
# right single quotation mark ’ is read as the apostrophe it usually is ("what’s", "f’(x)") first.
_QUOTES = str.maketrans({chr(c): " " for c in range(0x10000) if unicodedata.category(chr(c)) in ("Pi", "Pf")})
# The same operator in other typography: multiplication sign, asterisk operator, division sign,
# division slash, fraction slash (NFKC writes "½" as "1⁄2"), minus sign.
_OPERATORS = str.maketrans({"×": "*", "∗": "*", "÷": "/", "∕": "/", "⁄": "/", "−": "-"})


def _script_characters(tag: str) -> str:
    return "".join(chr(c) for c in range(0x10000) if unicodedata.decomposition(chr(c)).startswith(tag))


SUPERSCRIPTS = _script_characters("<super>")  # ² ³ ⁿ ⁻ ... (Unicode compatibility decomposition <super>)
SUBSCRIPTS = _script_characters("<sub>")  # ₂ ₙ ₊ ...
_SCRIPTS = frozenset(SUPERSCRIPTS + SUBSCRIPTS)
_SUPERSCRIPT_RUN = re.compile(f"[{re.escape(SUPERSCRIPTS)}]+")
_SUBSCRIPT_RUN = re.compile(f"[{re.escape(SUBSCRIPTS)}]+")

# Contractions (on lower-cased text): "n't" is the word "not"; an enclitic ('s, 're, 've, 'll, 'd,
# 'm) after a letter is a token of its own with its apostrophe.
_NOT_IRREGULAR = {"can't": "can not", "won't": "will not", "shan't": "shall not", "cannot": "can not"}
_NOT = re.compile(r"\b(?:can't|won't|shan't|cannot)\b|(?<=\w)n't\b")
# A hyphen between two words of two letters or more joins them; between single letters ("x-y") or
# numbers it is a minus.
_JOINING_HYPHEN = re.compile(r"(?<=[^\W\d_]{2})-(?=[^\W\d_]{2})")
_NUMBER = (r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|(?<![\w.])\.\d+)"  # 1,000.5 | 3.5 | .5
           r"(?:e[+-]?\d+(?!\w))?")  # scientific notation: 1e3, 2.5e-4
_TOKEN = re.compile(_NUMBER + r"|(?<=[^\W\d_])'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s" + re.escape(_DROPPED) + "]")
PRIME = "′"  # U+2032, what NFKC makes of the primes ′ ″ ‴ too


def keep_scripts_nfkc(text: str) -> str:
    """NFKC, except that superscript and subscript characters are left as they are (NFKC turns
    "10²" into "102" and "cm³" into "cm3"): the text a question is stored as."""
    if not any(c in _SCRIPTS for c in text if ord(c) > 0x7F):
        return unicodedata.normalize("NFKC", text)
    parts = re.split(f"([{re.escape(SUPERSCRIPTS + SUBSCRIPTS)}]+)", text)
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part) for i, part in enumerate(parts))


def _scripts_as_operators(text: str) -> str:
    """"x²" as "x^2", "10⁻³" as "10^-3", "x₂" as "x_2": what the characters mean, in the notation
    the same question has when typed on a keyboard."""
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^" + unicodedata.normalize("NFKC", m.group()), text)
    return _SUBSCRIPT_RUN.sub(lambda m: "_" + unicodedata.normalize("NFKC", m.group()), text)


def _mark_primes(text: str) -> str:
    """Apostrophes that are primes ("f'(x)", "f''", "y' = 2x", "A'B'", 5' for feet) as `PRIME`.

    A `'` is a prime when it follows a single letter, a digit, a closing bracket or another prime,
    and is not followed by a letter (then it is an apostrophe: "o'clock"; except between two
    capitals, "A'B'"), nor closes a quotation opened by a `'` before a word ("the 'x' axis")."""
    chars = list(text)
    quote_open = False
    for match in re.finditer("['‘]", text):
        i = match.start()
        if match.group() == "‘":
            quote_open = True
            continue
        before = chars[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if not (before.isalnum() or before in ")]" or before == PRIME):
            quote_open = quote_open or after.isalnum()  # an opening quote (or a stray one)
            continue
        word_start = i
        while word_start and text[word_start - 1].isalnum():
            word_start -= 1
        single_letter = i - word_start == 1 and before.isalpha()
        if after.isalpha() and not (single_letter and before.isupper() and after.isupper()):
            continue  # an apostrophe inside a word
        if quote_open and before != PRIME:
            quote_open = False  # the end of a quotation
            continue
        if single_letter or before.isdigit() or before in ")]" or before == PRIME:
            chars[i] = PRIME
    return "".join(chars)


def question_tokens(text: str) -> list[str]:
    """The compared tokens of a question, in order (see the module docstring).

    `question_tokens("Is x > 3 when x = 5?")` is `["is", "x", ">", "3", "when", "x", "=", "5"]`;
    `question_tokens("What's f'(.5) in cm²?")` is
    `["what", "'s", "f", "′", "(", ".5", ")", "in", "cm", "^", "2"]`."""
    ascii_only = text.isascii()  # most questions: no step below that only non-ASCII needs
    if not ascii_only:
        text = unicodedata.normalize("NFKC", _scripts_as_operators(text)).translate(_OPERATORS).replace("’", "'")
    if "'" in text:  # ‘ only opens a quotation: it matters only before a '
        text = _mark_primes(text)
    text = text.casefold()
    if "n't" in text or "cannot" in text:
        text = _NOT.sub(lambda m: _NOT_IRREGULAR.get(m.group(), " not"), text)
    if "-" in text:
        text = _JOINING_HYPHEN.sub(" ", text)
    tokens = _TOKEN.findall(text if ascii_only else text.translate(_QUOTES))
    if "," in text:
        return [token.replace(",", "") if token[0].isdigit() else token for token in tokens]
    return tokens


# Words whose change changes what a question asks, whatever the rest of it: they must be equal, in
# order, in two near duplicates (see `meaning_tokens`). Lower case, as `question_tokens` gives them.
MEANING_WORDS = frozenset("""
    plus minus times multiplied multiply divided divide over mod modulo squared cubed power root sqrt
    log ln exp sin cos tan add added subtract subtracted sum difference product quotient ratio per
    percent percentage average median increase increased increases decrease decreased decreases
    equal equals unequal same different true false
    greater less fewer more larger smaller bigger higher lower taller shorter longer heavier lighter
    older younger wider narrower faster slower closer farther further
    greatest least most largest smallest biggest highest lowest tallest shortest longest heaviest
    lightest oldest youngest widest narrowest fastest slowest closest nearest farthest furthest
    maximum minimum max min
    left right above below under beneath top bottom front behind inside outside before after up down
    near far north south east west clockwise counterclockwise anticlockwise horizontal vertical
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand million billion trillion dozen half halves quarter quarters third thirds double twice
    triple thrice once first second fourth fifth sixth seventh eighth ninth tenth last
    not no never none nothing nobody nowhere neither nor without except
    all any every each some both either only and or xor if unless
""".split())

_ARTICLE_LETTERS = frozenset("ai")  # the words "a" and "i"; as letters they count beside a symbol


def _is_symbolic(token: str) -> bool:
    """A number (or a word with a digit in it) or a symbol; an enclitic ("'s") is a word."""
    if token[0] == "'":
        return False
    return not (token[0].isalnum() or token[0] == "_") or any(c.isdigit() for c in token)


def meaning_tokens(tokens: Sequence[str], extra_words: Collection[str] = ()) -> list[str]:
    """The tokens of a question (`question_tokens`) that must be equal, in order, in a near
    duplicate (see the module docstring), plus any token in `extra_words` (lower case)."""
    kept = []
    for position, token in enumerate(tokens):
        if token in MEANING_WORDS or token in extra_words or _is_symbolic(token):
            kept.append(token)
        elif len(token) == 1 and token.isalpha():
            if token not in _ARTICLE_LETTERS or any(
                    0 <= near < len(tokens) and _is_symbolic(tokens[near]) for near in (position - 1, position + 1)):
                kept.append(token)
    return kept
