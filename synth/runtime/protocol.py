"""The agent protocol (FORMAT.md): what the model writes, how a turn is parsed, how tools answer.

Every caller (teacher synthesis, GRPO rollouts, evaluation) goes through this module. What the
model is shown (prompts, observation layouts) is a protocol profile (`synth.runtime.profile`); what it
writes and how that is parsed and scored is the same under every profile. A trajectory records its
profile's version (`PROTOCOL_VERSION` is ours), so data made under one is never mixed silently
with another's.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from synth.runtime.profile import DEFAULT_PROFILE, IMAGE_SLOT, load_profile, to_parts

PROTOCOL_VERSION = "deepeyes-v2/2"  # ours (synth/runtime/profiles/deepeyes-v2.yaml); 2: the reference's answer extraction, format rule and action precedence

STOP_SEQUENCES = ("</code>", "</tool_call>")
THINK_PREFIX = "<think>"
MAX_IMAGES_PER_OBSERVATION = 10
MAX_ANSWER_CHARS = 300  # the reference's answer cap (perception and search; see `synth.scoring.reward.RewardConfig`)

ActionKind = Literal["code", "search", "image_search", "answer", "tool_error", "none"]

# A fenced Python block: ```python, ```Python, ```python3, ```py, or a bare ``` fence.
_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py3?)?[ \t]*\n(.*?)```", re.S | re.I)
_TAG = re.compile(r"</?(?:think|code|tool_call|answer)>")
_OPENING = {"</code>": "<code>", "</tool_call>": "<tool_call>"}
KNOWN_TOOLS = ("search", "image_search")


@dataclass
class Action:
    """The parsed action of one assistant turn.

    `queries`: the search queries of a `search` action (the reference's prompt lets `query` be a
    list); `query` is the first."""

    kind: ActionKind
    code: str = ""
    queries: tuple[str, ...] = ()
    answer: str = ""
    error: str = ""  # for tool_error: the observation text; for none: why the episode ends
    unknown_tool: str | None = None  # for tool_error: the name of a tool call to a tool the protocol does not know

    @property
    def query(self) -> str:
        return self.queries[0] if self.queries else ""


@dataclass
class Prompts:
    system: str
    user: str

    def user_text(self, question: str) -> str:
        return self.user.replace("{images}", "").replace("{question}", question)


def load_prompts(tools: bool = True, profile: str = DEFAULT_PROFILE) -> Prompts:
    """The system prompt and user template of a protocol profile (`synth.runtime.profile`; ours by default),
    with or without tools."""
    loaded = load_profile(profile)
    return Prompts(system=loaded.system_prompt(tools), user=loaded.user_template(tools))


# ---------------------------------------------------------------------------------------------
# Stop strings. Generation stops at `</code>` or `</tool_call>`; the reference keeps the stop string
# in the output (vLLM's `include_stop_str_in_output`). OpenAI-style servers strip it and report
# `finish_reason: "stop"` for a stop string and for the end of sequence alike, so each policy says
# which stop string really fired (`Generation.matched_stop`) and only then is the tag closed here.


def find_stop(text: str, stop: Sequence[str]) -> tuple[int, str] | None:
    """(end offset, stop string) of the earliest stop string in `text`, or None."""
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return None
    start, matched = min(hits)
    return start + len(matched), matched


def infer_matched_stop(text: str, stop: Sequence[str]) -> str | None:
    """The stop string that most likely ended `text`, for a server that does not say (vLLM does,
    in `stop_reason`): only when the turn's last protocol tag is the still-open tag that stop string
    closes. A turn that ended on end-of-sequence with a stray `<code>` earlier in its thinking
    (`<think>I could run <code> ...</think><answer>red</answer>`) is left alone."""
    tags = _TAG.findall(text)
    if not tags:
        return None
    for closing in stop:
        if _OPENING.get(closing) == tags[-1]:
            return closing
    return None


def render_tool_call(name: str, arguments: str | dict[str, Any] | None) -> str:
    """A structured tool call (an OpenAI `tool_calls` entry a server parsed out of the model's text)
    written back as the protocol's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
    `arguments` is the JSON string the API carries (or its parsed value); a string that is not JSON
    is kept as it is, so the turn fails to parse exactly as the model's own text would have."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {arguments}}}</tool_call>'
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments or {}}, ensure_ascii=False) + "</tool_call>"


