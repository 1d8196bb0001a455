"""Every case of issue 15 with its right value: answer extraction, the format rule, the reward, the
judge, stop strings, protocol leniency; and synthesis verification, GRPO rewards and evaluation
scoring the same episode alike.

Right values come from the authors' released reward code (Visual-Agent/DeepEyesV2,
`reinforcement_learning/verl/utils/reward_score/deepeyesv2.py`: `compute_score` for perception,
`compute_score_math` for reasoning, `compute_score_search` for search) where it fixes them, and
from the issue's rules where it does not (the judge's undecided cases)."""

from __future__ import annotations

import asyncio

import pytest
from openai.types.chat import ChatCompletion

from curation.schema import Sample
from synth.agent import AgentConfig, ToolBox, ToolSession, run_episode
from synth.judge import Judge, JudgeConfig, Verdict, choice_of, parse_yes_no, plain_math_to_latex, rule_verdict, stated_number
from synth.policy import Generation, _matched_stop, local_turn
from synth.protocol import (
    check_response,
    close_stopped_turn,
    extract_answer,
    extract_code,
    infer_matched_stop,
    parse_turn,
)
from synth.reward import RewardConfig, compute_reward, score_response

THINK_CODE_EOS = "<think>I could run <code> to zoom in, but the colour is clear.</think><answer>red</answer>"
LONG = "x" * 300

# ---------------------------------------------------------------------------------------------
# Extraction and format: (response, category, answer, format_ok)

EXTRACTION = {
    "first answer after the last think": ("<think>t</think><answer>red</answer> <answer>blue</answer>", "perception", "red", True),
    "an answer only inside think is none": ("<think>maybe <answer>red</answer></think>", "perception", None, False),
    "an empty answer fails the format": ("<think>t</think><answer> </answer>", "perception", "", False),
    "a stray closing answer tag fails the format": ("<think>t</think><answer>red</answer></answer>", "perception", "red", False),
    "a missing leading think is prepended": ("the colour is clear</think><answer>red</answer>", "perception", "red", True),
    "think tags must balance": ("<think>a</think><think>b<answer>red</answer>", "perception", "red", False),
    "at least one think": ("<answer>red</answer>", "perception", "red", False),  # prepended <think> has no </think>
    "code tags must balance": (THINK_CODE_EOS, "perception", "red", False),
    "code tags balanced across turns": (["<think>a</think><code>```python\nprint(1)\n```</code>",
                                         "<think>b</think><answer>red</answer>"], "perception", "red", True),
    "answer after the last think only": (["<think>a</think><answer>red</answer>", "<think>b</think>"], "perception", None, False),
    "tool_call tags balance on search": (['<think>a</think><tool_call>{"name": "search"', "<think>b</think><answer>red</answer>"],
                                         "search", "red", False),
    "tool_call tags free on perception": (['<think>a</think><tool_call>{"name": "search"', "<think>b</think><answer>red</answer>"],
                                          "perception", "red", True),
    "the answer is stripped": ("<think>t</think><answer>\n  red \n</answer>", "reasoning", "red", True),
}


@pytest.mark.parametrize("response,category,answer,format_ok", EXTRACTION.values(), ids=EXTRACTION.keys())
def test_extraction_and_format(response, category, answer, format_ok):
    check = check_response(response, category)
    assert (check.answer, check.format_ok) == (answer, format_ok), check.problems
    if isinstance(response, str):
        assert extract_answer("<think>" + response if not response.startswith("<") else response) == answer


def test_exactly_one_answer_is_a_setting():
    two = "<think>t</think><answer>red</answer> <answer>blue</answer>"
    assert check_response(two, "perception").format_ok  # the reference's count rule
    assert not check_response(two, "perception", single_answer=True).format_ok
    assert check_response("<think>t</think><answer>red</answer>", "perception", single_answer=True).format_ok


# ---------------------------------------------------------------------------------------------
# The reward, scored end to end (extraction, format, the rules judge, the reward): (response,
# gold, answer type, category, reward settings, parsed search calls, reward)

