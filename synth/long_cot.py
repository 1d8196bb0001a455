"""Long-CoT mixing: text-only long chain-of-thought rows mixed into the cold-start set.

The paper's cold-start set is 81.6% long-CoT rows (text-only reasoning) beside the tool-use
trajectories. The source is JSONL (or Parquet) with `question` and `response` (the full assistant turn, with
its `<think>` and `<answer>`), optional `id` and `answer`. Rows are drawn reproducibly (a seeded
hash order) so that they make up `ratio` of the mixed set; when the source is short, all of it is
used and the manifest says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curation.sources import TableFileError, read_table_file
from synth.protocol import PROTOCOL_VERSION, check_response, load_prompts


class LongCotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = None  # the pipeline uses the demo world's source when it is not set
    ratio: float = Field(0.816, ge=0.0, lt=1.0)  # share of long-CoT rows in the mixed set
    seed: int = 0
    name: str | None = None


class LongCotError(ValueError):
    """A long-CoT source that cannot be used; names the file and line."""


def load_long_cot(path: Path) -> list[dict[str, Any]]:
    try:
        return read_table_file(path, {"question", "response"}, "long-CoT source")
    except TableFileError as exc:
        raise LongCotError(str(exc)) from None


def long_cot_rows(cfg: LongCotConfig, tool_rows: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trajectory rows to add beside `tool_rows` tool-use trajectories, and a report."""
    if cfg.path is None:
        raise LongCotError("synth.long_cot.path: no long-CoT source given")
    source = load_long_cot(cfg.path)
    wanted = round(cfg.ratio * tool_rows / (1.0 - cfg.ratio)) if tool_rows else 0

    def order(row: dict[str, Any]) -> str:
        key = row.get("id") or row["question"]
        return hashlib.blake2b(f"{cfg.seed}:{key}".encode(), digest_size=8).hexdigest()

    chosen = sorted(source, key=order)[:wanted]
    name = cfg.name or cfg.path.stem
    system = load_prompts(tools=False).system
    rows = []
    for row in chosen:
        check = check_response(row["response"], "reasoning")
        sample_id = str(row.get("id") or hashlib.blake2b(row["question"].encode(), digest_size=12).hexdigest())
        rows.append({
            "id": hashlib.blake2b(f"long-cot|{name}|{sample_id}".encode(), digest_size=12).hexdigest(),
            "sample_id": sample_id,
            "category": "long_cot",
            "policy": f"long-cot:{name}",
            "attempt": 0,
            "protocol_version": PROTOCOL_VERSION,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": system}]},
                {"role": "user", "content": [{"type": "text", "text": row["question"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": row["response"]}]},
            ],
            "images": [],
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
        "target_ratio": cfg.ratio,
        "achieved_ratio": round(len(rows) / total, 4) if total else 0.0,
        "short_by": max(0, wanted - len(rows)),
    }
    return rows, report
