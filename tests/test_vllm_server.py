"""The vLLM paths against vLLM itself (`make test-vllm`): a real `vllm serve` of the scripted student
(tests/vllm_server.py) on this machine's CPU, reached only through the production client code.

- the protocol's turns come back with their tags, as the model wrote them (the client tells vLLM not
  to drop special tokens; without that, the tags vanish and a stop on `</tool_call>` never fires);
- the probe, synthesis and evaluation stages through `EndpointPolicy`, images included: the input,
  the image the code showed and the image search's thumbnail all go to the server;
- GRPO in server mode, token-in/token-out through TRL's client, with `weight_sync: disk`: the
  server samples from the weights of the step being trained (TRL's measured gap between the
  sampler's and the trainer's log-probs stays small), and it is large when the reload is skipped.
"""

import json
import sqlite3

import httpx
import pytest

from curation.schema import SAMPLE_SCHEMA
from curation.shards import ShardWriter, iter_rows, read_table
from synth.runtime import aio
from synth.runtime.agent import open_toolbox, run_episode
from synth.runtime.policy import VLLM_PROTOCOL_FIELDS, EndpointPolicy, to_openai_messages
from synth.runtime.protocol import STOP_SEQUENCES
from synth.tools.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA
from tests.vllm_server import (
    ANSWER_TURN, CODE_TURN, SEARCH_TURN, SERVED_NAME, ScriptedStudent, local_logprobs, max_gap, probe_token_ids, served_logprobs,
    student_agent,
)

pytestmark = pytest.mark.vllm

EPISODE = [CODE_TURN, SEARCH_TURN, ANSWER_TURN.format(answer="7")]  # what the student writes, greedily, with tools
TOOL_CALLS = [("python", "ok", 1), ("image_search", "ok", 1)]


def search_config(world: dict, tmp_path) -> SearchConfig:
    return SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=tmp_path / "search-cache")


def write_samples(out_dir, samples, pool, **update):
    with ShardWriter(out_dir, SAMPLE_SCHEMA) as writer:
        writer.write_many(s.model_copy(update={"pool": pool, **update}).to_row() for s in samples)
    return out_dir


def assistant_texts(row) -> list[str]:
    return ["".join(p.get("text") or "" for p in m["content"]) for m in row["messages"] if m["role"] == "assistant"]


