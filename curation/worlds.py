"""The built-in demo worlds, by name: `classic` (`curation/demo_world.py`: tiny type to crop, charts to
read, landmarks to look up; beyond a tiny model, so it tests the plumbing) and `learnable`
(`curation/learnable_world.py`: the protocol plus copying and fixed programs, which a tiny model
learns on a CPU, so the demo shows learning)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
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


WRITING = ".writing-"  # `.<OUT's name>.writing-<pid>-<random>`: the sibling folder a world is written into before it is moved into place


def generate(kind: WorldKind, out_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the world `kind` with `settings` (its config's fields) into `out_dir`, in place of any
    world there (`clear_world`); return its summary.

    The world is written into a temporary sibling folder and moved into `out_dir` only once it is
    whole (`world.json` last): an interrupt or failure part-way removes that folder and leaves
    `out_dir` as it was (an earlier world there intact), so the same command can run again."""
    out = Path(os.path.abspath(out_dir))  # `.` has no name to put beside it
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{WRITING}{os.getpid()}-", dir=out.parent))
    try:
        if kind == "learnable":
            summary = learnable_world.generate_learnable_world(staging, learnable_world.LearnableWorldConfig(**settings))
        else:
            summary = demo_world.generate_world(staging, demo_world.WorldConfig(**settings))
        summary.update(world_files(kind, out_dir))  # the files' paths where they will be (as given), not in the staging folder
        (staging / WORLD_RECORD).write_text(json.dumps(summary, indent=2) + "\n")
        with _stop_signals_held():  # the move is a few renames: a Ctrl-C waits for it rather than splitting two worlds
            _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _move_into_place(staging: Path, out: Path) -> None:
    """Make the whole world in `staging` the world of `out`: one rename where `out` is absent;
    otherwise (a folder that is there stays that folder: it may be a shell's current one) the
    earlier world's files are removed (`clear_world`; other files stay) and the new world's moved
    in, replacing files and folders of the same names, `world.json` last."""
    if not out.exists():
        os.replace(staging, out)
        return
    clear_world(out)
    for entry in sorted(staging.iterdir(), key=lambda path: path.name == WORLD_RECORD):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():  # a world's image folder an older, unfinished world left (a run's world)
            shutil.rmtree(target)
        os.replace(entry, target)


def _remove_abandoned(out: Path) -> None:
    """Remove staging folders of `out` that a killed process left (its pid no longer runs): an
    interrupt removes its own, a SIGKILL cannot."""
    prefix = f".{out.name}{WRITING}"
    for folder in out.parent.glob(f"{prefix}*"):
        pid = folder.name.removeprefix(prefix).split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        return True
    return True


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """A SIGINT or SIGTERM that arrives within the block is handled (as the handler before it says)
    when the block ends. In the main thread only, where Python runs signal handlers (a signal mask
    would not do: the kernel hands a process's signal to any thread that does not block it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    before = {signum: signal.signal(signum, lambda signum, frame: received.append((signum, frame)))
              for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if received:
            signum, frame = received[0]
            handler = before[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def world_files(kind: WorldKind, out_dir: str | Path) -> dict[str, str]:
    """The files the world `kind` in `out_dir` consists of (the learnable one adds `instruct_path`)."""
    return (learnable_world.world_files if kind == "learnable" else demo_world.world_files)(out_dir)