SEARCHED = '<think>a</think><tool_call>{"name": "search", "arguments": {"query": "q"}}</tool_call>\n<think>b</think><answer>red</answer>'
BROKEN_CALL = "<think>a</think><tool_call>{not json}</tool_call>\n<think>b</think><answer>red</answer>"
REWARD = {
    "right and well formed": ("<think>t</think><answer>red</answer>", "red", "text", "perception", {}, 0, 1.0),
    "wrong and well formed": ("<think>t</think><answer>blue</answer>", "7", "number", "reasoning", {}, 0, 0.2),
    "issue example: EOS turn with <code> in think": (THINK_CODE_EOS, "red", "text", "perception", {}, 0, 0.8),
    "two answers: the first counts, format holds": ("<think>t</think><answer>red</answer> <answer>blue</answer>", "red", "text",
                                                   "perception", {}, 0, 1.0),
    "two answers with single_answer": ("<think>t</think><answer>red</answer> <answer>blue</answer>", "red", "text", "perception",
                                       {"single_answer": True}, 0, 0.8),
    "answer only in think": ("<think><answer>red</answer></think>", "red", "text", "perception", {}, 0, 0.0),
    "cap: perception answer of 300 chars": (f"<think>t</think><answer>{LONG}</answer>", LONG, "text", "perception", {}, 0, 0.0),
    "cap: 299 chars is fine": (f"<think>t</think><answer>{LONG[:299]}</answer>", LONG[:299], "text", "perception", {}, 0, 1.0),
    "cap: search answer of 300 chars": (f"<think>t</think><answer>{LONG}</answer>", LONG, "text", "search", {}, 0, 0.0),
    "cap: reasoning has none": (f"<think>t</think><answer>{LONG}</answer>", LONG, "text", "reasoning", {}, 0, 1.0),
    "cap keeps format when set": (f"<think>t</think><answer>{LONG}</answer>", LONG, "text", "perception",
                                  {"cap_fails_format": False}, 0, 0.2),
    "cap per category is a setting": (f"<think>t</think><answer>{LONG}</answer>", LONG, "text", "reasoning",
                                      {"answer_cap_chars": {"reasoning": 300}}, 0, 0.0),
    "search penalty on a parsed call": (SEARCHED, "red", "text", "search", {}, 1, 0.8 * 0.9 + 0.2),
    "search penalty on unparsed tool_call text": (BROKEN_CALL, "red", "text", "search", {}, 0, 0.8 * 0.9 + 0.2),
    "parsed_calls: a broken call is no search": (BROKEN_CALL, "red", "text", "search", {"search_penalty_on": "parsed_calls"}, 0, 1.0),
    "parsed_calls: a parsed call is": (SEARCHED, "red", "text", "search", {"search_penalty_on": "parsed_calls"}, 1, 0.8 * 0.9 + 0.2),
    "no search penalty off search samples": (SEARCHED, "red", "text", "perception", {}, 1, 1.0),
    "no penalty on a wrong answer": (SEARCHED, "blue", "text", "search", {}, 1, 0.2),
    "weights are settings": ("<think>t</think><answer>red</answer>", "red", "text", "perception",
                             {"accuracy_weight": 0.5, "format_weight": 0.5}, 0, 1.0),
}


@pytest.fixture(scope="module")
def judge():
    """Rules, math-verify; text answers matched exactly where no LLM judge is configured."""
    shared = Judge(JudgeConfig(text_fallback="exact", math_timeout_s=3))
    yield shared
    asyncio.run(shared.aclose())


def score(judge, response, gold, answer_type, category, settings, calls):
    turns = [response] if isinstance(response, str) else response
    tool_calls = [{"tool": "search"}] * calls
    return asyncio.run(score_response(judge, turns, question="q?", gold=gold, answer_type=answer_type, choices=None,
                                      category=category, tool_calls=tool_calls, cfg=RewardConfig(**settings)))


@pytest.mark.parametrize("response,gold,answer_type,category,settings,calls,total", REWARD.values(), ids=REWARD.keys())
def test_reward(judge, response, gold, answer_type, category, settings, calls, total):
    assert score(judge, response, gold, answer_type, category, settings, calls).reward.total == pytest.approx(total)


def test_reward_defaults_are_the_reference():
    cfg = RewardConfig()
    assert (cfg.accuracy_weight, cfg.format_weight, cfg.search_penalty) == (0.8, 0.2, 0.1)
    assert cfg.answer_cap_chars == {"perception": 300, "search": 300, "reasoning": None} and cfg.cap_fails_format
    assert cfg.search_penalty_on == "tool_call_text" and cfg.search_penalty_categories == ["search"] and not cfg.single_answer


