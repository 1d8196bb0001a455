"""Config mistakes are told in the YAML's words, never Python's (review r5 #21): no class names
(`instance of SynthConfig`, `<class 'pathlib.Path'>`), no pydantic location parts that are not
fields (`.[key]`, a union member's `list[str]`), no `Value error, ` prefix; and a source `kind`
that is a file format says how an `hf` source reads it (#22)."""

from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from curation.sources import SourceError, SourceSpec
from curation.validation_errors import validation_lines
from flows.config import ConfigError, PipelineConfig, load_config

FIELDS = "'id', 'question', 'answer', 'images', 'category', 'answer_type', 'choices' or 'meta'"


def refusal(tmp_path, text: str) -> str:
    """The one line a config of `text` (after a first line) is refused with."""
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n" + text)
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    lines = str(raised.value).removeprefix("invalid config:\n  ").splitlines()
    assert len(lines) == 1, lines
    return lines[0].replace(str(config), "c.yaml")


@pytest.mark.parametrize("text,expected", [
    ("synth: null\n", "c.yaml:2: synth: expected a mapping of settings (got null)"),
    ("synth: {long_cot: lc/lc.jsonl}\n", "c.yaml:2: synth.long_cot: expected a mapping of settings (got 'lc/lc.jsonl')"),
    ("sft: {lora: true}\n", "c.yaml:2: sft.lora: expected a mapping of settings (got true)"),
    ("curate: {sources: [5]}\n", "c.yaml:2: curate.sources.0: expected a mapping of settings (got 5)"),
    ("runs_dir: 5\n", "c.yaml:2: runs_dir: expected a path (got 5)"),
    ("search: {corpus_path: [a]}\n", "c.yaml:2: search.corpus_path: expected a path (got a list)"),
    ("synth: {long_cot: {path: ''}}\n", "c.yaml:2: synth.long_cot.path: must not be empty (leave the setting out for its default)"),
    ("runs_dir: ' '\n", "c.yaml:2: runs_dir: must not be empty (leave the setting out for its default)"),
    ("curate: {sources: [{path: x.jsonl, fields: {answr: answer}}]}\n",
     f"c.yaml:2: curate.sources.0.fields.answr: the name 'answr' should be {FIELDS}; did you mean 'answer'?"),
    # a union's members: one message, not one per member with pydantic's labels in the path
    ("curate: {sources: [{kind: hf, path: org/x, data_files: 5}]}\n", "c.yaml:2: curate.sources.0.data_files: expected a text or a list (got 5)"),
    ("curate: {sources: [{kind: hf, path: org/x, data_files: [1]}]}\n", "c.yaml:2: curate.sources.0.data_files.0: Input should be a valid string"),
    ("sft: {lora: {target_modules: {a: 1}}}\n", "c.yaml:2: sft.lora.target_modules: expected a text or a list (got a mapping)"),
    ("grpo: {vllm: {url: 5}}\n", "c.yaml:2: grpo.vllm.url: Input should be a valid string"),  # a field named like a type stays
    ("tiny_model: {heads: 3, kv_heads: 2}\n", "c.yaml:2: tiny_model: heads: 3 query heads cannot be shared among kv_heads 2 key/value heads "
     "(grouped-query attention): heads must be a multiple of kv_heads"),
    # #22: a file format given as a source kind
    ("curate: {sources: [{kind: csv, path: x.csv}]}\n", "c.yaml:2: curate.sources.0.kind: unknown source kind 'csv'; did you mean 'tsv'? "
     "(kinds: jsonl, json, tsv, hf, verl; csv is read by an hf source: `kind: hf, path: csv, data_files: [FILE]`)"),
    ("curate: {sources: [{kind: JSONL, path: x.jsonl}]}\n", "c.yaml:2: curate.sources.0.kind: unknown source kind 'JSONL'; did you mean "
     "'jsonl'? (kinds: jsonl, json, tsv, hf, verl; Parquet, CSV and other files: `kind: hf, path: parquet, data_files: [FILE]`)"),
    # review r6 #18: YAML's flow style, not a Python dict; the shape words of the other errors; no doubled prefix
    ("curate: {split: {coldstart: 0.5, rl: 0.6}}\n",
     "c.yaml:2: curate.split: fractions must be non-negative and sum to 1, got {coldstart: 0.5, rl: 0.6}"),
    ("synth: {request: {extra_body: [1, 2]}}\n", "c.yaml:2: synth.request.extra_body: expected a mapping (got a list)"),
    ("curate: {sources: [{path: a.jsonl, include: {split: test}}]}\n", "c.yaml:2: curate.sources.0.include.split: expected a list (e.g. [test])"),
    # review r7 #6: PyYAML reads a number in exponent form without a dot and a signed exponent as text
    ("world: {long_cot: 1e3}\n", "c.yaml:2: world.long_cot: '1e3' is read as text by YAML; write 1000"),
    ("curate: {max_pixels: 1.5E6}\n", "c.yaml:2: curate.max_pixels: '1.5E6' is read as text by YAML; write 1500000"),
    ("world: {per_family: 5e-1}\n", "c.yaml:2: world.per_family: '5e-1' is read as text by YAML, and is not a whole number; "
     "write a whole number in full"),
    # review m4: the number the hint would suggest is out of the setting's range: its refusal at once, with what YAML read
    ("curate: {max_pixels: 1e20}\n", "c.yaml:2: curate.max_pixels: '1e20' is read as text by YAML, and 100000000000000000000 would be "
     "refused too: 100000000000000000000 is above the 178956970 pixels pillow opens at all (2 x PIL.Image.MAX_IMAGE_PIXELS, its "
     "decompression-bomb error); allowed: 1 to that"),
    ("curate: {sources: [{path: a.jsonl, limit: 0e3}]}\n", "c.yaml:2: curate.sources.0.limit: '0e3' is read as text by YAML, and 0 "
     "would be refused too: Input should be greater than or equal to 1"),
    ("curate: {seed: 1e10}\n", "c.yaml:2: curate.seed: '1e10' is read as text by YAML, and 10000000000 would be refused too: "
     "Input should be less than or equal to 4294967295"),
    ("curate: {max_pixels: 1e6}\n", "c.yaml:2: curate.max_pixels: '1e6' is read as text by YAML; write 1000000"),  # allowed: the hint
    # review r7 #7: the world's row count mixed up with synth.long_cot, the mix's settings
    ("world:\n  long_cot: {ratio: 0.816}\n", "c.yaml:3: world.long_cot: expected a whole number, the long-CoT rows the world writes "
     "(got a mapping); the long-CoT mix's settings (ratio, path, opening) go under synth.long_cot"),
    ("curate: {sources: {kind: jsonl, path: a.jsonl}}\n", "c.yaml:2: curate.sources: expected a list (got a mapping)"),
    ("synth: {pools: coldstart}\n", "c.yaml:2: synth.pools: expected a list (e.g. [coldstart])"),
    ("eval: {benchmarks: null}\n", "c.yaml:2: eval.benchmarks: expected a list (got null)"),
    # review r7 #9: an entry that is not a name or a path, in the config's words (pydantic's: "Input should be a valid string")
    ("eval:\n  benchmarks:\n    - {name: x}\n", "c.yaml:4: eval.benchmarks.0: expected a benchmark name or a definition file's path "
     "(got a mapping)"),
    ("eval: {benchmarks: [5]}\n", "c.yaml:2: eval.benchmarks.0: expected a benchmark name or a definition file's path (got 5)"),
    ("eval:\n  benchmarks:\n    -\n", "c.yaml:4: eval.benchmarks.0: expected a benchmark name or a definition file's path (got null)"),
    ("eval: {benchmarks: [' ']}\n", "c.yaml:2: eval.benchmarks.0: expected a benchmark name or a definition file's path (got ' ')"),
    ("select: {mix: {rl: {perceptoin: 1.0}}}\n", "c.yaml:2: select.mix: rl: unknown category 'perceptoin'; did you mean 'perception'? "
     "(one of perception, reasoning, search, direct)"),
    ("reward: {answer_cap_chars: {percepton: 3}}\n", "c.yaml:2: reward.answer_cap_chars: unknown category 'percepton'; did you mean "
     "'perception'? (one of perception, reasoning, search, direct)"),
    ("curate: {sources: [{kind: hf, path: csv, data_files: a.csv, subset: foo}]}\n", "c.yaml:2: curate.sources.0: subset: path 'csv' is "
     "a `datasets` builder, which has no subsets (it reads the files data_files names; a subset is a hub dataset's); remove it"),
    # review m3: both reward weights 0 make every reward 0 (GRPO learns nothing); either alone is a choice
    ("reward: {accuracy_weight: 0, format_weight: 0}\n", "c.yaml:2: reward.format_weight: 0, and accuracy_weight is 0 too: every "
     "reward would be 0, so GRPO would learn nothing; set either weight above 0"),
    ("reward:\n  accuracy_weight: 0.0\n  format_weight: 0\n", "c.yaml:4: reward.format_weight: 0, and accuracy_weight is 0 too: "
     "every reward would be 0, so GRPO would learn nothing; set either weight above 0"),
])
def test_each_mistake_reads_in_the_yaml_words(tmp_path, text, expected):
    assert refusal(tmp_path, text) == expected


