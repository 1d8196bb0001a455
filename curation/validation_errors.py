"""A YAML file's pydantic validation errors as lines a user can act on:
`FILE:LINE: field.path: message`, an unknown field with its section's closest names and a value
that is none of a setting's choices with the closest choice (`curation.suggest`). One form for
every YAML file we read: the pipeline config (`flows.config`) and benchmark definitions
(`eval.benchmarks`)."""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel

from curation.suggest import did_you_mean, error_message


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML key at `loc` (or of the deepest part of it that exists) in the
    document `node` (`yaml.compose`); None without a node."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == key), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (`Model`, `Model | None`, `list[Model]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def known_fields(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    """The field names of the section of `model` at `loc` (a validation error's location, list
    indexes included), for "did you mean"; [] where the location is not a section."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(str(part))
        if field is None:  # a union's tag or a dict key: not a field of ours
            continue
        current = _model_in(field.annotation)
    return list(current.model_fields) if current is not None else []


def unknown_field_message(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """`unknown field`, with the closest known names of its section of `model`."""
    return "unknown field" + did_you_mean(str(loc[-1]) if loc else "", known_fields(loc[:-1], model), n=3)


def validation_lines(errors: list[dict[str, Any]], source: str, node: yaml.Node | None, model: type[BaseModel],
                     messages: dict[tuple[Any, ...], str] | None = None) -> list[str]:
    """One line per error of `errors` (`ValidationError.errors()` of validating `model` from the
    YAML document `node` of file `source`): `source:LINE: field.path: message`. `messages`
    replaces the message for a location (a union's `kind`, whose own message would list one
    member's choices only)."""
    lines = []
    for error in errors:
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(node, loc)
        message = ((messages or {}).get(loc) or
                   (unknown_field_message(loc, model) if error["type"] == "extra_forbidden" else error_message(error)))
        lines.append(f"{source}{f':{line}' if line else ''}: {where}: {message}")
    return lines
