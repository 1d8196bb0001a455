"""Near-duplicate questions: the shared tokenizer, the exact check of candidate pairs, recall on
short questions with one or two edits, and the limits checked when a config loads."""

import numpy as np
import pytest
from pydantic import ValidationError

from bench.dedup import make_short_questions, score
from curation.decontam import ContaminationIndex, DecontamConfig
from curation.dedup import (
    DedupItem,
    NearDupConfig,
    candidate_sets,
    find_near_duplicates,
    lsh_bands,
    lsh_candidates,
    lsh_accepts,
    max_lsh_threshold,
    questions_match,
)
from curation.stage import CurateConfig
from curation.tokens import question_tokens
from flows.config import ConfigError, load_config

# Issue #18: word tokens dropped the operators, and 4 of these 6 were dropped as near duplicates.
OPERATOR_QUESTIONS = ["What is 48 + 12?", "What is 48 - 12?", "What is 48 * 12?", "What is 48 / 12?",
                      "Is x > 3 when x = 5?", "Is x < 3 when x = 5?"]


def keys_dropped(questions, **cfg):
    items = [DedupItem(str(i), q, []) for i, q in enumerate(questions)]
    return {(d.key, d.of) for d in find_near_duplicates(items, NearDupConfig(match="question", **cfg))}


@pytest.mark.parametrize("text,tokens", [
    ("What is 48 + 12?", ["what", "is", "48", "+", "12"]),
    ("Is x ≥ 3 when x = 5?", ["is", "x", "≥", "3", "when", "x", "=", "5"]),
    ("What's the PRICE of 1,000.5 apples, in $?", ["what", "s", "the", "price", "of", "1000.5", "apples", "in", "$"]),
    ("Is 5! > 100?", ["is", "5", "!", ">", "100"]),
    ("“Quoted”, then: done.", ["quoted", "then", "done"]),
])
def test_tokens_keep_numbers_operators_and_relations(text, tokens):
    assert question_tokens(text) == tokens


def test_operator_and_relation_questions_are_all_kept():
    assert keys_dropped(OPERATOR_QUESTIONS) == set()
    # The same questions with images, under the default `match: both` and one shared image.
    items = [DedupItem(str(i), q, [0x0F0F0F0F0F0F0F0F]) for i, q in enumerate(OPERATOR_QUESTIONS)]
    assert find_near_duplicates(items, NearDupConfig()) == []
    # Not by accident: a repeat of each (other spacing, case and end punctuation) is dropped.
    repeats = [q.upper().replace("?", " .") for q in OPERATOR_QUESTIONS]
    assert keys_dropped(OPERATOR_QUESTIONS + repeats) == {(str(i + 6), str(i)) for i in range(6)}


def test_operator_questions_are_not_contaminated_by_another_operator():
    index = ContaminationIndex(DecontamConfig())
    index.add("mini-bench", "q1", "What is 48 ^ 12?", [])
    assert [q for q in OPERATOR_QUESTIONS if index.check(q, []) is not None] == []
    hit = index.check("what is 48 ^ 12", [])  # the benchmark's own question still is
    assert hit is not None and (hit.benchmark, hit.item, hit.kind) == ("mini-bench", "q1", "text")


def test_a_question_whose_8_grams_differ_only_in_operators_is_not_contaminated():
    index = ContaminationIndex(DecontamConfig())
    index.add("b", "q", "If x < 3 and y > 2, is x - y > 5?", [])  # word tokens alone share an 8-gram with both below
    assert index.check("If x > 3 and y < 2, is x + y > 5?", []) is None
    assert index.check("Suppose x < 3 and y > 2: is x - y > 5?", []) is not None


BASE = "How many red cars are parked in front of the tall blue building on the left side of the street?"


@pytest.mark.parametrize("copy", [
    BASE.replace("tall", "big"),  # one substitution
    BASE.replace("red cars", "cars red"),  # neighbours swapped
    BASE.replace("tall blue", "blue tall").replace("left", "right"),  # a swap and a substitution
    BASE.replace("How many", "how many").replace("?", "") + " ?",  # case and punctuation only
])
def test_one_and_two_edit_copies_are_dropped(copy):
    assert keys_dropped([BASE, copy]) == {("1", "0")}


@pytest.mark.parametrize("other", [
    "How many people are standing in front of the tall blue building on the left side of the street?",
    "What color are the cars parked in front of the tall blue building on the left side of the street?",
    BASE.replace("left", "right").replace("red", "green").replace("tall", "short"),  # three edits in 20 tokens
    "What color is the cat?",  # one edit in 5 tokens (with "What color is the dog?" below)
    BASE.replace("How many", "How many 3"),  # a number added
])
def test_different_questions_sharing_most_words_are_kept(other):
    first = "What color is the dog?" if len(other) < 30 else BASE
    assert keys_dropped([first, other]) == set()