def test_a_judge_failure_scores_accuracy_zero_and_says_so():
    check = check_response("<think>t</think><answer>It stands in Velmorahaven.</answer>", "search")
    verdict = asyncio.run(Judge().judge("q?", check.answer, "Velmorahaven", "text"))
    assert verdict.judge_failed and compute_reward(verdict.correct, check, "search").total == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------
# The judge: (prediction, gold, answer type, choices, outcome) with rules and math-verify, no LLM

ABCD = ["red", "green", "blue", "white"]
JUDGE = {
    "choice: a hedge between options is not credited": ("A or B", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: I think it is C": ("I think it is C", "C", "choice", ABCD, "correct"),
    "choice: The answer is B": ("The answer is B", "B", "choice", ABCD, "correct"),
    "choice: boxed": ("\\boxed{B}", "B", "choice", ABCD, "correct"),
    "choice: an option's text beats a letter": ("a dog", "B", "choice", ["a cat", "a dog"], "correct"),
    "choice: an article is never a letter": ("A dog", "B", "choice", ["a cat", "a dog"], "correct"),
    "choice: a letter outside the options is ignored": ("E", "B", "choice", ABCD, "judge_failed"),
    "choice: a wrong letter": ("(A)", "B", "choice", ABCD, "incorrect"),
    "choice: a wrong option text": ("white", "B", "choice", ABCD, "incorrect"),
    "choice: label and text": ("B. green", "B", "choice", ABCD, "correct"),
    "number: one final value": ("12 - 5 = 7", "7", "number", None, "correct"),
    "number: a hedge is not credited": ("3 or 4", "3", "number", None, "judge_failed"),
    "number: an expression is not credited": ("4\\sqrt{2}", "4", "number", None, "incorrect"),  # math-verify: not equal
    "number: integers compare exactly": ("1000001", "1000000", "number", None, "incorrect"),
    "number: 42.0 is 42": ("42.0", "42", "number", None, "correct"),
    "number: number words count": ("seven", "7", "number", None, "correct"),
    "number: words in the gold": ("7", "seven", "number", None, "correct"),
    "number: a sentence with one number": ("There are 7 apples.", "7", "number", None, "correct"),
    "number: percent as written": ("50", "50%", "number", None, "correct"),
    "number: percent against a fraction, reconciled": ("0.5", "50%", "number", None, "correct"),  # by math-verify
    "number: a rounded value is not the fraction": ("0.333", "1/3", "number", None, "incorrect"),  # math-verify, 10 decimals
    "number: fraction and decimal": ("1/2", "0.5", "number", None, "correct"),
    "number: a negative is not the positive": ("-7", "7", "number", None, "incorrect"),
    "math: pi/2 is \\dfrac{\\pi}{2}": ("pi/2", "\\dfrac{\\pi}{2}", "math", None, "correct"),
    "math: sqrt(3)/2": ("sqrt(3)/2", "\\frac{\\sqrt{3}}{2}", "math", None, "correct"),
    "math: beyond the sixth decimal is not equal": ("1.0000002", "1.0000001", "math", None, "incorrect"),
    "math: a huge power tower is no silent 0": ("2^{2^{16}}", "2^{2^{2^{2^{2}}}}", "math", None, "judge_failed"),
    "math: equivalent forms": ("(x+1)^2", "x^2+2x+1", "math", None, "correct"),
    "math: different forms": ("x^2+1", "(x+1)^2", "math", None, "incorrect"),
    "yes/no: opens with yes": ("Yes, the light is red.", "yes", "text", None, "correct"),
    "yes/no: opens with no": ("No.", "yes", "text", None, "incorrect"),
    "yes/no: no opener is undecided": ("Probably.", "yes", "text", None, "judge_failed"),
    "text: normalized equality": ("The Velmora Tower.", "velmora tower", "text", None, "correct"),
    "text: a paraphrase needs a judge": ("It stands in Velmorahaven.", "Velmorahaven", "text", None, "judge_failed"),
    "empty: no answer is wrong": ("", "4", "number", None, "incorrect"),
}


@pytest.fixture(scope="module")
def rules_judge():
    shared = Judge(JudgeConfig(math_timeout_s=3))
    yield shared
    asyncio.run(shared.aclose())


@pytest.mark.parametrize("prediction,gold,answer_type,choices,outcome", JUDGE.values(), ids=JUDGE.keys())
def test_judge(rules_judge, prediction, gold, answer_type, choices, outcome):
    verdict = asyncio.run(rules_judge.judge("q?", prediction, gold, answer_type, choices))
    assert verdict.outcome == outcome, verdict


def test_rule_pieces():
    assert choice_of("I think it is C", ABCD) == "C" and choice_of("A or B", ["x", "y"]) == "several"
    assert stated_number("12 - 5 = 7").value == 7 and stated_number("3 or 4") == "several"
    assert stated_number("4\\sqrt{2}") == "expression" and stated_number("one hundred and five").value == 105
    assert plain_math_to_latex("sqrt(3)/2 + pi") == "\\sqrt{3}/2 + \\pi" and plain_math_to_latex("\\frac{1}{2}") == "\\frac{1}{2}"
    # What rules alone leave to math-verify or the LLM judge.
    for prediction, gold in (("0.5", "50%"), ("0.333", "1/3"), ("3.1416", "3.14"), ("3 or 4", "3")):
        assert rule_verdict(prediction, gold, "number").outcome == "undecided"


def test_text_fallbacks_are_benchmark_rules():
    exact = Judge(JudgeConfig(text_fallback="exact"))
    contains = Judge(JudgeConfig(text_fallback="contains"))
    assert asyncio.run(exact.judge("q", "It is Velmorahaven", "Velmorahaven", "text")).outcome == "incorrect"
    assert asyncio.run(contains.judge("q", "It is Velmorahaven", "Velmorahaven", "text")).outcome == "correct"
    assert asyncio.run(contains.judge("q", "It is Quenhaven", "Velmorahaven", "text")).outcome == "incorrect"


# The LLM judge: a strict yes/no verdict

LLM_REPLIES = {"yes": True, "No": False, "Yes.": True, " no \n": False, "\\boxed{Yes}": True, "**No**": False,
               "Yes, because the units match": None, "I think yes": None, "TRUE": None, "": None, "yes no": None}


@pytest.mark.parametrize("reply,said", LLM_REPLIES.items(), ids=[repr(r) for r in LLM_REPLIES])
def test_llm_verdict_is_parsed_strictly(reply, said):
    assert parse_yes_no(reply) is said


class ReplyingJudgeModel:
    """Stands in for the judge model's endpoint: answers every request with one reply."""

    name = "judge-model"

    def __init__(self, reply: str) -> None:
        self.reply, self.prompts = reply, []

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag=""):
        self.prompts.append(messages[-1]["content"][0]["text"])
        return Generation(self.reply, "stop", 1)

    async def aclose(self):
        return None


