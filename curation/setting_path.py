"""`SettingPath`: the type of a config setting that names a file or folder. A `Path` that refuses
an empty (or blank) text, which pydantic would read as `Path('')`, the working directory: a
`long_cot: {path: ''}` would be read as `.` and refused as "a folder, not a file: .", a
`runs_dir: ''` would write runs into the working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty (leave the setting out for its default)")
    return value


SettingPath = Annotated[Path, BeforeValidator(_not_empty)]
