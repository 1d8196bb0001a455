"""Protocol profiles: the prompts and observation layouts the agent loop renders, as data files.

A profile (`synth/runtime/profiles/<name>.yaml`) fixes everything a model sees besides its own turns: the
system prompt and the user turn (with and without tools), the text of each tool's observation,
and the default `<think>` pre-fill. Three ship:

- `deepeyes-v2` (version `deepeyes-v2/2`): ours, FORMAT.md;
- `deepeyes-v2-compact` (version `deepeyes-v2-compact/1`): ours with a system prompt of about 90
  tokens instead of about 250, for tiny models trained on a CPU (the learnable world's configs);
- `deepeyesv2-reference` (version `deepeyesv2-reference/1`): the layout the released DeepEyesV2
  checkpoints were trained on: fenced stdout/stderr, "A Google search for '...' found N results"
  headers, numbered image-search thumbnails, `<think>` pre-filled after every observation (facts
  from Visual-Agent/DeepEyesV2's RL environment; see the file's header).

The model's own actions (`<code>`, `<tool_call>`, `<answer>`) and the answer extraction are the
same under every profile (`synth.runtime.protocol`). Every trajectory records its profile's `version`.

Observations render as text with image slots, then become TRL content parts (`{"type": "text"}`,
`{"type": "image"}`); `Profile.parse_observation` reads an observation back (the importer
rewrites the reference's layout into ours with it; the replay server checks a conversation's
observations follow the profile its system prompt names).
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from curation.strict_config import StrictConfig
from curation.validation_errors import validation_lines

DEFAULT_PROFILE = "deepeyes-v2"
COMPACT_PROFILE = "deepeyes-v2-compact"  # ours with a short system prompt, for tiny models (the learnable world's configs)
IMAGE_SLOT = "\ue000"  # a private-use character: where an image goes in rendered text (never in real text)
ThinkPrefix = Literal["none", "after_observation", "every_turn"]


class ProfileError(ValueError):
    """A profile that cannot be found or read; names the file."""


class ObservationLayout(StrictConfig):
    """How tool results read (templates: Python format strings; see a shipped profile's file)."""

    strip: bool = False  # strip the rendered observation's ends (the reference does)
    code: str  # {stdout} {stderr} {images}
    code_images: str  # {slots}: one image slot per image the cell showed
    search: str  # {sections}
    search_one: str  # a call with one query: {query} {query_json} {count} {results}
    search_section: str  # one section per query of a multi-query call
    search_section_separator: str = "\n\n"
    search_skipped: str = ""  # {skipped} {limit}: queries past the per-call limit
    search_result: str  # {k} {title} {url} {snippet}
    search_result_separator: str = "\n"
    search_no_results: str = ""
    image_search: str  # {count} {results}
    image_search_result: str  # {k} {title} {url} {image}
    image_search_result_separator: str = ""
    image_search_no_results: str = ""


class ProfileFile(StrictConfig):
    """A profile file as written (prompt paths relative to it)."""

    name: str
    version: str = Field(min_length=1)
    description: str = ""
    think_prefix: ThinkPrefix = "none"
    max_images_per_observation: int = Field(10, ge=1)
    prompts: dict[Literal["system", "user", "system_no_tools", "user_no_tools"], str]
    observation: ObservationLayout


@dataclass(frozen=True)
class SearchHit:
    title: str = ""
    url: str = ""
    snippet: str = ""
    image: bool = False  # an image search result with its thumbnail


@dataclass
class ParsedObservation:
    """An observation read back: what the tool returned, whatever the layout."""

    kind: Literal["code", "search", "image_search", "error"]
    stdout: str = ""
    stderr: str = ""
    images: int = 0
    queries: list[tuple[str, list[SearchHit]]] = field(default_factory=list)  # search: per query
    hits: list[SearchHit] = field(default_factory=list)  # image search
    message: str = ""  # error


def to_parts(text: str) -> list[dict[str, Any]]:
    """Rendered text with image slots as TRL content parts (empty text parts dropped)."""
    parts: list[dict[str, Any]] = []
    for k, piece in enumerate(text.split(IMAGE_SLOT)):
        if k:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def parts_text(parts: Sequence[dict[str, Any]]) -> str:
    """Content parts back as text with image slots."""
    return "".join(IMAGE_SLOT if p.get("type") == "image" else (p.get("text") or "") for p in parts)


def _fill(template: str, **values: Any) -> str:
    """`template` with its fields filled; values are inserted as they are (never parsed again)."""
    return template.format(**values)


_FIELD_PATTERNS = {
    "k": r"\d+", "count": r"\d+", "skipped": r"\d+", "limit": r"\d+",
    "slots": IMAGE_SLOT + "*", "image": IMAGE_SLOT + "?",
    "query_json": r'"(?:[^"\\]|\\.)*"', "url": r"\S*?",
}


def _template_regex(template: str, strip: bool = False, fields: dict[str, str] | None = None) -> re.Pattern[str]:
    """A regex matching what `template` renders: each field a named group (`fields`, then
    `_FIELD_PATTERNS`, else lazy `.*?`), literal text escaped. With `strip`, whitespace the renderer
    may have stripped is optional: at the start, at the end, and before a field that ends the
    template (it may render empty)."""
    items = list(string.Formatter().parse(template))
    patterns = {**_FIELD_PATTERNS, **(fields or {})}
    pieces = []
    for n, (literal, name, _spec, _conv) in enumerate(items):
        last = n == len(items) - 1
        if strip and n == 0:
            literal = literal.lstrip()
        if strip and last:
            trailing = literal[len(literal.rstrip()):]
            literal = literal.rstrip()
            escaped, optional = re.escape(literal), ("(?:" + re.escape(trailing) + ")?" if trailing and name is not None else "")
        else:
            escaped, optional = re.escape(literal), ""
        pieces.append(escaped + optional)
        if name is not None:
            pieces.append(f"(?P<{name}>{patterns.get(name, '.*?')})")
    return re.compile("".join(pieces) + (r"\s*" if strip else ""), re.S)


def _unnamed(pattern: re.Pattern[str], keep: str = "") -> str:
    """A pattern's text with its named groups made plain groups (all but `keep`), to nest it in another."""
    return re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) == keep else "(", pattern.pattern)


