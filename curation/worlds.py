"""The built-in demo worlds, by name: `classic` (`curation/demo_world.py`: tiny type to crop, charts to
read, landmarks to look up; beyond a tiny model, so it tests the plumbing) and `learnable`
(`curation/learnable_world.py`: the protocol plus copying and fixed programs, which a tiny model
learns on a CPU, so the demo shows learning)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from curation import demo_world, learnable_world

WorldKind = Literal["classic", "learnable"]


WORLD_RECORD = "world.json"  # written last by either world: a folder with it holds a world
WORLD_FOLDERS = ("images", "image_corpus")  # the worlds' own image folders, named after their samples (`demo-perception-0001.png`)


class WorldFolderError(ValueError):
    """A world's output folder that holds something else; the message names it."""


def holds_world(out_dir: str | Path) -> bool:
    """Whether `out_dir` holds a world either generator wrote: a `world.json` that is a world's
    record (a JSON object with its `seed` and `samples_path`), not merely a file of that name."""
    try:
        record = json.loads((Path(out_dir) / WORLD_RECORD).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and "seed" in record and "samples_path" in record


def made_by_world(path: str | Path) -> bool:
    """Whether the file `path` is a generated world's own `long_cot.jsonl` (its folder holds a
    world whose record names it): its row count is the config's `world.long_cot`, so a message about
    too few rows names that setting rather than the file."""
    folder = Path(path).parent
    if not holds_world(folder):
        return False
    record = json.loads((folder / WORLD_RECORD).read_text())
    return Path(str(record.get("long_cot_path", ""))).resolve() == Path(path).resolve()


def check_world_folder(out_dir: str | Path, option: str = "OUT") -> None:
    """Refuse an `out_dir` that holds files but no world (`holds_world`): writing a world replaces
    an old world's files, and never mixes into, or deletes, a folder of other files. Raises
    `WorldFolderError` naming `option`."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not holds_world(out):
        raise WorldFolderError(f"{option} {out}: a folder that is not empty and holds no world (no world's {WORLD_RECORD}); give a new "
                               "or empty folder, or an earlier world's folder to replace that world")


def clear_world(out_dir: str | Path) -> None:
    """Remove an earlier world's files from `out_dir` (its image folders, its JSON Lines files and
    `world.json`), so the world written next is the folder's whole world: a smaller one leaves no
    images of the bigger one behind. Other files in the folder (a pipeline stage's manifest) stay,
    and a folder that holds no world (`holds_world`) is left as it is."""
    out = Path(out_dir)
    if not holds_world(out):
        return
    for name in WORLD_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for kind in ("classic", "learnable"):
        for path in world_files(kind, out).values():
            Path(path).unlink(missing_ok=True)
    (out / WORLD_RECORD).unlink(missing_ok=True)


def generate(kind: WorldKind, out_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the world `kind` with `settings` (its config's fields) into `out_dir`, in place of any
    world there (`clear_world`); return its summary."""
    clear_world(out_dir)
    if kind == "learnable":
        return learnable_world.generate_learnable_world(out_dir, learnable_world.LearnableWorldConfig(**settings))
    return demo_world.generate_world(out_dir, demo_world.WorldConfig(**settings))


def world_files(kind: WorldKind, out_dir: str | Path) -> dict[str, str]:
    """The files the world `kind` in `out_dir` consists of (the learnable one adds `instruct_path`)."""
    return (learnable_world.world_files if kind == "learnable" else demo_world.world_files)(out_dir)