def test_curate_sources_that_is_not_a_list_is_a_config_error_not_a_traceback(tmp_path):
    assert refusal(tmp_path, "curate: {sources: 5}\n") == "c.yaml:2: curate.sources: expected a list (e.g. [5])"


def test_a_misspelt_field_name_on_the_command_line_has_no_key_noise(tmp_path):
    with pytest.raises(SourceError) as raised:
        SourceSpec.parse_cli("jsonl:x.jsonl,fields.answr=answer")
    assert str(raised.value) == f"--source 'jsonl:x.jsonl,fields.answr=answer': fields.answr: the name 'answr' should be {FIELDS}; did you mean 'answer'?"


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    seen[model.__name__] = model
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        annotation = stack.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.__name__ not in seen:
            _models(annotation, seen)
        stack += typing.get_args(annotation)
    return seen


def _config_models() -> list[type[BaseModel]]:
    from eval.benchmarks import BenchmarkSpec
    from synth.runtime.profile import ProfileFile

    return list({**_models(PipelineConfig, {}), **_models(BenchmarkSpec, {}), **_models(ProfileFile, {})}.values())


MODELS = _config_models()
YAML_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)
LEAKS = ("<class", "instance of", "[key]", "Value error", "Assertion failed", "list[", "function-", "literal[", "lax-or-strict")