@dataclass
class Profile:
    """A loaded profile: prompts, the default pre-fill, observation rendering and parsing."""

    name: str
    version: str
    think_prefix: ThinkPrefix
    system: str
    user: str
    system_no_tools: str
    user_no_tools: str
    layout: ObservationLayout
    max_images_per_observation: int = 10
    path: Path | None = None

    # --- prompts ---------------------------------------------------------------------------

    def system_prompt(self, tools: bool = True) -> str:
        return self.system if tools else self.system_no_tools

    def user_template(self, tools: bool = True) -> str:
        return self.user if tools else self.user_no_tools

    def user_text(self, question: str, tools: bool = True, n_images: int = 0) -> str:
        """The first user turn as text, the input images as slots (first, unless the template
        places them with `{images}`)."""
        template = self.user_template(tools)
        slots = IMAGE_SLOT * n_images
        template = template.replace("{images}", slots) if "{images}" in template else slots + template
        return template.replace("{question}", question)  # last: the question's own text is never read as a field

    def user_parts(self, question: str, n_images: int, tools: bool = True) -> list[dict[str, Any]]:
        """The first user turn as TRL content parts: image placeholders and the question's text."""
        return to_parts(self.user_text(question, tools, n_images))

    def messages(self, question: str, n_images: int, tools: bool = True) -> list[dict[str, Any]]:
        """The conversation's start: the system prompt and the first user turn, as TRL messages."""
        return [{"role": "system", "content": [{"type": "text", "text": self.system_prompt(tools)}]},
                {"role": "user", "content": self.user_parts(question, n_images, tools)}]

    def prefix_for(self, turn: int, think_prefix: ThinkPrefix | None = None) -> str:
        """The text pre-filled at the start of assistant turn `turn` (0: the first): `think_prefix`,
        or the profile's own when None."""
        mode = think_prefix or self.think_prefix
        return "<think>" if mode == "every_turn" or (mode == "after_observation" and turn > 0) else ""

    # --- rendering -------------------------------------------------------------------------

    def _finish(self, text: str) -> str:
        return text.strip() if self.layout.strip else text

    def render_code(self, stdout: str, stderr: str, n_images: int) -> str:
        """A code cell's observation as text with image slots (at most `max_images_per_observation`)."""
        n = min(n_images, self.max_images_per_observation)
        images = _fill(self.layout.code_images, slots=IMAGE_SLOT * n) if n else ""
        return self._finish(_fill(self.layout.code, stdout=stdout, stderr=stderr, images=images))

    def _results(self, results: list[dict[str, Any]]) -> str:
        if not results:
            return self.layout.search_no_results
        return self.layout.search_result_separator.join(
            _fill(self.layout.search_result, k=k, title=r.get("title", ""), url=r.get("url", ""), snippet=r.get("snippet", ""))
            for k, r in enumerate(results, 1))

    def render_search(self, per_query: list[tuple[str, list[dict[str, Any]]]], skipped: int = 0) -> str:
        """A search call's results, one query or several (a list-valued `query`), in one observation;
        `skipped` queries past the per-call limit are named as not run."""
        layout = self.layout
        template = layout.search_one if len(per_query) == 1 and not skipped else layout.search_section
        sections = [_fill(template, query=query, query_json=json.dumps(query, ensure_ascii=False), count=len(results),
                          results=self._results(results)) for query, results in per_query]
        if skipped and layout.search_skipped:
            sections.append(_fill(layout.search_skipped, skipped=skipped, limit=len(per_query)))
        return self._finish(_fill(layout.search, sections=layout.search_section_separator.join(sections)))

    def render_image_search(self, results: list[dict[str, Any]]) -> tuple[str, list[int]]:
        """Image search results as text with a slot after each shown thumbnail, and the indices of
        the results whose thumbnails are shown (those that have one, up to the per-observation cap)."""
        layout, shown, items = self.layout, [], []
        for k, result in enumerate(results, 1):
            image = ""
            if result.get("thumbnail") and len(shown) < self.max_images_per_observation:
                image = IMAGE_SLOT
                shown.append(k - 1)
            items.append(_fill(layout.image_search_result, k=k, title=result.get("title", ""), url=result.get("url", ""), image=image))
        body = layout.image_search_result_separator.join(items) if items else layout.image_search_no_results
        return self._finish(_fill(layout.image_search, count=len(results), results=body)), shown

    # --- parsing ---------------------------------------------------------------------------

    @functools.cached_property
    def _patterns(self) -> dict[str, re.Pattern[str]]:
        layout, strip = self.layout, self.layout.strip
        # A code cell's image block is there or not: nested, so stderr cannot swallow it.
        images = "(?:" + _unnamed(_template_regex(layout.code_images), keep="slots") + ")?"
        return {
            "code": _template_regex(layout.code, strip, {"images": images}),
            "search": _template_regex(layout.search, strip),
            "search_one": _template_regex(layout.search_one),
            "search_section": _template_regex(layout.search_section),
            "search_result": _template_regex(layout.search_result),
            "image_search": _template_regex(layout.image_search, strip),
            "image_search_result": _template_regex(layout.image_search_result),
        }

    def _items(self, block: str, key: str, separator: str) -> list[re.Match[str]] | None:
        """`block` read as items of pattern `key` (a numbered result) joined by `separator`; None
        when it is not. An item starts with its template's text before `{k}` and the number."""
        template = self.layout.search_result if key == "search_result" else self.layout.image_search_result
        lead = next(iter(string.Formatter().parse(template)))[0]
        boundary = re.escape(separator) + "(?=" + re.escape(lead) + r"\d+\. )"
        starts = [m for m in re.finditer(boundary, block) if m.start() > 0]
        pieces, begin = [], 0
        for match in starts:
            pieces.append(block[begin:match.start()])
            begin = match.end()
        pieces.append(block[begin:])
        found = [self._patterns[key].fullmatch(piece) for piece in pieces]
        return None if any(m is None for m in found) else found  # type: ignore[return-value]

    def _hits(self, block: str) -> list[SearchHit] | None:
        layout = self.layout
        if block.strip() == layout.search_no_results.strip():
            return []
        matches = self._items(block, "search_result", layout.search_result_separator)
        if matches is None:
            return None
        return [SearchHit(m.group("title"), m.group("url"), m.groupdict().get("snippet") or "") for m in matches]

    def _sections(self, block: str) -> list[tuple[str, list[SearchHit]]] | None:
        layout = self.layout
        if layout.search_skipped:
            skipped = _template_regex(layout.search_skipped)
            block = re.sub(re.escape(layout.search_section_separator) + skipped.pattern + r"\Z", "", block, flags=re.S)
        header = next(iter(string.Formatter().parse(layout.search_section)))[0]
        pieces = re.split(re.escape(layout.search_section_separator) + r"(?=" + re.escape(header) + ")", block) if header else [block]
        sections = []
        for piece in pieces:
            match = self._patterns["search_section"].fullmatch(piece)
            hits = self._hits(match.group("results")) if match else None
            if match is None or hits is None:
                return None
            groups = match.groupdict()
            query = json.loads(groups["query_json"]) if groups.get("query_json") else groups.get("query", "")
            sections.append((query, hits))
        return sections

    def parse_observation(self, text: str) -> ParsedObservation | None:
        """An observation (text with image slots) read back under this layout; None when it is not
        one of this layout's observations. An observation that starts with `Error` is an error."""
        if text.lstrip().startswith("Error"):
            return ParsedObservation("error", message=text.strip())
        patterns = self._patterns
        code = patterns["code"].fullmatch(text)
        if code:
            return ParsedObservation("code", stdout=code.group("stdout"), stderr=code.group("stderr"), images=len(code.group("slots") or ""))
        image_search = patterns["image_search"].fullmatch(text)
        if image_search:  # before text search: its frame is the more specific one
            block = image_search.group("results")
            if block.strip() == self.layout.image_search_no_results.strip():
                return ParsedObservation("image_search")
            matches = self._items(block, "image_search_result", self.layout.image_search_result_separator)
            if matches is not None:
                hits = [SearchHit(m.group("title"), (m.groupdict().get("url") or ""), image=bool(m.group("image"))) for m in matches]
                return ParsedObservation("image_search", hits=hits, images=sum(h.image for h in hits))
        search = patterns["search"].fullmatch(text)
        if search:
            block = search.group("sections")
            sections = self._sections(block)
            if sections is not None and (len(sections) > 1 or self.layout.search_one == self.layout.search_section):
                return ParsedObservation("search", queries=sections)
            one = patterns["search_one"].fullmatch(block)
            if one is not None and (hits := self._hits(one.group("results"))) is not None:
                groups = one.groupdict()
                query = json.loads(groups["query_json"]) if groups.get("query_json") else groups.get("query") or ""
                return ParsedObservation("search", queries=[(query, hits)])
        return None

    def render_parsed(self, parsed: ParsedObservation) -> str:
        """A parsed observation (from any profile) rendered in this profile's layout."""
        if parsed.kind == "code":
            return self.render_code(parsed.stdout, parsed.stderr, parsed.images)
        if parsed.kind == "search":
            per_query = [(q, [{"title": h.title, "url": h.url, "snippet": h.snippet} for h in hits]) for q, hits in parsed.queries]
            return self.render_search(per_query)
        if parsed.kind == "image_search":
            text, _ = self.render_image_search([{"title": h.title, "url": h.url, "thumbnail": h.image} for h in parsed.hits])
            return text
        return parsed.message


