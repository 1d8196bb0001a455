"""Decontamination: drop training rows that overlap an evaluation benchmark.

Text: a row is contaminated when it shares a token n-gram (default 8 tokens of
`curation.tokens.question_tokens`, the tokens near-duplicate removal compares: words, numbers,
operators and relation symbols) with a benchmark question, or, for questions shorter than n
tokens, when it equals one. Images: a perceptual hash within `image_hamming` bits of a benchmark
image. Every removal names the benchmark and the benchmark item it matched.

Benchmarks are read for what is compared and nothing else (`read_benchmarks`): a row's question
and images, not its answer, category or answer type (a test split without answers still counts).
A benchmark none of whose rows can be read is a mistake in its config (a wrong field mapping),
never a benchmark to decontaminate against quietly: `BenchmarkRead.error` is the one line the
curate stage stops with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from curation.dedup import PhashIndex, image_phash
from curation.images import ImageLimits, ImageRejected, validate_image
from curation.mapping import scalar_text
from curation.schema import content_id
from curation.sources import (PARSE_ERROR, RowRejected, SourceSpec, image_column_fix, images_read_from, read_source,
                              row_question_and_images, rows_fix_hint, unread_image_columns)
from curation.strict_config import StrictConfig
from curation.tokens import question_tokens


class DecontamConfig(StrictConfig):
    """`curate.decontam`: how training rows are compared with the `curate.benchmarks`."""

    ngram: int = Field(8, ge=1)
    image_hamming: int = Field(4, ge=0, le=32)
    check_text: bool = True
    check_images: bool = True
    # Common phrasings of questions ("what is the name of the") would match everything: an n-gram
    # seen in more benchmark questions than this is not evidence of contamination.
    max_ngram_frequency: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _checks_something(self) -> DecontamConfig:
        if not (self.check_text or self.check_images):
            raise ValueError("check_text and check_images are both false: nothing would be compared "
                             "(to decontaminate against nothing, leave `benchmarks` empty)")
        return self


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


@dataclass
class BenchmarkRead:
    """What reading one benchmark gave: its rows, the items indexed, and the rows that could not
    be used, counted by reason (the text before the reason's first colon)."""

    benchmark: str
    file: str
    rows: int = 0
    items: int = 0
    unreadable: Counter = field(default_factory=Counter)
    unreadable_images: int = 0  # images left out of items that were indexed by their other parts
    first_unreadable: str = ""  # where the first unreadable row is (`file:line`, `file[i]`)
    unread_image_columns: Counter = field(default_factory=Counter)  # columns that look like images, not read -> rows with one
    images_read_from: str = "`images`"  # the column its images are read from, quoted as a message names it

    def summary(self) -> dict[str, Any]:
        """A row of the report's benchmarks table."""
        why = ", ".join(f"{reason} {n}" for reason, n in self.unreadable.most_common()) or "—"
        return {"benchmark": self.benchmark, "file": self.file, "rows": self.rows, "items": self.items,
                "unreadable_rows": sum(self.unreadable.values()), "why": why, "unreadable_images": self.unreadable_images}

    def warning(self) -> str | None:
        """One line for a benchmark some of whose rows (or images) could not be read, else None
        (also for one with no usable row: `error` is its line)."""
        if not self.items:
            return None
        parts = []
        if self.unreadable:
            reason = self.unreadable.most_common(1)[0][0]
            why = ", ".join(f"{n} for {r}" for r, n in self.unreadable.most_common())
            parts.append(f"{sum(self.unreadable.values())} of its {self.rows} rows are not decontaminated against, "
                         f"{why} (first at {self.first_unreadable}): {rows_fix_hint(reason)}")
        if self.unreadable_images:
            parts.append(f"{self.unreadable_images} image(s) could not be read (their rows' questions are still compared)")
        if self.unread_image_columns:
            one = len(self.unread_image_columns) == 1
            named = ", ".join(f"`{c}` ({n} row{'s' if n != 1 else ''})" for c, n in self.unread_image_columns.items())
            parts.append(f"column{'' if one else 's'} {named} look{'s' if one else ''} like images but {'is' if one else 'are'} not "
                         f"read (its images are read from {self.images_read_from}), so those images are not decontaminated "
                         f"against; {image_column_fix(list(self.unread_image_columns))}")
        return f"benchmark {self.benchmark!r} ({self.file}): " + "; ".join(parts) if parts else None

    def error(self) -> str:
        """The one-line error for a benchmark none of whose rows is usable."""
        if not self.rows:
            return (f"benchmark {self.benchmark!r} ({self.file}): no rows (after `include` and `limit`), so nothing would be "
                    "decontaminated against it: check the file, or leave the benchmark out")
        reason, count = self.unreadable.most_common(1)[0]
        return (f"benchmark {self.benchmark!r} ({self.file}): none of its {self.rows} rows can be decontaminated against, "
                f"{count} for {reason} (first at {self.first_unreadable}): {rows_fix_hint(reason)}")


def _benchmark_item(row: dict[str, Any], spec: SourceSpec, cfg: DecontamConfig, limits: ImageLimits,
                    files: set[str]) -> tuple[str, str, list[int], int]:
    """(item id, question, image hashes, images not read) of a benchmark row. `RowRejected`
    without a question (when text is checked: its images alone would let the same question with
    another picture through), or, when only images are checked, without a readable image. An
    image that cannot be read leaves the rest of its row to compare."""
    if PARSE_ERROR in row:
        raise RowRejected(row[PARSE_ERROR])
    question, images, problems = row_question_and_images(row, spec, spec.base_dir, cfg.check_images, files)
    if cfg.check_text and not question:
        raise RowRejected(f"missing_question: the row has no `{spec.column('question')}` (or it is empty)")
    hashes = []
    for data in images:
        try:
            hashes.append(image_phash(validate_image(data, limits)))
        except ImageRejected as exc:
            problems.append(str(exc))
    if not cfg.check_text and not hashes:
        raise RowRejected(problems[0] if problems else "no_images: the row has no image, and only images are checked")
    raw_id = spec.value(row, "id")
    item_id = (scalar_text(raw_id, "id") if raw_id != "" else None) or content_id(question or "", images)
    return item_id, question or "", hashes, len(problems)


def read_benchmarks(specs: Sequence[SourceSpec], cfg: DecontamConfig, limits: ImageLimits,
                    files: set[str]) -> tuple[ContaminationIndex, list[BenchmarkRead]]:
    """The index of every benchmark's questions and image hashes, and what reading each gave (a
    read without `items` is a benchmark to refuse: `BenchmarkRead.error` says why, in one line).

    Files the rows point to go into `files`. Raises `SourceError` for a benchmark that cannot be
    read as rows at all (no file, not a table)."""
    index = ContaminationIndex(cfg)
    reads = []
    for spec in specs:
        read = BenchmarkRead(spec.source_name, spec.path, images_read_from=images_read_from(spec))
        for row, origin in read_source(spec):
            read.rows += 1
            if cfg.check_images and PARSE_ERROR not in row:
                read.unread_image_columns.update(unread_image_columns(spec, row))
            try:
                item_id, question, hashes, images_not_read = _benchmark_item(row, spec, cfg, limits, files)
            except Exception as exc:  # noqa: BLE001 - a row the checks above missed is still the row's problem
                reason = str(exc) if isinstance(exc, RowRejected) else f"row_error: {type(exc).__name__}: {exc}"
                read.unreadable[reason.split(":", 1)[0]] += 1
                read.first_unreadable = read.first_unreadable or origin
                continue
            read.items += 1
            read.unreadable_images += images_not_read
            index.add(spec.source_name, item_id, question, hashes)
        reads.append(read)
    return index, reads
