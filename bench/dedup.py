"""Near-duplicate question removal: ours (datasketch MinHash LSH candidates, a token edit distance
check) against datatrove's MinHash dedup, on two generated sets, in one run.

    python -m bench.dedup --json [--rows 100000] [--pairs 5000] [--copies 10000] [--sets planted,short]

Sets (both built here from a seed; every row that is not a planted copy is a different question):

- `planted`: `rows` questions of 18-30 words drawn uniformly from a 5,000-word vocabulary, in which
  `pairs` rows are copies of another row with one word substituted, inserted or deleted; rows
  shuffled.
- `short`: `rows` questions of 12-30 words drawn from a 5,000-word vocabulary with Zipf frequencies
  (a few words, like "the" and "what" in real questions, are in most rows), in which `copies` rows
  are copies of an earlier row with one or two edits, each a substituted word or two neighbouring
  words swapped.

On each set, our near-dup step (default `NearDupConfig`, `match: question`) and datatrove's MinHash
pipeline (signatures, buckets, clusters over word 3-grams with our tokenizer, its 14 buckets x 8
hashes; a dev dependency: `pip install datatrove`) run on the same rows. Printed per set:

- `ours_s`, `datatrove_s`, `speed_ratio_vs_datatrove` (datatrove's time / ours);
- `recall` / `precision` (ours) and `datatrove_recall` / `datatrove_precision`: a planted pair is
  found when exactly one of its rows is removed; a removal is right when the row is in a planted
  pair;
- `unplanted_removed`: our removals outside the planted pairs (each passed the exact check against
  its kept row, so each would be a near copy the generator made by accident; precision counts them
  as wrong all the same);
- `unplanted_near_copies_in_sample`: ground truth for the generator, without any LSH: every pair
  among `sample_rows` random rows (about 12.5 million pairs) is compared by token edit distance
  (rapidfuzz `cdist`), and the pairs within our definition that were not planted are counted;

and `peak_rss_mb`: this process's peak resident memory after our steps (the rows of both sets
included).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from curation.dedup import DedupItem, NearDupConfig, find_near_duplicates, questions_match
from curation.tokens import question_tokens

DATATROVE_NGRAM = 3


def _vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "pa", "zu", "or", "en", "ti", "ba"]
    return sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(8000)})[:size]


def make_rows(count: int, pairs: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """The `planted` set: (texts, planted pairs of row indices)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
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


