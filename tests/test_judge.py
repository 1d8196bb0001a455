import asyncio
import threading
import time

import pytest

from synth.runtime.protocol import check_response
from synth.scoring.judge import Judge, JudgeConfig, MathVerifier, verify_math
from synth.scoring.reward import compute_reward


def judge_once(pred, gold, kind, choices=None, cfg=None, question="q?"):
    async def go():
        judge = Judge(cfg)
        try:
            return await judge.judge(question, pred, gold, kind, choices)
        finally:
            await judge.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "pred,gold,kind,choices,expected",
    [
        ("42", "42", "number", None, True),
        ("42.0", "42", "number", None, True),
        ("1,234", "1234", "number", None, True),
        ("-7", "7", "number", None, False),
        ("The answer is 12", "12", "number", None, True),
        ("(B)", "B", "choice", ["x", "y"], True),
        ("b. yes", "B", "choice", ["no", "yes"], True),
        ("yes", "B", "choice", ["no", "yes"], True),
        ("A", "B", "choice", ["no", "yes"], False),
        ("The Velmora Tower.", "velmora tower", "text", None, True),
        ("Velmora", "velmora tower", "text", None, "judge_failed"),  # rules cannot tell, no LLM judge here
        ("\\frac{1}{2}", "0.5", "math", None, True),
        ("x^2+2x+1", "(x+1)^2", "math", None, True),
        ("x^2+1", "(x+1)^2", "math", None, False),
        ("", "4", "number", None, False),
        (None, "4", "number", None, False),
    ],
)
def test_rules_and_math_verify(pred, gold, kind, choices, expected):
    verdict = judge_once(pred, gold, kind, choices)
    assert verdict.outcome == {True: "correct", False: "incorrect"}.get(expected, expected)


def test_math_verify_works_off_the_main_thread():
    # Prefect runs tasks in threads, where math-verify's signal.alarm would fail.
    result = {}
    thread = threading.Thread(target=lambda: result.update(v=judge_once("\\sqrt{4}", "2", "math")))
    thread.start()
    thread.join()
    assert result["v"].correct and result["v"].method == "math"


def slow_verify(gold, prediction, timeout_s, **_):  # stands in for a pathological expression
    time.sleep(60)


def test_math_timeout_is_a_judge_failure_and_the_pool_recovers():
    verifier = MathVerifier(timeout_s=0.5, fn=slow_verify)
    started = time.monotonic()
    assert verifier.check("1", "1") is None
    assert time.monotonic() - started < 45
    verifier.fn = verify_math
    assert verifier.check("2", "2") is True  # a fresh pool after the recycle
    verifier.close()


def test_undecidable_without_llm_is_flagged_never_a_silent_zero():
    text = judge_once("It stands in Velmorahaven.", "Velmorahaven", "text")
    assert text.judge_failed and not text.correct  # a paraphrase or a wrong answer: rules cannot tell
    exact = judge_once("It stands in Velmorahaven.", "Velmorahaven", "text", cfg=JudgeConfig(text_fallback="exact"))
    assert not exact.correct and not exact.judge_failed  # a benchmark's own exact-match rule decides


@pytest.mark.parametrize("fallback,outcome", [("judge_failed", "judge_failed"), ("exact", "incorrect"), ("contains", "incorrect")])
def test_an_answer_stating_no_number_to_a_numbers_gold_is_text_for_the_fallback(fallback, outcome):
    # "unknown" is no number: the rules cannot decide it, the configured string rule can.
    assert judge_once("unknown", "4821", "number", cfg=JudgeConfig(text_fallback=fallback)).outcome == outcome
    # An answer that states a number is still the number rules' to decide, whatever the fallback.
    assert judge_once("4821", "4821", "number", cfg=JudgeConfig(text_fallback=fallback)).method == "number"
    # A number the rules cannot read as one (two numbers) is not text: still judge_failed without a judge.
    assert judge_once("4821 or 4822", "4821", "number", cfg=JudgeConfig(text_fallback=fallback)).judge_failed


def test_llm_judge_decides_what_rules_cannot(replay_url):
    cfg = JudgeConfig(llm_url=replay_url, llm_model="demo-judge")
    paraphrase = judge_once("It stands in Velmorahaven.", "Velmorahaven", "text", cfg=cfg)
    assert paraphrase.correct and paraphrase.method == "llm"
    wrong = judge_once("It stands in Quenhaven.", "Velmorahaven", "text", cfg=cfg)
    assert not wrong.correct and wrong.method == "llm" and not wrong.judge_failed
    exact = judge_once("42", "42", "number", cfg=cfg)
    assert exact.method == "number"  # rules first: no model call when they can decide


def test_unreachable_llm_judge_is_a_judge_failure():
    cfg = JudgeConfig(llm_url="http://127.0.0.1:9/v1", llm_model="m", llm_max_retries=0, llm_timeout_s=2)
    verdict = judge_once("It stands in Velmorahaven.", "Velmorahaven", "text", cfg=cfg)
    assert verdict.judge_failed and not verdict.correct


def test_reward_is_point_eight_accuracy_plus_point_two_format():
    good = check_response("<think>t</think><answer>4</answer>", "reasoning")
    bad = check_response("<think>t<answer>4</answer>", "perception")
    assert compute_reward(True, good, "reasoning").total == pytest.approx(1.0)
    assert compute_reward(False, good, "reasoning").total == pytest.approx(0.2)
    assert compute_reward(True, bad, "perception").total == pytest.approx(0.8)
    searched = check_response('<think>t</think><tool_call>{"name": "image_search"}</tool_call>\n<think>u</think><answer>4</answer>', "search")
    assert compute_reward(True, searched, "search").total == pytest.approx(0.8 * 0.9 + 0.2)
    long = check_response(f"<think>t</think><answer>{'x' * 300}</answer>", "perception")
    assert compute_reward(True, long, "perception").accuracy == 0.0