def test_exact_check_boundaries():
    cfg = NearDupConfig()
    twelve = "a b c d e f g h i j k l".split()
    assert questions_match(twelve, ["x", "y", *twelve[2:]], cfg)  # 2 edits in 12 tokens
    assert not questions_match(twelve, ["x", "y", "z", *twelve[3:]], cfg)
    assert questions_match(twelve, ["b", "a", "d", "c", *twelve[4:]], cfg)  # two swaps of neighbours
    assert not questions_match(twelve, twelve[:9], cfg)  # three deleted
    assert not questions_match(twelve[:11], ["x", "y", *twelve[2:11]], cfg)  # 11 tokens: one edit only
    assert questions_match(twelve[:11], ["x", *twelve[1:11]], cfg)
    assert not questions_match(twelve[:5], ["x", *twelve[1:5]], cfg)  # 5 tokens: none
    thirty = [f"w{i}" for i in range(30)]
    assert not questions_match(thirty, ["x", "y", "z", *thirty[3:]], cfg)  # never more than max_edits
    assert questions_match(thirty, ["x", "y", "z", *thirty[3:]], NearDupConfig(max_edits=5))
    plus, minus = question_tokens("Is the sum 48 + 12 when x = 5?"), question_tokens("Is the sum 48 - 12 when x = 5?")
    assert not questions_match(plus, minus, cfg)
    assert questions_match(plus, minus, NearDupConfig(exact_numbers_and_symbols=False))  # 1 edit in 10 tokens


def test_common_tokens_leave_the_lsh_sets_but_not_in_small_sets():
    common = [["the", "what", "is", f"w{i}", f"v{i}"] for i in range(400)]
    sets = candidate_sets([*common, ["the", "what", "is"]], n=1, max_df=0.2)
    assert sets[0] == [b"w0", b"v0"] or sets[0] == [b"v0", b"w0"]
    assert sorted(sets[-1]) == [b"is", b"the", b"what"]  # nothing else: it keeps its common tokens
    few = candidate_sets([["the", "a", "x"], ["the", "a", "y"]], n=1, max_df=0.2)  # 2 questions: nothing is common
    assert [sorted(s) for s in few] == [[b"a", b"the", b"x"], [b"a", b"the", b"y"]]


def test_short_questions_with_one_or_two_edits_are_found_without_false_positives():
    texts, planted, edits = make_short_questions(3000, 300, seed=3)
    items = [DedupItem(str(i), text, []) for i, text in enumerate(texts)]
    removed = {int(d.key) for d in find_near_duplicates(items, NearDupConfig(match="question"))}
    recall, precision = score(removed, planted)
    assert recall >= 0.95 and precision == 1.0
    assert 1 in edits and 2 in edits


@pytest.mark.parametrize("threshold", [1.0, 0.99])
def test_a_threshold_datasketch_cannot_band_is_refused_with_the_allowed_range(threshold):
    with pytest.raises(ValidationError) as info:
        NearDupConfig(threshold=threshold)
    top = max_lsh_threshold(64)
    assert f"num_perm 64: 0 < threshold <= {top}" in str(info.value)
    assert lsh_accepts(top, 64) and not lsh_accepts(round(top + 0.01, 2), 64)  # the range is datasketch's own
    with pytest.raises(ValidationError) as info:
        NearDupConfig(num_perm=32, threshold=threshold)
    assert f"num_perm 32: 0 < threshold <= {max_lsh_threshold(32)}" in str(info.value)
    assert max_lsh_threshold(32) < top  # fewer permutations, less room
    NearDupConfig(threshold=top)


def test_near_dup_limits_are_checked_when_the_config_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ncurate:\n  near_dup:\n    threshold: 0.99\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:4: curate.near_dup.threshold: Value error, 0.99 is outside the range" in str(info.value)
    for bad in ({"seed": -1}, {"seed": 2**32}, {"tokens_per_edit": 0}, {"max_edits": -1}, {"max_df": 0}, {"num_perm": 8}, {"ngram": 0}):
        with pytest.raises(ValidationError):
            CurateConfig(near_dup=bad)


def test_numpy_banding_finds_the_pairs_datasketch_lsh_finds():
    import xxhash
    from datasketch import MinHash, MinHashLSH

    texts, _, _ = make_short_questions(1500, 300, seed=5)
    cfg = NearDupConfig()
    sets = candidate_sets([question_tokens(t) for t in texts], cfg.ngram, cfg.max_df)
    minhashes = MinHash.bulk(sets, num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=xxhash.xxh32_intdigest)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    expected = {}
    for position, minhash in enumerate(minhashes):
        found = sorted(lsh.query(minhash))
        if found:
            expected[position] = found
        lsh.insert(position, minhash)
    bands = lsh_bands(cfg.threshold, cfg.num_perm)
    assert bands == (lsh.b, lsh.r)
    assert lsh_candidates(np.stack([m.hashvalues for m in minhashes]), *bands) == expected
    assert sum(map(len, expected.values())) > 300  # the copies, and pairs that only share a band