def shipped_profiles() -> dict[str, Path]:
    """The profile files that ship with the package, by name."""
    folder = resources.files("synth.runtime") / "profiles"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def _stamp(files: Sequence[Path]) -> tuple:
    stamps = []
    for file in files:
        try:
            stat = file.stat()
            stamps.append((str(file), stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((str(file), None, None))
    return tuple(stamps)


# path -> (the stamps of the profile file and its prompt files, the profile): an edited file is read again.
_LOADED: dict[Path, tuple[tuple, Profile]] = {}


def _load(path: Path) -> Profile:
    cached = _LOADED.get(path)
    if cached is not None and _stamp([Path(f) for f, _, _ in cached[0]]) == cached[0]:
        return cached[1]
    try:
        text = path.read_text()
        raw = ProfileFile.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"profile {path}: {exc}") from None
    except ValidationError as exc:  # in the config's form: `FILE:LINE: field: message`, one per mistake
        raise ProfileError("profile " + "; ".join(validation_lines(exc.errors(), str(path), yaml.compose(text), ProfileFile))) from None
    texts, files = {}, [path]
    for key, relative in raw.prompts.items():
        prompt_path = (path.parent / relative).resolve()
        files.append(prompt_path)
        try:
            texts[key] = prompt_path.read_text().strip()
        except OSError as exc:
            raise ProfileError(f"profile {path}: prompts.{key}: {prompt_path}: {exc.strerror or exc}") from None
    missing = sorted({"system", "user", "system_no_tools", "user_no_tools"} - set(texts))
    if missing:
        raise ProfileError(f"profile {path}: prompts: missing {', '.join(missing)}")
    for key in ("user", "user_no_tools"):
        if "{question}" not in texts[key]:
            raise ProfileError(f"profile {path}: prompts.{key} has no {{question}}")
    profile = Profile(raw.name, raw.version, raw.think_prefix, texts["system"], texts["user"], texts["system_no_tools"],
                      texts["user_no_tools"], raw.observation, raw.max_images_per_observation, path)
    _LOADED[path] = (_stamp(files), profile)
    return profile


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """A shipped profile by name (`deepeyes-v2`, `deepeyesv2-reference`) or version
    (`deepeyesv2-reference/1`), or a profile file by path. Raises `ProfileError`."""
    known = shipped_profiles()
    text = str(name_or_path)
    if text in known:
        return _load(known[text])
    path = Path(text)
    if path.is_file():
        return _load(path.resolve())
    for candidate in known.values():
        if _load(candidate).version == text:
            return _load(candidate)
    raise ProfileError(f"unknown protocol profile {text!r}: not a file, and not one of {', '.join(sorted(known))}")


def profile_of_system_prompt(system: str) -> tuple[Profile, bool] | None:
    """(the shipped profile whose system prompt is `system`, whether it is its tool prompt), or None."""
    text = system.strip()
    for path in shipped_profiles().values():
        profile = _load(path)
        if text == profile.system:
            return profile, True
        if text == profile.system_no_tools:
            return profile, False
    return None
