"""Long-CoT mixing: long chain-of-thought rows, answered without tools, mixed into the cold-start set.

The paper's cold-start set is 81.6% long-CoT rows (reasoning without tool calls) beside the
tool-use trajectories. The source is JSONL (or Parquet) with `question` and `response` (the full
assistant turn, with its `<think>` and `<answer>`), optional `id`, `answer` and `images` (a list of
image references (or one), each as sample sources take them: a path relative to the source file's folder,
base64, a data URL; a multimodal reasoning row). Rows are drawn reproducibly (a seeded hash order)
so that they make up `ratio` of the mixed set; when the source is short, all of it is used and the
manifest says so. A drawn row whose image cannot be read goes to the stage's quarantine with the
reason, and the others go on.

`opening` says what the row's first turns look like:
- `question` (the default): the tool-free system prompt and the question as written;
- `no_tools`: the protocol profile's tool-free system prompt and user template (what the tool-free
  control is asked);
- `tools`: the profile's system prompt and user template with the tools on offer, as a tool
  trajectory opens: the row answers without a call while tools are available, which is what
  selective tool use looks like in the data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from curation.mapping import RowRejected
from curation.sources import TableFileError, read_image_ref, read_table_file
from synth.runtime.profile import DEFAULT_PROFILE, load_profile
from synth.runtime.protocol import PROTOCOL_VERSION, check_response, load_prompts


class LongCotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = None  # the pipeline uses the demo world's source when it is not set
    ratio: float = Field(0.816, ge=0.0, lt=1.0)  # share of long-CoT rows in the mixed set
    seed: int = 0
    name: str | None = None
    opening: Literal["question", "no_tools", "tools"] = "question"  # the row's system prompt and user turn (module docstring)


class LongCotError(ValueError):
    """A long-CoT source that cannot be used; names the file and line."""


def load_long_cot(path: Path) -> list[dict[str, Any]]:
    try:
        return read_table_file(path, {"question", "response"}, "long-CoT source")
    except TableFileError as exc:
        raise LongCotError(str(exc)) from None


def _images(row: dict[str, Any], base_dir: Path) -> list[bytes]:
    """The row's images as bytes (one reference or a list, as sample sources take them); `RowRejected`
    (`image_missing`, `image_unreadable`, `image_ref_invalid`, ...) when one cannot be read."""
    refs = row.get("images")
    if refs is None or refs == "":
        return []
    return [read_image_ref(ref, base_dir)[0] for ref in (refs if isinstance(refs, list) else [refs])]


def _opening(cfg: LongCotConfig, question: str, n_images: int, profile: str) -> list[dict[str, Any]]:
    """The system prompt and first user turn of a long-CoT row, as `cfg.opening` says."""
    if cfg.opening == "question":
        parts = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
        return [{"role": "system", "content": [{"type": "text", "text": load_prompts(tools=False).system}]},
                {"role": "user", "content": parts}]
    return load_profile(profile).messages(question, n_images, tools=cfg.opening == "tools")


def long_cot_rows(
    cfg: LongCotConfig, tool_rows: int, profile: str = DEFAULT_PROFILE,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[dict[str, Any], str]]]:
    """Trajectory rows to add beside `tool_rows` tool-use trajectories, a report, and the drawn
    source rows that could not be used with their reasons (for the stage's quarantine). `profile`:
    the protocol profile whose prompts an `opening` of `no_tools` or `tools` uses. Raises
    `LongCotError` for a missing or unreadable source file."""
    if cfg.path is None:
        raise LongCotError("synth.long_cot.path: no long-CoT source given")
    source = load_long_cot(cfg.path)
    wanted = round(cfg.ratio * tool_rows / (1.0 - cfg.ratio)) if tool_rows else 0

    def order(row: dict[str, Any]) -> str:
        key = row.get("id") or row["question"]
        return hashlib.blake2b(f"{cfg.seed}:{key}".encode(), digest_size=8).hexdigest()

    name = cfg.name or cfg.path.stem
    version = PROTOCOL_VERSION if cfg.opening == "question" else load_profile(profile).version
    rows: list[dict[str, Any]] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    for row in sorted(source, key=order):
        if len(rows) == wanted:
            break
        try:
            images = _images(row, cfg.path.parent)
        except RowRejected as exc:
            rejected.append((row, f"long_cot_{exc}"))
            continue
        check = check_response(row["response"], "reasoning")
        sample_id = str(row.get("id") or hashlib.blake2b(row["question"].encode(), digest_size=12).hexdigest())
        rows.append({
            "id": hashlib.blake2b(f"long-cot|{name}|{sample_id}".encode(), digest_size=12).hexdigest(),
            "sample_id": sample_id,
            "category": "long_cot",
            "policy": f"long-cot:{name}",
            "attempt": 0,
            "protocol_version": version,
            "messages": [
                *_opening(cfg, row["question"], len(images), profile),
                {"role": "assistant", "content": [{"type": "text", "text": row["response"]}]},
            ],
            "images": [{"bytes": data, "path": None} for data in images],
            "tool_calls": [],
            "turns": 1,
            "turn_latency_ms": [],
            "completion_tokens": 0,
            "stop_reason": "answer" if check.answer is not None else "no_action",
            "final_answer": check.answer or None,
            "answer": None if row.get("answer") is None else str(row["answer"]),
            "correct": True,  # curated reasoning traces, taken as given
            "judge_method": "source",
            "judge_failed": False,
            "format_ok": check.format_ok,
            "reward": None,
            "reject_reason": None,
            "latency_ms": 0.0,
        })
    total = tool_rows + len(rows)
    report = {
        "source": str(cfg.path),
        "available": len(source),
        "wanted": wanted,
        "added": len(rows),
        "quarantined": len(rejected),
        "opening": cfg.opening,
        "target_ratio": cfg.ratio,
        "achieved_ratio": round(len(rows) / total, 4) if total else 0.0,
        "short_by": max(0, wanted - len(rows)),
    }
    return rows, report, rejected
