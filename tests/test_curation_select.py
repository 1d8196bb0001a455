"""Near-duplicate removal, decontamination, probes (with resume) and the paper's split rule."""

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import ImageFilter

from curation.dedup import DedupItem, NearDupConfig, PhashIndex, find_near_duplicates, hamming
from curation.demo_world import WorldConfig, generate_world
from curation.select import SelectConfig, mix_quotas, rule_pool, run_select
from curation.shards import read_manifest, read_table
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from synth.probe import ProbeConfig, run_probes
from synth.runtime.request_cache import REQUESTS_DB
from synth.tools.search import SearchConfig
from tests.conftest import kill_when_answered, start_replay
from tests.test_curation_sources import noise


def test_phash_index_finds_exactly_the_hashes_within_the_distance():
    rng = np.random.default_rng(0)
    stored = [int(v) for v in rng.integers(0, 2**63, 2000, dtype=np.int64)]
    index = PhashIndex(max_distance=5)
    for i, value in enumerate(stored):
        index.add(value, str(i))
    for query in stored[:50] + [stored[7] ^ 0b10110, stored[9] ^ (1 << 63 | 1 << 40 | 1 << 3)]:
        expected = {str(i) for i, v in enumerate(stored) if hamming(v, query) <= 5}
        assert set(index.query(query)) == expected


def test_near_duplicates_need_question_and_image_by_default():
    base = "What is the tag code printed on the small red box in the lower left corner of the image?"
    items = [
        DedupItem("a", base, [0x0F0F0F0F0F0F0F0F]),
        DedupItem("b", base.replace("image?", "picture?"), [0x0F0F0F0F0F0F0F0E]),  # near in both: a duplicate
        DedupItem("c", base, [0xF0F0F0F0F0F0F0F0]),  # the same question on another image: kept
        DedupItem("d", "How many bars in the chart are taller than the average bar height?", [0x0F0F0F0F0F0F0F0F]),  # same image
    ]
    assert [(d.key, d.of, d.reason) for d in find_near_duplicates(items, NearDupConfig())] == [("b", "a", "near_duplicate")]
    assert {d.key for d in find_near_duplicates(items, NearDupConfig(match="question"))} == {"b", "c"}
    assert {d.key for d in find_near_duplicates(items, NearDupConfig(match="image"))} == {"b", "d"}
    assert {d.key for d in find_near_duplicates(items, NearDupConfig(match="either"))} == {"b", "c", "d"}


