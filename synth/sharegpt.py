"""LLaMA-Factory `sharegpt` conversations (DeepEyesV2's released cold-start data) as trajectories.

The layout (LLaMA-Factory's `dataset_info.json` with `"formatting": "sharegpt"`; DeepEyesV2's
`cold_start/data/dataset_info.json`): each row holds a list of messages (`columns.messages`,
default `conversations`) whose role and text sit under `tags.role_tag` / `tags.content_tag`
(default `from` / `value`; DeepEyesV2: `role` / `content` with `user`, `assistant`, `system`),
and a list of images (`columns.images`). Every `<image>` marker, in any message and any role,
takes the next image: the input image first, then the plots and search thumbnails in the
observation turns. Tool calls are inline in the assistant's text; observations are the next user
turn (or LLaMA-Factory's `observation` role). Rows without images (long chains of thought) exist.

`import_sharegpt` turns each row into a `Trajectory` row (`synth.trajectory`): TRL messages whose
`{"type": "image"}` parts stand exactly where the markers stood, `images` in that order, so TRL's
`SFTTrainer` puts each image's tokens in its own turn and no `<image>` text is left; and into a
sample (question, the first turn's images, the final answer) for `deepeyes curate`. With
`layout: ours`, the system prompt, the user turn and every observation are rewritten from the
data's profile (the reference's) into ours (`synth.runtime.profile`); with `keep`, they stay as they are.
Each trajectory records the profile it follows in `protocol_version`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from curation.chat import count_markers, split_markers, split_question
from curation.images import ImageLimits, ImageRejected, validate_image
from curation.mapping import RowRejected
from curation.schema import Category, content_id
from curation.shards import Quarantine, ShardWriter, atomic_write_json
from curation.sources import SourceError, SourceSpec, read_image_ref, read_source
from curation.strict_config import StrictConfig
from curation.suggest import did_you_mean
from synth.runtime.agent import trajectory_id
from synth.runtime.profile import DEFAULT_PROFILE, IMAGE_SLOT, Profile, load_profile, parts_text, to_parts
from synth.runtime.protocol import check_response, extract_answer, parse_turn
from synth.trajectory import TRAJECTORY_SCHEMA

SAMPLES_FILE = "samples.jsonl"
TRAJECTORIES_DIR = "trajectories"


class ShareGPTFormat(StrictConfig):
    """Where a row keeps its messages and images, and how roles are named: LLaMA-Factory's
    `columns` and `tags` of a `sharegpt` dataset. None: the row's own layout, found per row
    (`messages` with `role`/`content`, else LLaMA-Factory's default `conversations` with `from`/`value`)."""

    messages: str | None = None
    images: str = "images"
    system: str | None = None  # a column that holds the system prompt
    role_tag: str | None = None
    content_tag: str | None = None
    user_tag: str | None = None
    assistant_tag: str | None = None
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"

    def resolved(self, row: dict[str, Any]) -> tuple[str, str, str, str, str]:
        """(messages column, role tag, content tag, user tag, assistant tag) for this row."""
        column = self.messages or ("messages" if "messages" in row else "conversations")
        openai_style = column == "messages" if self.messages is None else self.role_tag in (None, "role")
        return (column, self.role_tag or ("role" if openai_style else "from"), self.content_tag or ("content" if openai_style else "value"),
                self.user_tag or ("user" if openai_style else "human"), self.assistant_tag or ("assistant" if openai_style else "gpt"))


class ImportConfig(StrictConfig):
    """`deepeyes import sharegpt` settings."""

    format: ShareGPTFormat = Field(default_factory=ShareGPTFormat)
    layout: Literal["keep", "ours"] = "keep"  # keep the data's prompts and observations, or rewrite them into ours
    data_profile: str = "deepeyesv2-reference"  # the profile the data follows (the released data: the reference's)
    target_profile: str = DEFAULT_PROFILE  # what `layout: ours` rewrites into
    image_root: str | None = None  # relative image paths start here (LLaMA-Factory's media_dir); None: the file's folder
    category: Category = "perception"  # rows whose tool use does not decide (a search call: search; no image: reasoning)
    policy: str = "sharegpt-import"  # the trajectories' `policy` column (which model made them)
    name: str | None = None  # the samples' `source`; None: the file's stem

    @field_validator("data_profile", "target_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        load_profile(value)  # a ProfileError (a ValueError) names the profiles there are
        return value


# LLaMA-Factory's defaults for a sharegpt dataset's `tags` (its data/README.md, `dataset_info.json`
# format): what an entry that gives no `tags`, or only some, means.
LLAMA_FACTORY_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                      "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


def dataset_info_entries(path: str | Path, names: list[str] | None = None) -> list[tuple[Path, ShareGPTFormat, str]]:
    """(data file, format, dataset name) for the `sharegpt` datasets of a LLaMA-Factory
    `dataset_info.json` (all of them, or those in `names`); files relative to its folder.
    Tags an entry leaves out take LLaMA-Factory's defaults (`LLAMA_FACTORY_TAGS`: from/value,
    human/gpt/observation/function_call/system). Tolerates the trailing commas some hand-edited
    files have. Raises `SourceError`."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        info = json.loads(text)
    except ValueError:
        try:
            info = yaml.safe_load(text)  # JSON with trailing commas reads as YAML
        except yaml.YAMLError as exc:
            raise SourceError(f"{path}: neither JSON nor readable as YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(info, dict):
        raise SourceError(f"{path}: expected an object of datasets")
    unknown = sorted(set(names or []) - set(info))
    if unknown:
        raise SourceError(f"{path}: no dataset named {', '.join(unknown)}{did_you_mean(unknown[0], info)} "
                          f"(there are: {', '.join(sorted(info))})")
    entries = []
    for name, entry in info.items():
        if names and name not in names:
            continue
        if not isinstance(entry, dict) or entry.get("formatting", "alpaca") != "sharegpt" or "file_name" not in entry:
            if names:
                raise SourceError(f"{path}: dataset {name!r} is not a sharegpt dataset with a file_name")
            continue
        columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
        if not isinstance(columns, dict) or not isinstance(tags, dict):
            raise SourceError(f"{path}: dataset {name!r}: `columns` and `tags` must be objects")
        # A registry entry is LLaMA-Factory's: a tag it leaves out takes LLaMA-Factory's default
        # (not the per-row guess used for bare files), whatever the messages column is called.
        fmt = ShareGPTFormat(messages=columns.get("messages", "conversations"), images=columns.get("images", "images"),
                             system=columns.get("system"),
                             **{**LLAMA_FACTORY_TAGS, **{k: v for k, v in tags.items() if k in ShareGPTFormat.model_fields}})
        entries.append((path.parent / entry["file_name"], fmt, name))
    if not entries:
        raise SourceError(f"{path}: no sharegpt dataset in it")
    return entries


# ---------------------------------------------------------------------------------------------
# One row.


def _role(raw: str, fmt: ShareGPTFormat, user: str, assistant: str) -> tuple[str, bool]:
    """(our role, whether it is an observation) of a message's role tag; raises RowRejected."""
    if raw == user:
        return "user", False
    if raw == assistant:
        return "assistant", False
    if raw == fmt.system_tag:
        return "system", False
    if raw == fmt.observation_tag:
        return "user", True
    if raw == fmt.function_tag:
        return "assistant", False
    raise RowRejected(f"invalid_role: {str(raw)[:40]!r} is none of {user}, {assistant}, {fmt.system_tag}, "
                      f"{fmt.observation_tag}, {fmt.function_tag} (set the format's tags)")


def conversation(row: dict[str, Any], fmt: ShareGPTFormat) -> list[tuple[str, str]]:
    """The row's messages as (our role, text with `<image>` markers); raises RowRejected."""
    column, role_tag, content_tag, user, assistant = fmt.resolved(row)
    messages = row.get(column)
    if not isinstance(messages, list) or not messages:
        raise RowRejected(f"invalid_messages: no list of messages in `{column}` (set the format's `messages` column)")
    turns: list[tuple[str, str]] = []
    if fmt.system and isinstance(row.get(fmt.system), str) and row[fmt.system].strip():
        turns.append(("system", row[fmt.system]))
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowRejected(f"invalid_messages: message {n} is a {type(message).__name__}, not an object")
        content = message.get(content_tag)
        if not isinstance(content, str):
            raise RowRejected(f"invalid_messages: message {n} has no text under `{content_tag}`")
        role, _ = _role(message.get(role_tag), fmt, user, assistant)
        if message.get(role_tag) == fmt.function_tag and "<tool_call>" not in content:
            content = f"<tool_call>\n{content}\n</tool_call>"  # LLaMA-Factory's function role holds the call's JSON
        turns.append((role, content))
    if not any(role == "assistant" for role, _ in turns):
        raise RowRejected("invalid_messages: no assistant message")
    if next(role for role, _ in turns if role != "system") != "user":
        raise RowRejected("invalid_messages: the first message after the system prompt is not the user's")
    return turns


def _images(row: dict[str, Any], fmt: ShareGPTFormat, turns: list[tuple[str, str]], base_dir: Path, limits: ImageLimits,
            files: set[str]) -> list[bytes]:
    """The row's images, validated, after checking there is one per `<image>` marker."""
    refs = row.get(fmt.images)
    refs = [] if refs is None else refs if isinstance(refs, list) else [refs]
    markers = sum(count_markers(text) for _, text in turns)
    if markers != len(refs):
        raise RowRejected(f"image_count_mismatch: {markers} <image> marker(s) in the messages and {len(refs)} image(s) "
                          "(each marker takes the next image)")
    images = []
    for ref in refs:
        data, path = read_image_ref(ref, base_dir, files)
        try:
            images.append(validate_image(data, limits, path))
        except ImageRejected as exc:
            raise RowRejected(str(exc)) from None
    return images


def _parts(text: str) -> list[dict[str, Any]]:
    return [{"type": "image"} if piece is None else {"type": "text", "text": piece} for piece in split_markers(text)]


def _uses_tools(turns: list[tuple[str, str]]) -> bool:
    return any(role == "assistant" and ("<code>" in text or "<tool_call>" in text) for role, text in turns)


def _rewrite(turns: list[tuple[str, str]], source: Profile, target: Profile) -> list[tuple[str, list[dict[str, Any]]]]:
    """The conversation in `target`'s layout: its system prompt and user turn around the row's
    question, each observation read under `source` and rendered in `target` (the same images in
    the same order). Raises RowRejected for an observation `source` cannot read."""
    tools = _uses_tools(turns) or any(role == "system" and text.strip() == source.system for role, text in turns)
    first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
    question, _ = split_question(turns[first_user][1])
    out = [("system", [{"type": "text", "text": target.system_prompt(tools)}]),
           ("user", target.user_parts(question, count_markers(turns[first_user][1]), tools))]
    number = 0
    for role, text in turns[first_user + 1:]:
        if role == "system":
            continue
        if role == "assistant":
            out.append((role, _parts(text)))
            continue
        number += 1
        parsed = source.parse_observation(text.replace("<image>", IMAGE_SLOT))
        if parsed is None:
            raise RowRejected(f"observation_unparsed: observation {number} does not follow the layout of {source.version} "
                              "(import it with layout: keep, or name the profile it follows)")
        rendered = target.render_parsed(parsed)
        if rendered.count(IMAGE_SLOT) != count_markers(text):
            raise RowRejected(f"observation_unparsed: observation {number}: {count_markers(text)} image(s) become "
                              f"{rendered.count(IMAGE_SLOT)} in {target.version}'s layout")
        out.append(("user", to_parts(rendered)))
    return out


def _tool_calls(messages: list[dict[str, Any]], profile: Profile | None) -> list[dict[str, Any]]:
    """Each assistant turn's tool call, with the images its observation (the next user turn) holds."""
    calls = []
    assistant_turn = -1
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        assistant_turn += 1
        action = parse_turn(parts_text(message["content"]).replace(IMAGE_SLOT, ""))
        following = messages[k + 1] if k + 1 < len(messages) and messages[k + 1]["role"] == "user" else None
        if action.kind in ("answer", "none") or following is None:
            continue
        observation = parts_text(following["content"])
        parsed = profile.parse_observation(observation) if profile is not None else None
        outcome = "ok"
        if parsed is not None and parsed.kind == "error":
            outcome = "error"
        elif parsed is not None and parsed.kind == "code" and "Traceback" in parsed.stderr:
            outcome = "code_error"
        tool = {"code": "python", "tool_error": "invalid"}.get(action.kind, action.kind)
        calls.append({"turn": assistant_turn, "tool": tool, "outcome": outcome, "latency_ms": None,
                      "images": observation.count(IMAGE_SLOT)})
    return calls


def import_row(row: dict[str, Any], cfg: ImportConfig, base_dir: Path, source_name: str, limits: ImageLimits | None = None,
               files: set[str] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """(trajectory row, sample row or None, why there is no sample) of one sharegpt row.
    Raises RowRejected with the quarantine reason when the row cannot be a trajectory."""
    turns = conversation(row, cfg.format)
    images = _images(row, cfg.format, turns, base_dir, limits or ImageLimits(), files if files is not None else set())
    data_profile = load_profile(cfg.data_profile)
    if cfg.layout == "ours":
        target = load_profile(cfg.target_profile)
        messages = [{"role": role, "content": parts} for role, parts in _rewrite(turns, data_profile, target)]
        version, profile = target.version, target
    else:
        messages = [{"role": role, "content": _parts(text)} for role, text in turns]
        version, profile = data_profile.version, data_profile
    first_user = next(m for m in messages if m["role"] == "user")
    first_text = parts_text(first_user["content"])
    question, _ = split_question(first_text.replace(IMAGE_SLOT, ""))
    inputs = images[: first_text.count(IMAGE_SLOT)]
    assistant = [parts_text(m["content"]).replace(IMAGE_SLOT, "") for m in messages if m["role"] == "assistant"]
    final = extract_answer(assistant[-1])
    tool_calls = _tool_calls(messages, profile)
    category = ("search" if any(c["tool"] in ("search", "image_search") for c in tool_calls)
                else "reasoning" if not images else cfg.category)
    sample_id = content_id(question, inputs)
    check = check_response(assistant, category)
    trajectory = {
        "id": trajectory_id(sample_id, cfg.policy, 0, version), "sample_id": sample_id, "category": category,
        "policy": cfg.policy, "attempt": 0, "protocol_version": version, "messages": messages,
        "images": [{"bytes": data, "path": None} for data in images], "tool_calls": tool_calls, "turns": len(assistant),
        "turn_latency_ms": [], "completion_tokens": None, "stop_reason": "answer" if final is not None else "no_action",
        "final_answer": final, "answer": final, "correct": None, "judge_method": None, "judge_failed": None,
        "format_ok": check.format_ok, "reward": None, "accuracy_reward": None, "format_reward": None, "search_penalty": None,
        "reject_reason": None, "latency_ms": None,
    }
    if not question:
        return trajectory, None, "missing_question: the first user turn has no text"
    if not final:
        return trajectory, None, "missing_answer: the last assistant turn has no <answer> after its </think>"
    sample = {"id": sample_id, "question": question, "answer": final, "category": category,
              "images": [base64.b64encode(data).decode() for data in inputs],
              "meta": {"imported_from": source_name, "trajectory_id": trajectory["id"], "protocol_version": version}}
    return trajectory, sample, None


# ---------------------------------------------------------------------------------------------
# Files.


def _rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """The rows of a JSON array or JSON Lines file (curation's reader: a bad line is a row with a
    `__parse_error__`)."""
    yield from read_source(SourceSpec(kind="json", path=str(path), name=path.stem))


def import_sharegpt(files: list[tuple[Path, ShareGPTFormat | None]], out_dir: str | Path, cfg: ImportConfig,
                    keep_samples: set[str] | None = None, keep_from: str = "the kept samples") -> dict[str, Any]:
    """Import sharegpt files into `out_dir`: `trajectories/` (Trajectory shards, a manifest and a
    `quarantine/` of rows that cannot be trajectories, each with its reason) and `samples.jsonl`
    (one sample per trajectory with a question and a final answer, images as base64, `id` the
    trajectory's `sample_id`; what `deepeyes curate --source jsonl:...` reads), and
    `samples_quarantine.jsonl` for trajectories without a sample. With `keep_samples`, only the
    trajectories of those sample ids are written (the ones that survived curation; `keep_from`
    names where they came from, e.g. `--curated DIR`). Returns counts, and `warnings` naming a
    file without rows beside files with rows.

    Raises `SourceError`, in one line:
    - before anything is written (no `out_dir` made, an earlier import there untouched): a file that
      is missing, and files that hold no rows at all (an empty file, an empty JSON array), named;
    - for a file that is not rows at all (mid-import, as curation's reader finds it);
    - after writing the quarantine and `import.json` (no trajectory shards, manifest or
      `samples.jsonl`: nothing a later stage would take for data) when no row was kept: every row
      quarantined (`all N rows were quarantined, ...`, the most common reason), or none kept for
      any mix of reasons (`no row of N was kept: ...`, the most common first)."""
    started = time.time()
    out_dir = Path(out_dir)
    for path, _ in files:  # before anything is written
        if path.is_dir():
            raise SourceError(f"{path}: is a folder; a sharegpt file is one JSON or JSON Lines file")
        if not path.is_file():
            raise SourceError(f"{path}: file not found")
    counts = {"rows": 0, "trajectories": 0, "quarantined": 0, "samples": 0, "without_sample": 0, "not_kept": 0}
    by_version: dict[str, int] = {}
    read_files: set[str] = set()
    first_reason: dict[str, str] = {}  # reason key -> its first row's full reason (for the error when all fail)
    rows_by_file: dict[Path, int] = {}
    samples_tmp = out_dir / f".{SAMPLES_FILE}.tmp"
    rejected_tmp = out_dir / ".samples_quarantine.jsonl.tmp"
    outputs: tuple[ShardWriter, Quarantine, Any, Any] | None = None  # opened at the first row: no rows, nothing written
    with ExitStack() as stack:
        for path, fmt in files:
            file_cfg = cfg.model_copy(update={"format": fmt}) if fmt is not None else cfg
            base_dir = Path(cfg.image_root) if cfg.image_root else path.parent
            name = cfg.name or path.stem
            rows_by_file[path] = 0
            for row, origin in _rows(path):
                if outputs is None:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    outputs = (ShardWriter(out_dir / TRAJECTORIES_DIR, TRAJECTORY_SCHEMA), Quarantine(out_dir / TRAJECTORIES_DIR, "import"),
                               stack.enter_context(open(samples_tmp, "w")), stack.enter_context(open(rejected_tmp, "w")))
                writer, quarantine, samples, no_sample = outputs
                counts["rows"] += 1
                rows_by_file[path] += 1
                try:
                    if "__parse_error__" in row:
                        raise RowRejected(row["__parse_error__"])
                    trajectory, sample, why = import_row(row, file_cfg, base_dir, name, files=read_files)
                except RowRejected as exc:
                    quarantine.add(row, str(exc), origin)
                    first_reason.setdefault(str(exc).split(":", 1)[0], f"{origin}: {exc}")
                    counts["quarantined"] += 1
                    continue
                if keep_samples is not None and trajectory["sample_id"] not in keep_samples:
                    counts["not_kept"] += 1
                    continue
                writer.write(trajectory)
                counts["trajectories"] += 1
                by_version[trajectory["protocol_version"]] = by_version.get(trajectory["protocol_version"], 0) + 1
                if sample is None:
                    no_sample.write(json.dumps({"origin": origin, "trajectory_id": trajectory["id"], "reason": why}) + "\n")
                    counts["without_sample"] += 1
                else:
                    samples.write(json.dumps({**sample, "meta": {**sample["meta"], "origin": origin}}) + "\n")
                    counts["samples"] += 1
    empty = [path for path, n in rows_by_file.items() if n == 0]
    if outputs is None:  # not one row in any file: nothing was written
        raise SourceError("; ".join(f"{path}: no rows" for path in empty) + ": nothing to import (an empty file, or an empty JSON array)")
    writer, quarantine, _, _ = outputs
    quarantine.close()
    summary = {"counts": counts, "protocol_versions": by_version, "reasons": quarantine.reasons,
               "trajectories": str(out_dir / TRAJECTORIES_DIR), "samples": str(out_dir / SAMPLES_FILE),
               "seconds": round(time.time() - started, 3)}
    if empty:
        summary["warnings"] = [f"{path}: no rows" for path in empty]
    if counts["trajectories"] == 0:
        # Nothing kept: a wrong format (columns, tags, image root) or the wrong --curated, not data to drop
        # quietly. The quarantine and import.json say why row by row; no dataset a later stage would train on.
        for tmp in (samples_tmp, rejected_tmp, out_dir / SAMPLES_FILE, out_dir / "samples_quarantine.jsonl"):
            tmp.unlink(missing_ok=True)
        summary.update(trajectories=None, samples=None)
        atomic_write_json(out_dir / "import.json", summary)
        raise SourceError(_nothing_kept(counts, quarantine.reasons, first_reason, keep_samples, keep_from, out_dir))
    writer.manifest_extra.update({"stage": "import", "config": cfg.model_dump(mode="json"), "counts": counts,
                                  "protocol_versions": by_version, "source_files": [str(p) for p, _ in files]})
    writer.close()
    samples_tmp.replace(out_dir / SAMPLES_FILE)
    rejected_tmp.replace(out_dir / "samples_quarantine.jsonl")
    atomic_write_json(out_dir / "import.json", summary)
    return summary


def _nothing_kept(counts: dict[str, int], reasons: dict[str, int], first_reason: dict[str, str], keep_samples: set[str] | None,
                  keep_from: str, out_dir: Path) -> str:
    """Why an import kept no row, in one line: how many rows, the most common reason first (with its
    first row), and what to check."""
    quarantine_dir = out_dir / TRAJECTORIES_DIR / "quarantine"
    if counts["quarantined"] == counts["rows"]:
        reason, count = max(reasons.items(), key=lambda kv: kv[1])
        return (f"all {counts['rows']} rows were quarantined, {count} for {reason} (first: {first_reason[reason]}); "
                f"check the format's columns and tags (dataset_info.json) or --image-root; each row's reason is in {quarantine_dir}")
    kept = len(keep_samples or ())
    not_kept = (f"{counts['not_kept']} not among the {kept} sample{'' if kept == 1 else 's'} {keep_from} keeps for training "
                "(is it the curate output of this data's samples.jsonl?)" if kept else
                f"{counts['not_kept']} not kept: {keep_from} holds no sample outside the eval pool (training never takes those)")
    causes = [(counts["not_kept"], not_kept)]
    causes += [(count, f"{count} quarantined for {reason} (first: {first_reason[reason]})") for reason, count in reasons.items()]
    causes.sort(key=lambda cause: -cause[0])
    more = f"; each quarantined row's reason is in {quarantine_dir}" if counts["quarantined"] else ""
    return f"no row of {counts['rows']} was kept: " + ", ".join(text for _, text in causes) + more
