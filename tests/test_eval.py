"""Evaluation: benchmarks as data, metrics against hand-computed values, the cached endpoint run,
and a self-contained report."""

import base64
import csv
import json
import re
import shutil

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.benchmarks import BenchmarkError, load_benchmark, load_spec, shipped
from eval.metrics import group_stats, wilson_interval
from eval.report import build_report
from eval.stage import EvalConfig, run_evaluate
from synth.runtime.agent import AgentConfig
from synth.tools.search import SearchConfig
from tests.conftest import start_replay
from tests.test_curation_sources import encode, noise


def test_every_shipped_benchmark_definition_parses(tmp_path):
    names = shipped()
    assert {"vstar", "hrbench-4k", "hrbench-8k", "mme-realworld", "treebench", "ocrbench", "seedbench2-plus", "charxiv", "chartqa",
            "mathvista", "mathverse", "mathvision", "wemath", "dynamath", "logicvista", "fvqa", "infoseek", "mmsearch", "simplevqa",
            "realx-bench", "demo-heldout"} <= set(names)
    for name in names:
        spec = load_spec(name, data_root=tmp_path, run_dir=tmp_path / "run")
        assert spec.name == name and str(tmp_path) in spec.source.path
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'.*vstar"):
        load_spec("nope")
    with pytest.raises(BenchmarkError, match="file not found"):
        load_benchmark(load_spec("mathvista", data_root=tmp_path))


def write_tsv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "image", "question", "A", "B", "answer", "category"])
        writer.writerows(rows)


def test_adapters_tsv_jsonl_parquet(tmp_path):
    write_tsv(tmp_path / "b.tsv", [[0, base64.b64encode(encode(noise(seed=1))).decode(), "Left or right?", "left", "right", "B", "perception"],
                                   [1, "broken", "Up?", "yes", "no", "A", "perception"]])
    (tmp_path / "tsv.yaml").write_text("name: mini-tsv\nsource: {kind: tsv, path: ${data_root}/b.tsv}\njudge: rules\n")
    loaded = load_benchmark(load_spec(str(tmp_path / "tsv.yaml"), data_root=tmp_path))
    assert [s.answer for s in loaded.samples] == ["B"] and loaded.samples[0].choices == ["left", "right"] and loaded.unreadable == 1

    (tmp_path / "a.png").write_bytes(encode(noise(seed=2)))
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Who built it?", "answer": "Oda Quill", "images": ["a.png"]}) + "\n")
    (tmp_path / "jsonl.yaml").write_text("name: mini-jsonl\nsource: {kind: jsonl, path: ${data_root}/q.jsonl, category: search}\njudge: llm\n")
    loaded = load_benchmark(load_spec(str(tmp_path / "jsonl.yaml"), data_root=tmp_path))
    assert loaded.samples[0].category == "search" and loaded.spec.judge == "llm" and len(loaded.samples[0].images) == 1

    pq.write_table(pa.table({"q": ["2+2?", "3*3?"], "a": ["4", "9"], "img": [{"bytes": encode(noise(seed=3)), "path": None}] * 2}),
                   tmp_path / "m.parquet")
    (tmp_path / "pq.yaml").write_text(
        "name: mini-parquet\nsource: {kind: hf, path: parquet, data_files: ['${data_root}/m.parquet'], category: reasoning,"
        " fields: {question: q, answer: a, images: img}}\njudge: math\n")
    loaded = load_benchmark(load_spec(str(tmp_path / "pq.yaml"), data_root=tmp_path), max_samples=1)
    assert [(s.question, s.answer, s.answer_type) for s in loaded.samples] == [("2+2?", "4", "number")]


def test_wilson_interval_and_group_statistics_by_hand():
    # p = 0.7, n = 10: centre (0.7 + 1.96²/20) / (1 + 1.96²/10) = 0.64449;
    # half-width 1.96·sqrt(0.021 + 1.96²/400) / 1.38416 = 0.24772
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.39677, abs=1e-4) and high == pytest.approx(0.89221, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)

    def row(correct, calls, judge_failed=False, category="perception"):
        return {"correct": correct, "tool_calls": calls, "judge_failed": judge_failed, "format_ok": True, "reward": 0.8 * correct + 0.2,
                "stop_reason": "answer", "category": category}

    crop = {"tool": "python", "images": 1}
    maths = {"tool": "python", "images": 0}
    search = {"tool": "search", "images": 0}
    stats = group_stats([row(True, [crop, maths]), row(False, []), row(True, [search]), row(False, [], judge_failed=True)])
    assert stats["n"] == 4 and stats["correct"] == 2 and stats["accuracy"] == 0.5 and stats["judge_failed"] == 1
    assert stats["share_using_tools"] == 0.5 and stats["tool_calls_per_sample"] == 0.75
    assert stats["tool_calls_by_class"] == {"image_ops": 1, "numeric_code": 1, "text_search": 1, "image_search": 0, "other": 0}
    assert stats["mean_reward"] == pytest.approx((1.0 + 0.2 + 1.0 + 0.2) / 4)


