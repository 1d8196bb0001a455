"""Synthesis through the replay server: the agent loop, live tools, verification, shards."""

import time

import datasets
import pytest

from curation.shards import read_manifest, read_table
from synth.runtime.agent import AgentConfig
from synth.runtime.endpoint import EndpointError
from synth.scoring.judge import JudgeConfig
from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA_VERSION
from tests.conftest import start_replay


def synth_config(url: str, **overrides) -> SynthConfig:
    return SynthConfig(teacher_url=url, pools=["coldstart", "rl", "eval"], **overrides)


def search_config(world: dict) -> SearchConfig:
    return SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])


@pytest.fixture(scope="module")
def clean_run(world, curated, replay_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synthesize"
    summary = run_synthesize(synth_config(replay_url, attempts=1), curated, out, search_config(world))
    return out, summary


def test_a_fault_free_teacher_yields_one_verified_trajectory_per_sample(clean_run):
    out, summary = clean_run
    assert summary["counts"]["kept"] == 9 and summary["counts"]["rejected"] == 0
    assert read_manifest(out)["schema_version"] == TRAJECTORY_SCHEMA_VERSION


def test_trajectory_shards_load_in_trl_conversational_format(clean_run):
    out, _ = clean_run
    ds = datasets.load_dataset("parquet", data_files=str(out / "part-*.parquet"), split="train")
    assert {"messages", "images"} <= set(ds.column_names)
    assert isinstance(ds.features["images"].feature, datasets.Image)
    for row in ds:
        roles = [m["role"] for m in row["messages"]]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
        placeholders = sum(p["type"] == "image" for m in row["messages"] for p in m["content"])
        assert placeholders == len(row["images"])  # inputs first, then tool-produced images


def test_tools_really_ran(clean_run):
    rows = read_table(clean_run[0]).to_pylist()
    perception = next(r for r in rows if r["category"] == "perception")
    assert perception["tool_calls"][0]["tool"] == "python" and perception["tool_calls"][0]["outcome"] == "ok"
    assert len(perception["images"]) == 2  # the input and the zoomed crop the code showed
    for search in (r for r in rows if r["category"] == "search"):
        observation = search["messages"][-2]["content"][0]["text"]  # the text search, just before the answer
        assert observation.startswith("<tool_response>") and "city of" in observation
    by_image = [r for r in rows if any(c["tool"] == "image_search" for c in r["tool_calls"])]
    assert by_image, "the world has landmarks without a plaque: the teacher searches by image"
    for row in by_image:
        first_observation = row["messages"][3]["content"]
        assert first_observation[0]["text"].startswith("<tool_response>\nImage search results:")
        assert sum(p["type"] == "image" for p in first_observation) == len(row["images"]) - 1  # thumbnails
    assert all(r["correct"] and r["format_ok"] and r["stop_reason"] == "answer" for r in rows)
    assert all(r["reward"] == pytest.approx(1.0 if r["category"] != "search" else 0.92) for r in rows)


def test_faulty_teacher_outputs_are_rejected_with_reasons(world, curated, tmp_path):
    server, url = start_replay(world, tmp_path, wrong_rate=0.5, code_error_rate=0.5, malformed_rate=0.3, seed=1)
    try:
        # The demo world's text answers are exact: a wrong one is wrong, not a judge failure.
        summary = run_synthesize(synth_config(url, attempts=4), curated, tmp_path / "out", search_config(world),
                                 JudgeConfig(text_fallback="exact"))
    finally:
        server.stop()
    counts = summary["counts"]
    assert counts["rejected"] > 0 and counts["kept"] > 0
    rejects = read_table(tmp_path / "out" / "rejects").to_pylist()
    assert len(rejects) == counts["rejected"]
    assert {r["reject_reason"] for r in rejects} <= {"wrong_answer", "code_error", "no_answer:no_action", "bad_format"}
    assert all(r["reject_reason"] for r in rejects)
    kept = read_table(tmp_path / "out").to_pylist()
    assert all(r["correct"] and all(c["outcome"] == "ok" for c in r["tool_calls"]) for r in kept)


def test_an_unreachable_teacher_fails_the_preflight_in_one_line_before_any_work(world, curated, tmp_path):
    cfg = synth_config("http://127.0.0.1:9/v1", max_retries=6, request_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(EndpointError) as info:
        run_synthesize(cfg, curated, tmp_path / "out", search_config(world))
    message = str(info.value)
    assert time.monotonic() - started < 10 and "\n" not in message
    # A refused connection is named as such (the aiohttp transport calls it a time-out).
    assert "http://127.0.0.1:9/v1" in message and "connection refused" in message and "time" not in message


def test_a_teacher_failing_mid_run_quarantines_samples_with_the_servers_words(world, curated, tmp_path):
    server, url = start_replay(world, tmp_path, fault_rate=0.5, faults="500", faults_after=1, seed=3)
    try:
        summary = run_synthesize(synth_config(url, attempts=1, max_retries=0), curated, tmp_path / "out", search_config(world))
    finally:
        server.stop()
    counts = summary["counts"]
    assert 0 < counts["failed"] < 9 and counts["kept"] + counts["failed"] == 9
    reasons = read_table(tmp_path / "out" / "quarantine").column("reason").to_pylist()
    assert len(reasons) == counts["failed"]
    assert set(reasons) == {"teacher_failed: HTTP 500: internal error (injected)"}
    assert summary["failure_causes"] == {"HTTP 500: internal error (injected)": counts["failed"]}


def test_a_stage_whose_samples_all_fail_raises_the_top_cause_and_retries_a_5xx_a_bounded_number_of_times(world, curated, tmp_path):
    import httpx

    server, url = start_replay(world, tmp_path, fault_rate=1.0, faults="500", faults_after=1)
    try:
        with pytest.raises(EndpointError) as info:
            run_synthesize(synth_config(url, attempts=1, max_retries=6), curated, tmp_path / "out", search_config(world))
        requests = httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"]
    finally:
        server.stop()
    assert str(info.value).startswith(f"synthesize: teacher endpoint {url} (model 'demo-teacher'): all 9 samples failed; "
                                      "top cause: HTTP 500: internal error (injected) (9 of 9)")
    # The preflight, then each sample once and twice more (request.server_error_retries), not 1 + max_retries times.
    assert requests == 1 + 9 * 3
    assert len(read_table(tmp_path / "out" / "quarantine")) == 9  # the outputs are written before the stage fails


def test_the_turn_limit_ends_an_episode(world, curated, replay_url, tmp_path):
    cfg = synth_config(replay_url, attempts=1, agent=AgentConfig(max_turns=1))
    summary = run_synthesize(cfg, curated, tmp_path / "out", search_config(world))
    assert summary["reject_reasons"] == {"no_answer:max_turns": 9}


def test_long_cot_rows_are_mixed_in_at_the_target_ratio(world, curated, replay_url, tmp_path):
    from synth.long_cot import LongCotConfig

    def run(out, ratio):
        cfg = synth_config(replay_url, attempts=1, long_cot=LongCotConfig(path=world["long_cot_path"], ratio=ratio))
        return run_synthesize(cfg, curated, out, search_config(world))

    summary = run(tmp_path / "a", 0.75)
    assert summary["long_cot"]["added"] == 27 and summary["long_cot"]["achieved_ratio"] == 0.75  # 27 beside 9
    rows = read_table(tmp_path / "a").to_pylist()
    cot = [r for r in rows if r["category"] == "long_cot"]
    assert len(cot) == 27 and all(r["images"] == [] and r["format_ok"] and r["final_answer"] for r in cot)
    assert [m["role"] for m in cot[0]["messages"]] == ["system", "user", "assistant"]
    again = run(tmp_path / "b", 0.75)
    assert again["long_cot"] == summary["long_cot"]
    assert sorted(r["id"] for r in read_table(tmp_path / "b").to_pylist()) == sorted(r["id"] for r in rows)  # reproducible
    short = run(tmp_path / "c", 0.95)  # wants 171 rows, the source has 100
    assert short["long_cot"]["added"] == 100 and short["long_cot"]["short_by"] == 71
    assert short["long_cot"]["fix"] == "raise world.long_cot to at least 171"  # the world's own file (review r7 #3)


@pytest.mark.parametrize(("active", "expected_in_flight"), [(1, 1), (None, 2)])
def test_concurrency_bounds_requests_and_active_episodes_bounds_samples(world, curated, tmp_path, active, expected_in_flight):
    """`concurrency` bounds the requests in flight and is reached; the samples being solved are bounded apart."""
    import httpx

    server, url = start_replay(world, tmp_path, latency_ms=60)
    try:
        summary = run_synthesize(synth_config(url, attempts=1, concurrency=2, active_episodes=active), curated, tmp_path / "out",
                                 search_config(world))
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    finally:
        server.stop()
    assert summary["counts"]["kept"] == 9
    assert stats["max_in_flight"] == expected_in_flight
    # Samples finish out of order; their rows are written in the samples' order (a rerun trains on the same order).
    order = [r["id"] for r in read_table(curated).to_pylist() if r["pool"] in ("coldstart", "rl", "eval")]
    kept = [r["sample_id"] for r in read_table(tmp_path / "out").to_pylist() if r["sample_id"] in order]
    assert kept == sorted(kept, key=order.index)


def test_a_rerun_with_a_smaller_limit_says_it_replaced_the_rows(world, curated, replay_url, tmp_path):
    """The output is rewritten whole: a second run with --limit 3 into the same --out keeps 3 rows
    and says it replaced the earlier ones (the request cache keeps their answers)."""
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "synthesize"
    args = ["synth", "--input", str(curated), "--out", str(out), "--teacher-url", replay_url, "--teacher-model", "demo-teacher",
            "--pools", "coldstart,rl,eval", "--attempts", "1", "--corpus", world["corpus_path"], "--image-corpus", world["image_corpus_path"]]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output[-2000:]
    assert "replaced" not in json.loads(first.stdout.strip().splitlines()[-1])
    assert read_manifest(out)["rows"] == 9
    again = CliRunner().invoke(app, [*args, "--limit", "3"])
    assert again.exit_code == 0, again.output[-2000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["replaced"] == "replaced 9 rows with 3 (--limit 3); the request cache keeps the other answers"
    assert summary["counts"]["requests_sent"] == 0  # every answer came from the request cache
    assert read_manifest(out)["rows"] == 3


# --- fresh-user review r2: a run without the search its samples need ---

def test_a_pool_of_search_questions_without_a_search_backend_is_refused_before_any_request(world, curated, replay_url, tmp_path):
    import httpx

    from curation.schema import SAMPLE_SCHEMA
    from curation.shards import iter_rows

    searches = sum(1 for r in iter_rows(curated, SAMPLE_SCHEMA) if r["category"] == "search")
    before = httpx.get(replay_url.removesuffix("/v1") + "/stats").json()["requests"]
    with pytest.raises(Exception) as info:
        run_synthesize(synth_config(replay_url, attempts=1), curated, tmp_path / "out", SearchConfig(image_corpus_path=world["image_corpus_path"]))
    assert type(info.value).__name__ == "SearchError" and searches > 0
    assert str(info.value) == (f"synthesize: {searches} of the 9 samples are search questions (category: search) and no text search is "
                               "configured: give --corpus FILE (search.corpus_path), or search.text_backend: http with search.http_url")
    assert httpx.get(replay_url.removesuffix("/v1") + "/stats").json()["requests"] == before
    # Tool-free synthesis needs no search.
    run_synthesize(synth_config(replay_url, attempts=1, agent=AgentConfig(tools=False)), curated, tmp_path / "free", SearchConfig())


def test_a_trajectory_whose_tool_call_was_unavailable_is_rejected():
    from synth.stage import reject_reason

    row = {"stop_reason": "answer", "judge_failed": False, "correct": True, "final_answer": "Paris", "category": "search",
           "format_ok": True, "tool_calls": [{"tool": "search", "outcome": "unavailable"}]}
    assert reject_reason(row, allow_code_errors=False) == "tool_unavailable"
    assert reject_reason({**row, "tool_calls": [{"tool": "search", "outcome": "ok"}]}, allow_code_errors=False) is None


def test_an_instruct_stage_keeps_answers_the_judge_finds_wrong_or_cannot_judge():
    from synth.stage import reject_reason

    row = {"stop_reason": "answer", "judge_failed": False, "correct": False, "final_answer": "unknown", "category": "perception",
           "format_ok": True, "tool_calls": []}
    assert reject_reason(row, allow_code_errors=False) == "wrong_answer"
    assert reject_reason({**row, "judge_failed": True}, allow_code_errors=False) == "judge_failed"
    assert reject_reason(row, allow_code_errors=False, verify_answers=False) is None
    assert reject_reason({**row, "judge_failed": True}, allow_code_errors=False, verify_answers=False) is None
    # What is not about the answer's truth still rejects: no answer, a malformed turn.
    assert reject_reason({**row, "stop_reason": "max_turns"}, allow_code_errors=False, verify_answers=False) == "no_answer:max_turns"
    assert reject_reason({**row, "format_ok": False}, allow_code_errors=False, verify_answers=False) == "bad_format"


@pytest.mark.parametrize("text_search,images,expected", [
    (None, [], "Error: unknown tool 'python'; no tools are available in this run"),
    ("search", [], "Error: unknown tool 'python'; available in this run: search"),
    ("search", [b"png"], "Error: unknown tool 'python'; available in this run: search, image_search"),
])
def test_a_call_to_an_unknown_tool_names_the_tools_this_run_has(text_search, images, expected):
    import asyncio

    from synth.runtime.agent import ToolBox, ToolSession
    from synth.runtime.protocol import parse_turn

    backend = object() if text_search else None
    session = ToolSession(ToolBox(text_search=backend, image_search=backend), AgentConfig(), images)
    action = parse_turn('<think>run it</think><tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>')
    observation = asyncio.run(session.call(action))
    assert (observation.parts[0]["text"], observation.outcome) == (expected, "error")
