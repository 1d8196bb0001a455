"""A YAML file's pydantic validation errors as lines a user can act on:
`FILE:LINE: field.path: message`, an unknown field with its section's closest names and a value
that is none of a setting's choices with the closest choice (`curation.suggest`). One form for
every YAML file we read: the pipeline config (`flows.config`) and benchmark definitions
(`eval.benchmarks`), and the one wording of a pydantic error wherever one reaches a user (the
command line's `--source` options, its other options).

Messages are in the YAML's words, never Python's: no class names (`instance of SynthConfig`,
`<class 'pathlib.Path'>`), no parts of pydantic's locations that are not fields (`[key]`, a union
member's `str` / `list[str]`), no `Value error, ` prefix. A union's failed members make one
message (`expected a text or a list (got 5)`)."""

from __future__ import annotations

import json
import re
import types
import typing
from decimal import Decimal
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from curation.suggest import closest, did_you_mean, literal_message

# What a value of each pydantic error type should have been, in the YAML's words.
EXPECTED = {
    "string_type": "a text", "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list", "dict_type": "a mapping", "path_type": "a path",
    "model_type": "a mapping of settings", "model_attributes_type": "a mapping of settings", "dataclass_type": "a mapping of settings",
    "dataclass_args_type": "a mapping of settings", "none_required": "null", "url_type": "a URL", "url_parsing": "a URL",
}
# Types whose pydantic message names a Python class: always said in the words above.
_CLASS_NAMING = {"model_type", "model_attributes_type", "dataclass_type", "dataclass_args_type", "path_type", "is_instance_of",
                 "is_subclass_of"}
KEY = "[key]"  # pydantic's location part for a mapping's key (the value before it is the key itself)
# A union member's label in a location where no model says what the location's parts are:
# `list[str]`, `literal['all-linear']`, `function-after[...]`, `constrained-str`, or a scalar type's.
_MEMBER = re.compile(r"str|int|float|bool|none|[a-z][a-z-]*\[.*\]|constrained-[a-z]+")
PLAIN = "plain"  # the type of a merged error whose `msg` is final
# A validator's error context key naming the setting, below the error's location, that it is about:
# a model's check of one of its fields (`split` on a jsonl source) is told at that field's own line.
YAML_KEY = "yaml_key"


def yaml_value(value: Any) -> str:
    """`value` as the YAML reads: `null`, `true`, `5`, `'lc.jsonl'`, `a list`, `a mapping`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def yaml_flow(value: Any) -> str:
    """`value` written as YAML's flow style, as a user would type it in the config:
    `{coldstart: 0.5, rl: 0.6}`, `[test]`, `'yes'` (quoted where YAML would read it otherwise)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("\n...").strip()


def json_read_problem(exc: BaseException) -> str:
    """Why a JSON file could not be read, in words and without Python's class names: `Expecting
    value at line 2 column 1`, `not UTF-8 text (byte 0xff at offset 0)`, `nested too deeply`, or
    the operating system's reason (`Permission denied`)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def json_type_name(value: Any) -> str:
    """A parsed JSON value's kind in JSON's words: `an object`, `an array`, `a string`, `a number`,
    `true or false`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def _unwrap(annotation: Any) -> Any:
    """`X` for `Annotated[X, ...]` and `X | None`; a union of two or more others stays one."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _label_matches(label: str, member: Any) -> bool:
    """Whether pydantic's label for a union member (`str`, `list[str]`, `literal['a']`, a class name)
    is `member`'s."""
    member = _unwrap(member)
    origin = typing.get_origin(member)
    if origin is typing.Literal:
        return label.startswith("literal[")
    if origin is not None:
        return label.split("[", 1)[0] == getattr(origin, "__name__", "")
    return label == getattr(member, "__name__", None)


