"""Near-duplicate removal: questions by MinHash LSH candidates (datasketch) and a token edit
distance check on each candidate pair (rapidfuzz), images by perceptual hashes (imagehash).

Two steps for questions, because short questions defeat either alone. One substituted word in a
12-word question changes 3 of its 10 word 3-grams (Jaccard about 0.54), two changes leave about
0.25, and a swap of neighbours changes as many: an LSH over n-grams tuned to catch those flags
different questions too. So the LSH runs over the set of single tokens (two substitutions in 12
tokens leave Jaccard 0.71, swaps leave 1.0) at a low threshold, for recall, and each candidate pair
is then checked exactly: near duplicates when their token edit distance (substitution, insertion,
deletion, swap of neighbours: optimal string alignment) is at most one edit per `tokens_per_edit`
tokens of the longer question and at most `max_edits`, and, by default, the tokens that carry their
meaning exactly (numbers, symbols, operator and relation words, negations, single-letter variables:
`curation.tokens.meaning_tokens`) are the same in the same order ("What is 48 + 12?" and "What is
48 - 12?", or "Is the cat on the mat?" and "Is the cat not on the mat?", are different questions).

Rows are taken in order and the first of a group is kept, so the result does not depend on how
many workers computed the hashes. A pair is a duplicate according to `match`: `both` (question
and images near-equal; the default, so the same chart with a different question stays), `question`,
`image` or `either`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from curation.strict_config import StrictConfig
from curation.tokens import meaning_tokens, question_tokens

HASH_SCHEME = "datasketch-affine32+xxh32"  # recorded in manifests: signatures differ across schemes


@functools.lru_cache(maxsize=64)
def lsh_accepts(threshold: float, num_perm: int) -> bool:
    """Whether datasketch's `MinHashLSH(threshold, num_perm)` can be built: its optimizer must
    find at least 2 bands, which fails for thresholds near 1 (above 0.96 with 64 permutations,
    above 0.98 with 128)."""
    from datasketch import MinHashLSH

    try:
        MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def max_lsh_threshold(num_perm: int) -> float:
    """The largest threshold (to 0.01) that datasketch's MinHashLSH accepts with `num_perm`
    permutations: the top of the allowed range named when a config asks for more."""
    low, high = 1, 100  # hundredths; datasketch accepts 0.01 with any num_perm >= 2
    while low < high:
        middle = (low + high + 1) // 2
        if lsh_accepts(middle / 100, num_perm):
            low = middle
        else:
            high = middle - 1
    return low / 100


class NearDupConfig(StrictConfig):
    """`curate.near_dup`. Every value is checked here, against the limits of the libraries that
    use it (datasketch's MinHash and MinHashLSH, numpy's seeding), so a bad value stops the config
    from loading instead of the stage after its scans."""

    enabled: bool = True
    # Candidates: MinHash LSH over the set of token n-grams of the question. 1 (single tokens):
    # one or two edits of a short question keep most of its tokens, but few of its 3-grams.
    ngram: int = Field(1, ge=1)
    num_perm: int = Field(64, ge=16, le=1024)  # datasketch permutations (4 bytes a row each)
    # Jaccard similarity of the n-gram sets at which datasketch's MinHashLSH makes a pair a
    # candidate (its S-curve is centred there). Low, for recall: the exact check below decides.
    threshold: float = Field(0.4, gt=0, le=1)
    # n-grams in more than this share of the questions ("the", "what") are left out of the LSH's
    # sets (scikit-learn's `max_df`): shared by unrelated questions, they would make most pairs
    # candidates (see `candidate_sets` for when they stay). The exact check sees every token.
    max_df: float = Field(0.2, gt=0, le=1)
    # The exact check: at most one token edit per `tokens_per_edit` tokens of the longer question
    # (rounded down), and at most `max_edits`. 6 and 2: a question of 12 tokens or more may differ
    # by 2 edits, one of 6 to 11 by 1, a shorter one not at all ("What color is the dog?", 5 tokens,
    # and "... the cat?" are different questions, often about the same image); 20 tokens with 3
    # changed are another question.
    tokens_per_edit: int = Field(6, ge=1)
    max_edits: int = Field(2, ge=0)
    # The tokens that carry a question's meaning exactly must be equal, in order: numbers in every
    # notation, symbols, operator and relation words, negations, single-letter variables
    # (`curation.tokens.meaning_tokens`): "48 + 12" and "48 - 12", "x > 3" and "x < 3", "plus" and
    # "minus", "on" and "not on" are different problems however alike the other words.
    exact_meaning_tokens: bool = True
    # More words that must be equal, in order, under `exact_meaning_tokens` (lower case): e.g.
    # colours or units, where "How many red cars ...?" and "How many blue cars ...?" must both stay.
    exact_words: list[str] = Field(default_factory=list)
    image_hamming: int = Field(6, ge=0, le=32)  # max bit difference of two 64-bit perceptual hashes
    match: Literal["both", "question", "image", "either"] = "both"
    seed: int = Field(1, ge=0, le=2**32 - 1)  # datasketch seeds numpy's RandomState with it

    @field_validator("exact_words")
    @classmethod
    def _single_tokens(cls, words: list[str]) -> list[str]:
        """Each word as `question_tokens` gives it (NFKC, lower case); one token each, since the
        check compares tokens."""
        normalized = []
        for word in words:
            tokens = question_tokens(word)
            if len(tokens) != 1:
                raise ValueError(f"{word!r} is {len(tokens)} tokens, not one word (give each word on its own)")
            normalized.append(tokens[0])
        return normalized

    @field_validator("threshold")
    @classmethod
    def _datasketch_can_band_it(cls, threshold: float, info: ValidationInfo) -> float:
        num_perm = info.data.get("num_perm")
        if num_perm is not None and not lsh_accepts(threshold, num_perm):
            raise ValueError(
                f"{threshold} is outside the range datasketch's MinHashLSH accepts with num_perm {num_perm}: "
                f"0 < threshold <= {max_lsh_threshold(num_perm)} (above it, it cannot split the permutations "
                f"into 2 or more bands); `tokens_per_edit` and `max_edits` are the settings for stricter matches")
        return threshold


def shingles(tokens: Sequence[str], n: int) -> list[bytes]:
    """The distinct token n-grams of a question as bytes (MinHash input); a question shorter than
    n tokens is one shingle."""
    if len(tokens) <= n:
        return [" ".join(tokens).encode()]
    if n == 1:
        return [token.encode() for token in set(tokens)]
    return list({" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1)})


# A shingle is common only when found in at least this many questions too: in a small set, or in a
# large group of copies, the shingles that near duplicates share must stay in their LSH sets.
MIN_COMMON_COUNT = 100


def candidate_sets(tokens: Sequence[Sequence[str]], n: int, max_df: float) -> list[list[bytes]]:
    """Per question, the shingles the LSH compares: its n-grams without the common ones (found in
    more than `max_df` of all the questions and in at least `MIN_COMMON_COUNT`); a question of
    common words only keeps them all."""
    sets = [shingles(t, n) for t in tokens]
    if max_df >= 1:
        return sets
    frequency = Counter(itertools.chain.from_iterable(sets))
    limit = max(max_df * len(sets), MIN_COMMON_COUNT - 1)
    common = {shingle for shingle, count in frequency.items() if count > limit}
    if not common:
        return sets
    rare = ([s for s in row if s not in common] for row in sets)
    return [kept or row for kept, row in zip(rare, sets, strict=True)]


def questions_match(a: Sequence[str], b: Sequence[str], cfg: NearDupConfig) -> bool:
    """The exact check of a candidate pair of token lists (`question_tokens`): at most
    `min(max_edits, longer length // tokens_per_edit)` token edits (optimal string alignment:
    substitutions, insertions, deletions and swaps of neighbours count 1 each), and, when
    `exact_meaning_tokens`, the same `meaning_tokens` (with `exact_words`) in the same order."""
    from rapidfuzz.distance import OSA

    allowed = min(cfg.max_edits, max(len(a), len(b)) // cfg.tokens_per_edit)
    if abs(len(a) - len(b)) > allowed:
        return False
    if OSA.distance(a, b, score_cutoff=allowed) > allowed:
        return False
    if not cfg.exact_meaning_tokens:
        return True
    extra = frozenset(cfg.exact_words)
    return meaning_tokens(a, extra) == meaning_tokens(b, extra)


def image_phash(data: bytes) -> int:
    import imagehash
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return int(str(imagehash.phash(image.convert("RGB"))), 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class PhashIndex:
    """Finds stored 64-bit hashes within `max_distance` bits: split into max_distance + 1 bands, a
    near hash equals the query in at least one band (pigeonhole), so only those are compared."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self.bands = max_distance + 1
        self.width = -(-64 // self.bands)
        self._tables: list[dict[int, list[tuple[int, str]]]] = [{} for _ in range(self.bands)]

    def _keys(self, value: int) -> list[int]:
        mask = (1 << self.width) - 1
        return [(value >> (i * self.width)) & mask for i in range(self.bands)]

    def add(self, value: int, key: str) -> None:
        for table, band in zip(self._tables, self._keys(value), strict=True):
            table.setdefault(band, []).append((value, key))

    def query(self, value: int) -> list[str]:
        found: dict[str, None] = {}
        for table, band in zip(self._tables, self._keys(value), strict=True):
            for stored, key in table.get(band, ()):
                if hamming(stored, value) <= self.max_distance:
                    found[key] = None
        return list(found)


@dataclass
class DedupItem:
    key: str
    question: str
    phashes: list[int]  # one per image, in order


@dataclass
class Duplicate:
    key: str
    of: str  # the kept row it duplicates
    reason: str  # near_duplicate_question | near_duplicate_image | near_duplicate


def _images_match(a: Sequence[int], b: Sequence[int], max_distance: int) -> bool:
    return len(a) == len(b) and all(hamming(x, y) <= max_distance for x, y in zip(a, b, strict=True))


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the index is built: it holds millions of small
    objects without cycles, which each full collection would walk again (a third of the step's
    time on 100,000 rows). Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def find_near_duplicates(items: Sequence[DedupItem], cfg: NearDupConfig) -> list[Duplicate]:
    """The items to drop, each with the kept item it duplicates; the first of each group stays.

    Questions: LSH candidates among the kept rows, each confirmed by `questions_match`.
    Images: `PhashIndex` candidates, confirmed by every image being within `image_hamming` bits."""
    with _cyclic_gc_paused():
        return _find_near_duplicates(items, cfg)


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's `MinHashLSH` chooses for `threshold` (its
    optimizer, weighing false positives and false negatives equally); ValueError where it finds
    fewer than 2 bands."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> dict[int, list[int]]:
    """For each row of `signatures` (one MinHash's hash values per row), the earlier rows that
    equal it in all `rows` values of at least one of `bands` bands (ascending): the candidate
    pairs of datasketch's `MinHashLSH` with those parameters, which keys each band's buckets by
    the same values.

    Banded here with numpy, one sort per band: `MinHashLSH` keeps a Python set per band and row
    (12 sets a row at the defaults) and spent more than half of the step's time inserting them."""
    earlier: dict[int, set[int]] = {}
    for band in range(bands):
        values = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = values.view(np.dtype((np.void, values.dtype.itemsize * rows))).ravel()
        order = np.argsort(keys, kind="stable")  # equal keys stay in row order
        ordered = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))
        for first, stop in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            if stop - first > 1:
                members = order[first:stop].tolist()
                for index in range(1, len(members)):
                    earlier.setdefault(members[index], set()).update(members[:index])
    return {position: sorted(found) for position, found in earlier.items()}


