"""Near-duplicate question removal: ours (datasketch MinHash LSH) against datatrove's MinHash dedup.

    python -m bench.dedup --json [--rows 100000] [--pairs 5000]

Builds `rows` synthetic questions (random words from a 5,000-word vocabulary, 18-30 words each) in
which `pairs` are planted near duplicates of another row (one word substituted, inserted or
deleted), runs our near-dup step and, in the same run, datatrove's MinHash pipeline (signatures,
buckets, clusters; a dev dependency: `pip install datatrove`) on the same rows with the same word
3-grams and tokenization, and prints:

- `speed_ratio_vs_datatrove`: datatrove's time ÷ ours (target ≥ 1.0);
- `recall` / `precision` (ours) and `datatrove_recall` / `datatrove_precision` on the planted
  pairs: a pair is found when exactly one of its rows is removed; a removal is right when the row
  belongs to a planted pair (target: our recall ≥ datatrove's);
- `peak_rss_mb`: this process's peak resident memory after our step (rows included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from curation.dedup import DedupItem, NearDupConfig, find_near_duplicates
from curation.normalize import words

NGRAM = 3


def make_rows(count: int, pairs: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "pa", "zu", "or", "en", "ti", "ba"]
    vocab = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(8000)})[:5000]
    originals = [" ".join(rng.choice(vocab) for _ in range(rng.randint(18, 30))) + "?" for _ in range(count - pairs)]
    texts = list(originals)
    planted = []
    for source in rng.sample(range(len(originals)), pairs):
        tokens = originals[source].rstrip("?").split()
        position = rng.randrange(len(tokens))
        edit = rng.choice(("substitute", "insert", "delete"))
        if edit == "substitute":
            tokens[position] = rng.choice(vocab)
        elif edit == "insert":
            tokens.insert(position, rng.choice(vocab))
        else:
            del tokens[position]
        texts.append(" ".join(tokens) + "?")
        planted.append((source, len(texts) - 1))
    order = list(range(len(texts)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return [texts[i] for i in order], [(where[a], where[b]) for a, b in planted]


def score(removed: set[int], planted: list[tuple[int, int]]) -> tuple[float, float]:
    in_pairs = {i for pair in planted for i in pair}
    found = sum(1 for a, b in planted if (a in removed) != (b in removed))
    recall = found / len(planted) if planted else 1.0
    precision = sum(1 for i in removed if i in in_pairs) / len(removed) if removed else 1.0
    return recall, precision


def run_ours(texts: list[str]) -> set[int]:
    items = [DedupItem(str(i), text, []) for i, text in enumerate(texts)]
    return {int(d.key) for d in find_near_duplicates(items, NearDupConfig(ngram=NGRAM, match="question"))}


def run_datatrove(texts: list[str], work: Path) -> set[int]:
    import numpy as np
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Words(WordTokenizer):
        """The tokenization our step uses, so both sides hash the same 3-grams."""

        def word_tokenize(self, text: str) -> list[str]:
            return words(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    # 14 buckets x 8 hashes: datatrove's default, about 0.72 Jaccard. Its default xxhash path hands
    # str to xxhash, which xxhash 4.x refuses ("Strings must be encoded"): its sha1 option works.
    config = MinhashConfig(n_grams=NGRAM, hash_config=HashConfig(precision=64, hash_fc="sha1"))
    docs = [Document(text=text, id=str(i)) for i, text in enumerate(texts)]
    workers = os.cpu_count() or 1
    quiet = {"logging_dir": str(work / "logs"), "skip_completed": False}
    LocalPipelineExecutor(pipeline=[docs, MinhashDedupSignature(output_folder=str(work / "sigs"), config=config, language=Words())],
                          tasks=1, workers=1, **quiet).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
                          tasks=config.num_buckets, workers=workers, **quiet).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config)],
                          tasks=1, workers=1, **quiet).run()
    removed = set()
    for file in (work / "remove").glob("*.remove"):
        removed.update(int(i) for i in np.fromfile(file, dtype="<u4"))
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=5_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    texts, planted = make_rows(args.rows, args.pairs)
    started = time.perf_counter()
    ours = run_ours(texts)
    ours_s = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    recall, precision = score(ours, planted)

    import logging

    from loguru import logger

    logger.remove()  # datatrove logs every step through loguru; the bench prints one line
    logging.getLogger("datatrove").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        theirs = run_datatrove(texts, Path(tmp))
        datatrove_s = time.perf_counter() - started
    datatrove_recall, datatrove_precision = score(theirs, planted)

    result = {
        "rows": len(texts),
        "planted_pairs": len(planted),
        "ours_s": round(ours_s, 2),
        "datatrove_s": round(datatrove_s, 2),
        "speed_ratio_vs_datatrove": round(datatrove_s / ours_s, 3),
        "recall": round(recall, 4),
        "precision": round(precision, 4),
        "datatrove_recall": round(datatrove_recall, 4),
        "datatrove_precision": round(datatrove_precision, 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