def _member_parts(loc: tuple[Any, ...], model: type[BaseModel] | None) -> list[int]:
    """The indexes of `loc`'s parts that are union member labels, not fields, list indexes or keys.
    With `model`, found by following the location through the model's types (a field named `url` or
    `time` stays); where the types do not say (no model, a member not recognised), by the form of
    pydantic's labels (`list[str]`, `literal[...]`, `str`)."""
    members, annotation = [], model
    for i, part in enumerate(loc):
        current = _unwrap(annotation)
        origin = typing.get_origin(current)
        if annotation is None or not isinstance(part, (str, int)):
            if isinstance(part, str) and _MEMBER.fullmatch(part):
                members.append(i)
            annotation = None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
        elif origin in (typing.Union, types.UnionType):
            chosen = [m for m in typing.get_args(current) if m is not type(None) and isinstance(part, str) and _label_matches(part, m)]
            if isinstance(part, str) and (chosen or _MEMBER.fullmatch(part)):
                members.append(i)
            annotation = chosen[0] if chosen else None
        elif origin in (list, tuple, set, frozenset):
            args = typing.get_args(current)
            annotation = args[0] if args else None
        elif origin is dict:
            args = typing.get_args(current)
            annotation = current if part == KEY else (args[1] if len(args) == 2 else None)
        else:
            annotation = None
    return members


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """A location as the user writes it: `curate.sources.0.fields.answr` (pydantic's `[key]` part
    left out); `(top level)` for the whole document."""
    return ".".join(str(p) for p in loc if p != KEY) or "(top level)"


