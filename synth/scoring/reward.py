"""The paper's reward: 0.8·accuracy + 0.2·format, the search penalty, the answer-length cap.

Defaults follow the authors' released reward code (Visual-Agent/DeepEyesV2,
`reinforcement_learning/verl/utils/reward_score/deepeyesv2.py`): answers of 300 characters or
more score accuracy 0 and format 0 on perception and search samples (reasoning samples have no
cap); on search samples accuracy is multiplied by 0.9 when the response contains any `<tool_call>`,
parsed or not; the answer tags after the last `</think>` need only balance (two answers are not a
format error: the first one counts). Each of these is a `RewardConfig` setting; the README's
table of deviations lists where this project's defaults differ from the reference.

No tool-use bonus: in the paper a bonus taught the model to emit one empty code block per answer.

`score_response` is the one scoring path: the agent loop calls it for every episode, so synthesis
verification, GRPO rewards and evaluation read the same verdict, format and reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from curation.mapping import category_names

from curation.strict_config import StrictConfig
from synth.runtime.protocol import MAX_ANSWER_CHARS, ResponseCheck, check_response
from synth.scoring.judge import Judge, Verdict

SEARCH_TOOLS = ("search", "image_search")


class RewardConfig(StrictConfig):
    """The reward's settings (the pipeline's `reward:` section: synthesis, GRPO and evaluation)."""

    accuracy_weight: float = Field(0.8, ge=0)
    format_weight: float = Field(0.2, ge=0)
    # Answers of this many characters or more score accuracy 0, per category; a category not listed
    # (or null) has no cap. The reference: perception and search 300, reasoning none. A cap of 0
    # or less would cap every answer, the empty one too: null is the way to say "no cap".
    answer_cap_chars: dict[str, Annotated[int, Field(ge=1)] | None] = Field(
        default_factory=lambda: {"perception": MAX_ANSWER_CHARS, "search": MAX_ANSWER_CHARS, "reasoning": None})
    cap_fails_format: bool = True  # a capped answer scores format 0 too (the reference)
    search_penalty: float = Field(0.1, ge=0, lt=1)  # accuracy × (1 − penalty)
    search_penalty_categories: list[str] = Field(default_factory=lambda: ["search"])
    # What triggers it: any `<tool_call>` text in the response, parsed or not (the reference), or
    # only calls that parsed as a search or an image search (`parsed_calls`).
    search_penalty_on: Literal["tool_call_text", "parsed_calls"] = "tool_call_text"
    # True: exactly one <answer> after the last </think> (a second one fails the format); the
    # reference only asks the tags to balance.
    single_answer: bool = False

    @field_validator("format_weight")
    @classmethod
    def _some_weight(cls, value: float, info: ValidationInfo) -> float:
        """Both weights 0 make every reward 0: GRPO's advantages are all 0 and it learns nothing.
        Refused (told at format_weight, validated after accuracy_weight; it is 0.2 when left out)."""
        if value == 0 and info.data.get("accuracy_weight") == 0:
            raise PydanticCustomError("no_reward_weight", "0, and accuracy_weight is 0 too: every reward would be 0, so GRPO would "
                                      "learn nothing; set either weight above 0")
        return value

    @field_validator("answer_cap_chars", "search_penalty_categories", mode="before")
    @classmethod
    def _our_categories(cls, value: Any) -> Any:
        return category_names(value)  # the error's location names the field

    def capped(self, answer: str | None, category: str) -> bool:
        """Whether `answer` is at or over its category's length cap."""
        cap = self.answer_cap_chars.get(category)
        return cap is not None and answer is not None and len(answer) >= cap


@dataclass(frozen=True)
class RewardParts:
    """One episode's reward and its parts (all in [0, 1]).

    `accuracy`: the judged accuracy after the cap; `search_penalty`: the fraction taken off it;
    `accuracy_term` = accuracy × (1 − search_penalty), GRPO's accuracy reward; `format`: the format
    reward after the cap; `total` = accuracy_weight × accuracy_term + format_weight × format."""

    accuracy: float
    format: float
    search_penalty: float
    accuracy_term: float
    total: float
    capped: bool = False


def compute_reward(correct: bool, check: ResponseCheck, category: str, search_calls: int = 0, cfg: RewardConfig | None = None) -> RewardParts:
    """The reward of a judged response. `check`: `synth.runtime.protocol.check_response` of the response;
    `search_calls`: the search and image-search calls that parsed (for `search_penalty_on:
    parsed_calls`)."""
    cfg = cfg or RewardConfig()
    capped = cfg.capped(check.answer, category)
    accuracy = 1.0 if correct and check.answer and not capped else 0.0
    fmt = 1.0 if check.format_ok and not (capped and cfg.cap_fails_format) else 0.0
    searched = check.tool_call_tags > 0 if cfg.search_penalty_on == "tool_call_text" else search_calls > 0
    penalty = cfg.search_penalty if category in cfg.search_penalty_categories and searched else 0.0
    term = accuracy * (1.0 - penalty)
    return RewardParts(accuracy, fmt, penalty, term, cfg.accuracy_weight * term + cfg.format_weight * fmt, capped)


@dataclass(frozen=True)
class EpisodeScore:
    check: ResponseCheck
    verdict: Verdict
    reward: RewardParts


async def score_response(
    judge: Judge, assistant_turns: Sequence[str], *, question: str, gold: str, answer_type: str, choices: list[str] | None,
    category: str, tool_calls: Sequence[dict[str, Any]] = (), cfg: RewardConfig | None = None,
) -> EpisodeScore:
    """Extract, check, judge and reward a response (its assistant turns, in order): the scoring
    every caller shares. `tool_calls`: the episode's calls as the agent loop records them."""
    cfg = cfg or RewardConfig()
    check = check_response(assistant_turns, category, single_answer=cfg.single_answer)
    verdict = await judge.judge(question, check.answer, gold, answer_type, choices)
    searches = sum(1 for call in tool_calls if call.get("tool") in SEARCH_TOOLS)
    return EpisodeScore(check, verdict, compute_reward(verdict.correct, check, category, searches, cfg))