def answered(db_path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_protocol_turns_come_back_with_their_special_tags(vllm_server, vllm_samples, world, tmp_path):
    """An episode through `EndpointPolicy` and the agent loop records each turn as the model wrote it."""
    sample = vllm_samples[0]
    agent = student_agent()

    async def episode(policy):
        try:
            return await run_episode(sample, policy, tools, agent)
        finally:
            await policy.aclose()

    with open_toolbox(agent, search_config(world, tmp_path)) as tools:
        served = aio.run(episode(EndpointPolicy(vllm_server.url, SERVED_NAME)))
        scripted = aio.run(episode(ScriptedStudent("7")))  # the same episode, played by the script
    assert assistant_texts(served) == assistant_texts(scripted) == EPISODE
    assert [(c["tool"], c["outcome"], c["images"]) for c in served["tool_calls"]] == TOOL_CALLS
    assert served["stop_reason"] == "answer" and served["format_ok"]

    # What the client's request fields are for, on the conversations before the search and before the answer.
    images = [i["bytes"] for i in scripted["images"]]

    def turn(turns: int, **fields):
        messages = scripted["messages"][: 2 + 2 * turns]
        return httpx.post(f"{vllm_server.url}/chat/completions", timeout=120, json={
            "model": SERVED_NAME, "messages": to_openai_messages(messages, images[: 1 + turns]), "stop": list(STOP_SEQUENCES), "max_tokens": 96,
            "temperature": 0, **fields}).json()["choices"][0]

    # By default vLLM drops special tokens: the tags vanish, and the stop on `</tool_call>` never fires
    # (the turn runs on to the model's end token).
    plain = turn(1)
    assert '{"name": "image_search"}' in plain["message"]["content"] and plain["stop_reason"] is None
    assert not any(tag in plain["message"]["content"] for tag in ("<think>", "</think>", "<tool_call>", "</tool_call>"))
    # With them kept, the stop fires; vLLM strips it and names it.
    kept = turn(1, **VLLM_PROTOCOL_FIELDS)
    assert kept["message"]["content"] == SEARCH_TURN.removesuffix("</tool_call>") and kept["stop_reason"] == "</tool_call>"
    # `include_stop_str_in_output` would keep it, and also the end-of-turn token of a turn that ends on it.
    assert turn(2, **VLLM_PROTOCOL_FIELDS, include_stop_str_in_output=True)["message"]["content"] == EPISODE[-1] + "<|im_end|>"


def test_probes_through_vllm(vllm_server, vllm_samples, world, tmp_path):
    from synth.probe import ProbeConfig, run_probes

    curated = write_samples(tmp_path / "curated", vllm_samples, None)
    cfg = ProbeConfig(student_url=vllm_server.url, student_model=SERVED_NAME, k=2, temperature=0.0, concurrency=8, agent=student_agent())
    summary = run_probes(cfg, curated, tmp_path / "probe", search_config(world, tmp_path))
    probes = {r["sample_id"]: r for r in read_table(tmp_path / "probe").to_pylist()}
    assert set(probes) == {s.id for s in vllm_samples}, summary
    for sample in vllm_samples:
        probe = probes[sample.id]
        assert probe["failed_attempts"] == 0 and probe["judge_failures"] == 0
        assert probe["tool_calls_mean"] == 2.0  # every episode with tools ran the code and the image search
        right = sample.answer == "7"  # the student always answers 7 greedily
        assert (probe["passes_tools"], probe["passes_no_tools"]) == ((2, 2) if right else (0, 0))
    # Each sample: 2 episodes of 3 turns with tools, 2 of 1 turn without, every answer in the request cache.
    assert answered(tmp_path / "probe" / "requests.sqlite") == len(vllm_samples) * (2 * 3 + 2 * 1)


def test_synthesis_through_vllm(vllm_server, vllm_samples, world, tmp_path):
    from synth.stage import SynthConfig, run_synthesize

    curated = write_samples(tmp_path / "curated", vllm_samples, "coldstart")
    cfg = SynthConfig(teacher_url=vllm_server.url, teacher_model=SERVED_NAME, attempts=1, concurrency=8, agent=student_agent())
    summary = run_synthesize(cfg, curated, tmp_path / "synth", search_config(world, tmp_path))
    rows = read_table(tmp_path / "synth", TRAJECTORY_SCHEMA).to_pylist() + read_table(tmp_path / "synth" / "rejects", TRAJECTORY_SCHEMA).to_pylist()
    assert summary["counts"]["failed"] == 0 and sorted(r["sample_id"] for r in rows) == sorted(s.id for s in vllm_samples), summary
    for row in rows:
        assert assistant_texts(row) == EPISODE
        assert [(c["tool"], c["outcome"], c["images"]) for c in row["tool_calls"]] == TOOL_CALLS
        assert len(row["images"]) == 3 and row["format_ok"] and row["final_answer"] == "7" and row["stop_reason"] == "answer"
        assert row["correct"] == (row["answer"] == "7") and (row["reject_reason"] is None) == row["correct"]


def test_evaluation_through_vllm_matches_the_checkpoint_run_locally(vllm_server, vllm_samples, world, tmp_path):
    """The endpoint run and the local transformers run of the same checkpoint record the same episodes."""
    from eval.stage import EvalConfig, run_evaluate

    curated = write_samples(tmp_path / "curated", vllm_samples, "eval")
    search = search_config(world, tmp_path)
    served = EvalConfig(model_url=vllm_server.url, model_name=SERVED_NAME, concurrency=8, agent=student_agent())
    metrics = run_evaluate(served, None, curated, tmp_path / "served", search)
    local = run_evaluate(EvalConfig(agent=student_agent()), vllm_server.checkpoint, curated, tmp_path / "local", search)

    runs = metrics["benchmarks"]["heldout"]["runs"]
    assert runs["tools"]["overall"]["n"] == 3 and runs["tools"]["overall"]["tool_calls_per_sample"] == 2.0
    assert runs["tools"]["overall"]["share_using_tools"] == 1.0 and runs["no_tools"]["overall"]["tool_calls_per_sample"] == 0.0
    assert runs["tools"]["overall"]["judge_failed"] == 0
    for run in ("tools", "no_tools"):
        by_endpoint = {r["sample_id"]: r for r in iter_rows(tmp_path / "served" / "heldout" / run)}
        by_local = {r["sample_id"]: r for r in iter_rows(tmp_path / "local" / "heldout" / run)}
        assert set(by_endpoint) == set(by_local) == {s.id for s in vllm_samples}
        for sample_id, row in by_endpoint.items():
            assert assistant_texts(row) == assistant_texts(by_local[sample_id]) == (EPISODE if run == "tools" else EPISODE[-1:])
            assert [c["images"] for c in row["tool_calls"]] == [c["images"] for c in by_local[sample_id]["tool_calls"]]
        assert metrics["benchmarks"]["heldout"]["runs"][run]["overall"]["accuracy"] == local["benchmarks"]["heldout"]["runs"][run]["overall"]["accuracy"]


@pytest.mark.parametrize("reload", [True, False], ids=["synced", "reload-skipped"])
def test_grpo_server_mode_with_disk_weight_sync(vllm_server, vllm_samples, world, tmp_path, monkeypatch, reload):
    """Two GRPO steps whose rollouts vLLM samples, the weights saved and reloaded into it before each.

    TRL compares, on every sampled token, vLLM's log-prob with the trainer's before the update
    (`sampling/sampling_logp_difference/max`). The first step's rollouts come from the served
    checkpoint either way; the second's come from the weights after one update only if the server
    reloaded them. After the run, the server's log-probs on a fixed sequence say which weights it holds."""
    import train.weight_sync
    from train.grpo import GRPOStageConfig, VLLMRolloutConfig, run_grpo

    skipped: list[str] = []
    if not reload:
        monkeypatch.setattr(train.weight_sync, "reload_weights", lambda client, folder: skipped.append(str(folder)))
    # Every sample's gold is 7: the student answers 7 or 8 when it samples, so a group's rewards differ and the step learns.
    curated = write_samples(tmp_path / "curated", vllm_samples, "rl", answer="7", answer_type="number")
    cfg = GRPOStageConfig(max_steps=2, num_generations=8, batch_size=8, learning_rate=5e-4, agent=student_agent(temperature=1.0),
                          vllm=VLLMRolloutConfig(url=vllm_server.url, weight_sync="disk", max_in_flight=8))
    probe = probe_token_ids(vllm_server.checkpoint)
    vllm_server.reload()  # the student's own weights, whatever an earlier test left
    try:
        result = run_grpo(cfg, vllm_server.checkpoint, curated, tmp_path / "grpo", search_config(world, tmp_path))
        served = served_logprobs(vllm_server.url, probe)
    finally:
        vllm_server.reload()
    steps = [json.loads(line) for line in (tmp_path / "grpo" / "dynamics.jsonl").read_text().splitlines()]
    gaps = [s["sampling/sampling_logp_difference/max"] for s in steps]
    print(f"log-prob gap between vLLM and the trainer by step ({'synced' if reload else 'reload skipped'}): {gaps}")
    assert result["steps"] == 2 and len(steps) == 2
    assert steps[0]["frac_reward_zero_std"] < 1.0  # some group's rewards differed: the first update moved the weights

    # The weights the trainer saved for the server before the second step's rollouts (the folder before them removed).
    weights = tmp_path / "grpo" / "vllm-weights"
    assert sorted(p.name for p in weights.iterdir()) == ["step-1"]
    updated, original = local_logprobs(weights / "step-1", probe), local_logprobs(vllm_server.checkpoint, probe)
    assert max_gap(updated, original) > 0.01  # the update changed the policy on the probe sequence
    # Before the first update the server holds the policy: float32 on both sides (measured: 6e-5 nats).
    assert gaps[0] < 0.01
    if reload:  # the server holds the updated weights, and sampled the second step from them (measured: 1e-4)
        assert max_gap(served, updated) < 1e-3 and gaps[1] < 0.01
    else:  # the server kept the weights before the update and sampled the second step from them (measured: 1.6)
        assert len(skipped) == 2 and max_gap(served, original) < 1e-3
        assert gaps[1] > 0.5