def plain_errors(errors: list[dict[str, Any]], model: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    """`errors` (`ValidationError.errors()` of validating `model`) with locations as the user writes
    them: a union member's label dropped (`data_files.list[str].0` is `data_files.0`). A union
    whose members all failed at the value itself becomes one error of type `PLAIN` (`expected a
    text or a list (got 5)`); where the value had the shape of a member (a list for `str |
    list[str]`), that member's errors inside it are kept, the others' dropped."""
    out: list[dict[str, Any]] = []
    unions: dict[tuple[Any, ...], list[tuple[dict[str, Any], tuple[Any, ...]]]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        members = _member_parts(loc, model)
        cut = members[0] if members else None
        clean = tuple(p for i, p in enumerate(loc) if i not in members)
        if cut is None:
            out.append({**error, "loc": clean})
        else:
            if loc[:cut] not in unions:
                out.append({"loc": loc[:cut], "type": "__union__"})  # keeps the union's place among the lines
            unions.setdefault(loc[:cut], []).append((error, clean))
    result = []
    for error in out:
        if error["type"] != "__union__":
            result.append(error)
            continue
        prefix = error["loc"]
        members = unions[prefix]
        deeper = [{**e, "loc": clean} for e, clean in members if len(clean) > len(prefix)]
        if deeper:
            result += deeper
            continue
        wanted: list[str] = []
        for e, _ in members:
            words = _expected(e)
            if words and words not in wanted:
                wanted.append(words)
        if "a number" in wanted and "a whole number" in wanted:
            wanted.remove("a whole number")
        first = members[0][0]
        got = f" (got {yaml_value(first['input'])})" if "input" in first else ""
        message = f"expected {' or '.join(wanted)}{got}" if wanted else "; ".join(error_message(e) for e, _ in members)
        result.append({"loc": prefix, "type": PLAIN, "msg": message, **({"input": first["input"]} if "input" in first else {})})
    if model is not None:  # an exponent-form number the setting would refuse written in full: said at once
        result = [{**e, "type": PLAIN, "msg": refused} if (refused := _exponent_refused(e, model)) else e for e in result]
    return result


def _expected(error: dict[str, Any]) -> str | None:
    """What the value of one failed union member should have been (`a list`, `one of 'a', 'b'`)."""
    if error["type"] == "literal_error":
        choices = str(error.get("ctx", {}).get("expected", ""))
        return f"one of {choices.replace(' or ', ', ')}" if " or " in choices else choices or None
    return EXPECTED.get(error["type"])


# A number in exponent form (`1e3`, `2.5E+4`): YAML 1.1 (PyYAML) reads it as text unless it has a
# dot and a signed exponent (`1.0e+3`), so a whole-number setting written so fails to parse.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent_number(error: dict[str, Any]) -> str | None:
    """For a number setting given text that reads as a number in exponent form (`'1e3'`), that
    number written in full (`1000`); "" when a whole number is wanted and it is not one; else None."""
    value = error.get("input")
    if error.get("type") not in ("int_parsing", "float_parsing") or not isinstance(value, str) \
            or not _EXPONENT_NUMBER.fullmatch(value.strip()):
        return None
    number = Decimal(value.strip())
    if number == number.to_integral_value():
        return format(number.to_integral_value(), "f")
    return "" if error["type"] == "int_parsing" else format(number.normalize(), "f")


def _exponent_text(error: dict[str, Any]) -> str | None:
    """For a number setting given text that reads as a number in exponent form, what to write
    instead: `'1e3' is read as text by YAML; write 1000`; else None."""
    written = _exponent_number(error)
    if written is None:
        return None
    value = error["input"]
    if not written:
        return f"{value!r} is read as text by YAML, and is not a whole number; write a whole number in full"
    return f"{value!r} is read as text by YAML; write {written}"


def _exponent_refused(error: dict[str, Any], model: type[BaseModel]) -> str | None:
    """For an exponent-form number (`_exponent_text`) that the setting would refuse even written in
    full (out of its range, or any check of its own), the setting's own refusal of that number,
    after what YAML read (`'1e20' is read as text by YAML, and 100000000000000000000 would be refused
    too: ... is above ...`): a hint to write a number that is then refused would cost a second try.
    None where the number is allowed, or the setting cannot be checked alone."""
    written = _exponent_number(error)
    loc = tuple(p for p in error.get("loc", ()) if p != KEY)
    if not written or not loc or not isinstance(loc[-1], str):
        return None
    section = _section_model(loc[:-1], model)
    if section is None or loc[-1] not in section.model_fields:
        return None
    number: Any = int(written) if error["type"] == "int_parsing" else float(written)
    try:  # the field's own checks (bounds, validators) on a default instance: the model's checks of several fields left out
        section.__pydantic_validator__.validate_assignment(section.model_construct(), loc[-1], number)
    except ValidationError as exc:
        own = [e for e in exc.errors() if tuple(e["loc"]) == (loc[-1],)]
        if own:
            return f"{error['input']!r} is read as text by YAML, and {written} would be refused too: {error_message(own[0])}"
    except Exception:  # noqa: BLE001 - a section that cannot be checked so: the plain hint stands
        return None
    return None


def error_message(error: dict[str, Any]) -> str:
    """One pydantic error's message in the YAML's words: a value that is none of a setting's
    choices with the closest choice (`curation.suggest.literal_message`), a mapping key likewise
    (`the name 'answr' should be ...; did you mean 'answer'?`), a value of the wrong shape as
    `expected a mapping of settings (got null)` where pydantic would name a class, a validator's
    own message without pydantic's `Value error, ` prefix, else pydantic's message."""
    kind, message = error.get("type"), str(error.get("msg", ""))
    got = f" (got {yaml_value(error['input'])})" if "input" in error else ""
    if kind == PLAIN:
        return message
    if exponent := _exponent_text(error):
        return exponent
    if kind == "literal_error":
        message = literal_message(error)
        if tuple(error.get("loc", ()))[-1:] == (KEY,):  # the mapping's key is wrong, not its value
            message = re.sub(r"^Input should be", lambda _: f"the name {error.get('input')!r} should be", message)
        return message
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value error|Assertion failed), ", "", message)
    if kind in _CLASS_NAMING:
        return f"expected {EXPECTED.get(kind, 'a value of another kind')}{got}"
    if kind in ("list_type", "tuple_type", "set_type", "dict_type"):
        value = error.get("input")
        if kind != "dict_type" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return f"expected {EXPECTED[kind]} (e.g. {yaml_flow([value])})"  # `include: {split: test}`: `[test]`
        return f"expected {EXPECTED[kind]}{got}"
    # Any other message that names a class: the class left out.
    message = re.sub(r",? or (an )?instance of \w+", "", message)
    return re.sub(r"(an instance of )?<class '(?:[\w.]+\.)?(\w+)'>", lambda m: m.group(2).lower(), message)


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


def _section_model(loc: tuple[Any, ...], model: type[BaseModel]) -> type[BaseModel] | None:
    """The model of the section of `model` at `loc` (as `known_fields` walks it); None where none is."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(str(part))
        if field is not None:
            current = _model_in(field.annotation)
    return current


def _holds_list(annotation: Any) -> bool:
    """Whether a field's type is a list (or tuple) of something, `Optional` and unions looked through."""
    if typing.get_origin(annotation) in (list, tuple):
        return True
    return typing.get_origin(annotation) is not dict and any(_holds_list(arg) for arg in typing.get_args(annotation))


def _nested_levels(section: type[BaseModel], prefix: str, depth: int) -> list[list[tuple[type[BaseModel], str]]]:
    """The sections nested below `section` (written at `prefix`), level by level, `depth` levels at
    most (which bounds a model nested in itself): each as (its model, its dotted path; an entry of a
    list is `curate.sources[]`); dict-valued settings not entered."""
    levels: list[list[tuple[type[BaseModel], str]]] = []
    level: list[tuple[type[BaseModel], str]] = [(section, prefix)]
    for _ in range(depth):
        level = [(sub, (f"{at}.{field_name}" if at else field_name) + ("[]" if _holds_list(field.annotation) else ""))
                 for current, at in level for field_name, field in current.model_fields.items()
                 if typing.get_origin(field.annotation) is not dict and (sub := _model_in(field.annotation)) is not None]
        levels.append(level)
    return levels


def nested_field_paths(name: str, section: type[BaseModel], prefix: str, depth: int = 3, near: bool = False) -> list[str]:
    """The dotted paths, below `section` (written at `prefix`), of the fields called `name` in its
    nested sections, nearest first (`max_turns` under `synth` -> `synth.agent.max_turns`; an entry of
    a list is `curate.sources[].kind`); with `near`, of the fields whose name is the closest to
    `name` (`curation.suggest.closest`) instead; `depth` levels at most, dict-valued settings not
    entered."""
    levels = _nested_levels(section, prefix, depth)
    if near:
        best = closest(name, sorted({field for level in levels for sub, _ in level for field in sub.model_fields}))
        return nested_field_paths(best[0], section, prefix, depth) if best else []
    for level in levels:
        found = [f"{path}.{name}" for sub, path in level if name in sub.model_fields]
        if found:
            return found
    return []


def unknown_field_message(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """`unknown field`, with where a field of that name lives in a section nested below this one
    (`synth.max_turns`: `did you mean synth.agent.max_turns?`, the common nesting mistake), else the
    closest known names of its section of `model`."""
    name = str(loc[-1]) if loc else ""
    section = _section_model(loc[:-1], model)
    prefix = ".".join(str(part) for part in loc[:-1] if not isinstance(part, int))
    nested = nested_field_paths(name, section, prefix) if section is not None and name else []
    if nested:
        return f"unknown field; did you mean {' or '.join(nested[:3])}?"
    here = did_you_mean(name, known_fields(loc[:-1], model), n=3)
    if here or section is None or not name:
        return "unknown field" + here
    nested = nested_field_paths(name, section, prefix, near=True)  # misspelt and misplaced: `synth.max_turn`
    return "unknown field" + (f"; did you mean {' or '.join(nested[:3])}?" if nested else "")


def by_line(lines: list[str], source: str) -> list[str]:
    """`lines` (`source:LINE: ...`, as `validation_lines` writes them) in the order of their lines in
    the file, as a user reads it top down; lines without a line number last, each group in its
    given order."""
    def line_number(text: str) -> tuple[bool, int]:
        found = re.match(r":(\d+):", text[len(source):]) if text.startswith(source) else None
        return (found is None, int(found.group(1)) if found else 0)
    return sorted(lines, key=line_number)


def validation_lines(errors: list[dict[str, Any]], source: str, node: yaml.Node | None, model: type[BaseModel],
                     messages: dict[tuple[Any, ...], str] | None = None) -> list[str]:
    """One line per error of `errors` (`ValidationError.errors()` of validating `model` from the
    YAML document `node` of file `source`; `plain_errors`' locations and merged unions):
    `source:LINE: field.path: message` (`error_message`), in the file's order (`by_line`). `messages` replaces the message for a
    location (a union's `kind`, whose own message would list one member's choices only)."""
    lines = []
    for error in plain_errors(errors, model):
        loc = tuple(error["loc"])
        setting = (error.get("ctx") or {}).get(YAML_KEY)
        line = line_of(node, tuple(p for p in loc if p != KEY) + ((setting,) if setting else ()))
        message = ((messages or {}).get(loc) or
                   (unknown_field_message(loc, model) if error["type"] == "extra_forbidden" else error_message(error)))
        lines.append(f"{source}{f':{line}' if line else ''}: {field_path(loc)}: {message}")
    return by_line(lines, source)