def test_the_property_covers_every_section():
    names = {m.__name__ for m in MODELS}
    assert {"PipelineConfig", "SynthConfig", "LongCotConfig", "LoraSettings", "SourceSpec", "SearchConfig", "BenchmarkSpec",
            "ProfileFile"} <= names


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_message_of_any_config_model_names_a_python_class_or_pydantic_shape(data):
    """Any wrong value in any field of any config model: every line of the shared formatter is free of
    Python's and pydantic's shapes."""
    model = data.draw(st.sampled_from(MODELS))
    field = data.draw(st.sampled_from(sorted(model.model_fields)))
    value = data.draw(YAML_VALUES)
    try:
        model.model_validate({field: value})
    except ValidationError as exc:
        for line in validation_lines(exc.errors(), "c.yaml", None, model):
            assert not any(leak in line for leak in LEAKS), line
    except (ValueError, TypeError, OSError) as exc:  # a validator's own error outside pydantic's: not a shape question
        assert "<class" not in str(exc)


def test_a_protocol_profile_file_is_told_in_the_same_words(tmp_path):
    from synth.runtime.profile import ProfileError, load_profile, shipped_profiles

    profile = tmp_path / "p.yaml"
    profile.write_text(shipped_profiles()["deepeyes-v2"].read_text().replace("  system: ", "  systm: "))
    with pytest.raises(ProfileError) as raised:
        load_profile(profile)
    assert str(raised.value) == (f"profile {profile}:9: prompts.systm: the name 'systm' should be 'system', 'user', 'system_no_tools' or "
                                 "'user_no_tools'; did you mean 'system'?")
    profile.write_text("name: p\nversion: p/1\nprompts: {}\nobservation: null\n")
    with pytest.raises(ProfileError) as raised:
        load_profile(profile)
    assert str(raised.value) == f"profile {profile}:4: observation: expected a mapping of settings (got null)"


