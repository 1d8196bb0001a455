import pytest

from synth.judge import judge_answer
from synth.reward import compute_reward


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
        ("Velmora", "velmora tower", "text", None, False),
        ("\\frac{1}{2}", "0.5", "math", None, True),
        ("x^2+2x+1", "(x+1)^2", "math", None, True),
        ("", "4", "number", None, False),
        (None, "4", "number", None, False),
    ],
)
def test_rule_and_math_judges(pred, gold, kind, choices, expected):
    assert judge_answer(pred, gold, kind, choices).correct is expected


def test_unparsable_number_gold_is_a_judge_failure_not_a_silent_zero():
    verdict = judge_answer("12", "twelve", "number")
    assert verdict.judge_failed and not verdict.correct


def test_reward_is_point_eight_accuracy_plus_point_two_format():
    assert compute_reward(True, True, "4", "reasoning", False).total == pytest.approx(1.0)
    assert compute_reward(False, True, "4", "reasoning", False).total == pytest.approx(0.2)
    assert compute_reward(True, False, "4", "perception", False).total == pytest.approx(0.8)
    assert compute_reward(True, True, "4", "search", True).total == pytest.approx(0.8 * 0.9 + 0.2)
    assert compute_reward(True, True, "x" * 300, "reasoning", False).accuracy == 0.0
