"""Decontamination: drop training rows that overlap an evaluation benchmark.

Text: a row is contaminated when it shares a token n-gram (default 8 tokens of
`curation.tokens.question_tokens`, the tokens near-duplicate removal compares: words, numbers,
operators and relation symbols) with a benchmark question, or, for questions shorter than n
tokens, when it equals one. Images: a
perceptual hash within `image_hamming` bits of a benchmark image. Every removal names the
benchmark and the benchmark item it matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from curation.dedup import PhashIndex
from curation.tokens import question_tokens


class DecontamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(8, ge=1)
    image_hamming: int = Field(4, ge=0, le=32)
    check_text: bool = True
    check_images: bool = True
    # Common phrasings of questions ("what is the name of the") would match everything: an n-gram
    # seen in more benchmark questions than this is not evidence of contamination.
    max_ngram_frequency: int = Field(20, ge=1)


@dataclass
class Contamination:
    benchmark: str
    item: str  # the benchmark item's id
    kind: str  # text | image
    evidence: str


def _grams(text: str, n: int) -> set[str]:
    tokens = question_tokens(text)
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class ContaminationIndex:
    """The evaluation side: n-grams and image hashes of every benchmark item."""

    def __init__(self, cfg: DecontamConfig) -> None:
        self.cfg = cfg
        self._grams: dict[str, list[tuple[str, str]]] = {}
        self._images = PhashIndex(cfg.image_hamming)
        self._image_owner: dict[str, tuple[str, str]] = {}
        self.items = 0

    def add(self, benchmark: str, item_id: str, question: str, phashes: list[int]) -> None:
        self.items += 1
        if self.cfg.check_text:
            for gram in _grams(question, self.cfg.ngram):
                self._grams.setdefault(gram, []).append((benchmark, item_id))
        if self.cfg.check_images:
            for position, value in enumerate(phashes):
                key = f"{benchmark}/{item_id}/{position}"
                self._images.add(value, key)
                self._image_owner[key] = (benchmark, item_id)

    def check(self, question: str, phashes: list[int]) -> Contamination | None:
        if self.cfg.check_text:
            for gram in sorted(_grams(question, self.cfg.ngram)):
                owners = self._grams.get(gram)
                if owners and len(owners) <= self.cfg.max_ngram_frequency:
                    benchmark, item = owners[0]
                    return Contamination(benchmark, item, "text", gram)
        if self.cfg.check_images:
            for value in phashes:
                found = self._images.query(value)
                if found:
                    benchmark, item = self._image_owner[found[0]]
                    return Contamination(benchmark, item, "image", f"phash {value:016x}")
        return None
