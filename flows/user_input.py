"""Files and paths a user names on the command line or in a config, checked before any work: text
files that must be UTF-8 (a binary or UTF-16 file is named, not a traceback), YAML mappings without
duplicate keys (PyYAML would keep the last one silently), booleans where a config wants a number
(pydantic reads `true` as 1), and output directories that must be directories.

Each check raises `InputFileError` with a one-line message naming the file (and line) or option.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel

from curation.sources import wide_encoding


class InputFileError(ValueError):
    """A file or path the user gave that cannot be used as given; the message names it and the fix."""


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path` (a UTF-8 byte-order mark dropped). Raises `InputFileError` for a
    file that is missing, not a file, unreadable, UTF-16/32 text, or not text at all."""
    path = Path(path)
    if not path.is_file():
        # /dev/null or a pipe exists: "not found" would send the user looking for a file that is there.
        said = ("is a directory, not a file" if path.is_dir() else
                "is not a regular file (a device, pipe or socket)" if path.exists() else "not found")
        raise InputFileError(f"{what} {said}: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None
    encoding = wide_encoding(path)
    if encoding:
        raise InputFileError(f"{what} {path} is {encoding} text: save it as UTF-8")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                             "is it a binary file?") from None


def check_out_dir(path: Path | None, option: str) -> Path | None:
    """`path` when it can be an output directory (absent, or a directory, under folders only);
    `InputFileError` naming `option` when it, or a path above it, is a file (or anything else that is
    not a directory): `mkdir` would fail there half-way through a run."""
    if path is None:
        return path
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{option} {path}: a file is there; an output directory is needed (give a new or existing folder)")
    for above in Path(path).absolute().parents:
        if above.exists():
            if not above.is_dir():
                raise InputFileError(f"{option} {path}: {above} is a file, so no folder can be made under it (give a path under a folder)")
            break
    return path


def out_dir_option(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A typer callback for an output-directory option or argument (`callback=out_dir_option`):
    `check_out_dir` with the option's name."""
    name = param.opts[0] if param.opts and param.opts[0].startswith("-") else (param.name or "").upper()
    return check_out_dir(value, name)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a mapping with the same key twice (PyYAML keeps the last
    one without a word; YAML 1.2 says keys are unique). Merge keys (`<<: *base`) may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base constructor says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """`text` as YAML with `UniqueKeyLoader`."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: `line L column C: problem (context)`."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    if problem == "but found another document":  # PyYAML's words for a stream of two documents: its mark is the second's `---`
        return f"{where}a second YAML document starts here (`---` after the first's content); the file is read as one document"
    hint = " (YAML indents with spaces, not tabs)" if "'\\t'" in problem else ""
    return f"{where}{problem}" + (f" ({context})" if context else "") + hint


def _parts(annotation: Any) -> list[Any]:
    """The alternatives of a field's type, `Annotated[...]` and `Optional` unwrapped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _parts(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [part for arg in typing.get_args(annotation) for part in _parts(arg)]
    return [annotation]


def bools_for_numbers(model: type[BaseModel], raw: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The locations in `raw` (a config as parsed, before validation) of a boolean where `model`
    wants a number (an int or float field, or one in a list or dict): pydantic's lax mode reads
    `true` as 1, so `max_edits: true` would pass as 1 edit."""
    return _walk(model, raw, loc)


def _walk(annotation: Any, value: Any, loc: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    parts = _parts(annotation)
    if isinstance(value, bool):
        numeric = any(p in (int, float) for p in parts) and not any(p in (bool, Any, object) for p in parts)
        return [loc] if numeric else []
    found: list[tuple[Any, ...]] = []
    models = [p for p in parts if isinstance(p, type) and issubclass(p, BaseModel)]
    if models and isinstance(value, dict):
        # A union of sections: the one whose fields hold every key given (else the first).
        model = next((m for m in models if set(value) <= set(m.model_fields)), models[0])
        for key, item in value.items():
            field = model.model_fields.get(key) if isinstance(key, str) else None
            if field is not None:
                found += _walk(field.annotation, item, (*loc, key))
        return found
    for part in parts:
        origin, args = typing.get_origin(part), typing.get_args(part)
        if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and isinstance(value, list) and args:
            for index, item in enumerate(value):
                found += _walk(args[0], item, (*loc, index))
            return found
        if origin in (dict, collections.abc.Mapping) and isinstance(value, dict) and len(args) == 2:
            for key, item in value.items():
                found += _walk(args[1], item, (*loc, key))
            return found
    return found
