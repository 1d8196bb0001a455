"""The paper's reward: 0.8·accuracy + 0.2·format, the search penalty, the answer-length cap.

No tool-use bonus: in the paper a bonus taught the model to emit one empty code block per answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth.protocol import MAX_ANSWER_CHARS


@dataclass(frozen=True)
class RewardParts:
    accuracy: float
    format: float
    search_penalty: float
    total: float


def compute_reward(correct: bool, format_ok: bool, answer: str | None, category: str, used_search: bool) -> RewardParts:
    accuracy = 1.0 if correct and answer is not None and len(answer) < MAX_ANSWER_CHARS else 0.0
    penalty = 0.1 if category == "search" and used_search else 0.0
    accuracy_term = accuracy * (1.0 - penalty)
    fmt = 1.0 if format_ok else 0.0
    return RewardParts(accuracy, fmt, penalty, 0.8 * accuracy_term + 0.2 * fmt)