@pytest.mark.parametrize("text,expected", [
    # review r6 #9: a field of a section nested below the one it was written in is pointed at, not a near name
    ("synth: {max_turns: 3}\n", "c.yaml:2: synth.max_turns: unknown field; did you mean synth.agent.max_turns?"),
    ("sources: [{kind: jsonl, path: a.jsonl}]\n", "c.yaml:2: sources: unknown field; did you mean curate.sources?"),
    ("eval: {max_turns: 3}\n", "c.yaml:2: eval.max_turns: unknown field; did you mean eval.agent.max_turns?"),
    ("synth: {timeout_s: 3}\n", "c.yaml:2: synth.timeout_s: unknown field; did you mean synth.agent.kernel.timeout_s?"),
    ("synth: {max_turn: 3}\n", "c.yaml:2: synth.max_turn: unknown field; did you mean synth.agent.max_turns?"),  # misspelt and misplaced
    ("synth: {agnet: {}}\n", "c.yaml:2: synth.agnet: unknown field; did you mean 'agent'?"),  # a close name here wins
    ("synth: {zzz: 3}\n", "c.yaml:2: synth.zzz: unknown field"),
    # review r6 #10: an optional section written null is not "no section"
    ("world: null\n", "c.yaml:2: world: expected a mapping of settings (got null); leave the section out for no world"),
    ("grpo: null\n", "c.yaml:2: grpo: expected a mapping of settings (got null); leave the section out for no GRPO stage (SFT only)"),
    ("probe: ~\n", "c.yaml:2: probe: expected a mapping of settings (got null); leave the section out for no probes (pools split by hash)"),
])
def test_nesting_and_null_sections_read_in_the_yaml_words(tmp_path, text, expected):
    assert refusal(tmp_path, text) == expected