@pytest.mark.parametrize("reply,outcome", [("Yes", "correct"), ("no.", "incorrect"), ("It depends.", "judge_failed")])
def test_llm_judge_decides_what_rules_cannot_and_a_vague_reply_fails(reply, outcome):
    judge = Judge()
    judge._llm = ReplyingJudgeModel(reply)
    verdict = asyncio.run(judge.judge("Where is it?", "It stands in Velmorahaven.", "Velmorahaven", "text"))
    assert (verdict.outcome, verdict.method) == (outcome, "llm")
    prompt = judge._llm.prompts[0]
    assert "Reference answer: Velmorahaven" in prompt and "Candidate answer: It stands in Velmorahaven." in prompt
    assert "hedges between several answers" in prompt and "always correct" in prompt and "seven and 7" in prompt


def test_rules_decide_before_the_llm_and_a_hedge_reaches_it():
    judge = Judge()
    judge._llm = ReplyingJudgeModel("yes")
    assert asyncio.run(judge.judge("q", "The answer is B", "B", "choice", ABCD)).method == "choice"
    assert not judge._llm.prompts  # decided by rules: no model call
    assert asyncio.run(judge.judge("q", "A or B", "A", "choice", ABCD)).method == "llm"


def test_verdict_outcomes():
    assert Verdict("undecided", "text").decided is False and Verdict("judge_failed", "llm").judge_failed
    assert Verdict("correct", "choice").correct and not Verdict("incorrect", "choice").correct


