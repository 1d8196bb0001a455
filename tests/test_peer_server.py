"""A model server the project was not built against: the real `transformers serve` (issue 17).

The tiny checkpoint is taught two turns of the protocol (`tests/peer_server.py`), then served.
Synthesis and evaluation run through it, images included: `deepeyes synth` first fails fast
naming the field the server refuses, then, with stop strings applied on the client, the
trajectories hold what the model wrote, though the server split it into `reasoning_content` and
`tool_calls`."""

import json
import subprocess
import sys

import httpx
import pytest

from curation.schema import SAMPLE_SCHEMA
from curation.shards import iter_rows, read_table
from eval.stage import EvalConfig, run_evaluate
from synth.runtime.agent import AgentConfig
from synth.runtime.endpoint import EndpointError
from synth.runtime.policy import RequestOptions
from synth.tools.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA
from tests.conftest import command_seconds
from tests.peer_server import ANSWER_TURN, SEARCH_TURN, search_observation, start_transformers_serve, teach_tiny_model


def used_samples(curated):
    """The samples the tests below send: the first three of the held-out pool (synthesis takes them
    with `--pools eval --limit 3`, evaluation with `max_samples: 3`)."""
    return [r for r in iter_rows(curated, SAMPLE_SCHEMA) if r["pool"] == "eval"][:3]


@pytest.fixture(scope="module")
def peer(world, curated, tmp_path_factory):
    """(base URL, model name) of `transformers serve` serving the taught tiny checkpoint."""
    root = tmp_path_factory.mktemp("peer")
    from curation.schema import Sample

    samples = [Sample.from_row(r) for r in used_samples(curated)]
    model_dir = teach_tiny_model(root / "model", samples, search_observation(world["corpus_path"]))
    server, url = start_transformers_serve(model_dir, root)
    yield url, str(model_dir)
    server.stop()


def test_the_server_splits_what_the_model_wrote_into_fields(curated, peer):
    """What the rest of this file relies on: the server really moves the thinking and the tool call
    out of `content`, and refuses `stop` for a vision-language model."""
    from curation.schema import Sample
    from synth.runtime.agent import opening
    from synth.runtime.policy import to_openai_messages

    url, model = peer
    messages, images = opening(Sample.from_row(used_samples(curated)[0]), AgentConfig())
    messages = to_openai_messages(messages, images)
    answer = httpx.post(f"{url}/chat/completions", json={"model": model, "messages": messages, "max_tokens": 64, "temperature": 0},
                        timeout=120).json()["choices"][0]
    assert answer["message"]["reasoning_content"] == "I should search." and "<think>" not in (answer["message"]["content"] or "")
    assert answer["message"]["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"query": "landmark city"}'}
    refused = httpx.post(f"{url}/chat/completions", json={"model": model, "messages": messages, "max_tokens": 8, "stop": ["</code>"]},
                         timeout=120)
    assert refused.status_code == 500


def synth_cli(world, curated, out, url, model, *extra):
    return [sys.executable, "-m", "flows.cli", "synth", "--input", str(curated), "--out", str(out), "--teacher-url", url,
            "--teacher-model", model, "--pools", "eval", "--corpus", world["corpus_path"],
            "--image-corpus", world["image_corpus_path"], "--concurrency", "2", "--attempts", "1", *extra]


def test_deepeyes_synth_names_what_the_server_refuses_in_one_line_within_10_seconds(world, curated, peer, tmp_path):
    url, model = peer
    for command, expected in [
        (synth_cli(world, curated, tmp_path / "a", url, model),
         f"teacher endpoint {url} (model {model!r}): the server refuses `stop` (HTTP 500: Internal Server Error); "
         "set synth.request.send_stop: false (--no-stop)"),
        (synth_cli(world, curated, tmp_path / "b", url, "Qwen/Qwen2.5-VL-7B-Instruct"),
         f"model 'Qwen/Qwen2.5-VL-7B-Instruct' is not served there; it serves: {model!r}"),
    ]:
        done, took = command_seconds(command)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr[-2000:]
        assert took < 10, f"{took:.1f} s beyond start-up"


def test_synthesis_through_the_server_keeps_what_the_model_wrote(world, curated, peer, tmp_path):
    url, model = peer
    done = subprocess.run(synth_cli(world, curated, tmp_path / "out", url, model, "--no-stop", "--limit", "3", "--max-turns", "4",
                                    "--max-tokens", "64"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])["counts"]
    assert counts["samples"] == 3 and counts["failed"] == 0 and counts["rejected"] + counts["kept"] == 3
    rows = [*read_table(tmp_path / "out" / "rejects", TRAJECTORY_SCHEMA).to_pylist(), *read_table(tmp_path / "out", TRAJECTORY_SCHEMA).to_pylist()]
    assert len(rows) == 3
    for row in rows:
        assistant = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
        # The thinking the server moved into reasoning_content and the call it moved into tool_calls,
        # back as the model wrote them; the call ran (a search observation), then the answer.
        assert assistant == [SEARCH_TURN, ANSWER_TURN]
        assert [c["tool"] for c in row["tool_calls"]] == ["search"] and row["tool_calls"][0]["outcome"] == "ok"
        assert row["messages"][3]["content"][0]["text"].startswith("<tool_response>")
        assert row["stop_reason"] == "answer" and row["final_answer"] == "42" and row["format_ok"]
        # The sample's images went to the server with the question (one placeholder per input image).
        assert len(row["images"]) >= 1 and sum(p["type"] == "image" for p in row["messages"][1]["content"]) == len(row["images"])


def test_evaluation_through_the_server(world, curated, peer, tmp_path):
    url, model = peer
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    cfg = EvalConfig(model_url=url, model_name=model, max_samples=3, concurrency=2, request=RequestOptions(send_stop=False),
                     agent=AgentConfig(max_turns=4, max_tokens_per_turn=64, think_prefix="every_turn"))
    # Evaluation pre-fills <think> as a partial assistant message (vLLM's continue_final_message):
    # this server refuses that field, and the preflight names the setting to change.
    with pytest.raises(EndpointError, match=r"the server refuses the `<think>` pre-fill .*HTTP 422: Unexpected fields in the request.*"
                                            r"set eval.agent.think_prefix: none"):
        run_evaluate(cfg, None, curated, tmp_path / "refused", search)
    cfg = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"think_prefix": "none"})})
    metrics = run_evaluate(cfg, None, curated, tmp_path / "eval", search)
    entry = metrics["benchmarks"]["heldout"]
    held_out = used_samples(curated)
    assert metrics["failed"] == 0 and entry["failed"] == {"tools": 0, "no_tools": 0}
    tools, control = entry["runs"]["tools"]["overall"], entry["runs"]["no_tools"]["overall"]
    assert tools["n"] == control["n"] == len(held_out) > 0
    assert tools["tool_calls_per_sample"] == 1.0  # every episode searched once, then answered
    rows = read_table(tmp_path / "eval" / "heldout" / "tools").to_pylist()
    assert all(r["stop_reason"] == "answer" and r["final_answer"] == "42" for r in rows)