def test_a_list_entrys_field_written_on_its_section_points_at_the_list(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: c\ncurate: {kind: jsonl, path: a.jsonl}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    assert str(raised.value).replace(str(config), "c.yaml") == (
        "invalid config:\n  c.yaml:2: curate.kind: unknown field; did you mean curate.sources[].kind or curate.benchmarks[].kind?\n"
        "  c.yaml:2: curate.path: unknown field; did you mean curate.sources[].path or curate.benchmarks[].path?")


def test_the_world_kind_is_read_in_any_case_like_other_kinds(tmp_path):
    """Review r6 #18: `world.kind: Classic` was refused with "did you mean 'classic'?"."""
    config = tmp_path / "c.yaml"
    config.write_text("name: c\nworld: {kind: Classic}\n")
    assert load_config(config, check=False).world.kind == "classic"
    config.write_text("name: c\nworld: {kind: LEARNABLE, families: [Perception]}\n")
    assert (load_config(config, check=False).world.kind, load_config(config, check=False).world.families) == ("learnable", ["perception"])


# Review r6 #18: the checks after validation (files that must exist, mapped columns, benchmarks, cross-field rules)
# name a setting as validation errors do: `FILE:LINE: curate.sources.0: ...`, never `curate.sources[0]: ...` without a line.
LOAD_TIME = [
    ("curate:\n  seed: 3\n  sources:\n    - kind: jsonl\n      name: first\n      path: nope.jsonl\n",
     "      path: nope.jsonl", "curate.sources.0.path: file not found: {d}/nope.jsonl"),
    ("curate:\n  sources:\n    - path: rows.jsonl\n    -   kind: jsonl\n        path: rows.jsonl\n        name: second\n"
     "        fields: {answer: nocol}\n",
     "        fields: {answer: nocol}", "curate.sources.1: source 'second': fields.answer: 'nocol': no such column in its first rows "
                           "(columns: answer, question)"),
    ("curate:\n  sources: [{path: rows.jsonl}]\n  benchmarks:\n\n    - kind: hf\n      path: csv\n      data_files: nope*.csv\n",
     "      data_files: nope*.csv", "curate.benchmarks.0: data_files: no file matches {d}/nope*.csv"),
    # review r7 #8: a mapped column and an include filter at their own lines, not the entry's first
    ("curate:\n  sources:\n    - kind: jsonl\n      path: rows.jsonl\n      include:\n        split: [test]\n",
     "        split: [test]", "curate.sources.0: source 'rows': include.split: no such column in its first rows (columns: answer, question)"),
    ("curate: {sources: [{path: rows.jsonl}]}\neval:\n  model_url: http://127.0.0.1:9/v1\n  model_name: m\n"
     "  benchmarks:\n    - vstar-typo\n", "    - vstar-typo", "eval.benchmarks.0: unknown benchmark 'vstar-typo'"),
    ("curate: {sources: [{path: rows.jsonl}]}\nsynth:\n  long_cot:\n    path: nope.jsonl\n",
     "    path: nope.jsonl", "synth.long_cot.path: file not found: {d}/nope.jsonl"),
    # review r7 #2: an empty world long-CoT file that a ratio draws from is refused at load, at world.long_cot
    ("world:\n  per_family: 1\n  long_cot: 0\nsynth: {long_cot: {ratio: 0.816}}\n", "  long_cot: 0",
     "world.long_cot: 0 writes no long-CoT rows, and synth.long_cot (ratio 0.816) mixes the world's long-CoT rows into the cold-start "
     "set; raise world.long_cot (100 by default), or give synth.long_cot.path"),
    ("world:\n  kind: learnable\n  instruct_per_family: 1\n  long_cot: 0\nbase: {}\nreplay: {}\n", "  long_cot: 0",
     "world.long_cot: 0 writes no long-CoT rows, and base.long_cot_ratio (0.5) mixes them into the instruct set; raise world.long_cot "
     "(100 by default), or set base.long_cot_ratio: 0"),
    # review r7 #1: two eval benchmarks of one name would keep one result in metrics.json; told at the second
    ("curate: {sources: [{path: rows.jsonl}]}\neval:\n  benchmarks:\n    - demo-heldout\n    - demo-heldout \n",
     "    - demo-heldout ", "eval.benchmarks: entry 0 and entry 1 are both named 'demo-heldout': metrics.json keeps one result per "
                           "benchmark name, so one would be lost; name each benchmark once (a definition file's name is its `name:`)"),
]


@pytest.mark.parametrize("text,at,says", LOAD_TIME)
def test_a_load_time_mistake_is_named_by_file_line_and_dotted_field(tmp_path, text, at, says):
    (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n# the sources\n" + text)
    line = config.read_text().splitlines().index(at) + 1  # where the entry (or its key) is in the file written
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"{config}:{line}: {says.format(d=tmp_path)}"), str(raised.value)


@pytest.mark.parametrize("text,at,says", [case for case in LOAD_TIME if case[0].startswith("curate:\n")])
def test_deepeyes_curate_names_a_config_entry_s_line_as_the_config_check_does(tmp_path, monkeypatch, capsys, text, at, says):
    import sys

    from flows.cli import main

    (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n# the sources\n" + text)
    line = config.read_text().splitlines().index(at) + 1
    monkeypatch.setattr(sys, "argv", ["deepeyes", "curate", "--config", str(config), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert (exited.value.code, capsys.readouterr().err.strip()) == (2, f"error: {config}:{line}: {says.format(d=tmp_path)}")
    assert not (tmp_path / "out").exists()


def test_two_eval_benchmark_files_of_one_name_are_refused_by_their_names(tmp_path):
    """Review r7 #1: definition files are told apart by their `name:`, not their file names."""
    (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    for file in ("a.yaml", "b.yaml", "c.yaml"):
        (tmp_path / file).write_text(f"name: {'other' if file == 'c.yaml' else 'dup'}\nsource: {{kind: jsonl, path: {tmp_path}/rows.jsonl}}\n")
    config = tmp_path / "cfg.yaml"
    config.write_text("name: c\ncurate: {sources: [{path: rows.jsonl}]}\neval:\n  benchmarks:\n    - a.yaml\n    - c.yaml\n    - b.yaml\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"{config}:7: eval.benchmarks: entry 0 and entry 2 are both named 'dup': metrics.json"), raised.value
    config.write_text("name: c\ncurate: {sources: [{path: rows.jsonl}]}\neval:\n  benchmarks: [a.yaml, c.yaml]\n")
    assert load_config(config).eval.benchmarks == [str(tmp_path / "a.yaml"), str(tmp_path / "c.yaml")]


@pytest.mark.parametrize("text", [
    "world: {long_cot: 0}\n",  # nothing draws from it
    "world: {long_cot: 0}\nsynth: {long_cot: {ratio: 0}}\n",
    "world: {long_cot: 0}\nsynth: {long_cot: {ratio: 0.5, path: rows.jsonl}}\n",  # another source
    "world: {kind: learnable, instruct_per_family: 1, long_cot: 0}\nbase: {long_cot_ratio: 0}\nreplay: {}\n",
])
def test_an_empty_world_long_cot_file_that_nothing_draws_from_loads(tmp_path, text):
    (tmp_path / "rows.jsonl").write_text('{"question": "q", "response": "<answer>a</answer>"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n" + text)
    assert load_config(config).world.long_cot == 0


def test_split_or_subset_on_a_jsonl_source_is_told_at_the_option_s_own_line(tmp_path):
    """Review r7 #8: the check is the source's own (a model validator), and its message names the first
    option given; its line is that option's, not the entry's first."""
    (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("name: c\ncurate:\n  sources:\n    - kind: jsonl\n      path: rows.jsonl\n      split: test\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"invalid config:\n  {config}:6: curate.sources.0: split: an option of `hf` sources only, and this source "
                                 "is kind jsonl (one file: its path); remove it")


def test_a_benchmark_name_with_spaces_around_it_is_the_name(tmp_path):
    """Review r7 #12: `" vstar "` was refused as an unknown benchmark (suggesting `vstar`); it is `vstar`."""
    from eval.stage import EvalConfig

    config = tmp_path / "c.yaml"
    config.write_text("name: c\neval: {benchmarks: [' vstar ', \"demo-heldout\\t\"]}\n")
    assert load_config(config, check=False).eval.benchmarks == ["vstar", "demo-heldout"]
    assert EvalConfig(benchmarks=[" vstar"]).benchmarks == ["vstar"]  # `deepeyes evaluate --benchmark ' vstar'` reads it so


def test_several_mistakes_are_listed_in_the_file_s_order(tmp_path):
    """Review r7 #12: pydantic's order (lines 10, 9, 8; or a model check's line first) is not the file's."""
    config = tmp_path / "c.yaml"
    config.write_text("name: c\ncurate:\n  near_dup:\n    threshold: high\n    enabled: maybe\n  max_pixels: 1e20\n"
                      "  sources:\n    - kind: jsonl\n      path: a.jsonl\n      limit: -1\n      category: perceptoin\nprobe: null\n"
                      "world: {long_cot: true}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    lines = str(raised.value).removeprefix("invalid config:\n  ").split("\n  ")
    numbers = [int(line.removeprefix(f"{config}:").split(":", 1)[0]) for line in lines]
    assert numbers == [4, 5, 6, 10, 11, 12, 13], lines


def test_the_formatter_lists_its_errors_in_the_file_s_order():
    """Every YAML file's errors (configs, benchmark definitions, protocol profiles) go through `validation_lines`."""
    import yaml

    text = "name: c\ncurate:\n  near_dup:\n    threshold: high\n    enabled: maybe\n  max_pixels: 1e20\n"
    with pytest.raises(ValidationError) as raised:
        PipelineConfig.model_validate(yaml.safe_load(text))
    lines = validation_lines(raised.value.errors(), "c.yaml", yaml.compose(text), PipelineConfig)
    assert [line.split(":", 2)[1] for line in lines] == ["4", "5", "6"], lines


def test_benchmark_and_source_names_are_trimmed_alike_everywhere(tmp_path):
    """Review r7 #12: `" vstar "` is `vstar` in `eval.benchmarks` and `--benchmark` (as above), and so is a
    `curate.benchmarks` (or source) entry's `name:` and a definition file's `name:`: names with spaces around
    them are one name with the trimmed one, so two of them are refused as one name given twice."""
    from eval.benchmarks import load_spec

    (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    assert load_spec(" vstar ").name == "vstar"  # what `deepeyes evaluate --benchmark ' vstar '` loads
    assert SourceSpec(path="rows.jsonl", name=" b\t").source_name == "b"
    (tmp_path / "b1.yaml").write_text("name: ' mine '\nsource: {kind: jsonl, path: rows.jsonl}\n")
    (tmp_path / "b2.yaml").write_text("name: mine\nsource: {kind: jsonl, path: rows.jsonl}\n")
    assert load_spec(str(tmp_path / "b1.yaml")).name == "mine"
    config = tmp_path / "c.yaml"
    config.write_text("name: c\ncurate:\n  benchmarks:\n    - {kind: jsonl, path: rows.jsonl, name: ' b '}\n"
                      "    - {kind: jsonl, path: rows.jsonl, name: b}\n")
    with pytest.raises(ConfigError, match=r"curate\.benchmarks: entry 0 and entry 1 are both named 'b'"):
        load_config(config)
    config.write_text(f"name: c\neval: {{model_url: 'http://127.0.0.1:9/v1', model_name: m, "
                      f"benchmarks: [' {tmp_path / 'b1.yaml'}', {tmp_path / 'b2.yaml'}]}}\n")
    with pytest.raises(ConfigError, match=r"eval\.benchmarks: entry 0 and entry 1 are both named 'mine'"):
        load_config(config)


@pytest.mark.parametrize("given,choices,found", [
    ("no-tools", ["no-seed", "no-stop", "no-tool-free-control", "tool-free-control"], ["no-tool-free-control"]),
    ("tool-free", ["no-stop", "no-tool-free-control", "tool-free-control"], ["tool-free-control", "no-tool-free-control"]),
    # the words must follow one another: `max_tokens_per_turn` has words between `max` and `turn`
    ("max_turn", ["max_turns", "max_tokens_per_turn", "max_total_tokens", "temperature"], ["max_turns"]),
    ("sft", ["train_sft", "train_grpo", "eval"], ["train_sft"]),
    ("studnet-url", ["student-url", "student-model", "seed"], ["student-url", "student-model"]),
    ("bogus", ["out", "source", "benchmark"], []),
    ("  Categry ", ["category", "categories"], ["category", "categories"]),
    # review r8 F7: initials name a setting first (`lr` got only `lr_scheduler`); one letter begins nothing
    ("lr", ["learning_rate", "lr_scheduler", "max_steps", "batch_size"], ["learning_rate", "lr_scheduler"]),
    ("n", ["no-dry-run", "name"], []),
])
def test_closest_names_the_choices_whose_words_the_given_name_begins_else_the_similar_ones(given, choices, found):
    """Review r7 #11: one rule for every "did you mean"; a shortened name (`no-tools`) names the options it begins,
    not difflib's similar-looking `no-stop`; a misspelt one (`studnet-url`) gets difflib's, closest first."""
    from curation.suggest import closest

    assert closest(given, choices, n=3) == found


@pytest.mark.parametrize("text", ["reward: {accuracy_weight: 0}\n", "reward: {accuracy_weight: 1, format_weight: 0}\n",
                                  "reward: {accuracy_weight: 0, format_weight: 1}\n"])
def test_one_reward_weight_of_0_loads(tmp_path, text):
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n" + text)
    reward = load_config(config, check=False).reward
    assert reward.accuracy_weight + reward.format_weight > 0
