"""Long-CoT mixing: long chain-of-thought rows, answered without tools, mixed into the cold-start set.

The paper's cold-start set is 81.6% long-CoT rows (reasoning without tool calls) beside the
tool-use trajectories. The source is JSONL (or Parquet) with `question` and `response` (the full
assistant turn, with its `<think>` and `<answer>`), optional `id`, `answer` and `images` (a list of
image references (or one), each as sample sources take them: a path relative to the source file's folder,
base64, a data URL; a multimodal reasoning row). Rows are drawn reproducibly (a seeded hash order)
so that they make up `ratio` of the mixed set; when the source is short, all of it is used and the
manifest says so. Rows are read and checked as sample sources are (`curation.sources`): a line that
is not JSON, a `question` that is not text (a number, a list) or longer than `max_question_chars`,
a missing or non-text `response` go to the stage's quarantine with the reason and their `file:line`,
and so does a drawn row whose image cannot be read or decoded (curation's image checks), the next
row being drawn in its place; a boolean `answer` is a yes/no answer, as in curation.

Rows are verified before they are used, as the reference keeps only verified trajectories in its
cold-start data (DeepEyesV2, arXiv 2511.05271): the response must pass the protocol's format
check (`check_response`) with an answer (`long_cot_no_answer`; `long_cot_tool_call` for a response that calls a tool, `<code>` or
`<tool_call>`, instead of answering: a long-CoT row answers without tools), and when the row has
a gold `answer`, the rule-based judge (`rule_verdict`, the rules synthesis verification uses; no
LLM judge here) must not find the response's answer different from it (`long_cot_answer_mismatch`;
where the rules cannot tell, as for two math expressions, the row is kept with `judge_method:
unverified` and counted in the report). A row with the same question, images
and response as an earlier one is `long_cot_duplicate: of <file:line>`. The image files the drawn
rows read are returned to the caller (`files`), for the flow's cache to see them change.

`opening` says what the row's first turns look like:
- `question` (the default): the tool-free system prompt and the question as written;
- `no_tools`: the protocol profile's tool-free system prompt and user template (what the tool-free
  control is asked);
- `tools`: the profile's system prompt and user template with the tools on offer, as a tool
  trajectory opens: the row answers without a call while tools are available, which is what
  selective tool use looks like in the data.
A list of openings (`[tools, question]`) gives each row one of them, drawn with equal chance by a
seeded hash of the row's id (reproducible; repeat an opening to weight it): a mix in which some rows
answer directly with tools on offer and the rest show the tool-free framing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.mapping import RowRejected, scalar_text
from curation.setting_path import SettingPath
from curation.sources import MAX_QUESTION_CHARS, PARSE_ERROR, SourceError, SourceSpec, image_refs, read_image_ref, read_source, within_limit
from curation.strict_config import StrictConfig
from curation.suggest import did_you_mean
from curation.worlds import made_by_world
from synth.runtime.profile import DEFAULT_PROFILE, Profile, load_profile
from synth.runtime.protocol import PROTOCOL_VERSION, check_response, load_prompts
from synth.scoring.judge import rule_verdict


Opening = Literal["question", "no_tools", "tools"]
OPENINGS: tuple[str, ...] = get_args(Opening)

# What a wrong field's reason advises: a long-CoT source has no field mapping (sample sources' `fields`).
FIELDS_FIX = "synth.long_cot reads the keys question, response, answer, images and id as written (there is no field mapping)"


class LongCotConfig(StrictConfig):
    path: SettingPath | None = None  # the pipeline uses the demo world's source when it is not set
    ratio: float = Field(0.816, ge=0.0, lt=1.0)  # share of long-CoT rows in the mixed set
    seed: int = 0
    name: str | None = None
    opening: Opening | list[Opening] = "question"  # the row's system prompt and user turn, or a list to draw each row's from (module docstring)
    max_question_chars: int = Field(MAX_QUESTION_CHARS, ge=1)  # as curation's limit: a longer question is a column mapped by mistake

    @field_validator("opening", mode="before")
    @classmethod
    def _one_or_a_list(cls, value: Any) -> Any:
        # Checked here, so that a wrong value gets one message (the closest choice, as every setting's)
        # and not one per member of the union.
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("an empty list: give one opening, or a list to draw each row's from")
        expected = ", ".join(repr(o) for o in OPENINGS[:-1]) + f" or {OPENINGS[-1]!r}"
        if not isinstance(value, list) and value not in OPENINGS:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        for one in values:
            if one not in OPENINGS:
                raise ValueError(f"{one!r} in the list should be {expected}{did_you_mean(one, OPENINGS)}")
        return value

    def opening_of(self, sample_id: str) -> str:
        """The opening of the row with this id: `opening` itself, or for a list the member a hash of
        (`seed`, id) picks, each with equal chance."""
        if isinstance(self.opening, str):
            return self.opening
        digest = hashlib.blake2b(f"{self.seed}:opening:{sample_id}".encode(), digest_size=8).hexdigest()
        return self.opening[int(digest, 16) % len(self.opening)]


class LongCotError(ValueError):
    """A long-CoT source that cannot be read at all (missing, not UTF-8 text, not a table); names the file."""


@dataclass(frozen=True)
class LongCotRow:
    """A usable source row: its text fields checked, its images not yet read."""

    sample_id: str
    question: str
    response: str
    answer: str | None
    images: list[Any]
    origin: str  # `file:line` (or `file[row]` for Parquet)
    final_answer: str  # the response's answer, as the protocol reads it
    judge_method: str = "source"  # the rule that matched the gold `answer` (`text`, `number`, ...), or `source` without one


def _row(raw: dict[str, Any], origin: str, cfg: LongCotConfig) -> LongCotRow:
    """A source row's fields, checked as sample sources check theirs; `RowRejected` (`invalid_question`,
    `missing_response`, `question_too_long`, ...) when one cannot be used. A boolean answer is a
    yes/no answer (`yes` / `no`), as in curation."""
    if PARSE_ERROR in raw:
        raise RowRejected(raw[PARSE_ERROR])
    question = scalar_text(raw.get("question"), "question", fix=FIELDS_FIX)
    if question is None:
        raise RowRejected("missing_question: the row has no `question` (or it is empty)")
    within_limit(question, "question", "question", cfg.max_question_chars, "synth.long_cot.max_question_chars")
    response = raw.get("response")
    if not isinstance(response, str) or not response.strip():
        raise RowRejected("missing_response: the row has no `response` (or it is empty)" if response in (None, "") else
                          f"invalid_response: `response` holds {type(response).__name__}, not text (the assistant turn)")
    answer = scalar_text(raw.get("answer"), "answer", fix=FIELDS_FIX)
    sample_id = scalar_text(raw.get("id"), "id", fix=FIELDS_FIX)
    final_answer, method = verify(response, answer)
    return LongCotRow(sample_id or hashlib.blake2b(question.encode(), digest_size=12).hexdigest(), question, response, answer,
                      image_refs(raw.get("images")), origin, final_answer, method)


def verify(response: str, answer: str | None) -> tuple[str, str]:
    """The response's answer and the judge method that matched it to the gold `answer` (`source` for
    a row without one), when the response is a verified long-CoT turn (module docstring); `RowRejected`
    otherwise: `no_answer`, `tool_call`, `bad_format` (the protocol check's problems),
    `answer_mismatch` (the rule-based judge says the answer is not the gold `answer`). Where the
    rules cannot tell (math-verify or an LLM could), `unverified`: the row is kept."""
    check = check_response(response, "reasoning")
    if not (check.answer or "").strip():
        if "<code>" in response or "<tool_call>" in response:
            raise RowRejected("tool_call: the response calls a tool (a `<code>` or `<tool_call>` block) and gives no <answer>; "
                              "a long-CoT row answers without tools")
        raise RowRejected("no_answer: the response has no <answer> after its last </think> (or an empty one); a long-CoT "
                          "response ends in its answer")
    if not check.format_ok:
        raise RowRejected(f"bad_format: {'; '.join(check.problems)}")
    if answer is not None:
        verdict = rule_verdict(check.answer, answer, "text")
        shown = f"the response answers {(check.answer or '')[:80]!r}, the row's `answer` is {answer[:80]!r}"
        if not verdict.decided:  # math-verify or an LLM could tell; a source's row is not dropped for that
            return check.answer, "unverified"
        if not verdict.correct:
            raise RowRejected(f"answer_mismatch: {shown}")
        return check.answer, verdict.method
    return check.answer, "source"


def _duplicate_key(row: LongCotRow) -> str:
    """Question, image references and response: what makes two rows the same row."""
    return hashlib.blake2b(json.dumps([row.question, row.images, row.response], default=str).encode(), digest_size=16).hexdigest()


def load_long_cot(cfg: LongCotConfig) -> tuple[list[LongCotRow], list[tuple[dict[str, Any], str, str]]]:
    """The source's usable rows, and its unusable ones as `(row, reason, origin)` for the stage's
    quarantine (a line that is not JSON, a missing or non-text `question` or `response`, a response
    that fails `verify`, an exact duplicate of an earlier row, ...).
    Raises `LongCotError` when the file cannot be read as rows at all (missing, a folder, not
    UTF-8: `read_source`'s `SourceError`)."""
    if cfg.path is None:
        raise LongCotError("synth.long_cot.path: no long-CoT source given")
    path = Path(cfg.path)
    spec = (SourceSpec(kind="hf", path="parquet", data_files=str(path)) if path.suffix == ".parquet"
            else SourceSpec(kind="jsonl", path=str(path)))
    usable, unusable = [], []
    first_of: dict[str, str] = {}  # a row's duplicate key -> the origin of its first copy
    try:
        for raw, origin in read_source(spec):
            try:
                row = _row(raw, origin, cfg)
            except RowRejected as exc:
                unusable.append((raw, f"long_cot_{exc}", origin))
                continue
            key = _duplicate_key(row)
            if key in first_of:
                unusable.append((raw, f"long_cot_duplicate: of {first_of[key]}", origin))
                continue
            first_of[key] = origin
            usable.append(row)
    except SourceError as exc:
        # Sample sources' advice (`kind: hf, path: csv, ...`) names settings synth.long_cot does not have.
        message = str(exc) if exc.looks_like is None else (
            f"{exc.problem} (it looks like {exc.looks_like}: synth.long_cot.path takes JSON Lines, or Parquet named *.parquet, "
            "with the keys question, response, answer, images, id)")
        raise LongCotError(f"synth.long_cot.path: {message}") from None
    return usable, unusable


def _images(row: LongCotRow, base_dir: Path, limits: ImageLimits, files: set[str] | None = None) -> list[bytes]:
    """The row's images as checked bytes (decoded, re-encoded where needed, as curation checks
    them); `RowRejected` (`image_missing`, `image_undecodable`, `image_too_small`, ...) otherwise.
    Each file read (or looked for and missed) goes into `files`."""
    images = []
    for ref in row.images:
        data, name = read_image_ref(ref, base_dir, files)
        try:
            images.append(validate_image(data, limits, name))
        except ImageRejected as exc:
            raise RowRejected(str(exc)) from None
    return images


def _opening(opening: str, question: str, n_images: int, profile: Profile) -> list[dict[str, Any]]:
    """The system prompt and first user turn of a long-CoT row with this `opening` (module docstring)."""
    if opening == "question":
        parts = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
        return [{"role": "system", "content": [{"type": "text", "text": load_prompts(tools=False).system}]},
                {"role": "user", "content": parts}]
    return profile.messages(question, n_images, tools=opening == "tools")


def long_cot_rows(
    cfg: LongCotConfig, tool_rows: int, profile: str = DEFAULT_PROFILE, limits: ImageLimits = ImageLimits(),
    files: set[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[dict[str, Any], str, str]]]:
    """Trajectory rows to add beside `tool_rows` tool-use trajectories, a report, and the source's
    unusable rows as `(row, reason, origin)` for the stage's quarantine: every row whose fields
    cannot be used, and every drawn row whose image cannot be (the next row is drawn in its place).
    `profile`: the protocol profile whose prompts an `opening` of `no_tools` or `tools` uses;
    `limits`: the image checks (curation's by default); `files`: a set the image files the drawn rows
    read (or looked for) are added to, for the flow's cache. The report's `warnings` says when no
    row of the source was usable (an empty or all-invalid file). Raises `LongCotError` for a source that
    cannot be read as rows at all."""
    source, unusable = load_long_cot(cfg)
    wanted = round(cfg.ratio * tool_rows / (1.0 - cfg.ratio)) if tool_rows else 0

    def order(row: LongCotRow) -> str:
        return hashlib.blake2b(f"{cfg.seed}:{row.sample_id}".encode(), digest_size=8).hexdigest()

    name = cfg.name or Path(cfg.path).stem
    loaded = load_profile(profile)  # once: every row of an opening other than `question` uses its prompts
    rows: list[dict[str, Any]] = []
    openings: Counter[str] = Counter()
    for row in sorted(source, key=order):
        if len(rows) == wanted:
            break
        try:
            images = _images(row, Path(cfg.path).parent, limits, files)
        except RowRejected as exc:
            unusable.append(({"id": row.sample_id, "question": row.question, "images": row.images}, f"long_cot_{exc}", row.origin))
            continue
        opening = cfg.opening_of(row.sample_id)
        openings[opening] += 1
        rows.append({
            "id": hashlib.blake2b(f"long-cot|{name}|{row.sample_id}".encode(), digest_size=12).hexdigest(),
            "sample_id": row.sample_id,
            "category": "long_cot",
            "policy": f"long-cot:{name}",
            "attempt": 0,
            "protocol_version": PROTOCOL_VERSION if opening == "question" else loaded.version,
            "messages": [
                *_opening(opening, row.question, len(images), loaded),
                {"role": "assistant", "content": [{"type": "text", "text": row.response}]},
            ],
            "images": [{"bytes": data, "path": None} for data in images],
            "tool_calls": [],
            "turns": 1,
            "turn_latency_ms": [],
            "completion_tokens": 0,
            "stop_reason": "answer",  # `verify` kept only responses that end in an answer, in format
            "final_answer": row.final_answer,
            "answer": row.answer,
            "correct": True,  # verified by `verify`: format, and the gold answer where the row has one
            "judge_method": row.judge_method,
            "judge_failed": False,
            "format_ok": True,
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
        "quarantined": len(unusable),
        "unverified": sum(r["judge_method"] == "unverified" for r in rows),  # kept: the rules could not compare answer and gold
        "opening": cfg.opening,
        "rows_by_opening": dict(sorted(openings.items())),
        "target_ratio": cfg.ratio,
        "achieved_ratio": round(len(rows) / total, 4) if total else 0.0,
        "short_by": max(0, wanted - len(rows)),
        "warnings": [],
    }
    world = cfg.path is not None and made_by_world(cfg.path)  # the generated world's file: its size is world.long_cot, not a file of the user's
    if report["short_by"]:
        report["fix"] = short_source_fix(cfg, wanted, world)
    if not rows and cfg.ratio > 0 and (wanted or not source):
        reasons = Counter(reason.split(":")[0] for _, reason, _ in unusable)
        why = ("it has no rows" if not unusable else f"all {len(unusable)} rows quarantined: "
               + ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3)))
        report["warnings"].append(f"{'world.long_cot' if world else 'synth.long_cot.path'}: no long-CoT row of {cfg.path} was usable "
                                  f"({why}); the cold-start set has no long-CoT rows (ratio {cfg.ratio} asked for)"
                                  + (f"; {short_source_fix(cfg, wanted, world)}" if wanted else ""))
    return rows, report, unusable


def short_source_fix(cfg: LongCotConfig, wanted: int, world: bool) -> str:
    """What to do about a long-CoT source with fewer usable rows than the `wanted` the ratio needs:
    for the generated world's file, its size (`world.long_cot`); else the file or the ratio."""
    if world:
        return f"raise world.long_cot to at least {wanted}"
    return f"add rows to {cfg.path} or lower synth.long_cot.ratio"
