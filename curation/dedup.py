"""Near-duplicate removal: MinHash LSH over question word n-grams (datasketch) and perceptual
hashes of images (imagehash).

Rows are taken in order and the first of a group is kept, so the result does not depend on how
many workers computed the hashes. A pair is a duplicate according to `match`: `both` (question
and images near-equal; the default, so the same chart with a different question stays), `question`,
`image` or `either`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from curation.normalize import words

HASH_SCHEME = "datasketch-affine32+xxh32"  # recorded in manifests: signatures differ across schemes


class NearDupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ngram: int = Field(3, ge=1)  # word n-grams of the normalized question
    num_perm: int = Field(128, ge=16)
    # Jaccard similarity of question n-gram sets. 0.6: one word changed in an 18-word question
    # leaves 0.68 of its 3-grams shared, and such a pair is a duplicate.
    threshold: float = Field(0.6, gt=0, le=1)
    image_hamming: int = Field(6, ge=0, le=32)  # max bit difference of two 64-bit perceptual hashes
    match: Literal["both", "question", "image", "either"] = "both"
    seed: int = 1


def shingles(text: str, n: int) -> list[bytes]:
    tokens = words(text)
    if len(tokens) <= n:
        return [" ".join(tokens).encode()] if tokens else [b""]
    return list({" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1)})


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


def find_near_duplicates(items: Sequence[DedupItem], cfg: NearDupConfig) -> list[Duplicate]:
    """The items to drop, each with the kept item it duplicates; the first of each group stays."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    use_text = cfg.match in ("both", "question", "either")
    minhashes = (
        MinHash.bulk((shingles(item.question, cfg.ngram) for item in items), num_perm=cfg.num_perm, seed=cfg.seed,
                     hashfunc=xxhash.xxh32_intdigest)
        if use_text else []
    )
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm) if use_text else None
    image_index = PhashIndex(cfg.image_hamming) if cfg.match in ("image", "either") else None
    kept: dict[str, int] = {}  # key -> position
    duplicates: list[Duplicate] = []
    for position, item in enumerate(items):
        match: Duplicate | None = None
        if lsh is not None:
            mh = minhashes[position]
            for other in sorted(lsh.query(mh), key=kept.__getitem__):
                if minhashes[kept[other]].jaccard(mh) < cfg.threshold:
                    continue  # an LSH candidate, not a near duplicate
                if cfg.match != "both":
                    match = Duplicate(item.key, other, "near_duplicate_question")
                    break
                if _images_match(items[kept[other]].phashes, item.phashes, cfg.image_hamming):
                    match = Duplicate(item.key, other, "near_duplicate")
                    break
        if match is None and image_index is not None and item.phashes:
            for other in sorted(image_index.query(item.phashes[0]), key=kept.__getitem__):
                if _images_match(items[kept[other]].phashes, item.phashes, cfg.image_hamming):
                    match = Duplicate(item.key, other, "near_duplicate_image")
                    break
        if match is not None:
            duplicates.append(match)
            continue
        kept[item.key] = position
        if lsh is not None:
            lsh.insert(item.key, minhashes[position], check_duplication=False)
        if image_index is not None and item.phashes:
            image_index.add(item.phashes[0], item.key)
    return duplicates