# ---------------------------------------------------------------------------------------------
# Stop strings: a closing tag only when the stop string really fired

STOPS = ["</code>", "</tool_call>"]


def choice(content: str, **fields) -> object:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, **fields}]}
    return ChatCompletion.model_validate(body).choices[0]


@pytest.mark.parametrize("text,fields,matched", [
    (THINK_CODE_EOS, {"finish_reason": "stop", "stop_reason": None}, None),  # vLLM: EOS
    ("<think>t</think><code>```python\n1\n```\n", {"finish_reason": "stop", "stop_reason": "</code>"}, "</code>"),
    ("<think>t</think><code>x", {"finish_reason": "stop", "stop_reason": 151645}, None),  # a stop token id
    (THINK_CODE_EOS, {"finish_reason": "stop"}, None),  # no stop_reason: inferred from the last tag
    ("<think>t</think><code>```python\n1\n```\n", {"finish_reason": "stop"}, "</code>"),
    ('<think>t</think><tool_call>{"name": "image_search"}', {"finish_reason": "stop"}, "</tool_call>"),
    ("<think>t</think><code>```python\n1\n", {"finish_reason": "length", "stop_reason": None}, None),
])
def test_endpoint_matched_stop(text, fields, matched):
    assert _matched_stop(choice(text, **fields), text, fields["finish_reason"], STOPS) == matched


def test_the_issue_example_stays_an_answer():
    assert infer_matched_stop(THINK_CODE_EOS, STOPS) is None
    assert close_stopped_turn(THINK_CODE_EOS, None) == THINK_CODE_EOS
    assert parse_turn(close_stopped_turn(THINK_CODE_EOS, None)).answer == "red"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model).tokenizer


def test_local_policy_knows_which_stop_fired(tokenizer):
    eos = tokenizer.eos_token_id
    ended = local_turn(tokenizer, tokenizer(THINK_CODE_EOS, add_special_tokens=False)["input_ids"] + [eos], STOPS)
    assert (ended.text, ended.finish_reason, ended.matched_stop) == (THINK_CODE_EOS, "stop", None)
    code = "<think>t</think><code>\n```python\nprint(1)\n```\n</code>"
    stopped = local_turn(tokenizer, tokenizer(code, add_special_tokens=False)["input_ids"], STOPS, prefix="")
    assert (stopped.text, stopped.matched_stop) == (code, "</code>")
    cut = local_turn(tokenizer, tokenizer("<think>a long", add_special_tokens=False)["input_ids"], STOPS)
    assert (cut.finish_reason, cut.matched_stop) == ("length", None)


def test_token_policy_knows_which_stop_fired(tokenizer, tiny_model):
    from transformers import AutoProcessor

    from train.rollout import EpisodeTokens, TokenPolicy, _Request

    policy = TokenPolicy(None, AutoProcessor.from_pretrained(tiny_model))
    request = _Request([], [], STOPS, 512, 1.0, None, "", "t")
    ids = tokenizer(THINK_CODE_EOS, add_special_tokens=False)["input_ids"]
    ended = policy._finish(EpisodeTokens([], []), request, ids + [tokenizer.eos_token_id])
    assert ended.matched_stop is None and close_stopped_turn(ended.text, ended.matched_stop) == THINK_CODE_EOS
    code = "<think>t</think><code>\n```python\nprint(1)\n```\n</code>"
    stopped = policy._finish(EpisodeTokens([], []), request, tokenizer(code, add_special_tokens=False)["input_ids"] + [tokenizer.pad_token_id] * 3)
    assert stopped.matched_stop == "</code>" and stopped.text == code


# ---------------------------------------------------------------------------------------------
# Protocol leniency the reference has


@pytest.mark.parametrize("fence", ["python", "Python", "python3", "py", "PY", ""])
def test_python_fence_spellings_are_code(fence):
    action = parse_turn(f"<think>t</think><code>\n```{fence}\nprint(1)\n```\n</code>")
    assert (action.kind, action.code) == ("code", "print(1)")


def test_a_cell_indented_as_a_whole_is_dedented():
    block = "\n    ```python\n    x = 1\n    if x:\n        print(x)\n    ```\n"
    assert extract_code(block) == "x = 1\nif x:\n    print(x)"


