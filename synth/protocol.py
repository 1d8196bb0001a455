"""The agent protocol (FORMAT.md): what the model writes, how a turn is parsed, how tools answer.

Every caller (teacher synthesis, GRPO rollouts, evaluation) goes through this module; a
trajectory records `PROTOCOL_VERSION` so data made under one version is never mixed silently
with another's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

PROTOCOL_VERSION = "deepeyes-v2/1"

STOP_SEQUENCES = ("</code>", "</tool_call>")
THINK_PREFIX = "<think>"
MAX_IMAGES_PER_OBSERVATION = 10
MAX_ANSWER_CHARS = 300

ActionKind = Literal["code", "search", "image_search", "answer", "tool_error", "none"]

_CODE_BLOCK = re.compile(r"<code>(.*?)</code>", re.S)
_PY_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
KNOWN_TOOLS = ("search", "image_search")


@dataclass
class Action:
    """The parsed action of one assistant turn."""

    kind: ActionKind
    code: str = ""
    query: str = ""
    answer: str = ""
    error: str = ""  # for tool_error: the observation text; for none: why the episode ends


@dataclass
class Prompts:
    system: str
    user: str

    def user_text(self, question: str) -> str:
        return self.user.format(question=question)


PromptProfile = Literal["default", "compact"]


def load_prompts(tools: bool = True, profile: PromptProfile = "default") -> Prompts:
    """The prompt files shipped with this protocol version (`synth/prompts/`).

    `compact`: the same tools and format in a system prompt of about 90 tokens instead of about
    250, for tiny models trained on a CPU, where every row carries the system prompt (a long fixed
    prefix also slowed a tiny model's learning to copy by more than the rows' cost: see the README's
    learnable world). The tool-free prompts are short already and have no compact variant."""
    base = resources.files("synth") / "prompts"
    suffix = "" if tools else "_no_tools"
    system = base / f"system{suffix}_compact.txt" if profile == "compact" and tools else base / f"system{suffix}.txt"
    return Prompts(
        system=system.read_text().strip(),
        user=(base / f"user{suffix}.txt").read_text().strip(),
    )


def close_stopped_turn(text: str, finish_reason: str | None) -> str:
    """Restore the stop string an OpenAI-style endpoint strips from the output.

    Generation stops at `</code>` or `</tool_call>`; most servers drop the stop string, vLLM can
    keep it. Either way the stored turn ends with the closing tag.
    """
    if finish_reason != "stop":
        return text
    for opening, closing in (("<code>", "</code>"), ("<tool_call>", "</tool_call>")):
        if text.rfind(opening) > text.rfind(closing):
            return text + closing
    return text


def parse_turn(text: str) -> Action:
    """Parse one assistant turn into its action (FORMAT.md, "The model's actions")."""
    codes = _CODE_BLOCK.findall(text)
    if codes:
        fences = _PY_FENCE.findall(codes[-1])
        code = fences[-1] if fences else codes[-1]
        return Action("code", code=code.strip("\n"))
    if "<code>" in text:
        return Action("none", error="unclosed <code> tag")
    calls = _TOOL_CALL.findall(text)
    if calls:
        return _parse_tool_call(calls[-1])
    if "<tool_call>" in text:
        return Action("none", error="unclosed <tool_call> tag")
    answers = _ANSWER.findall(text)
    if answers:
        return Action("answer", answer=answers[-1].strip())
    if "<answer>" in text:
        return Action("none", error="unclosed <answer> tag")
    return Action("none", error="no action in turn")


def _parse_tool_call(payload: str) -> Action:
    try:
        call = json.loads(payload)
    except json.JSONDecodeError as exc:
        return Action("tool_error", error=f"Error: invalid JSON in <tool_call>: {exc.msg}")
    if not isinstance(call, dict) or call.get("name") not in KNOWN_TOOLS:
        name = call.get("name") if isinstance(call, dict) else None
        return Action("tool_error", error=f"Error: unknown tool {name!r}; available: {', '.join(KNOWN_TOOLS)}")
    arguments = call.get("arguments") or {}
    if call["name"] == "image_search":
        if arguments:
            return Action("tool_error", error="Error: image_search takes no arguments")
        return Action("image_search")
    query = arguments.get("query") if isinstance(arguments, dict) else None
    if not isinstance(query, str) or not query.strip():
        return Action("tool_error", error='Error: search needs {"arguments": {"query": "..."}}')
    return Action("search", query=query.strip())


def render_code_observation(stdout: str, stderr: str, n_images: int) -> str:
    parts = ["Code execution result:", f"stdout:\n{stdout}", f"stderr:\n{stderr}"]
    if n_images:
        parts.append("Images:")
    return "\n".join(parts)


def render_text_results(results: list[dict[str, Any]]) -> str:
    if not results:
        body = "No results found."
    else:
        body = "\n".join(
            f"{k}. [{r.get('title', '')}]({r.get('url', '')})\n{r.get('snippet', '')}" for k, r in enumerate(results, 1)
        )
    return f"<tool_response>\n{body}\n</tool_response>"


def render_image_results(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Image search results: numbered titles and links, each followed by its thumbnail."""
    import base64

    parts: list[dict[str, Any]] = [{"type": "text", "text": "<tool_response>\nImage search results:"}]
    thumbnails: list[bytes] = []
    if not results:
        parts.append({"type": "text", "text": "\nNo results found."})
    for k, result in enumerate(results, 1):
        parts.append({"type": "text", "text": f"\n{k}. [{result.get('title', '')}]({result.get('url', '')})\n"})
        if result.get("thumbnail") and len(thumbnails) < MAX_IMAGES_PER_OBSERVATION:
            parts.append({"type": "image"})
            thumbnails.append(base64.b64decode(result["thumbnail"]))
    parts.append({"type": "text", "text": "\n</tool_response>"})
    return parts, thumbnails


@dataclass
class FormatCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)


def check_format(assistant_turns: list[str], category: str) -> FormatCheck:
    """The paper's format reward rule over the whole response (all assistant turns)."""
    text = "\n".join(assistant_turns)
    problems = []
    opens, closes = text.count("<think>"), text.count("</think>")
    if opens == 0 or opens != closes:
        problems.append("think tags unbalanced or missing")
    if text.count("<code>") != text.count("</code>"):
        problems.append("code tags unbalanced")
    tail = text[text.rfind("</think>") + len("</think>") :] if closes else text
    if len(_ANSWER.findall(tail)) != 1 or tail.count("<answer>") != 1:
        problems.append("not exactly one <answer> after the last </think>")
    if category == "search" and text.count("<tool_call>") != text.count("</tool_call>"):
        problems.append("tool_call tags unbalanced")
    return FormatCheck(not problems, problems)
