"""The replay server, reached only through the `openai` client, as vLLM would be."""

import base64
import json
from pathlib import Path

import openai
import pytest

from tests.conftest import start_replay


def first_sample(world: dict, family: str) -> tuple[dict, dict]:
    root = Path(world["samples_path"]).parent
    samples = [json.loads(line) for line in Path(world["samples_path"]).read_text().splitlines()]
    scripts = {s["sample_id"]: s for s in map(json.loads, Path(world["scripts_path"]).read_text().splitlines())}
    sample = next(s for s in samples if s["category"] == family)
    sample["image_bytes"] = (root / sample["images"][0]).read_bytes()
    return sample, scripts[sample["id"]]


def user_turn(sample: dict) -> dict:
    url = "data:image/png;base64," + base64.b64encode(sample["image_bytes"]).decode()
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": sample["question"]}]}


def test_models_are_listed(replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x")
    assert {m.id for m in client.models.list().data} == {"demo-teacher", "demo-student", "demo-judge", "demo-instruct"}


def test_teacher_turns_follow_the_script_with_openai_stop_semantics(world, replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x")
    sample, script = first_sample(world, "perception")
    messages = [{"role": "system", "content": "sys"}, user_turn(sample)]
    first = client.chat.completions.create(model="demo-teacher", messages=messages, stop=["</code>", "</tool_call>"])
    text = first.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert text + "</code>" == script["teacher"][0]  # the stop string is cut, as OpenAI does
    messages += [{"role": "assistant", "content": text + "</code>"}, {"role": "user", "content": "Code execution result: ..."}]
    second = client.chat.completions.create(model="demo-teacher", messages=messages)
    assert second.choices[0].message.content == script["teacher"][1]
    assert f"<answer>{sample['answer']}</answer>" in second.choices[0].message.content


def test_student_answers_without_tools(world, replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x")
    sample, script = first_sample(world, "reasoning")
    reply = client.chat.completions.create(model="demo-student", messages=[user_turn(sample)], seed=3)
    text = reply.choices[0].message.content
    assert "<code>" not in text and "<answer>" in text
    assert text in (script["student"][0], script["student_wrong"][0])


def test_unknown_model_and_unknown_sample_are_http_errors(replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="no scripted sample"):
        client.chat.completions.create(model="demo-teacher", messages=[{"role": "user", "content": "hi"}])


def test_error_injection_is_seeded_and_applies_each_fault(world, tmp_path):
    server, url = start_replay(world, tmp_path, wrong_rate=1.0, code_error_rate=1.0, malformed_rate=0.0)
    try:
        client = openai.OpenAI(base_url=url, api_key="x")
        sample, script = first_sample(world, "reasoning")
        first = client.chat.completions.create(model="demo-teacher", messages=[user_turn(sample)], seed=1)
        assert "enhance_contrast(image_1)" in first.choices[0].message.content  # code that raises
        messages = [user_turn(sample), {"role": "assistant", "content": "x"}, {"role": "user", "content": "obs"}]
        last = client.chat.completions.create(model="demo-teacher", messages=messages, seed=1).choices[0].message.content
        assert f"<answer>{script['wrong_answer']}</answer>" in last
    finally:
        server.stop()
    server, url = start_replay(world, tmp_path, malformed_rate=1.0)
    try:
        client = openai.OpenAI(base_url=url, api_key="x")
        messages = [user_turn(sample), {"role": "assistant", "content": "x"}, {"role": "user", "content": "obs"}]
        last = client.chat.completions.create(model="demo-teacher", messages=messages).choices[0].message.content
        assert "<answer>" in last and "</answer>" not in last
    finally:
        server.stop()


def test_stop_reason_and_kept_stop_strings_as_vllm(world, replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x")
    sample, script = first_sample(world, "perception")
    messages = [{"role": "system", "content": "sys"}, user_turn(sample)]
    cut = client.chat.completions.create(model="demo-teacher", messages=messages, stop=["</code>", "</tool_call>"])
    assert cut.choices[0].model_extra["stop_reason"] == "</code>"
    kept = client.chat.completions.create(model="demo-teacher", messages=messages, stop=["</code>"],
                                          extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].message.content == script["teacher"][0]
    messages += [{"role": "assistant", "content": script["teacher"][0]}, {"role": "user", "content": "Code execution result: ..."}]
    answer = client.chat.completions.create(model="demo-teacher", messages=messages, stop=["</code>"])
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].model_extra["stop_reason"] is None  # end of turn


def test_a_partial_assistant_message_is_continued(world, replay_url):
    client = openai.OpenAI(base_url=replay_url, api_key="x", max_retries=0)
    sample, script = first_sample(world, "perception")
    assert script["teacher"][1].startswith("<think>")
    messages = [user_turn(sample), {"role": "assistant", "content": script["teacher"][0]}, {"role": "user", "content": "obs"},
                {"role": "assistant", "content": "<think>"}]
    reply = client.chat.completions.create(model="demo-teacher", messages=messages,
                                           extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert "<think>" + reply.choices[0].message.content == script["teacher"][1]  # the second turn, continued after the prefix
    with pytest.raises(openai.BadRequestError, match="add_generation_prompt"):  # vLLM refuses both at once
        client.chat.completions.create(model="demo-teacher", messages=messages, extra_body={"continue_final_message": True})


def test_the_endpoint_policy_prefills_and_reports_the_stop_string(world, replay_url):
    import asyncio

    from synth.runtime.policy import EndpointPolicy

    sample, script = first_sample(world, "perception")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample["question"]}]}]

    async def turns():
        policy = EndpointPolicy(replay_url, "demo-teacher")
        try:
            first = await policy.generate(messages, [sample["image_bytes"]], stop=["</code>", "</tool_call>"], max_tokens=512,
                                          temperature=0.0, prefix="<think>")
            later = messages + [{"role": "assistant", "content": [{"type": "text", "text": script["teacher"][0]}]},
                                {"role": "user", "content": [{"type": "text", "text": "obs"}]}]
            second = await policy.generate(later, [sample["image_bytes"]], stop=["</code>"], max_tokens=512, temperature=0.0, prefix="<think>")
            return first, second
        finally:
            await policy.aclose()

    first, second = asyncio.run(turns())
    assert first.text + "</code>" == script["teacher"][0] and first.matched_stop == "</code>"
    assert second.text == script["teacher"][1] and second.matched_stop is None