def test_precedence_is_answer_then_code_then_tool_call():
    both = '<think>t</think><tool_call>{"name": "image_search"}</tool_call><code>```python\n1\n```</code><answer>red</answer>'
    assert parse_turn(both).kind == "answer"
    assert parse_turn(both.replace("<answer>red</answer>", "")).kind == "code"
    assert parse_turn("<think>maybe <answer>red</answer></think><code>```python\n1\n```</code>").kind == "code"


def test_a_list_valued_query_parses_and_runs_up_to_the_limit(world):
    from synth.search import SearchConfig, build_search

    action = parse_turn('<think>t</think><tool_call>{"name": "search", "arguments": {"query": ["a b", " c ", "d", "e"]}}</tool_call>')
    assert (action.kind, action.queries, action.query) == ("search", ("a b", "c", "d", "e"), "a b")
    assert parse_turn('<tool_call>{"name": "search", "arguments": {"query": ["a", 3]}}</tool_call>').kind == "tool_error"
    assert parse_turn('<tool_call>{"name": "search", "arguments": {"query": []}}</tool_call>').kind == "tool_error"
    text_search, image_search = build_search(SearchConfig(corpus_path=world["corpus_path"]))
    try:
        session = ToolSession(ToolBox(text_search=text_search), AgentConfig(max_search_queries=2, search_top_k=2), [])
        observation = asyncio.run(session.call(action))
    finally:
        text_search.close()
    text = observation.parts[0]["text"]
    assert observation.outcome == "ok" and text.startswith("<tool_response>") and text.endswith("</tool_response>")
    assert 'Results for "a b":' in text and 'Results for "c":' in text and '"d"' not in text
    assert "2 more queries not run" in text


def test_think_prefix_after_observations_is_grpo_default():
    from train.grpo import GRPOStageConfig

    assert GRPOStageConfig().agent.think_prefix == "after_observation"
    after = AgentConfig(think_prefix="after_observation")
    assert (after.prefix_for(0), after.prefix_for(1)) == ("", "<think>")
    assert AgentConfig(force_think_prefix=True).prefix_for(0) == "<think>"  # the older spelling
    assert AgentConfig().prefix_for(3) == ""


class ScriptedModel:
    """Stands in for a model: returns scripted turns (text, the stop string that ended it)."""

    name = "scripted"

    def __init__(self, turns: list[tuple[str, str | None]]) -> None:
        self.turns, self.prefixes = list(turns), []

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag=""):
        self.prefixes.append(prefix)
        text, matched = self.turns.pop(0)
        return Generation(prefix + text, "stop", 8, matched_stop=matched)

    async def aclose(self):
        return None


def perception(answer: str = "red", category: str = "perception") -> Sample:
    return Sample(id="s1", source="t", category=category, question="What colour is the light?", answer=answer, answer_type="text")


def test_the_loop_keeps_an_eos_turn_with_code_in_its_thinking_an_answer():
    row = asyncio.run(run_episode(perception(), ScriptedModel([(THINK_CODE_EOS, None)]), ToolBox(), AgentConfig(prestart_kernel=False)))
    assert (row["stop_reason"], row["final_answer"], row["correct"], row["format_ok"]) == ("answer", "red", True, False)
    assert row["reward"] == pytest.approx(0.8)  # the reference's value: code tags unbalanced


def test_the_loop_prefills_think_after_observations():
    model = ScriptedModel([("plan</think><code>```python\n1\n```\n", "</code>"), ("it is red</think><answer>red</answer>", None)])
    cfg = AgentConfig(prestart_kernel=False, think_prefix="after_observation")
    row = asyncio.run(run_episode(perception(), model, ToolBox(), cfg))
    assert model.prefixes == ["", "<think>"]
    assistant = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
    assert assistant[0].endswith("```\n</code>") and assistant[1].startswith("<think>it is red")
    assert row["final_answer"] == "red" and row["format_ok"]  # the leading <think> is prepended for the check


# ---------------------------------------------------------------------------------------------
# One scoring: synthesis verification, GRPO rewards and evaluation agree on the same episode


