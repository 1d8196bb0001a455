"""Any OpenAI-compatible server (issue 17): replies read back into the protocol's text, the endpoint
preflight, request-cache identity, and `deepeyes synth` / `deepeyes probe` failing fast in one line."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai.types.chat import ChatCompletion

from curation.schema import SAMPLE_SCHEMA
from curation.shards import iter_rows
from synth.probe import ProbeConfig, run_probes
from synth.runtime.agent import AgentConfig
from synth.runtime.endpoint import EndpointError, free_port
from synth.runtime.policy import EmptyResponse, EndpointPolicy, RequestOptions
from synth.runtime.preflight import model_identity
from synth.runtime.protocol import STOP_SEQUENCES, parse_turn
from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig
from tests.conftest import command_seconds, start_replay

STOP = list(STOP_SEQUENCES)


def reply(content, finish="stop", reasoning=None, reasoning_field="reasoning_content", tool_calls=None, stop_reason="absent"):
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    if tool_calls:
        message["tool_calls"] = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, (n, a) in enumerate(tool_calls)]
    choice = {"index": 0, "message": message, "finish_reason": finish}
    if stop_reason != "absent":
        choice["stop_reason"] = stop_reason
    return ChatCompletion.model_validate({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice],
                                          "usage": {"prompt_tokens": 1, "completion_tokens": 7, "total_tokens": 8}})


CODE = "```python\nprint(1)\n```"


@pytest.mark.parametrize("response,prefix,stop_sent,text,finish,matched", [
    # vLLM: the stop string stripped, named in stop_reason.
    (reply("<think>a</think><code>" + CODE, stop_reason="</code>"), "", True, "<think>a</think><code>" + CODE, "stop", "</code>"),
    # reasoning moved into `reasoning_content` (transformers serve, vLLM's reasoning parsers) or `reasoning` (newer vLLM)
    (reply("<answer>4</answer>", reasoning="2 + 2"), "", True, "<think>2 + 2</think><answer>4</answer>", "stop", None),
    (reply("<answer>4</answer>", reasoning="2 + 2", reasoning_field="reasoning"), "", True, "<think>2 + 2</think><answer>4</answer>",
     "stop", None),
    # ... with the <think> pre-fill: it is the start of the folded thinking, not doubled
    (reply("<answer>4</answer>", reasoning="2 + 2"), "<think>", True, "<think>2 + 2</think><answer>4</answer>", "stop", None),
    (reply("2 + 2</think><answer>4</answer>"), "<think>", True, "<think>2 + 2</think><answer>4</answer>", "stop", None),
    # a thinking-only turn is a turn, not an empty response
    (reply("", reasoning="still thinking", finish="length"), "", True, "<think>still thinking</think>", "length", None),
    # structured tool calls back into <tool_call> text: the stop string that would have ended the turn fired
    (reply(None, reasoning="look it up", finish="tool_calls", tool_calls=[("search", '{"query": "landmark"}')]), "", True,
     '<think>look it up</think><tool_call>{"name": "search", "arguments": {"query": "landmark"}}</tool_call>', "stop", "</tool_call>"),
    # a server that ignored `stop` (or was not sent it): cut just after the first stop string, kept
    (reply("<think>a</think><code>" + CODE + "</code> and more <answer>9</answer>"), "", False,
     "<think>a</think><code>" + CODE + "</code>", "stop", "</code>"),
    # not sent `stop` and none in the text: the turn ended on end-of-sequence, whatever its last tag
    (reply("<think>a</think><code>" + CODE), "", False, "<think>a</think><code>" + CODE, "stop", None),
    # sent, no stop_reason field (OpenAI): inferred from the open tag
    (reply("<think>a</think><code>" + CODE), "", True, "<think>a</think><code>" + CODE, "stop", "</code>"),
    # the length limit cut a reply to nothing the server returns (special tokens): a length turn
    (reply("", finish="length"), "<think>", True, "<think>", "length", None),
])
def test_replies_are_read_back_into_the_protocols_text(response, prefix, stop_sent, text, finish, matched):
    policy = EndpointPolicy("http://127.0.0.1:9/v1", "m")
    generation = policy.read_reply(response, STOP, prefix, stop_sent)
    assert (generation.text, generation.finish_reason, generation.matched_stop) == (text, finish, matched)


def test_a_folded_tool_call_parses_as_the_models_own_text_would():
    policy = EndpointPolicy("http://127.0.0.1:9/v1", "m")
    image_search = policy.read_reply(reply("", tool_calls=[("image_search", "{}")], finish="tool_calls"), STOP)
    assert parse_turn(image_search.text).kind == "image_search"
    broken = policy.read_reply(reply("", tool_calls=[("search", "{query: oops")], finish="tool_calls"), STOP)
    assert parse_turn(broken.text).kind == "tool_error"  # invalid JSON stays invalid JSON


def test_an_empty_reply_that_the_length_limit_did_not_cut_is_retried_as_transient():
    with pytest.raises(EmptyResponse):
        EndpointPolicy("http://127.0.0.1:9/v1", "m").read_reply(reply(""), STOP)


def test_one_request_body_with_the_configured_options():
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    plain = EndpointPolicy("http://h/v1", "m").request_body(messages, [], stop=STOP, max_tokens=8, temperature=0.0, seed=3, prefix="<think>")
    assert plain["stop"] == STOP and plain["seed"] == 3 and plain["continue_final_message"] is True
    assert plain["messages"][-1] == {"role": "assistant", "content": "<think>"} and plain["add_generation_prompt"] is False
    options = RequestOptions(send_stop=False, extra_body={"chat_template_kwargs": {"enable_thinking": True}, "top_k": 20})
    quiet = EndpointPolicy("http://h/v1", "m", options=options).request_body(messages, [], stop=STOP, max_tokens=8, temperature=0.0)
    assert "stop" not in quiet and "seed" not in quiet and "continue_final_message" not in quiet
    assert quiet["chat_template_kwargs"] == {"enable_thinking": True} and quiet["top_k"] == 20
    with pytest.raises(ValueError, match="model"):
        RequestOptions(extra_body={"model": "other"})


def test_the_identity_of_a_served_model():
    now = 1_800_000_000
    vllm = {"id": "teacher", "created": now - 2, "owned_by": "vllm", "root": "/ckpt/step-200", "max_model_len": 4096}
    later = dict(vllm, created=now + 50)
    assert model_identity("http://h/v1", "teacher", vllm, now) == model_identity("http://h/v1", "teacher", later, now + 52)
    assert model_identity("http://h/v1", "teacher", dict(vllm, root="/ckpt/step-400"), now) != model_identity("http://h/v1", "teacher", vllm, now)
    openai_like = {"id": "gpt", "created": 1_700_000_000, "owned_by": "system"}
    assert '"created": 1700000000' in model_identity("https://api/v1", "gpt", openai_like, now)
    assert model_identity("http://a/v1", "m", None, now) != model_identity("http://b/v1", "m", None, now)


def preflight_of(url, model="demo-teacher", sample=None, options=None, agent=None):
    from synth.runtime.agent import first_request
    from synth.runtime.preflight import preflight

    async def check():
        policy = EndpointPolicy(url, model, options=options)
        try:
            request = first_request(sample, agent or AgentConfig(), "synth") if sample is not None else None
            await preflight(policy, "teacher", request, setting="synth.teacher_url")
            return policy.identity
        finally:
            await policy.aclose()

    return asyncio.run(check())


@pytest.fixture(scope="module")
def one_sample(curated):
    from curation.schema import Sample

    return next(Sample.from_row(r) for r in iter_rows(curated, SAMPLE_SCHEMA) if r["pool"] == "coldstart")


@pytest.mark.parametrize("url,model,expected", [
    (None, "gpt-9", "model 'gpt-9' is not served there; it serves: 'demo-teacher', 'demo-student', 'demo-judge'"),
    ("http://127.0.0.1:9/v1", "demo-teacher", "connection refused (no server listens there"),
    ("127.0.0.1:8000/v1", "demo-teacher", "synth.teacher_url: '127.0.0.1:8000/v1' is not an http:// or https:// URL"),
    ("http://no-such-host.invalid/v1", "demo-teacher", "the host name does not resolve"),
    ("{replay}", "demo-teacher", "GET /models and POST /chat/completions both answered HTTP 404: not the base URL of an "
                                 "OpenAI-compatible API (most servers answer under /v1: {replay}/v1)"),
])
def test_the_preflight_names_the_cause_in_one_line_within_seconds(replay_url, one_sample, url, model, expected):
    root = replay_url.removesuffix("/v1")
    url = (url or replay_url).replace("{replay}", root)
    started = time.monotonic()
    with pytest.raises(EndpointError) as info:
        preflight_of(url, model, one_sample)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert expected.replace("{replay}", root) in message and "\n" not in message


@pytest.mark.parametrize("refuse,agent,expected", [
    ("stop", AgentConfig(), "the server refuses `stop` (HTTP 500: Internal Server Error); set synth.request.send_stop: false (--no-stop)"),
    ("continue_final_message", AgentConfig(think_prefix="every_turn"),
     "the server refuses the `<think>` pre-fill (a partial assistant message with `continue_final_message`) (HTTP 422: "
     "Unexpected fields in the request: {'continue_final_message'}); set synth.agent.think_prefix: none for this server"),
])
def test_the_preflight_finds_the_field_a_server_refuses(world, one_sample, tmp_path, refuse, agent, expected):
    server, url = start_replay(world, tmp_path, refuse_fields=refuse)
    try:
        with pytest.raises(EndpointError) as info:
            preflight_of(url, "demo-teacher", one_sample, agent=agent)
        assert expected in str(info.value)
        # With the setting it names, the same server passes.
        fixed = {"stop": dict(options=RequestOptions(send_stop=False)), "continue_final_message": dict(agent=AgentConfig())}[refuse]
        preflight_of(url, "demo-teacher", one_sample, **{"agent": agent, **fixed})
    finally:
        server.stop()


def test_a_server_that_refuses_stop_runs_with_stop_strings_applied_on_the_client(world, curated, tmp_path):
    server, url = start_replay(world, tmp_path, refuse_fields="stop")
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    cfg = SynthConfig(teacher_url=url, pools=["coldstart"], attempts=1, request=RequestOptions(send_stop=False))
    try:
        summary = run_synthesize(cfg, curated, tmp_path / "out", search)
    finally:
        server.stop()
    # The replay server answers whole scripted turns when not sent `stop`: the client cuts them.
    assert summary["counts"]["failed"] == 0 and summary["counts"]["kept"] == summary["counts"]["samples"] > 0


def test_a_new_checkpoint_under_the_same_name_is_asked_again_and_a_dead_endpoint_is_not_replayed(world, curated, tmp_path):
    """The request cache knows which server and which weights answered (issue 17, the probe row)."""
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    curated_rows = [r for r in iter_rows(curated, SAMPLE_SCHEMA)]
    unpooled = tmp_path / "unpooled"
    _write_without_pools(curated, unpooled)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cfg = ProbeConfig(student_url=url, student_model="demo-student", k=2, agent=AgentConfig(max_turns=4))
    out = tmp_path / "probe"

    def served(scripts_path):
        command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", str(scripts_path), "--port", str(port)]
        from synth.runtime.endpoint import ManagedServer

        return ManagedServer(command, url, tmp_path / "replay.log", ready_timeout_s=60).start()

    def stats():
        return httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"]

    server = served(world["scripts_path"])
    try:
        first = run_probes(cfg, unpooled, out, search)["counts"]
        again = run_probes(cfg, unpooled, out, search)["counts"]
        answered = stats()
    finally:
        server.stop()
    assert first["requests_sent"] > 0 and again["requests_sent"] == 0 and again["requests_replayed"] == first["requests_sent"]
    assert answered == 2 + first["requests_sent"]  # two preflights

    # A dead endpoint at the same URL and name fails the preflight instead of replaying old answers.
    with pytest.raises(EndpointError, match="connection refused"):
        run_probes(cfg, unpooled, out, search)

    # Other weights under the same name at the same URL (vLLM's `root` differs): asked again.
    copy = tmp_path / "step-400" / "replay_scripts.jsonl"
    copy.parent.mkdir()
    shutil.copy(world["scripts_path"], copy)
    server = served(copy)
    try:
        renewed = run_probes(cfg, unpooled, out, search)["counts"]
    finally:
        server.stop()
    assert renewed["requests_replayed"] == 0 and renewed["requests_sent"] == first["requests_sent"]
    assert len(curated_rows) > 0


def _write_without_pools(curated, out):
    """The curated samples as probe candidates (no pool yet), through the shard writer."""
    from curation.shards import ShardWriter

    with ShardWriter(out, SAMPLE_SCHEMA) as writer:
        for row in iter_rows(curated, SAMPLE_SCHEMA):
            writer.write({**row, "pool": None})


def synth_cli(world, curated, url, model="demo-teacher", *extra):
    return [sys.executable, "-m", "flows.cli", "synth", "--input", str(curated), "--out", str(Path(curated).parent / "cli-out"),
            "--teacher-url", url, "--teacher-model", model, "--pools", "coldstart,rl,eval", "--corpus", world["corpus_path"],
            "--image-corpus", world["image_corpus_path"], *extra]


def test_deepeyes_synth_fails_in_one_line_within_10_seconds(world, curated, tmp_path):
    """A fresh clone's `deepeyes synth` against a wrong URL, a wrong model name and a server that
    rejects `stop` (issue 17's acceptance)."""
    server, url = start_replay(world, tmp_path, refuse_fields="stop")
    cases = [
        (synth_cli(world, curated, "http://127.0.0.1:9/v1"), "connection refused"),
        (synth_cli(world, curated, "localhost:8000/v1"), "'localhost:8000/v1' is not an http:// or https:// URL"),
        (synth_cli(world, curated, url, "Qwen/Qwen2.5-VL-72B-Instruct"),
         "model 'Qwen/Qwen2.5-VL-72B-Instruct' is not served there; it serves: 'demo-teacher'"),
        (synth_cli(world, curated, url), "the server refuses `stop` (HTTP 500: Internal Server Error); set synth.request.send_stop: false"),
    ]
    try:
        for command, expected in cases:
            done, took = command_seconds(command)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr[-2000:]
            assert took < 10, f"{took:.1f} s beyond start-up: {lines}"
        failing, failing_url = start_replay(world, tmp_path / "failing", fault_rate=1.0, faults="500", faults_after=1)
        try:  # past the preflight, every request fails: the run exits with 2 and names the top cause and its count
            done = subprocess.run(synth_cli(world, curated, failing_url, "demo-teacher", "--limit", "3", "--attempts", "1"),
                                  capture_output=True, text=True, timeout=300)
        finally:
            failing.stop()
        lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith("error")]
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "all 3 samples failed; top cause: HTTP 500: internal error (injected) (3 of 3); quarantine: " in lines[0]
        ok = subprocess.run(synth_cli(world, curated, url, "demo-teacher", "--no-stop", "--limit", "2", "--max-turns", "6"),
                            capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr[-2000:]
        counts = json.loads(ok.stdout.strip().splitlines()[-1])["counts"]
        assert counts["samples"] == 2 and counts["kept"] == 2
    finally:
        server.stop()


def test_the_llm_judge_is_checked_before_a_stage_sends_anything(world, curated, replay_url, tmp_path):
    from synth.scoring.judge import JudgeConfig, check_judge

    check_judge(JudgeConfig(llm_url=replay_url, llm_model="demo-judge"))  # answers: passes
    with pytest.raises(EndpointError, match=r"judge endpoint .*model 'judge-72b' is not served there"):
        check_judge(JudgeConfig(llm_url=replay_url, llm_model="judge-72b"))
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    before = httpx.get(replay_url.removesuffix("/v1") + "/stats").json()["requests"]
    with pytest.raises(EndpointError, match=r"judge endpoint http://127.0.0.1:9/v1 \(model 'demo-judge'\): connection refused"):
        run_synthesize(SynthConfig(teacher_url=replay_url, pools=["coldstart"]), curated, tmp_path / "out", search,
                       JudgeConfig(llm_url="http://127.0.0.1:9/v1", llm_model="demo-judge"))
    # Only the teacher's preflight went out: no sample before both endpoints answered.
    assert httpx.get(replay_url.removesuffix("/v1") + "/stats").json()["requests"] == before + 1


def test_deepeyes_probe_takes_the_knobs_users_of_vllm_and_openai_expect(world, curated, replay_url, tmp_path):
    _write_without_pools(curated, tmp_path / "candidates")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "probe", "--input", str(tmp_path / "candidates"), "--out", str(tmp_path / "p"),
                           "--student-url", replay_url, "--student-model", "demo-student", "--k", "1", "--limit", "2",
                           "--max-turns", "1", "--max-tokens", "3", "--request-timeout", "30", "--no-stop",
                           "--extra-body", '{"top_k": 20}', "--corpus", world["corpus_path"]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])["counts"]
    # Two samples, one attempt in each mode, one turn each: the replay server's word-tokens cut at 3.
    assert counts["samples"] == 2 and counts["episodes"] == 4 and counts["requests_sent"] == 4
    bad = subprocess.run([sys.executable, "-m", "flows.cli", "probe", "--input", str(tmp_path / "candidates"), "--out", str(tmp_path / "q"),
                          "--student-url", replay_url, "--student-model", "demo-student", "--extra-body", "[1]"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--extra-body" in bad.stderr and "Traceback" not in bad.stderr


# --- fresh-user review r2: replies that are not chat completions, refused fields, URLs, keys ---

def _generate_once(url, model="fake", **options):
    async def ask():
        policy = EndpointPolicy(url, model, max_retries=1, backoff_max_s=0.01, **options)
        try:
            return await policy.generate([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], [], stop=STOP,
                                         max_tokens=8, temperature=0.0)
        finally:
            await policy.aclose()

    return asyncio.run(ask())


@pytest.mark.parametrize("mode,expected", [
    ("nonjson", "the first request failed: non-JSON reply (content-type text/plain, first bytes 'not json at all')"),
    ("nullmessage", "the first request failed: the reply's first choice has no message (message: null)"),
])
def test_a_reply_that_is_not_a_chat_completion_is_one_line_in_the_preflight_and_the_failure_reason(one_sample, mode, expected):
    from synth.runtime.policy import MalformedReply, describe_error
    from tests.fake_openai import FakeServer

    with FakeServer(mode) as url:
        with pytest.raises(EndpointError) as info:
            preflight_of(url, "fake", one_sample)
        with pytest.raises(MalformedReply) as mid_run:
            _generate_once(url)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert describe_error(mid_run.value) == expected.split("failed: ")[1]


def test_a_server_that_refuses_seed_is_found_and_the_setting_that_turns_it_off_named(one_sample):
    from tests.fake_openai import FakeServer

    with FakeServer("refuse_seed") as url:
        with pytest.raises(EndpointError) as info:
            preflight_of(url, "fake", one_sample)
        preflight_of(url, "fake", one_sample, options=RequestOptions(send_seed=False))  # with the named setting: passes
    assert ("the server refuses `seed` (HTTP 400: unknown field seed); set synth.request.send_seed: false (--no-seed): sampled turns "
            "are then not reproducible") in str(info.value)


@pytest.mark.parametrize("url,expected", [
    ("http://127.0.0.1:9/v1/chat/completions", "synth.teacher_url: 'http://127.0.0.1:9/v1/chat/completions' is the /chat/completions "
                                               "route, not the API's base URL: give http://127.0.0.1:9/v1 (requests add /chat/completions themselves)"),
    ("http://127.0.0.1:9/v1/models/", "is the /models route, not the API's base URL: give http://127.0.0.1:9/v1"),
    ("  127.0.0.1:8000/v1\n", "synth.teacher_url: '127.0.0.1:8000/v1' is not an http:// or https:// URL"),
])
def test_a_pasted_route_or_a_url_without_scheme_names_the_base_url(url, expected):
    with pytest.raises(EndpointError) as info:
        preflight_of(url, "fake")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_urls_are_stripped_of_surrounding_whitespace_in_configs_and_endpoints():
    from eval.stage import EvalConfig
    from synth.scoring.judge import JudgeConfig

    assert SynthConfig(teacher_url=" http://h:1/v1\n").teacher_url == "http://h:1/v1"
    assert ProbeConfig(student_url="\thttp://h:1/v1 ").student_url == "http://h:1/v1"
    assert EvalConfig(model_url=" http://h:1/v1 ", model_name="m").model_url == "http://h:1/v1"
    assert JudgeConfig(llm_url=" http://h:1/v1 ").llm_url == "http://h:1/v1"
    assert EndpointPolicy(" http://h:1/v1/ \n", "m").base_url == "http://h:1/v1"
    with FakeServerUrl("ok") as url:
        preflight_of(f"  {url} \n", "fake")


def FakeServerUrl(mode):
    from tests.fake_openai import FakeServer

    return FakeServer(mode)


@pytest.mark.parametrize("key,expected", [
    (None, "the server refused the API key (HTTP 401: Incorrect API key provided); the key is read from the environment variable "
           "DEEPEYES_TEST_KEY (api_key_env), which is unset: export DEEPEYES_TEST_KEY=<key>"),
    ("wrong", "the key is read from the environment variable DEEPEYES_TEST_KEY (api_key_env), which is set: the server refused its value"),
])
def test_a_refused_api_key_names_the_environment_variable_and_whether_it_is_set(monkeypatch, tmp_path, key, expected):
    from synth.runtime.request_cache import open_endpoint

    if key is None:
        monkeypatch.delenv("DEEPEYES_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("DEEPEYES_TEST_KEY", key)

    async def check(url):
        from synth.runtime.preflight import preflight

        _, endpoint = open_endpoint(url, "fake", api_key_env="DEEPEYES_TEST_KEY", timeout_s=5, max_retries=0, max_in_flight=1,
                                    cache_path=None)
        try:
            await preflight(endpoint, "teacher", None, setting="synth.teacher_url")
        finally:
            await endpoint.aclose()

    with FakeServerUrl("auth") as url:
        with pytest.raises(EndpointError) as info:
            asyncio.run(check(url))
        monkeypatch.setenv("DEEPEYES_TEST_KEY", "secret")
        asyncio.run(check(url))  # the right key passes
    assert expected in str(info.value)


def test_a_server_that_lists_no_models_says_so():
    with FakeServerUrl("models_empty") as url:
        with pytest.raises(EndpointError) as info:
            preflight_of(url, "fake")
        from flows.cli_interop import endpoint_model

        with pytest.raises(EndpointError) as unnamed:
            endpoint_model(url, None)
    assert str(info.value).endswith("model 'fake' is not served there; GET /models lists no models (is a model loaded?)")
    assert str(unnamed.value) == f"--model: {url} lists no models: name the model with --model"


def test_a_request_timeout_has_one_rule_in_configs_and_on_the_command_line(tmp_path):
    from flows.config import ConfigError, load_config

    for value in (-1, 0, 0.05):
        with pytest.raises(ValueError, match="greater than or equal to 0.1"):
            SynthConfig(request_timeout_s=value)
        with pytest.raises(ValueError, match="greater than or equal to 0.1"):
            ProbeConfig(request_timeout_s=value)
    config = tmp_path / "neg.yaml"
    config.write_text("synth:\n  teacher_url: http://127.0.0.1:9/v1\n  request_timeout_s: -1\n")
    with pytest.raises(ConfigError, match=r"neg.yaml:3: synth.request_timeout_s: Input should be greater than or equal to 0.1"):
        load_config(config, check=False)


def test_deepeyes_synth_and_probe_without_search_refuse_search_questions_in_one_line(world, curated, replay_url, tmp_path):
    _write_without_pools(curated, tmp_path / "candidates")
    commands = {
        "synthesize": [sys.executable, "-m", "flows.cli", "synth", "--input", str(curated), "--out", str(tmp_path / "s"),
                       "--teacher-url", replay_url, "--teacher-model", "demo-teacher", "--pools", "coldstart,rl,eval"],
        "probe": [sys.executable, "-m", "flows.cli", "probe", "--input", str(tmp_path / "candidates"), "--out", str(tmp_path / "p"),
                  "--student-url", replay_url, "--student-model", "demo-student"],
    }
    for stage, command in commands.items():
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert lines[0].startswith(f"error: {stage}: ") and "search questions (category: search) and no text search is configured: " \
                                                         "give --corpus FILE (search.corpus_path)" in lines[0]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_a_managed_server_interrupted_while_it_starts_is_stopped(tmp_path, monkeypatch, interruption):
    """Ctrl-C or a SIGTERM (raised as an exception) during the wait for readiness: `start` never
    returned the server to its caller, so it stops the server itself; in a session of its own, a
    process-group kill would not reach it."""
    from synth.runtime import endpoint

    server = endpoint.ManagedServer([sys.executable, "-c", "import time; time.sleep(60)"], f"http://127.0.0.1:{free_port()}/v1",
                                    tmp_path / "server.log", ready_timeout_s=30)

    pids = []

    def interrupted(*args, **kwargs):
        pids.append(server.pid)
        raise interruption()

    monkeypatch.setattr(endpoint.httpx, "get", interrupted)
    with pytest.raises(interruption):
        server.start()
    assert pids and server.pid is None  # stopped, and forgotten
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # gone (reaped by `stop`'s wait)