def make_short_questions(count: int, copies: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]], list[int]]:
    """The `short` set: (texts, planted (source, copy) pairs with the source always first, the
    number of edits of each pair).

    Originals: 12-30 words from a Zipf(1) vocabulary. Copies of distinct originals, each placed
    after its source: one or two edits at distinct positions, each a substitution by another word
    or a swap of two different neighbouring words."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / rank for rank in range(1, len(vocab) + 1)))

    def draw(k: int) -> list[str]:
        return rng.choices(vocab, cum_weights=cumulative, k=k)

    originals = [draw(rng.randint(12, 30)) for _ in range(count - copies)]
    keyed: list[tuple[float, list[str], int | None, int]] = [(float(i), tokens, None, 0) for i, tokens in enumerate(originals)]
    for source in rng.sample(range(len(originals)), copies):
        tokens = list(originals[source])
        touched: set[int] = set()
        edits = rng.choice((1, 2))
        for _ in range(edits):
            while True:
                if rng.random() < 0.5:
                    position = rng.randrange(len(tokens))
                    if position in touched:
                        continue
                    replacement = draw(1)[0]
                    if replacement == tokens[position]:
                        continue
                    tokens[position] = replacement
                    touched.add(position)
                else:
                    position = rng.randrange(len(tokens) - 1)
                    if {position, position + 1} & touched or tokens[position] == tokens[position + 1]:
                        continue
                    tokens[position], tokens[position + 1] = tokens[position + 1], tokens[position]
                    touched.update((position, position + 1))
                break
        keyed.append((source + rng.uniform(0.001, len(originals) - source), tokens, source, edits))
    keyed.sort(key=lambda entry: entry[0])
    where = {int(key): new for new, (key, _, source, _) in enumerate(keyed) if source is None}
    texts = [" ".join(tokens).capitalize() + "?" for _, tokens, _, _ in keyed]
    planted = [(where[source], new) for new, (_, _, source, _) in enumerate(keyed) if source is not None]
    return texts, planted, [edits for _, _, source, edits in keyed if source is not None]


def score(removed: set[int], planted: list[tuple[int, int]]) -> tuple[float, float]:
    in_pairs = {i for pair in planted for i in pair}
    found = sum(1 for a, b in planted if (a in removed) != (b in removed))
    recall = found / len(planted) if planted else 1.0
    precision = sum(1 for i in removed if i in in_pairs) / len(removed) if removed else 1.0
    return recall, precision


def run_ours(texts: list[str], cfg: NearDupConfig) -> dict[int, int]:
    """Removed row -> the kept row it duplicates."""
    items = [DedupItem(str(i), text, []) for i, text in enumerate(texts)]
    return {int(d.key): int(d.of) for d in find_near_duplicates(items, cfg)}


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

    class Tokens(WordTokenizer):
        """The tokenization our step uses, so both sides see the same tokens."""

        def word_tokenize(self, text: str) -> list[str]:
            return question_tokens(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    # 14 buckets x 8 hashes: datatrove's default, about 0.72 Jaccard; 3-grams (its default 5 finds
    # fewer copies in short texts). Its default xxhash path hands str to xxhash, which xxhash 4.x
    # refuses ("Strings must be encoded"): its sha1 option works.
    config = MinhashConfig(n_grams=DATATROVE_NGRAM, hash_config=HashConfig(precision=64, hash_fc="sha1"))
    docs = [Document(text=text, id=str(i)) for i, text in enumerate(texts)]
    workers = os.cpu_count() or 1
    quiet = {"logging_dir": str(work / "logs"), "skip_completed": False}
    LocalPipelineExecutor(pipeline=[docs, MinhashDedupSignature(output_folder=str(work / "sigs"), config=config, language=Tokens())],
                          tasks=1, workers=1, **quiet).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
                          tasks=config.num_buckets, workers=workers, **quiet).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config)],
                          tasks=1, workers=1, **quiet).run()
    removed = set()
    for file in (work / "remove").glob("*.remove"):
        removed.update(int(i) for i in np.fromfile(file, dtype="<u4"))
    return removed


def found_share(removed: set[int], planted: list[tuple[int, int]]) -> float:
    return round(score(removed, planted)[0], 4)


def unplanted_near_copies(texts: list[str], planted: list[tuple[int, int]], cfg: NearDupConfig, size: int,
                          seed: int = 1) -> int:
    """Pairs among `size` random rows that are near copies by `questions_match` but not planted."""
    import numpy as np
    from rapidfuzz import process
    from rapidfuzz.distance import OSA

    rows = sorted(random.Random(seed).sample(range(len(texts)), min(size, len(texts))))
    tokens = [question_tokens(texts[i]) for i in rows]
    distances = process.cdist(tokens, tokens, scorer=OSA.distance, score_cutoff=cfg.max_edits, dtype=np.int8)
    pairs = set(planted) | {(b, a) for a, b in planted}
    close = np.argwhere(np.triu(distances <= cfg.max_edits, k=1))
    return sum(1 for i, j in close.tolist()
               if (rows[i], rows[j]) not in pairs and questions_match(tokens[i], tokens[j], cfg))


def measure_ours(texts: list[str], planted: list[tuple[int, int]], cfg: NearDupConfig) -> tuple[dict[str, float | int], set[int], float]:
    started = time.perf_counter()
    ours = run_ours(texts, cfg)
    seconds = time.perf_counter() - started
    recall, precision = score(set(ours), planted)
    in_pairs = {i for pair in planted for i in pair}
    figures = {"ours_s": round(seconds, 2), "recall": round(recall, 4), "precision": round(precision, 4),
               "removed": len(ours), "unplanted_removed": sum(1 for row in ours if row not in in_pairs)}
    return figures, set(ours), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=5_000, help="planted set: rows that are one-edit copies")
    parser.add_argument("--copies", type=int, default=10_000, help="short set: rows that are 1-2 edit copies")
    parser.add_argument("--sets", default="planted,short")
    parser.add_argument("--sample-rows", type=int, default=5_000, help="rows compared pair by pair for the generator's ground truth")
    parser.add_argument("--no-datatrove", action="store_true", help="ours only (development)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cfg = NearDupConfig(match="question")
    builders = {"planted": lambda: (*make_rows(args.rows, args.pairs), None),
                "short": lambda: make_short_questions(args.rows, args.copies)}
    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = set(names) - set(builders)
    if unknown:
        parser.error(f"unknown set(s) {sorted(unknown)}; known: {sorted(builders)}")
    sets = {name: builders[name]() for name in names}

    def by_edits(removed: set[int], planted: list[tuple[int, int]], edits: list[int] | None, prefix: str) -> dict[str, float]:
        if edits is None:
            return {}
        return {f"{prefix}recall_{n}_edit{'s' if n > 1 else ''}": found_share(removed, [p for p, e in zip(planted, edits, strict=True) if e == n])
                for n in sorted(set(edits))}

    results: dict[str, dict[str, float | int | list[float]]] = {}
    ours_seconds: dict[str, list[float]] = {}
    for name, (texts, planted, edits) in sets.items():
        gc.collect()
        figures, removed, seconds = measure_ours(texts, planted, cfg)
        ours_seconds[name] = [seconds]
        results[name] = {"rows": len(texts), "planted_pairs": len(planted), **figures, **by_edits(removed, planted, edits, "")}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if not args.no_datatrove:
        import logging

        from loguru import logger

        logger.remove()  # datatrove logs every step through loguru; the bench prints one line
        logging.getLogger("datatrove").setLevel(logging.ERROR)
        datatrove_seconds = {}
        for name, (texts, planted, edits) in sets.items():
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                theirs = run_datatrove(texts, Path(tmp))
                datatrove_seconds[name] = time.perf_counter() - started
            datatrove_recall, datatrove_precision = score(theirs, planted)
            results[name].update({"datatrove_s": round(datatrove_seconds[name], 2), "datatrove_recall": round(datatrove_recall, 4),
                                  "datatrove_precision": round(datatrove_precision, 4), **by_edits(theirs, planted, edits, "datatrove_")})
        # Ours again after datatrove, so both sides' runs span the same stretch of a shared
        # machine's load: our time is the mean of the run before and the run after.
        for name, (texts, planted, _) in sets.items():
            gc.collect()
            ours_seconds[name].append(measure_ours(texts, planted, cfg)[2])
            mean = sum(ours_seconds[name]) / len(ours_seconds[name])
            results[name].update({"ours_s": round(mean, 2), "ours_runs_s": [round(x, 2) for x in ours_seconds[name]],
                                  "speed_ratio_vs_datatrove": round(datatrove_seconds[name] / mean, 3)})

    for name, (texts, planted, _) in sets.items():
        results[name].update({"sample_rows": min(args.sample_rows, len(texts)),
                              "unplanted_near_copies_in_sample": unplanted_near_copies(texts, planted, cfg, args.sample_rows)})
    result = {"near_dup": cfg.model_dump(exclude={"enabled", "image_hamming"}), **results, "peak_rss_mb": round(peak_rss_mb, 1)}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