def test_serve_replay_refuses_a_file_that_is_not_scripts_and_a_busy_port_before_announcing(world, tmp_path):
    """One line and exit 2, never a JSONDecodeError; and nothing says 'replay server on ...' when
    the port is taken (review r2)."""
    import socket
    import subprocess
    import sys

    def serve(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", "serve-replay", *args], capture_output=True, text=True, timeout=120)

    array = tmp_path / "arr.json"
    array.write_text(json.dumps([{"question": "q"}], indent=1))
    done = serve("--scripts", str(array))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip() == (f"error: --scripts {array}: line 1 is not JSON (Expecting value: line 1 column 2 (char 1)) "
                                   "(a JSON array? give JSON Lines: the demo world's replay_scripts.jsonl)")
    (tmp_path / "empty.jsonl").write_text("")
    done = serve("--scripts", str(tmp_path / "empty.jsonl"))
    assert done.returncode == 2 and "no scripts in it (an empty file)" in done.stderr
    (tmp_path / "rows.jsonl").write_text(json.dumps({"answer": "x"}) + "\n")
    done = serve("--scripts", str(tmp_path / "rows.jsonl"))
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: --scripts {tmp_path / 'rows.jsonl'}: line 1 is not a replay script (an object with sample_id, question, teacher and "
        "student turns): it has no sample_id, question, teacher; give the world's replay_scripts.jsonl (deepeyes generate-world writes it)")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve("--scripts", world["scripts_path"], "--port", str(port))
    assert done.returncode == 2 and "replay server on" not in done.stdout
    assert done.stderr.strip() == (f"error: --port {port}: 127.0.0.1:{port} cannot be bound (Address already in use; another server?): "
                                   "choose another --port")


def test_serve_replay_announces_exactly_the_models_it_serves(world, tmp_path):
    """The line `serve-replay` prints names what `/v1/models` lists, in its order: the judge too."""
    import re
    import sys

    import httpx

    from synth.runtime.endpoint import ManagedServer, free_port

    port = free_port()
    command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", world["scripts_path"], "--port", str(port),
               "--teacher-model", "t-1", "--student-model", "s-1", "--instruct-model", "i-1"]
    log = tmp_path / "replay.log"
    with ManagedServer(command, f"http://127.0.0.1:{port}/v1", log, ready_timeout_s=60):
        served = [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]]
    announced = re.search(rf"replay server on http://127\.0\.0\.1:{port}/v1 \(models: (.*)\)", log.read_text())
    assert announced is not None, log.read_text()[-2000:]
    assert announced[1].split(", ") == served
    assert served == ["t-1", "s-1", "demo-judge", "i-1"]


