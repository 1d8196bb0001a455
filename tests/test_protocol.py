import pytest

from synth.runtime.protocol import (
    check_response,
    close_stopped_turn,
    load_prompts,
    parse_turn,
    render_code_observation,
    render_text_results,
)


def test_code_action_takes_last_code_block_and_last_fence():
    text = (
        "<think>plan</think><code>```python\nx = 1\n```</code> then "
        "<code>\n```python\nfirst = 1\n```\n```python\nprint('last')\n```\n</code>"
    )
    action = parse_turn(text)
    assert action.kind == "code" and action.code == "print('last')"


def test_code_wins_over_tool_call_in_one_turn():  # the reference's precedence: answer, code, tool call
    text = '<think>t</think><tool_call>{"name": "search", "arguments": {"query": "q"}}</tool_call><code>```python\n1\n```</code>'
    assert parse_turn(text).kind == "code"


def test_search_and_image_search_calls():
    action = parse_turn('<think>t</think><tool_call>{"name": "search", "arguments": {"query": " tower height "}}</tool_call>')
    assert (action.kind, action.query) == ("search", "tower height")
    assert parse_turn('<think>t</think><tool_call>{"name": "image_search"}</tool_call>').kind == "image_search"


@pytest.mark.parametrize(
    "payload,message",
    [
        ("{not json}", "invalid JSON"),
        ('{"name": "browse", "arguments": {}}', "unknown tool"),
        ('{"name": "image_search", "arguments": {"query": "x"}}', "takes no arguments"),
        ('{"name": "search", "arguments": {}}', "needs"),
    ],
)
def test_bad_tool_calls_become_error_observations(payload, message):
    action = parse_turn(f"<think>t</think><tool_call>{payload}</tool_call>")
    assert action.kind == "tool_error" and action.error.startswith("Error:") and message in action.error


@pytest.mark.parametrize(
    "text,why",
    [
        ("<think>just thinking</think>", "no action"),
        ("<think>t</think><code>```python\nprint(1)\n", "unclosed <code>"),
        ("<think>t</think><answer>42", "unclosed <answer>"),
        ("<think>t</think><tool_call>{", "unclosed <tool_call>"),
    ],
)
def test_turns_without_an_action_end_the_episode(text, why):
    action = parse_turn(text)
    assert action.kind == "none" and why in action.error


def test_answer():
    assert parse_turn("<think>so</think>\n<answer> 17 </answer>").answer == "17"


def test_stop_string_restored_only_when_that_stop_string_fired():
    assert close_stopped_turn("<think>t</think><code>```python\n1\n```\n", "</code>").endswith("```\n</code>")
    assert close_stopped_turn('<tool_call>{"name": "image_search"}', "</tool_call>").endswith("</tool_call>")
    assert close_stopped_turn("<think>t</think><code>x", None) == "<think>t</think><code>x"  # a length cut or EOS
    kept = "<think>t</think><code>```python\n1\n```\n</code>"  # a server that keeps the stop string
    assert close_stopped_turn(kept, "</code>") == kept


def test_format_rule_of_the_paper():
    good = ["<think>a</think><code>```python\n1\n```</code>", "<think>b</think><answer>4</answer>"]
    assert check_response(good, "reasoning").format_ok
    assert not check_response(["<think>a<answer>4</answer>"], "reasoning").format_ok  # unbalanced think
    two = ["<think>a</think><answer>4</answer><answer>5</answer>"]
    assert check_response(two, "reasoning").format_ok  # the reference: the tags balance, the first answer counts
    assert not check_response(two, "reasoning", single_answer=True).format_ok
    assert not check_response(["<think>a</think><code>x", "<think>b</think><answer>4</answer>"], "reasoning").format_ok
    search = ["<think>a</think><tool_call>{}", "<think>b</think><answer>4</answer>"]
    assert check_response(search, "reasoning").format_ok and not check_response(search, "search").format_ok


def test_observations_render_as_the_protocol_says():
    obs = render_code_observation("out", "", 2)
    assert obs.startswith("Code execution result:") and "stdout:\nout" in obs and obs.endswith("Images:")
    assert "Images:" not in render_code_observation("", "err", 0)
    text = render_text_results([{"title": "T", "url": "http://x", "snippet": "s"}])
    assert text.startswith("<tool_response>") and "1. [T](http://x)\ns" in text and text.endswith("</tool_response>")


def test_prompts_are_data_files():
    tools, plain = load_prompts(True), load_prompts(False)
    assert "<code>" in tools.system and "image_search" in tools.system
    assert "<code>" not in plain.system
    assert "What?" in tools.user_text("What?")
