import pytest

from synth.protocol import (
    check_format,
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


def test_code_wins_over_tool_call_in_one_turn():
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


def test_stop_string_restored_only_when_generation_stopped_inside_a_tag():
    assert close_stopped_turn("<think>t</think><code>```python\n1\n```\n", "stop").endswith("</code>")
    assert close_stopped_turn('<tool_call>{"name": "image_search"}', "stop").endswith("</tool_call>")
    assert close_stopped_turn("<think>t</think><code>x", "length") == "<think>t</think><code>x"
    done = "<think>t</think><answer>1</answer>"
    assert close_stopped_turn(done, "stop") == done


def test_format_rule_of_the_paper():
    good = ["<think>a</think><code>```python\n1\n```</code>", "<think>b</think><answer>4</answer>"]
    assert check_format(good, "reasoning").ok
    assert not check_format(["<think>a<answer>4</answer>"], "reasoning").ok  # unbalanced think
    assert not check_format(["<think>a</think><answer>4</answer><answer>5</answer>"], "reasoning").ok
    assert not check_format(["<think>a</think><code>x", "<think>b</think><answer>4</answer>"], "reasoning").ok
    search = ["<think>a</think><tool_call>{}", "<think>b</think><answer>4</answer>"]
    assert check_format(search, "reasoning").ok and not check_format(search, "search").ok


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