def _find_near_duplicates(items: Sequence[DedupItem], cfg: NearDupConfig) -> list[Duplicate]:
    import xxhash
    from datasketch import MinHash

    use_text = cfg.match in ("both", "question", "either")
    tokens = [question_tokens(item.question) for item in items] if use_text else []
    candidates: dict[int, list[int]] = {}
    if use_text:
        minhashes = MinHash.generator(candidate_sets(tokens, cfg.ngram, cfg.max_df), num_perm=cfg.num_perm, seed=cfg.seed,
                                      hashfunc=xxhash.xxh32_intdigest)
        signatures = np.stack([minhash.hashvalues for minhash in minhashes]) if items else np.zeros((0, cfg.num_perm), np.uint32)
        candidates = lsh_candidates(signatures, *lsh_bands(cfg.threshold, cfg.num_perm))
    image_index = PhashIndex(cfg.image_hamming) if cfg.match in ("image", "either") else None
    kept: dict[str, int] = {}  # key -> position
    kept_at: set[int] = set()
    duplicates: list[Duplicate] = []
    for position, item in enumerate(items):
        match: Duplicate | None = None
        for other in candidates.get(position, ()):
            if other not in kept_at or not questions_match(tokens[other], tokens[position], cfg):
                continue  # dropped itself, or an LSH candidate that is not a near duplicate
            if cfg.match != "both":
                match = Duplicate(item.key, items[other].key, "near_duplicate_question")
                break
            if _images_match(items[other].phashes, item.phashes, cfg.image_hamming):
                match = Duplicate(item.key, items[other].key, "near_duplicate")
                break
        if match is None and image_index is not None and item.phashes:
            for other_key in sorted(image_index.query(item.phashes[0]), key=kept.__getitem__):
                if _images_match(items[kept[other_key]].phashes, item.phashes, cfg.image_hamming):
                    match = Duplicate(item.key, other_key, "near_duplicate_image")
                    break
        if match is not None:
            duplicates.append(match)
            continue
        kept[item.key] = position
        kept_at.add(position)
        if image_index is not None and item.phashes:
            image_index.add(item.phashes[0], item.key)
    return duplicates