@pytest.mark.parametrize(("options", "line"), [
    (["--faults", "bogus,429"], "error: --faults: unknown fault kind(s) 'bogus'; known: 429, 500, hang, drop, malformed, empty"),
    (["--port", "99999"], "error: --port: Input should be less than or equal to 65535 (got 99999)"),
    (["--port", "0"], "error: --port: Input should be greater than or equal to 1 (got 0)"),
    (["--fault-rate", "2"], "error: --fault-rate: Input should be less than or equal to 1 (got 2)"),
    (["--wrong-rate", "-0.1"], "error: --wrong-rate: Input should be greater than or equal to 0 (got -0.1)"),
    (["--faults-after", "-1"], "error: --faults-after: Input should be greater than or equal to 0 (got -1)"),
])
def test_serve_replay_refuses_bad_options_in_one_line_before_anything_starts(options, line, world, monkeypatch, capsys):
    """Review r4: an unknown fault kind was a traceback after the announcement; a port outside
    1-65535 was announced and another one bound; a rate of 2 was taken."""
    import synth.replay
    from flows.cli import main

    monkeypatch.setattr(synth.replay, "serve", lambda *a, **k: pytest.fail("the server started"))
    monkeypatch.setattr("sys.argv", ["deepeyes", "serve-replay", "--scripts", world["scripts_path"], *options])
    with pytest.raises(SystemExit) as exited:
        main()
    shown = capsys.readouterr()
    assert exited.value.code == 2 and shown.out == "" and shown.err == line + "\n"


def test_serve_replay_wording_for_a_folder_a_json_array_and_a_utf16_file(world, tmp_path):
    """Review r6 #15: a folder was "replay scripts not found"; a line that is no object had another description of a
    script than a samples file's; a UTF-16/32 file got Python's codec error, not the config loader's words."""
    from synth.replay import ReplayScripts, ReplayScriptsError
    from tests.curate_cli import cli

    def refusal(scripts):
        done = cli("serve-replay", "--scripts", str(scripts), "--port", "9")
        assert done.code == 2 and "replay server on" not in done.stdout
        return done.error.removeprefix("error: ")

    world_dir = Path(world["scripts_path"]).parent
    assert refusal(world_dir) == f"--scripts {world_dir} is a folder; give the scripts file in it: {world_dir / 'replay_scripts.jsonl'}"
    assert refusal(tmp_path) == (f"--scripts {tmp_path} is a folder; give the scripts file: a world's replay_scripts.jsonl "
                                      "(deepeyes generate-world writes it)")
    array = tmp_path / "arr.jsonl"
    array.write_text('[{"a": 1}]\n')
    with pytest.raises(ReplayScriptsError) as caught:
        ReplayScripts(array)
    assert str(caught.value) == (f"--scripts {array}: line 1 is an array, not a replay script (an object with sample_id, question, "
                                 "teacher and student turns): give the world's replay_scripts.jsonl (deepeyes generate-world writes it)")
    for encoding, name in (("utf-16", "UTF-16"), ("utf-32", "UTF-32")):
        wide = tmp_path / f"{encoding}.jsonl"
        wide.write_bytes(Path(world["scripts_path"]).read_text().encode(encoding))
        with pytest.raises(ReplayScriptsError) as caught:
            ReplayScripts(wide)
        assert str(caught.value) == f"--scripts {wide} is {name} text: save it as UTF-8"