def fold_turn(content: str, reasoning: str | None = None, tool_calls: Sequence[tuple[str, Any]] = ()) -> str:
    """One assistant turn as the model wrote it, from a server that split it into fields: its
    reasoning (`reasoning_content` or `reasoning`, which servers cut out of `<think>...</think>`)
    back inside `<think>...</think>` first, then the content, then each structured tool call as
    `<tool_call>` text (`render_tool_call`). The whitespace between the parts is not recoverable."""
    text = f"{THINK_PREFIX}{reasoning}</think>" if reasoning else ""
    text += content
    return text + "".join(render_tool_call(name, arguments) for name, arguments in tool_calls)


def close_stopped_turn(text: str, matched_stop: str | None) -> str:
    """The turn as stored: `text` with the stop string that ended it, when one did (`matched_stop`,
    from the policy) and the server stripped it. A turn that ended any other way is unchanged."""
    if matched_stop and not text.rstrip().endswith(matched_stop):
        return text + matched_stop
    return text


def tag_blocks(text: str, opening: str, closing: str, limit: int | None = None) -> list[str]:
    """The contents of `opening ... closing` blocks in `text`, as `re.findall` of
    `opening(.*?)closing` with DOTALL gives them (leftmost, shortest, not overlapping), at most
    `limit` of them. Linear in the length of `text`: the regex retries its lazy scan from every
    unclosed opening tag, which is quadratic (160,000 characters of `<answer>` took a minute)."""
    blocks: list[str] = []
    at = 0
    while limit is None or len(blocks) < limit:
        start = text.find(opening, at)
        if start < 0:
            break
        end = text.find(closing, start + len(opening))
        if end < 0:
            break  # no closing tag after this opening, so none after any later one either
        blocks.append(text[start + len(opening) : end])
        at = end + len(closing)
    return blocks


# ---------------------------------------------------------------------------------------------
# The final answer and the format rule: the one extraction every caller uses (rewards, synthesis
# verification, evaluation), after the reference's reward code (`deepeyesv2.py`: the first
# <answer> after the last </think>; format from tag counts).


def extract_answer(text: str) -> str | None:
    """The answer of a response or a turn: the first `<answer>...</answer>` after the last `</think>`,
    stripped; None when there is none. An answer inside a closed `<think>...</think>` is no answer;
    with no `</think>` at all the whole text counts as after it, so an answer inside an unclosed
    `<think>` (`<think>I guess <answer>A</answer>`) is the answer (the reference splits on the last
    `</think>` the same way), though the format fails."""
    found = tag_blocks(text.rsplit("</think>", 1)[-1], "<answer>", "</answer>", limit=1)
    return found[0].strip() if found else None


@dataclass(frozen=True)
class ResponseCheck:
    """What the format rule found in a whole response (all assistant turns)."""

    answer: str | None  # `extract_answer` of the response ("" for an empty answer)
    format_ok: bool
    problems: tuple[str, ...] = ()
    answer_tags: int = 0  # <answer> tags after the last </think>
    tool_call_tags: int = 0  # <tool_call> tags anywhere in the response (the reference's search-penalty trigger)


def check_response(turns: Sequence[str] | str, category: str, *, single_answer: bool = False) -> ResponseCheck:
    """The reference's format rule over a response and its answer (FORMAT.md, "Rewards and judging").

    Format is 1 when: `<think>`/`</think>` counts are equal and at least 1 (a missing leading
    `<think>` is prepended first: the environment pre-fills it); `<code>`/`</code>` counts are equal;
    after the last `</think>` the `<answer>`/`</answer>` counts are equal and at least 1 (exactly one
    pair with `single_answer`); the answer is not empty; on search samples `<tool_call>` tags are
    balanced. The answer-length cap is a reward setting (`synth.scoring.reward.RewardConfig`), not checked here.
    `turns`: the assistant turns (joined with newlines) or the response as one string."""
    text = (turns if isinstance(turns, str) else "\n".join(turns)).lstrip()
    if not text.startswith(THINK_PREFIX):
        text = THINK_PREFIX + text
    problems = []
    opens, closes = text.count("<think>"), text.count("</think>")
    if opens != closes or closes == 0:
        problems.append("think tags unbalanced or missing")
    if text.count("<code>") != text.count("</code>"):
        problems.append("code tags unbalanced")
    tail = text.rsplit("</think>", 1)[-1]
    answer_opens, answer_closes = tail.count("<answer>"), tail.count("</answer>")
    if answer_opens != answer_closes or answer_opens == 0:
        problems.append("answer tags unbalanced or missing after the last </think>")
    elif single_answer and answer_opens != 1:
        problems.append("more than one <answer> after the last </think>")
    answer = extract_answer(text)
    if answer is not None and not answer:
        problems.append("empty answer")
    tool_calls = text.count("<tool_call>")
    if category == "search" and tool_calls != text.count("</tool_call>"):
        problems.append("tool_call tags unbalanced")
    return ResponseCheck(answer, not problems, tuple(problems), answer_opens, tool_calls)