def test_synthesis_grpo_and_evaluation_score_an_episode_alike():
    from eval.metrics import summarize
    from synth.stage import reject_reason
    from train.grpo import accuracy_reward, episode_rewards, format_reward

    cfg = RewardConfig()
    episodes = {
        "right": (perception(), [("<think>it is red</think><answer>red</answer>", None)]),
        "issue example": (perception(), [(THINK_CODE_EOS, None)]),
        "searched": (perception(category="search"),
                     [('<think>look</think><tool_call>{"name": "image_search"}', "</tool_call>"), ("seen</think><answer>red</answer>", None)]),
        "too long": (perception(answer=LONG), [(f"<think>t</think><answer>{LONG}</answer>", None)]),
    }
    for name, (sample, turns) in episodes.items():
        row = asyncio.run(run_episode(sample, ScriptedModel(turns), ToolBox(), AgentConfig(prestart_kernel=False, think_prefix="after_observation"),
                                      reward=cfg))
        check = check_response([m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"], sample.category)
        # GRPO: the two reward functions, weighted as the trainer weighs them, give the episode's reward.
        acc, fmt, _ = episode_rewards(row)
        grpo = cfg.accuracy_weight * accuracy_reward(None, [acc])[0] + cfg.format_weight * format_reward(None, [fmt])[0]
        assert grpo == pytest.approx(row["reward"]), name
        # Evaluation: accuracy is the verdict; the mean reward is the episode's.
        stats = summarize([row])["overall"]
        assert stats["accuracy"] == float(row["correct"]) and stats["mean_reward"] == pytest.approx(row["reward"]), name
        # Synthesis keeps exactly the right, well-formed, uncapped answers.
        kept = reject_reason(row, allow_code_errors=False, reward=cfg) is None
        assert kept == (row["correct"] and row["format_ok"] and not cfg.capped(row["final_answer"], sample.category)), name
        assert row["final_answer"] == check.answer and row["format_ok"] == (fmt == 1.0), name
    assert reject_reason(row, False, cfg) == "answer_too_long"


def test_the_stages_score_through_the_one_scoring_function(world, curated, replay_url, tmp_path, monkeypatch):
    """Synthesis and evaluation of the same samples by the same teacher: every episode goes through
    `score_response`, and the two stages' verdicts, formats and rewards are equal."""
    import synth.agent
    from curation.shards import read_table
    from eval.stage import EvalConfig, run_evaluate
    from synth.search import SearchConfig
    from synth.stage import SynthConfig, run_synthesize

    scored = []
    original = synth.agent.score_response

    async def spy(*args, **kwargs):
        result = await original(*args, **kwargs)
        scored.append(result)
        return result

    monkeypatch.setattr(synth.agent, "score_response", spy)
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    agent = AgentConfig(max_turns=6, max_tokens_per_turn=512)
    judge = JudgeConfig(text_fallback="exact")
    synthesis = run_synthesize(SynthConfig(teacher_url=replay_url, pools=["eval"], attempts=1, agent=agent, resume=False),
                               curated, tmp_path / "synth", search, judge)
    evaluation = run_evaluate(EvalConfig(model_url=replay_url, model_name="demo-teacher", pools=["eval"], tool_free_control=False,
                                         cache=False, agent=agent), None, curated, tmp_path / "eval", search, judge)
    from synth.trajectory import TRAJECTORY_SCHEMA

    synth_rows = [*read_table(tmp_path / "synth", TRAJECTORY_SCHEMA).to_pylist(),
                  *read_table(tmp_path / "synth" / "rejects", TRAJECTORY_SCHEMA).to_pylist()]
    eval_rows = read_table(tmp_path / "eval" / "heldout" / "tools").to_pylist()
    assert len(scored) == len(synth_rows) + len(eval_rows) == 2 * evaluation["benchmarks"]["heldout"]["samples"] > 0
    fields = ("final_answer", "correct", "judge_failed", "format_ok", "reward", "accuracy_reward", "format_reward", "search_penalty")
    by_sample = {r["sample_id"]: tuple(r[f] for f in fields) for r in eval_rows}
    assert {r["sample_id"]: tuple(r[f] for f in fields) for r in synth_rows} == by_sample
    assert synthesis["counts"]["kept"] == sum(1 for r in eval_rows if r["correct"] and r["format_ok"])
