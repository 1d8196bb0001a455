"""The tokens that near-duplicate removal and decontamination compare, one tokenizer for both.

Words are lower-cased (NFKC, casefold). Numbers are single tokens ("3.5", "1,000" as "1000").
Every other character that is not a word character or a space is a token of its own, so
operators, relation symbols and brackets are compared ("48 + 12" and "48 - 12", "x > 3" and
"x < 3" differ). Only the punctuation that ends or separates clauses and quotation marks are
dropped (`. , ; : ? ¿ ¡` and quotes), so "What is 48 + 12?" and "what is 48 + 12" are the same.
"""

from __future__ import annotations

import re
import unicodedata

_DROPPED = ".,;:?¿¡'\"`´"
# Quotation marks (Unicode's initial and final quote punctuation: “ ” « » ‘ ’ ...) become spaces.
_QUOTES = str.maketrans({chr(c): " " for c in range(0x10000) if unicodedata.category(chr(c)) in ("Pi", "Pf")})
# A number with thousands separators or a decimal part, then a word, then any other single
# character that is neither a space nor dropped punctuation.
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\w+|[^\w\s" + re.escape(_DROPPED) + "]")


def question_tokens(text: str) -> list[str]:
    """The compared tokens of a question, in order (see the module docstring).

    `question_tokens("Is x > 3 when x = 5?")` is `["is", "x", ">", "3", "when", "x", "=", "5"]`.
    """
    normalized = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    tokens = _TOKEN.findall(normalized)
    if "," in normalized:
        return [token.replace(",", "") if token[0].isdigit() else token for token in tokens]
    return tokens


def is_symbolic(token: str) -> bool:
    """A number, operator, relation symbol or bracket: a token that changes what a question asks
    when it changes (a near-duplicate check may require these to be equal)."""
    return token[0].isdigit() or not (token[0].isalnum() or token[0] == "_")
