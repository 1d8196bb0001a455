"""Every case of issue 15 with its right value: answer extraction, the format rule, the reward, the
judge, stop strings, protocol leniency; and synthesis verification, GRPO rewards and evaluation
scoring the same episode alike.

Right values come from the authors' released reward code (Visual-Agent/DeepEyesV2,
`reinforcement_learning/verl/utils/reward_score/deepeyesv2.py`: `compute_score` for perception,
`compute_score_math` for reasoning, `compute_score_search` for search) where it fixes them, and
from the issue's rules where it does not (the judge's undecided cases)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from curation.schema import Sample
from synth.runtime.agent import AgentConfig, ToolBox, ToolSession, run_episode
from synth.runtime.policy import Generation, _matched_stop, local_turn
from synth.runtime.protocol import (
    check_response,
    close_stopped_turn,
    extract_answer,
    extract_code,
    infer_matched_stop,
    parse_turn,
    tag_blocks,
)
from synth.scoring.judge import (
    Judge,
    JudgeConfig,
    Verdict,
    answer_key,
    canonical,
    choice_of,
    parse_yes_no,
    plain_math_to_latex,
    rule_verdict,
    stated_number,
)
from synth.scoring.reward import RewardConfig, compute_reward, score_response

ROOT = Path(__file__).resolve().parents[1]
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
    # With no </think> at all, the whole text is "after the last </think>" (the reference splits the
    # same way): an answer inside an unclosed <think> counts, and the format fails.
    "an answer inside an unclosed think counts": ("<think>I guess <answer>A</answer>", "perception", "A", False),
    "the first answer even with an unclosed one before": ("<think>t</think><answer>a <answer>b</answer>", "perception", "a <answer>b", False),
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
    "an answer inside an unclosed think: accuracy 1, format 0": ("<think>I guess <answer>A</answer>", "A", "choice", "perception",
                                                                {}, 0, 0.8),
    "a bound scores no accuracy": ("<think>t</think><answer>at least 7</answer>", "7", "number", "reasoning", {}, 0, 0.2),
    "a hedge between options scores no accuracy": ("<think>t</think><answer>(A) or (B)</answer>", "A", "choice", "perception",
                                                   {}, 0, 0.2),
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
    "empty: only invisible characters is no answer": ("\u200b\u2060", "4", "number", None, "incorrect"),
    # Numbers: apart from the one number, nothing may change its value or make it a bound, a
    # negation or a hedge; math-verify never sees those (it reads `7+` and `≠ 7` as 7).
    "number: a bound, at least": ("at least 7", "7", "number", None, "judge_failed"),
    "number: a bound, more than": ("more than 7", "7", "number", None, "judge_failed"),
    "number: a bound, less than": ("less than 7", "7", "number", None, "judge_failed"),
    "number: a bound, over": ("over 7", "7", "number", None, "judge_failed"),
    "number: a bound, up to": ("up to 7", "7", "number", None, "judge_failed"),
    "number: a bound, almost": ("almost 7", "7", "number", None, "judge_failed"),
    "number: a bound, or more": ("7 or more", "7", "number", None, "judge_failed"),
    "number: a bound, >": (">7", "7", "number", None, "judge_failed"),
    "number: a bound, ≥": ("≥7", "7", "number", None, "judge_failed"),
    "number: a bound, >= in ASCII": (">= 7", "7", "number", None, "judge_failed"),
    "number: a bound, \\geq": ("x \\geq 7", "7", "number", None, "judge_failed"),
    "number: a bound, 7+": ("7+", "7", "number", None, "judge_failed"),
    "number: a bound, 7+ as math": ("7+", "7", "math", None, "judge_failed"),
    "number: a negation, ≠": ("≠ 7", "7", "number", None, "judge_failed"),
    "number: a negation, ≠ as math": ("≠ 7", "7", "math", None, "judge_failed"),
    "number: a negation, no": ("no 7", "7", "number", None, "judge_failed"),
    "number: a negation, not": ("not 7", "7", "number", None, "judge_failed"),
    "number: a negation, != in ASCII": ("!= 7", "7", "number", None, "judge_failed"),
    "number: a hedge, maybe": ("maybe 7", "7", "number", None, "judge_failed"),
    "number: a hedge, +/-": ("7 +/- 1", "7", "number", None, "judge_failed"),
    "number: a negation, wrong": ("7 is wrong", "7", "number", None, "judge_failed"),
    "number: a negation, anything but": ("anything but 7", "7", "number", None, "judge_failed"),
    "number: a negation, =/=": ("=/= 7", "7", "number", None, "judge_failed"),
    "number: a strikethrough": ("~~7~~", "7", "number", None, "judge_failed"),
    "number: a struck-out digit": ("7\u0338", "7", "number", None, "judge_failed"),
    "number: a bound by its Unicode name": ("≧7", "7", "number", None, "judge_failed"),
    "math: a negation by its Unicode name": ("∉ 7", "7", "math", None, "judge_failed"),
    "number: a hedge, a question": ("7?", "7", "number", None, "judge_failed"),
    "number: a hedge, ±": ("7 ± 1", "7", "number", None, "judge_failed"),
    "number: a hedge, a range with an en dash": ("6–8", "7", "number", None, "judge_failed"),
    "number: an equation whose sides differ": ("7 = 8", "8", "number", None, "judge_failed"),
    "number: a power is an expression": ("7²", "7", "number", None, "incorrect"),  # math-verify: 49
    "number: a caret power": ("7^2", "49", "number", None, "correct"),  # math-verify
    "number: a factorial is an expression": ("7!", "7", "number", None, "incorrect"),  # math-verify: 5040
    "number: a variable after it": ("2x", "2", "number", None, "incorrect"),  # math-verify: 2x
    "number: a multiplication": ("7 × 10³", "7", "number", None, "incorrect"),  # math-verify: 7000
    "number: an addition": ("3+4", "7", "number", None, "correct"),  # math-verify
    "number: a value word": ("7 squared", "7", "number", None, "judge_failed"),
    "number: a scale word the gold does not write": ("7 million", "7", "number", None, "judge_failed"),
    "number: a scale suffix the gold does not write": ("7k", "7", "number", None, "judge_failed"),
    "number: a scale word applied": ("7 thousand", "7000", "number", None, "correct"),
    "number: a scale suffix applied": ("7k", "7000", "number", None, "correct"),
    "number: a scaled decimal": ("1.5 million", "1500000", "number", None, "correct"),
    "number: a scale in the gold": ("7000000", "7 million", "number", None, "correct"),
    "number: a wrong scaled value": ("8 thousand", "7000", "number", None, "incorrect"),
    "number: money in millions": ("$7m", "7000000", "number", None, "correct"),
    "number: M without a currency is unclear": ("7M", "7", "number", None, "judge_failed"),
    "number: an unknown symbol": ("7#", "7", "number", None, "judge_failed"),
    "number: unknown letters glued on": ("7apples", "7", "number", None, "judge_failed"),
    "number: a unit": ("7 cm", "7", "number", None, "correct"),
    "number: a unit glued on": ("7cm", "7", "number", None, "correct"),
    "number: a compound unit": ("7 km/h", "7", "number", None, "correct"),
    "number: a unit with a power": ("7 m²", "7", "number", None, "correct"),
    "number: a currency": ("$7", "7", "number", None, "correct"),
    "number: degrees": ("7°C", "7", "number", None, "correct"),
    "number: different units": ("7 cm", "7 m", "number", None, "judge_failed"),
    "number: a count noun": ("7 people", "7", "number", None, "correct"),
    "number: an ordinal": ("7th", "7", "number", None, "correct"),
    "number: the same number in words": ("7 (seven)", "7", "number", None, "correct"),
    "number: another number in words": ("7 (eight)", "7", "number", None, "judge_failed"),
    "number: a superlative is no bound": ("The most common value is 7.", "7", "number", None, "correct"),
    "number: approximately, equal": ("approximately 7", "7", "number", None, "correct"),
    "number: approximately, not equal": ("about 7", "7.2", "number", None, "judge_failed"),
    "number: Unicode minus against the positive": ("−7", "7", "number", None, "incorrect"),
    "number: Unicode minus against the negative": ("−7", "-7", "number", None, "correct"),
    "number: Unicode minus in the gold": ("-7", "−7", "number", None, "correct"),
    "number: Unicode minus on a decimal": ("−0.5", "0.5", "number", None, "incorrect"),
    "number: an en dash as a sign": ("–7", "-7", "number", None, "correct"),
    "number: negative in words": ("negative 7", "-7", "number", None, "correct"),
    "number: a spaced dash is a minus or a separator": ("- 7", "7", "number", None, "judge_failed"),
    "number: a dash after a word": ("Total - 7", "-7", "number", None, "judge_failed"),
    "number: full-width digits": ("７", "7", "number", None, "correct"),
    "number: Arabic-Indic digits": ("٧", "7", "number", None, "correct"),
    "number: a huge power of ten is no hang": ("1e9999999", "7", "number", None, "incorrect"),  # math-verify
    "number: a huge number of digits": ("7" * 1000, "7", "number", None, "incorrect"),  # math-verify
    # Math: a boxed answer is one answer; two different boxed values are a hedge.
    "math: a variable is not the number": ("2x", "2", "math", None, "incorrect"),
    "math: 7π is not 7": ("7π", "7", "math", None, "incorrect"),
    "math: two different boxes are a hedge": ("\\boxed{3} \\boxed{2}", "2", "math", None, "judge_failed"),
    "math: two different boxes, the right one first": ("\\boxed{2} \\boxed{3}", "2", "math", None, "judge_failed"),
    "math: the same box twice is one answer": ("\\boxed{2} so \\boxed{2}", "2", "math", None, "correct"),
    "math: a bound outside the box": ("at least \\boxed{7}", "7", "math", None, "judge_failed"),
    "math: a LaTeX bound outside the box": ("x \\geq \\boxed{7}", "7", "math", None, "judge_failed"),
    "math: a list outside the box is the working": ("so x = 2 or x = 3, \\boxed{2, 3}", "2, 3", "math", None, "correct"),
    "choice: a negation outside the box": ("not \\boxed{A}", "A", "choice", ["cat", "dog"], "judge_failed"),
    "math: a hedge between roots is not the root": ("2 or 3", "2", "math", None, "incorrect"),  # math-verify: {2, 3}
    # Choices: a leading label no longer short-circuits the reading of a hedge or a negation.
    "choice: a hedge between labels": ("A. or B.", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a hedge between parenthesized letters": ("(A) or (B)", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: every label": ("A) B) C) D)", "A", "choice", ["w", "x", "y", "z"], "judge_failed"),
    "choice: every option with its label": ("A. cat, B. dog", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a label then a hedge between texts": ("A: cat or dog", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a label with another option's text": ("A. dog", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: two letters": ("A, B", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: both": ("Both A and B", "B", "choice", None, "judge_failed"),
    "choice: a negation": ("Not A", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a negation in a sentence": ("It is not A", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a correction": ("The answer is A, not B", "B", "choice", ["cat", "dog"], "judge_failed"),
    "choice: neither": ("Neither A nor B", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: two boxes": ("\\boxed{A} \\boxed{B}", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a negation inside an option's text is the option": ("not sure", "C", "choice", ["yes", "no", "not sure"], "correct"),
    "choice: the longest option text wins": ("It's dark red", "B", "choice", ["red", "dark red"], "correct"),
    "choice: a label with its own text": ("A: cat", "A", "choice", ["cat", "dog"], "correct"),
    "choice: full-width letter": ("Ｂ", "B", "choice", ["cat", "dog"], "correct"),
    "choice: a lone Cyrillic capital is the letter it looks like": ("\u0412", "B", "choice", ["cat", "dog"], "correct"),
    "choice: a Cyrillic letter beside a Latin one": ("A \u0412", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a struck-out letter": ("A\u0336", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a strikethrough": ("~~B~~ A", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a negation word": ("A is wrong", "A", "choice", ["cat", "dog"], "judge_failed"),
    "choice: a comparison describes, it does not bound": ("The larger one is A", "A", "choice", ["cat", "dog"], "correct"),
    "choice: option A option B": ("option A option B", "B", "choice", ["cat", "dog"], "judge_failed"),
    "choice: letter and text agree in a sentence": ("I pick B, the dog", "B", "choice", ["cat", "dog"], "correct"),
    # yes/no: an opener decides unless the answer also says the other or hedges.
    "yes/no: yes or no": ("Yes or no", "yes", "text", None, "judge_failed"),
    "yes/no: yes, no": ("yes, no", "yes", "text", None, "judge_failed"),
    "yes/no: Yes/No": ("Yes/No", "yes", "text", None, "judge_failed"),
    "yes/no: no doubt, yes": ("No doubt, yes", "yes", "text", None, "judge_failed"),
    "yes/no: a question": ("Yes?", "yes", "text", None, "judge_failed"),
    "yes/no: a negative sentence that opens with no": ("No, it is not red.", "no", "text", None, "correct"),
    # Text: a normalization that empties or changes the gold does not decide.
    "text: punctuation is not the letter A": (".", "A", "text", None, "judge_failed"),
    "text: an article is not another article": ("an", "The", "text", None, "judge_failed"),
    "text: C is not C++": ("C", "C++", "text", None, "judge_failed"),
    "text: C is not C#": ("C", "C#", "text", None, "judge_failed"),
    "text: 31 is not 3-1": ("31", "3-1", "text", None, "judge_failed"),
    "text: 3.1 is not 3-1": ("3.1", "3-1", "text", None, "judge_failed"),
    "text: an inner article is kept": ("Vitamin", "Vitamin A", "text", None, "judge_failed"),
    "text: the same symbols": ("c++", "C++", "text", None, "correct"),
    "text: an en dash is a hyphen": ("3–1", "3-1", "text", None, "correct"),
    "text: a zero-width space is nothing": ("re\u200bd", "red", "text", None, "correct"),
    "text: full-width letters": ("ＲＥＤ", "red", "text", None, "correct"),
    "text: Markdown bold": ("**Velmora Tower**", "Velmora Tower", "text", None, "correct"),
    "long: an answer over judge.max_answer_chars": ("7 " * 1500, "7", "number", None, "judge_failed"),
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
    assert choice_of("It is not A", ["x", "y"]) == "negated" and choice_of("A. cat, B. dog", ["cat", "dog"]) == "several"
    assert stated_number("12 - 5 = 7").value == 7 and stated_number("3 or 4").kind == "several"
    assert stated_number("4\\sqrt{2}").kind == "expression" and stated_number("one hundred and five").value == 105
    assert stated_number("at least 7").kind == "qualified" and stated_number("1e9999999").kind == "too large"
    assert stated_number("7 thousand").value == 7000 and stated_number("7 thousand").bare == 7
    assert stated_number("7 cm").unit == "cm" and stated_number("≈ 7").approximate
    assert canonical("−7²") == "-7^2" and canonical("Ｂ\u200b") == "B" and canonical("½") == "1/2"
    assert answer_key("The Velmora Tower.") == "velmora tower" and answer_key("A") == "a" and answer_key("3-1") == "3-1"
    assert answer_key("C++") == "c++" and answer_key("U.S.") == "u s" and answer_key(".") == ""
    assert plain_math_to_latex("sqrt(3)/2 + pi") == "\\sqrt{3}/2 + \\pi" and plain_math_to_latex("\\frac{1}{2}") == "\\frac{1}{2}"
    assert plain_math_to_latex("7 +/- 1") == "7 \\pm  1"
    # What rules alone leave to math-verify or the LLM judge.
    for prediction, gold in (("0.5", "50%"), ("0.333", "1/3"), ("3.1416", "3.14"), ("3 or 4", "3")):
        assert rule_verdict(prediction, gold, "number").outcome == "undecided"
    # ... and which of those math-verify may decide: never a bound, a negation, a hedge or a scale.
    for prediction, answer_type, allowed in (("0.5", "number", True), ("7²", "number", True), ("1e9999999", "number", True),
                                             ("7+", "number", False), ("≠ 7", "math", False), ("7+", "math", False),
                                             ("at least 7", "math", False), ("3 or 4", "number", False),
                                             ("7 million", "number", False), ("7 cm", "math", False),
                                             ("\\boxed{7} \\boxed{8}", "math", False), ("2x", "math", True)):
        verdict = rule_verdict(prediction, "7" if prediction != "0.5" else "50%", answer_type)
        assert verdict.outcome == "undecided" or prediction == "7 cm", (prediction, verdict)
        assert verdict.math_verify is (allowed and verdict.outcome == "undecided"), (prediction, verdict)


# Properties: what no wording earns from the rules alone. Templates of a bound, a negation, a hedge,
# a scale or an operation around the gold number; math-verify never sees the first four kinds (it
# reads `7+` and `≠ 7` as 7), and may decide the operations.

FOOLING = ["at least {n}", "at most {n}", "more than {n}", "less than {n}", "over {n}", "under {n}", "up to {n}",
           "almost {n}", "nearly {n}", "{n} or more", "{n}+", ">{n}", "< {n}", "≥ {n}", "≤{n}", ">= {n}", "≠ {n}", "!= {n}",
           "no {n}", "not {n}", "It isn't {n}", "maybe {n}", "{n}?", "{n} or {m}", "{n}, {m}", "{n}-{m}", "{n} – {m}",
           "{n} ± 1", "between {n} and {m}", "{n} = {m}", "\\boxed{{{n}}} \\boxed{{{m}}}", "not \\boxed{{{n}}}",
           "{n} million", "{n} thousand", "{n}k", "{n}K", "{n}M", "{n} squared", "{n}-fold", "twice {n}", "{n} dozen",
           "{n} is wrong", "anything but {n}", "~~{n}~~", "{n}\u0338", "≧ {n}", "{n} +/- 1", "- {n}"]
OPERATIONS = ["{n}²", "{n}^2", "{n}!", "{n}x", "{n}π", "{n} × 10³", "{n}\\sqrt{{2}}", "{n}/x"]
# Lists math-verify reads as sets (`2 or 3` is {2, 3}, which is not 2): math answers may go to it.
MATH_SETS = ["{n} or {m}", "{n}, {m}", "{n}-{m}", "{n} – {m}", "{n} ± 1", "{n} +/- 1", "between {n} and {m}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 10**6), m=st.integers(0, 10**6), template=st.sampled_from(FOOLING + OPERATIONS),
       sign=st.sampled_from(["", "-", "−"]), answer_type=st.sampled_from(["number", "math", "text"]))
def test_no_bound_negation_hedge_scale_or_operation_is_credited_by_rules(n, m, template, sign, answer_type):
    assume(m != n)
    value = f"{sign}{n}"
    verdict = rule_verdict(template.format(n=value, m=m), value.replace("−", "-"), answer_type)
    assert verdict.outcome != "correct", verdict
    if template in FOOLING and not (answer_type == "math" and template in MATH_SETS):
        assert not verdict.math_verify, verdict


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 10**9), minus=st.sampled_from(["-", "−", "–", "‒", "－", "﹣", "➖"]))
def test_every_minus_sign_is_a_minus(n, minus):
    assert rule_verdict(f"{minus}{n}", str(n), "number").outcome == "incorrect"
    assert rule_verdict(f"{minus}{n}", f"-{n}", "number").outcome == "correct"
    assert rule_verdict(f"{n}", f"{minus}{n}", "number").outcome == "incorrect"


LABELS = ["{}", "({})", "{}.", "{})", "{}:", "option {}", "**{}**"]


@settings(max_examples=200, deadline=None)
@given(options=st.integers(2, 6), data=st.data())
def test_no_hedge_or_negation_between_options_is_credited(options, data):
    choices = [f"option text {k}" for k in range(options)]
    letters = "ABCDEF"[:options]
    gold, other = data.draw(st.sampled_from(letters)), data.draw(st.sampled_from(letters))
    assume(gold != other)
    style = data.draw(st.sampled_from(LABELS))
    joiner = data.draw(st.sampled_from([" or ", ", ", " and ", "/", " ", " (or ", "; maybe "]))
    pair = [style.format(gold), style.format(other)]
    if data.draw(st.booleans()):
        pair.reverse()
    for prediction in (joiner.join(pair), f"not {style.format(gold)}", f"It is not {style.format(gold)}",
                       f"{style.format(gold)} is not right"):
        assert rule_verdict(prediction, gold, "choice", choices).outcome != "correct", prediction
    assert rule_verdict(style.format(gold), gold, "choice", choices).outcome == "correct"


@settings(max_examples=200, deadline=None)
@given(gold=st.sampled_from(["A", "The", "an", "A+", "C++", "C#", "3-1", "U.S.", "Vitamin A", "AT&T", "x/y", "50%"]),
       prediction=st.text(alphabet=st.sampled_from(list("aAcCtThHeEnN+#-./&%135 ")), max_size=8))
def test_a_text_is_credited_only_on_an_equal_key(gold, prediction):
    verdict = rule_verdict(prediction, gold, "text")
    if verdict.correct and verdict.method == "text":
        assert answer_key(prediction) == answer_key(gold) != ""
    if answer_key(prediction) in ("", "a", "an", "the", "c", "31", "us", "vitamin", "att", "50") and answer_key(prediction) != answer_key(gold):
        assert not verdict.correct, verdict


@settings(max_examples=300, deadline=None)
@given(prediction=st.text(max_size=120), gold=st.sampled_from(["7", "-7", "0.5", "50%", "A", "yes", "red", "\\frac{1}{2}", "C++"]),
       answer_type=st.sampled_from(["number", "math", "choice", "text"]),
       choices=st.sampled_from([None, ["red", "green"], ["yes", "no", "not sure"]]))
def test_the_rules_read_any_text_without_failing(prediction, gold, answer_type, choices):
    verdict = rule_verdict(prediction, gold, answer_type, choices)
    assert verdict.outcome in ("correct", "incorrect", "undecided")


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(["<answer>", "</answer>", "<code>", "</code>", "a", "b\n", "<", ">", "/"]), max_size=20))
def test_tag_blocks_read_as_the_regex_does(pieces):
    import re

    text = "".join(pieces)
    for opening, closing in (("<answer>", "</answer>"), ("<code>", "</code>")):
        assert tag_blocks(text, opening, closing) == re.findall(f"{opening}(.*?){closing}", text, re.S)
        assert tag_blocks(text, opening, closing, limit=1) == re.findall(f"{opening}(.*?){closing}", text, re.S)[:1]


def _finishes(code: str, seconds: float = 60) -> bool:
    """Whether `code` ends within `seconds` in a fresh interpreter: a generous bound on what takes
    well under a second, so a regression to super-linear reading (minutes, holding the GIL in C
    code that no thread could interrupt) fails instead of stalling the suite."""
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=seconds, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return False
    return True


def test_no_rule_runs_super_linear_on_attacker_sized_answers():
    # Fraction("1e99999999") builds a hundred-million-digit integer; a lazy regex retried from every
    # unclosed tag is quadratic (400,000 characters of `<answer>` took minutes).
    assert _finishes("""
