"""verl's RL parquet layout as source rows (the `verl` source kind).

DeepEyesV2 released its RL data as verl parquet files (`perception_all_*.parquet`,
`reason.parquet`, `search.parquet`); the columns its trainer reads
(`reinforcement_learning/verl/utils/dataset/rl_dataset.py`, `reward_score/__init__.py`, the agent
environment) are:

- `data_source`: `perception` | `reason` | `search`, which picks the reward function (here: our
  category; `reason` is our `reasoning`);
- `prompt`: the chat messages (system, user) with an `<image>` marker where each image goes;
- `images`: the images as `[{bytes, path}]`, one per marker, in order;
- `reward_model.ground_truth`: the answer;
- `extra_info.question` (the bare question the judge sees) and `extra_info.index` (the row's key,
  also the search cache's);
- `env_name`: the agent environment (`deepeyes_v2`).

Each row becomes the generic fields (`question`, `answer`, `images`, `category`, `meta`) that
`curation.mapping.FieldMapping` reads; a source's own `fields` (dotted paths into the row) win.
A row whose prompt's `<image>` markers do not number its images is quarantined
(`image_count_mismatch`), as verl would fail on it.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curation.chat import count_markers, message_text, split_question
from curation.mapping import lookup

# Our field -> where verl keeps it; and its data sources that are not our category names.
VERL_FIELDS = {"question": "extra_info.question", "answer": "reward_model.ground_truth", "images": "images",
               "category": "data_source"}
VERL_CATEGORY_MAP = {"reason": "reasoning"}


def verl_files(path: str) -> list[Path]:
    """The parquet files a `verl` source names: a file, a folder (its `*.parquet`), or a glob."""
    candidate = Path(path)
    if candidate.is_file():
        return [candidate]
    if candidate.is_dir():
        return sorted(candidate.glob("*.parquet"))
    return sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())


def _jsonable(value: Any) -> Any:
    """`value` with what JSON cannot hold (bytes, NaN-free numbers aside) left out."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value if not isinstance(v, (bytes, bytearray))]
    return value


def prompt_question(prompt: Any) -> str:
    """The question of a verl `prompt` (a list of chat messages, or a JSON string of one): the last
    user message's text without its `<image>` markers and format instruction; "" when none."""
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except (ValueError, RecursionError):
            return ""
    if not isinstance(prompt, list):
        return ""
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return split_question(message_text(users[-1].get("content")))[0] if users else ""


def prompt_markers(prompt: Any) -> int | None:
    """The `<image>` markers over all of a prompt's messages; None when the prompt is not a list of messages."""
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except (ValueError, RecursionError):
            return None
    if not isinstance(prompt, list):
        return None
    return sum(count_markers(message_text(m.get("content"))) for m in prompt if isinstance(m, dict))


def verl_generic(raw: dict[str, Any]) -> dict[str, Any] | str:
    """The generic fields of one verl row, or the quarantine reason when its images and markers disagree."""
    images = raw.get("images")
    images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
    markers = prompt_markers(raw.get("prompt"))
    if markers is not None and markers != len(images):
        return (f"image_count_mismatch: the prompt has {markers} <image> marker(s) and the row {len(images)} image(s) "
                "(each marker takes the next image)")
    question = lookup(raw, VERL_FIELDS["question"])
    if question is None or (isinstance(question, str) and not question.strip()):
        question = prompt_question(raw.get("prompt"))
    extra = raw.get("extra_info") if isinstance(raw.get("extra_info"), dict) else {}
    meta = {key: raw[key] for key in ("data_source", "env_name", "ability") if raw.get(key) is not None}
    meta.update({k: v for k, v in extra.items() if k != "question"})
    return {"question": question, "answer": lookup(raw, VERL_FIELDS["answer"]), "images": images,
            "category": raw.get("data_source"), "meta": _jsonable(meta)}


def verl_rows(path: str, mapped_columns: set[str]) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, origin) for every row of the parquet files at `path`: the raw columns plus the generic
    fields (`verl_generic`), except where a source maps one of our fields to that very column name
    (`mapped_columns`). A row that cannot be used is `{"__parse_error__": reason}`."""
    import pyarrow.parquet as pq

    for file in verl_files(path):
        index = 0
        try:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=64):
                for raw in batch.to_pylist():
                    origin = f"{file}[{index}]"
                    index += 1
                    generic = verl_generic(raw)
                    if isinstance(generic, str):
                        yield {"__parse_error__": generic}, origin
                        continue
                    yield {**raw, **{k: v for k, v in generic.items() if k not in mapped_columns}}, origin
        except (OSError, ValueError) as exc:  # pyarrow's errors for a file that is not (whole) parquet derive from these
            # One broken file of a folder or glob is that file's problem: named, quarantined, the others read.
            where = f"from row {index} on" if index else "the whole file"
            yield ({"__parse_error__": f"invalid_parquet: {file}: cannot be read as parquet ({where}): {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''}"}, f"{file}[{index}]")