def test_curate_drops_near_duplicates_and_contamination_and_says_why(tmp_path):
    pictures = [noise((96, 96), seed=s).resize((192, 192)) for s in range(4)]
    for i, picture in enumerate(pictures):
        picture.save(tmp_path / f"p{i}.png")
    pictures[0].filter(ImageFilter.GaussianBlur(0.6)).save(tmp_path / "p0_blurred.jpg", quality=85)  # the same picture, re-encoded
    rows = [
        {"id": "keep", "question": "What is the serial number printed on the metal plate next to the door?", "answer": "A17",
         "images": ["p0.png"], "category": "perception"},
        {"id": "near", "question": "What's the serial number printed on the metal plate next to the door?", "answer": "A17",
         "images": ["p0_blurred.jpg"], "category": "perception"},
        {"id": "leak_text", "question": "Quick: how many windows does the lighthouse in the old harbor photograph have in total?",
         "answer": "7", "images": ["p1.png"], "category": "reasoning"},
        {"id": "leak_image", "question": "Which season is shown?", "answer": "winter", "images": ["p2.png"], "category": "perception"},
        {"id": "clean", "question": "What brand is the bicycle?", "answer": "Velo", "images": ["p3.png"], "category": "perception"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pictures[2].resize((256, 256)).save(tmp_path / "bench.png")
    benchmark = [
        {"id": "q1", "question": "How many windows does the lighthouse in the old harbor photograph have?", "answer": "7",
         "images": [], "category": "reasoning"},
        {"id": "q2", "question": "Describe the scene.", "answer": "snow", "images": ["bench.png"], "category": "perception"},
    ]
    (tmp_path / "bench.jsonl").write_text("\n".join(json.dumps(r) for r in benchmark) + "\n")
    cfg = CurateConfig(sources=[SourceSpec(path=tmp_path / "train.jsonl")], benchmarks=[SourceSpec(path=tmp_path / "bench.jsonl", name="mini-bench")],
                       split={"coldstart": 1.0})
    summary = run_curate(cfg, tmp_path / "out")
    assert sorted(r["id"] for r in read_table(tmp_path / "out").to_pylist()) == ["clean", "keep"]
    reasons = {json.loads(r["row"])["id"]: r["reason"] for r in read_table(tmp_path / "out" / "quarantine").to_pylist()}
    assert reasons["near"] == "near_duplicate: of keep"
    assert reasons["leak_text"].startswith("contaminated_text: mini-bench/q1")
    assert reasons["leak_image"].startswith("contaminated_image: mini-bench/q2")
    assert summary["counts"] == {"rows_in": 5, "invalid": 0, "duplicates": 0, "near_duplicates": 1, "contaminated": 2, "rows_out": 2}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {(c["sample_id"], c["benchmark"], c["kind"]) for c in report["decontamination"]} == {
        ("leak_text", "mini-bench", "text"), ("leak_image", "mini-bench", "image")}
    manifest = read_manifest(tmp_path / "out")
    assert manifest["near_dup"]["datasketch"] and manifest["near_dup"]["hash_scheme"].startswith("datasketch-affine32")


@pytest.mark.parametrize(
    "p0,p1,expected",
    [(None, None, ("dropped", "not_probed")), (0.75, 1.0, ("dropped", "too_easy")), (0.0, 0.25, ("rl", None)),
     (0.0, 0.0, ("coldstart", None)), (0.5, 0.5, ("dropped", "no_tool_benefit")), (0.25, 0.0, ("coldstart", None))],
)
def test_the_split_rule(p0, p1, expected):
    assert rule_pool(p0, p1, SelectConfig(max_pass_rate_no_tools=0.5, min_tool_benefit=0.25)) == expected


def test_mix_quotas_take_the_largest_total_that_fits_the_shares():
    shares = {"perception": 0.5, "reasoning": 0.4, "search": 0.1}
    assert mix_quotas({"perception": 100, "reasoning": 40, "search": 5}, shares) == {"perception": 25, "reasoning": 20, "search": 5}
    assert mix_quotas({"perception": 100, "reasoning": 40, "search": 50}, shares) == {"perception": 50, "reasoning": 40, "search": 10}
    assert mix_quotas({"perception": 10, "reasoning": 10}, {"perception": 1.0}) == {"perception": 10, "reasoning": 0}


@pytest.fixture(scope="module")
def probe_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-world")
    world = generate_world(root / "world", WorldConfig(seed=5, per_family=8, distractor_docs=10))
    run_curate(CurateConfig(sources=[SourceSpec(path=world["samples_path"])], split={"coldstart": 0.8, "eval": 0.2}), root / "curate", probes=True)
    return world, root / "curate"


def test_curation_for_the_probes_counts_the_rows_left_to_select_under_a_name_not_none(probe_world, tmp_path):
    """Review r4: the run summary's curate `per_pool` had a pool named "None"."""
    world, _ = probe_world
    summary = run_curate(CurateConfig(sources=[SourceSpec(path=world["samples_path"])], split={"coldstart": 0.8, "eval": 0.2}),
                         tmp_path / "curate", probes=True)
    assert set(summary["per_pool"]) == {"to_select", "eval"}
    assert sum(summary["per_pool"].values()) == summary["counts"]["rows_out"]

    from eval.stage import EvalConfig, empty_heldout_warning

    assert empty_heldout_warning(EvalConfig(), summary["per_pool"]) is None
    assert empty_heldout_warning(EvalConfig(), {"to_select": 4}) == (
        "the held-out pool (eval) is empty: none of the 4 curated rows drew it, so the evaluation will score nothing; add rows to "
        "curate.sources, raise curate.split.eval, or name eval.benchmarks")
    assert empty_heldout_warning(EvalConfig(benchmarks=["vstar"]), {"to_select": 4}) is None  # benchmarks are scored instead


def probe_cli(world, curated, out, url):
    return [sys.executable, "-m", "flows.cli", "probe", "--input", str(curated), "--out", str(out), "--student-url", url,
            "--student-model", "demo-student", "--k", "4", "--concurrency", "4",
            "--corpus", world["corpus_path"], "--image-corpus", world["image_corpus_path"]]


def test_split_follows_the_rule_on_a_world_with_known_pass_rates(probe_world, tmp_path):
    world, curated = probe_world
    server, url = start_replay(world, tmp_path)
    try:
        search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
        run_probes(ProbeConfig(student_url=url, k=4, concurrency=8), curated, tmp_path / "probe", search)
    finally:
        server.stop()
    truth = {s["sample_id"]: (s["student_pass_rate"], s["student_tool_pass_rate"]) for s in map(json.loads, open(world["scripts_path"]))}
    probes = {r["sample_id"]: r for r in pl.read_parquet(tmp_path / "probe" / "*.parquet").to_dicts()}
    candidates = [r["id"] for r in read_table(curated).to_pylist() if r["pool"] is None]
    assert sorted(probes) == sorted(candidates)
    for sample_id, row in probes.items():
        p0, p1 = truth[sample_id]
        if p0 in (0.0, 1.0):
            assert row["pass_rate_no_tools"] == p0, sample_id
        if p1 in (0.0, 1.0):
            assert row["pass_rate_tools"] == p1, sample_id
        if row["passes_tools"]:
            assert row["tool_calls_mean"] > 0  # a right attempt with tools used them

    run_select(SelectConfig(max_pass_rate_no_tools=0.5), curated, tmp_path / "probe", tmp_path / "select")
    pools = {r["id"]: r for r in read_table(tmp_path / "select").to_pylist()}
    dropped = {json.loads(r["row"])["id"]: r["reason"] for r in read_table(tmp_path / "select" / "quarantine").to_pylist()}
    seen_cases = set()
    for sample_id in candidates:
        p0, p1 = truth[sample_id]
        if (p0, p1) == (1.0, 1.0):
            assert dropped[sample_id] == "too_easy"
        elif (p0, p1) == (0.0, 0.0):
            assert pools[sample_id]["pool"] == "coldstart"
        elif (p0, p1) == (0.0, 1.0):
            assert pools[sample_id]["pool"] == "rl"
            assert pools[sample_id]["difficulty"] == 1.0 and pools[sample_id]["tool_benefit"] == 1.0
        else:  # sometimes solved with tools: RL exactly when a probe succeeded
            expected = "rl" if probes[sample_id]["passes_tools"] else "coldstart"
            assert pools[sample_id]["pool"] == expected
        seen_cases.add((p0, p1))
    assert {(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)} <= seen_cases  # the world exercised every branch
    evals = [r for r in read_table(curated).to_pylist() if r["pool"] == "eval"]
    assert all(pools[r["id"]]["pool"] == "eval" for r in evals)

    # New thresholds, no new probes: the split changes from the stored columns alone.
    strict = run_select(SelectConfig(max_pass_rate_no_tools=1.0, min_tool_benefit=0.1), curated, tmp_path / "probe", tmp_path / "strict")
    assert strict["dropped"].get("no_tool_benefit", 0) >= sum(1 for s in candidates if truth[s] == (1.0, 1.0))
    mixed = run_select(SelectConfig(mix={"coldstart": {"perception": 1.0}}), curated, tmp_path / "probe", tmp_path / "mixed")
    assert {r["category"] for r in read_table(tmp_path / "mixed").to_pylist() if r["pool"] == "coldstart"} == {"perception"}
    assert mixed["dropped"]["over_mix_quota"] > 0
    report = (tmp_path / "mixed" / "report.md").read_text()
    assert "over_mix_quota" in report and "| rule |" in report


def test_probes_resume_after_kill_9_like_synthesis(probe_world, tmp_path):
    world, curated = probe_world
    server, url = start_replay(world, tmp_path, latency_ms=40)
    try:
        reference = subprocess.run(probe_cli(world, curated, tmp_path / "reference", url), capture_output=True, text=True, timeout=300)
        assert reference.returncode == 0, reference.stderr[-2000:]
        total = json.loads(reference.stdout.strip().splitlines()[-1])["counts"]["requests_sent"]
        out = tmp_path / "crashed"
        proc = subprocess.Popen(probe_cli(world, curated, out, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        answered = kill_when_answered(proc, out / REQUESTS_DB, total // 2)
        resumed = subprocess.run(probe_cli(world, curated, out, url), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        counts = json.loads(resumed.stdout.strip().splitlines()[-1])["counts"]
    finally:
        server.stop()
    assert counts["requests_replayed"] >= answered
    assert counts["requests_sent"] + counts["requests_replayed"] == total
    assert counts["requests_sent"] <= total - answered + 4  # only the (at most 4) in-flight requests again

    def signature(directory):
        return sorted(tuple(r.values()) for r in read_table(directory).to_pylist())

    assert signature(out) == signature(tmp_path / "reference")


def test_probing_a_fully_split_curation_says_what_to_do(curated, tmp_path):
    from synth.probe import ProbeInputError

    with pytest.raises(ProbeInputError, match="curate with probes"):
        run_probes(ProbeConfig(), curated, tmp_path / "probe")