from synth.scoring.judge import rule_verdict, stated_number
answers = ["1e99999999", "9" * 200_000, "7 " * 500_000, "\\\\boxed{" * 100_000, "A " * 500_000, "seven " * 200_000,
           "\u2212" * 500_000, "1/" * 300_000, "m^" * 300_000, "1e99999999 " + "x" * 1000]
for answer in answers:
    stated_number(answer)
    stated_number(answer[:1990])
    for answer_type in ("number", "math", "choice", "text"):
        rule_verdict(answer, "7", answer_type, ["a", "b"])
        rule_verdict(answer[:1990], "7", answer_type, ["a", "b"])
""")
    assert _finishes("""
from synth.runtime.protocol import check_response, parse_turn
for tag in ("<answer>", "<code>", "<tool_call>"):
    check_response("<think>t</think>" + tag * 50_000, "search")
    parse_turn("<think>t</think>" + tag * 50_000)
""")
    assert stated_number("1e99999999").kind == "too large" and extract_answer("<answer>" * 50_000) is None


def test_text_fallbacks_are_benchmark_rules():
    exact = Judge(JudgeConfig(text_fallback="exact"))
    contains = Judge(JudgeConfig(text_fallback="contains"))
    assert asyncio.run(exact.judge("q", "It is Velmorahaven", "Velmorahaven", "text")).outcome == "incorrect"
    assert asyncio.run(contains.judge("q", "It is Velmorahaven", "Velmorahaven", "text")).outcome == "correct"
    assert asyncio.run(contains.judge("q", "It is Quenhaven", "Velmorahaven", "text")).outcome == "incorrect"
    # The fallbacks compare on answer keys: a normalization that empties or changes the gold cannot
    # credit an answer, and `contains` gives no verdict on a negation or a hedge.
    assert asyncio.run(exact.judge("q", ".", "A", "text")).outcome == "incorrect"
    assert asyncio.run(exact.judge("q", "an", "The", "text")).outcome == "incorrect"
    assert asyncio.run(contains.judge("q", "It is C", "C++", "text")).outcome == "incorrect"
    assert asyncio.run(contains.judge("q", "I use C++ daily", "C++", "text")).outcome == "correct"
    assert asyncio.run(contains.judge("q", "It is not Velmorahaven", "Velmorahaven", "text")).outcome == "judge_failed"
    assert asyncio.run(contains.judge("q", "Velmorahaven or Quenhaven", "Velmorahaven", "text")).outcome == "judge_failed"
    assert asyncio.run(contains.judge("q", "It is a dog", "A", "text")).outcome == "incorrect"  # one character: exact


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
    assert "a bound or a negation instead of the answer" in prompt and "at least 7" in prompt


def test_rules_decide_before_the_llm_and_a_hedge_reaches_it():
    judge = Judge()
    judge._llm = ReplyingJudgeModel("yes")
    assert asyncio.run(judge.judge("q", "The answer is B", "B", "choice", ABCD)).method == "choice"
    assert not judge._llm.prompts  # decided by rules: no model call
    assert asyncio.run(judge.judge("q", "A or B", "A", "choice", ABCD)).method == "llm"
    # A bound or a negation goes to the LLM judge, never to math-verify (which reads `7+` as 7).
    judge.math.fn = None  # math-verify would fail the call: it must not be asked
    for prediction, answer_type in (("7+", "math"), ("at least 7", "number"), ("≠ 7", "math"), ("\\boxed{7} \\boxed{8}", "math")):
        assert asyncio.run(judge.judge("q", prediction, "7", answer_type)).method == "llm", prediction


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
    from synth.tools.search import SearchConfig, build_search

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
        # Synthesis keeps exactly the right, well-formed, uncapped answers whose tools ran (the
        # "searched" episode's image search has no backend here: `tool_unavailable`).
        kept = reject_reason(row, allow_code_errors=False, reward=cfg) is None
        tools_ran = all(call["outcome"] != "unavailable" for call in row["tool_calls"])
        assert kept == (row["correct"] and row["format_ok"] and not cfg.capped(row["final_answer"], sample.category) and tools_ran), name
        assert row["final_answer"] == check.answer and row["format_ok"] == (fmt == 1.0), name
    assert reject_reason(row, False, cfg) == "answer_too_long"


def test_the_stages_score_through_the_one_scoring_function(world, curated, replay_url, tmp_path, monkeypatch):
    """Synthesis and evaluation of the same samples by the same teacher: every episode goes through
    `score_response`, and the two stages' verdicts, formats and rewards are equal."""
    import synth.runtime.agent
    from curation.shards import read_table
    from eval.stage import EvalConfig, run_evaluate
    from synth.stage import SynthConfig, run_synthesize
    from synth.tools.search import SearchConfig

    scored = []
    original = synth.runtime.agent.score_response

    async def spy(*args, **kwargs):
        result = await original(*args, **kwargs)
        scored.append(result)
        return result

    monkeypatch.setattr(synth.runtime.agent, "score_response", spy)
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
