"""The built-in demo worlds, by name: `classic` (`curation/demo_world.py`: tiny type to crop, charts to
read, landmarks to look up; beyond a tiny model, so it tests the plumbing) and `learnable`
(`curation/learnable_world.py`: the protocol plus copying and fixed programs, which a tiny model
learns on a CPU, so the demo shows learning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from curation import demo_world, learnable_world

WorldKind = Literal["classic", "learnable"]


def generate(kind: WorldKind, out_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the world `kind` with `settings` (its config's fields) into `out_dir`; return its summary."""
    if kind == "learnable":
        return learnable_world.generate_learnable_world(out_dir, learnable_world.LearnableWorldConfig(**settings))
    return demo_world.generate_world(out_dir, demo_world.WorldConfig(**settings))


def world_files(kind: WorldKind, out_dir: str | Path) -> dict[str, str]:
    """The files the world `kind` in `out_dir` consists of (the learnable one adds `instruct_path`)."""
    return (learnable_world.world_files if kind == "learnable" else demo_world.world_files)(out_dir)