def test_an_empty_eval_pool_is_said_to_be_empty_never_reported_as_an_accuracy(tmp_path):
    """Review r4: a held-out pool of 0 samples printed `accuracy 0.000 [0.00, 0.00] on 0 samples` and
    wrote it to metrics.json and the report as a result."""
    from eval.metrics import summarize, summary_line

    assert wilson_interval(0, 0) == (0.0, 1.0)  # no trials: nothing known
    empty = summarize([])
    assert empty["overall"]["n"] == 0 and empty["per_category"] == {}
    assert {k: empty["overall"][k] for k in ("accuracy", "ci95", "format_ok", "mean_reward", "share_using_tools", "tool_calls_per_sample")} == (
        dict.fromkeys(("accuracy", "ci95", "format_ok", "mean_reward", "share_using_tools", "tool_calls_per_sample")))
    assert summary_line("heldout", "tools", empty["overall"]) == ("eval heldout (tools): no samples scored (the run's eval pool is empty: "
                                                                 "curate more samples or raise curate.split.eval)")
    assert summary_line("vstar", "tools", empty["overall"], unreadable=3) == "eval vstar (tools): no samples scored (all 3 unreadable)"
    assert summary_line("vstar", "no_tools", empty["overall"], failed=2) == (
        "eval vstar (no_tools): no samples scored (2 failed at the endpoint (the next run asks again))")

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    metrics = {"model": "m", "benchmarks": {"heldout": {"samples": 0, "unreadable": 0, "failed": {}, "runs": {"tools": empty, "no_tools": empty}}}}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    build_report([run], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    heldout_rows = [line for line in markdown.splitlines() if line.startswith("| heldout |")]
    assert heldout_rows and all("0.0 [" not in line for line in heldout_rows), markdown
    assert "| heldout | run | 0 | — | — | — |" in markdown, markdown


def test_endpoint_run_on_a_benchmark_file_is_cached_and_reported(world, curated, tmp_path):
    (tmp_path / "bench.yaml").write_text(f"name: world-jsonl\nsource: {{kind: jsonl, path: {world['samples_path']}}}\njudge: rules\n")
    server, url = start_replay(world, tmp_path)
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    cfg = EvalConfig(benchmarks=[str(tmp_path / "bench.yaml")], model_url=url, model_name="demo-teacher", concurrency=4,
                     agent=AgentConfig(max_turns=6, max_tokens_per_turn=512))
    stats_url = url.replace("/v1", "/stats")
    try:
        first = run_evaluate(cfg, None, curated, tmp_path / "run" / "eval", search)
        sent = httpx.get(stats_url).json()["requests"]
        again = run_evaluate(cfg, None, curated, tmp_path / "run" / "eval", search)
        # The second run came from the cache: only the endpoint's preflight went out.
        assert httpx.get(stats_url).json()["requests"] == sent + 1
    finally:
        server.stop()
    entry = first["benchmarks"]["world-jsonl"]
    assert entry["samples"] == 10 and entry["unreadable"] == 1  # the planted broken image; benchmarks keep duplicates
    tools = entry["runs"]["tools"]["overall"]
    assert tools["accuracy"] == 1.0 and tools["tool_calls_per_sample"] > 0 and tools["ci95"][0] > 0.6
    assert again["benchmarks"] == first["benchmarks"]

    # A report of two runs side by side: self-contained, nothing fetched from anywhere.
    shutil.copytree(tmp_path / "run", tmp_path / "run-b")
    paths = build_report([tmp_path / "run", tmp_path / "run-b"], tmp_path / "report")
    page = open(paths["html"]).read()
    images = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(images) >= 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page and "<link" not in page
    assert "world-jsonl" in page and "run-b" in page
    markdown = open(paths["markdown"]).read()
    assert "| world-jsonl | run | 10 | 100.0 [" in markdown and (tmp_path / "report" / "plots" / "accuracy.png").is_file()


def test_report_plots_put_each_figure_at_the_training_step_it_was_logged_at(tmp_path):
    """Review m6: the SFT loss was plotted against its log entry's number (1..20 for 400 steps logged
    every 20), and the GRPO step axis had ticks at 1.5, 2.5."""
    from eval.report import load_run, pioneer_series, training_series
    from flows.lineage import record

    def make_run(name, result):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "metrics.json").write_text(json.dumps({"model": "m", "benchmarks": {}}))
        record(run / "sft", "sft", {}, [], 1.0, result=result)
        return run

    run = make_run("sft-rl", {"steps": 60, "losses": [2.0, 1.5, 1.0], "loss_steps": [20, 40, 60]})
    (run / "grpo").mkdir()
    (run / "grpo" / "dynamics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in (
        {"step": 2, "reward": 0.1, "tools/calls_per_trajectory": 1.5},
        {"step": 4, "reward": 0.3, "tools/calls_per_trajectory": 1.25, "rollout/response_tokens": 80.0})))
    # A stage recorded before the steps were kept: every `sft.logging_steps` of the run's config.
    old = make_run("old", {"steps": 25, "losses": [3.0, 2.5]})
    (old / "run.json").write_text(json.dumps({"stages": ["sft", "eval"], "config": {"sft": {"logging_steps": 10}}}))

    runs = [load_run(run), load_run(old)]
    assert training_series(runs) == [
        ("SFT loss", "SFT training step", [("sft-rl", [20, 40, 60], [2.0, 1.5, 1.0]), ("old", [10, 20], [3.0, 2.5])]),
        ("GRPO reward", "GRPO step", [("sft-rl", [2, 4], [0.1, 0.3])]),
        ("tool calls per trajectory", "GRPO step", [("sft-rl", [2, 4], [1.5, 1.25])]),
        ("response tokens", "GRPO step", [("sft-rl", [4], [80.0])]),
    ]
    assert pioneer_series(runs) == [("sft-rl", [2, 4], [1.5, 1.25])]
    paths = build_report([run, old], tmp_path / "report")
    assert {p.name for p in (tmp_path / "report" / "plots").iterdir()} >= {"training.png", "pioneer.png"}, paths