# ---------------------------------------------------------------------------------------------
# One turn's action. Precedence as in the reference's environment: an answer, then code, then a
# tool call.


def extract_code(block: str) -> str:
    """The code of a `<code>` block: its last Python fence (```python, ```Python, ```python3,
    ```py, or bare ```), or the block itself without one; a cell indented as a whole is dedented."""
    fences = _PY_FENCE.findall(block)
    code = fences[-1] if fences else block
    return textwrap.dedent(code).strip("\n")


def parse_turn(text: str) -> Action:
    """Parse one assistant turn into its action (FORMAT.md, "The model's actions")."""
    answer = extract_answer(text)
    if answer is not None:
        return Action("answer", answer=answer)
    codes = tag_blocks(text, "<code>", "</code>")
    if codes:
        return Action("code", code=extract_code(codes[-1]))
    if "<code>" in text:
        return Action("none", error="unclosed <code> tag")
    calls = tag_blocks(text, "<tool_call>", "</tool_call>")
    if calls:
        return _parse_tool_call(calls[-1])
    if "<tool_call>" in text:
        return Action("none", error="unclosed <tool_call> tag")
    if "<answer>" in text.rsplit("</think>", 1)[-1]:
        return Action("none", error="unclosed <answer> tag")
    return Action("none", error="no action in turn")


_SEARCH_USAGE = 'Error: search needs {"arguments": {"query": "..."}} (a query, or a list of queries)'


def _parse_tool_call(payload: str) -> Action:
    try:
        call = json.loads(payload)
    except json.JSONDecodeError as exc:
        return Action("tool_error", error=f"Error: invalid JSON in <tool_call>: {exc.msg}")
    if not isinstance(call, dict) or call.get("name") not in KNOWN_TOOLS:
        name = call.get("name") if isinstance(call, dict) else None
        # The loop rewrites this with the tools this run really has (`synth.runtime.agent.ToolSession`).
        return Action("tool_error", error=f"Error: unknown tool {name!r}; available: {', '.join(KNOWN_TOOLS)}", unknown_tool=str(name))
    arguments = call.get("arguments") or {}
    if call["name"] == "image_search":
        if arguments:
            return Action("tool_error", error="Error: image_search takes no arguments")
        return Action("image_search")
    query = arguments.get("query") if isinstance(arguments, dict) else None
    queries = [query] if isinstance(query, str) else query if isinstance(query, list) else []
    if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        return Action("tool_error", error=_SEARCH_USAGE)
    return Action("search", queries=tuple(q.strip() for q in queries))


# Observations: rendered by a protocol profile (`synth.runtime.profile`); these are ours, for callers that
# need our layout's text.


def render_code_observation(stdout: str, stderr: str, n_images: int) -> str:
    """A code cell's observation in our layout, as text (the images follow as parts)."""
    return load_profile().render_code(stdout, stderr, n_images).replace(IMAGE_SLOT, "")


def render_text_results(results: list[dict[str, Any]]) -> str:
    """One text search's results as one observation (our layout)."""
    return load_profile().render_search([("", results)])


def render_search_results(per_query: list[tuple[str, list[dict[str, Any]]]], skipped: int = 0) -> str:
    """The results of a search call with one query or several (a list-valued `query`), in one
    observation (our layout): one query as `render_text_results`; several, each under its query;
    `skipped` queries past the per-call limit are named as not run."""
    return load_profile().render_search(per_query, skipped)


def render_image_results(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Image search results (our layout): numbered titles and links, each followed by its thumbnail."""
    import base64

    text, shown = load_profile().render_image_search(results)
    return to_parts(text), [base64.b64decode(results[i]["thumbnail"]) for i in shown]
