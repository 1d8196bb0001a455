"""Chat-layout text as other projects store it: `<image>` markers and format instructions.

LLaMA-Factory's `sharegpt` files and verl's RL parquet files keep a conversation's images apart
from its text: each `<image>` marker in a message, in any role, takes the next entry of the row's
`images` (LLaMA-Factory's `mm_plugin`, verl's `RLHFDataset._build_messages`). A user turn also
carries the prompt's format instruction after the question (`<image>\\n{question}\\n\\nYou must put
your answer inside <answer> </answer> tags...` in DeepEyesV2's data); a `Sample` keeps only the
question, so the importers take the instruction off with `split_question`.
"""

from __future__ import annotations

import re
from typing import Any

IMAGE_MARKER = "<image>"
# A line that tells the model how to format its reply names a protocol tag.
_INSTRUCTION_LINE = re.compile(r"</?(?:think|answer|code|tool_call)>")


def count_markers(text: str) -> int:
    """How many `<image>` markers `text` holds."""
    return text.count(IMAGE_MARKER)


def split_markers(text: str) -> list[str | None]:
    """`text` cut at its `<image>` markers: the text pieces in order, None where an image goes
    (empty pieces dropped). `"<image>\\nWhat?"` -> `[None, "\\nWhat?"]`."""
    pieces: list[str | None] = []
    for k, piece in enumerate(text.split(IMAGE_MARKER)):
        if k:
            pieces.append(None)
        if piece:
            pieces.append(piece)
    return pieces


def message_text(content: Any) -> str:
    """A message's content as text: a string as it is; a list of parts (`{"type": "text", "text"}`,
    `{"type": "image"}`) with each image part as an `<image>` marker."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("image", "image_url"):
                out.append(IMAGE_MARKER)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    return ""


def split_question(user_text: str) -> tuple[str, str]:
    """(question, instruction) of a user turn: the `<image>` markers removed, and the trailing lines
    that name a protocol tag (`<think>`, `<answer>`, `<code>`, `<tool_call>`: the format instruction
    the prompt template appends) split off. The question is stripped; the instruction is what was
    taken off ("" when none)."""
    text = user_text.replace(IMAGE_MARKER, "")
    lines = text.split("\n")
    cut = len(lines)
    while cut > 0 and (_INSTRUCTION_LINE.search(lines[cut - 1]) or not lines[cut - 1].strip()):
        cut -= 1
    question = "\n".join(lines[:cut]).strip()
    if not question:  # the whole turn names tags: it is the question (a question about the tags themselves)
        return text.strip(), ""
    return question, "\n".join(lines[cut:]).strip()
