"""What a wheel ships: every data file inside our packages (protocol profiles, prompts, benchmark
definitions, configs) is named by pyproject's package data, so a non-editable install finds it."""

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "synth", "train", "eval", "flows", "configs", "bench")


def _owner(file: Path) -> Path:
    """The deepest package (a folder with `__init__.py`) that holds `file`."""
    folder = file.parent
    while not (folder / "__init__.py").exists():
        folder = folder.parent
    return folder


def test_every_data_file_in_a_package_ships_in_the_wheel():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    data_files = [f for p in PACKAGES for f in (ROOT / p).rglob("*")
                  if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts]
    assert any(f.suffix == ".yaml" for f in data_files)  # the check looks where the data is
    missing = []
    for file in data_files:
        package = _owner(file)
        name = ".".join(package.relative_to(ROOT).parts)
        shipped = {Path(package / match) for pattern in package_data.get(name, [])
                   for match in glob.glob(pattern, root_dir=package, recursive=True)}  # as setuptools globs them
        if file not in shipped:
            missing.append(f"{file.relative_to(ROOT)} (package {name})")
    assert missing == [], "not in [tool.setuptools.package-data]: " + ", ".join(missing)
