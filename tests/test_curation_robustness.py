"""The inputs users really have, each as `deepeyes curate` sees them: nothing lost, no traceback.

One test per kind of input: a line that is not UTF-8, a PNG with a broken EXIF block, a generic
JSONL without categories (and the ways to give them: per source on the command line and in
config, and a map from the source's own labels), a JSON array file, an answer that is an object or
a list, a file that is not rows at all. Config values are refused where the library that will use
them would fail later."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.shards import QUARANTINE_SCHEMA, read_manifest, read_table
from curation.sources import SourceError, SourceSpec
from curation.stage import CurateConfig, run_curate
from tests.curate_cli import assert_every_row_counted, curate


def png(seed: int, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def quarantine(out: Path) -> list[dict]:
    return read_table(out / "quarantine", QUARANTINE_SCHEMA).to_pylist()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


WORDS = ("amber anchor basket beacon canyon cedar comet copper dahlia delta ember falcon fern garnet glacier harbor hazel "
         "indigo iris jasper juniper kettle lagoon lantern maple marble meadow nectar nickel orchid otter pebble pepper quartz "
         "quill raven ribbon saffron salmon sierra tundra tulip umber velvet violet walnut willow yarrow zephyr zinnia").split()
# Questions that share no run of three words with each other: near-duplicate removal keeps them all.
QUESTIONS = [f"{WORDS[i]} {WORDS[(i + 7) % len(WORDS)]} {WORDS[(i + 19) % len(WORDS)]} {WORDS[(i + 31) % len(WORDS)]}: how many "
             f"{WORDS[(i + 3) % len(WORDS)]} {WORDS[(i + 11) % len(WORDS)]}?" for i in range(40)]


def own_rows(n: int, **extra) -> list[dict]:
    """A user's own data: question and answer, no category."""
    return [{"question": QUESTIONS[i], "answer": str(100 + i), **extra} for i in range(n)]


def test_a_line_that_is_not_utf8_is_quarantined_with_its_line_number_and_the_rest_go_on(tmp_path):
    rows = [json.dumps(row).encode() for row in own_rows(4, category="reasoning")]
    rows.insert(2, b'{"question": "caf\xe9 au lait?", "answer": "yes", "category": "reasoning"}')  # Latin-1, not UTF-8
    (tmp_path / "src.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    done = curate("--source", f"jsonl:{tmp_path / 'src.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert done.summary["counts"]["rows_in"] == 5 and done.summary["counts"]["rows_out"] == 4
    [bad] = quarantine(tmp_path / "out")
    assert bad["reason"].startswith("invalid_encoding: line 3: not UTF-8") and bad["origin"] == f"{tmp_path / 'src.jsonl'}:3"
    assert "caf" in json.loads(bad["row"])["line"]  # what the line held, as far as it reads
    assert_every_row_counted(tmp_path / "out", rows_in=5)


def test_a_tsv_line_that_is_not_utf8_is_quarantined_too(tmp_path):
    lines = [b"index\tquestion\tanswer\tcategory", b"0\tWhat colour is the car?\tred\treasoning",
             b"1\tWhat colour is the caf\xe9?\tblue\tperception", b"2\tHow many wheels does it have?\t4\treasoning"]
    (tmp_path / "b.tsv").write_bytes(b"\n".join(lines) + b"\n")
    done = curate("--source", f"tsv:{tmp_path / 'b.tsv'}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert sorted(r["id"] for r in read_table(tmp_path / "out").to_pylist()) == ["0", "2"]
    [bad] = quarantine(tmp_path / "out")
    assert bad["reason"].startswith("invalid_encoding: line 3") and bad["origin"].endswith(":3")


def with_exif_chunk(data: bytes, payload: bytes) -> bytes:
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]  # right after IHDR


def test_a_png_with_a_broken_exif_block_is_kept_without_it(tmp_path):
    broken = with_exif_chunk(png(1), b"XXXXnot a TIFF header at all")
    with pytest.raises(SyntaxError):  # what crashed the scan before
        Image.open(io.BytesIO(broken)).getexif()
    (tmp_path / "broken.png").write_bytes(broken)
    (tmp_path / "good.png").write_bytes(png(2))
    write_jsonl(tmp_path / "src.jsonl", [
        {"id": "broken", "question": "What does the label on the left say?", "answer": "exit", "images": ["broken.png"], "category": "perception"},
        {"id": "good", "question": "How many people are on the bench?", "answer": "2", "images": ["good.png"], "category": "perception"},
    ])
    done = curate("--source", f"jsonl:{tmp_path / 'src.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    kept = {row["id"]: row for row in read_table(tmp_path / "out").to_pylist()}
    assert set(kept) == {"broken", "good"}
    with Image.open(io.BytesIO(kept["broken"]["images"][0]["bytes"])) as image:
        assert dict(image.getexif()) == {} and "exif" not in image.info  # kept, without the EXIF that could not be read
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(Image.open(io.BytesIO(png(1))).convert("RGB")))
    assert kept["good"]["images"][0]["bytes"] == png(2)  # a clean image is kept byte for byte


def test_a_source_whose_rows_are_all_invalid_fails_loudly_with_the_top_reason_and_the_fix(tmp_path):
    source = write_jsonl(tmp_path / "mine.jsonl", own_rows(36))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "curate", "--source", f"jsonl:{source}", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: source 'mine': all 36 rows are unusable, 36 for missing_category: give the source a category")
    assert "--source KIND:PATH,category=perception" in line and "category: perception" in line
    assert read_manifest(tmp_path / "out") is None and not list((tmp_path / "out").glob("part-*.parquet"))  # no curated rows
    assert len(quarantine(tmp_path / "out")) == 36  # each row's reason is there
    assert_every_row_counted(tmp_path / "out", rows_in=36)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["quarantine", "report.json", "report.md"]  # no staged scans


def test_a_curate_that_fails_mid_scan_leaves_no_staged_scans_nor_a_folder_it_made(tmp_path, monkeypatch):
    import curation.stage

    good = write_jsonl(tmp_path / "good.jsonl", own_rows(3, category="search"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a"\n')  # not JSON Lines: the source's mistake, said as its scan reads it
    # A folder the command makes: nothing is left of it.
    done = curate("--source", f"jsonl:{broken}", "--out", str(tmp_path / "new"))
    assert done.code == 2 and "broken.jsonl is not valid JSON" in done.error, done
    assert not (tmp_path / "new").exists()
    # A folder that was there: kept with what was in it, without the staged scan of the source read before the broken one.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    done = curate("--source", f"jsonl:{good}", "--source", f"jsonl:{broken}", "--out", str(tmp_path / "mine"))
    assert done.code == 2 and "broken.jsonl is not valid JSON" in done.error, done
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    # Anything else that stops a scan (here an interrupt after the first row) leaves no staging either.
    real, seen = curation.stage.row_to_sample, []

    def interrupted(*args, **kwargs):
        seen.append(1)
        if len(seen) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(curation.stage, "row_to_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_curate(CurateConfig(sources=[SourceSpec(path=good)]), tmp_path / "stopped")
    assert len(seen) == 2 and not (tmp_path / "stopped").exists()


@pytest.mark.parametrize("where", ["_benchmark_index", "assign_pool", "StepReport.write"])
def test_a_curate_interrupted_in_its_final_step_leaves_nothing_it_wrote(tmp_path, monkeypatch, where):
    """Review m7: an interrupt after the final step opened `quarantine/` left DIR with an empty
    quarantine/ (at 7-9 s of a 60,000-row run). Whenever it lands (before any output, after some
    shards, after the shards' manifest), a folder the call made goes, with the folders above it that
    it made, and a folder that was there keeps only what it held."""
    import curation.stage

    source = write_jsonl(tmp_path / "mine.jsonl", own_rows(40, category="reasoning"))
    cfg = CurateConfig(sources=[SourceSpec(path=source)], rows_per_shard=3)
    owner, name = (curation.stage.StepReport, "write") if where == "StepReport.write" else (curation.stage, where)
    real, calls = getattr(owner, name), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > (10 if where == "assign_pool" else 0):  # assign_pool: after three shards of rows are written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_curate(cfg, tmp_path / "made" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_curate(cfg, tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    monkeypatch.setattr(owner, name, real)
    assert run_curate(cfg, tmp_path / "made" / "out")["counts"]["rows_out"] == 40  # the rerun runs


def test_a_category_for_a_source_without_one_on_the_command_line(tmp_path):
    source = write_jsonl(tmp_path / "mine.jsonl", own_rows(36))
    done = curate("--source", f"jsonl:{source},category=search", "--out", str(tmp_path / "a"))  # text-only rows: not perception
    assert done.code == 0 and done.summary["counts"]["rows_out"] == 36 and done.summary["per_category"] == {"search": 36}
    # The same option for every --source given, by its own flag; a source's own option wins.
    other = write_jsonl(tmp_path / "other.jsonl", [{"question": q, "answer": "yes"} for q in QUESTIONS[36:39]])
    done = curate("--source", f"jsonl:{source}", "--source", f"jsonl:{other},category=search", "--category", "reasoning",
                  "--out", str(tmp_path / "b"))
    assert done.code == 0, done.error
    assert done.summary["per_category"] == {"reasoning": 36, "search": 3}


def mmbench_like(tmp_path: Path) -> Path:
    labels = ["color", "count", "reason", "ocr"]
    (tmp_path / "mmb.png").write_bytes(png(0))  # a perception sample needs an image
    rows = [{"question": QUESTIONS[i], "answer": "A", "choices": ["yes", "no"], "category": labels[i % 4], "images": ["mmb.png"]}
            for i in range(8)]
    return write_jsonl(tmp_path / "mmb.jsonl", rows)


def test_a_category_map_from_the_sources_labels_in_config(tmp_path):
    source = mmbench_like(tmp_path)
    config = tmp_path / "curate.yaml"
    config.write_text(f"curate: {{sources: [{{path: {source}, category_map: {{color: perception, count: reasoning, reason: reasoning}}}}]}}\n")
    done = curate("--config", str(config), "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert done.summary["per_category"] == {"perception": 2, "reasoning": 4}
    unmapped = quarantine(tmp_path / "out")
    assert [r["reason"].split(":")[0] for r in unmapped] == ["unknown_category"] * 2 and "'ocr'" in unmapped[0]["reason"]
    assert_every_row_counted(tmp_path / "out", rows_in=8)


def test_a_category_map_on_the_command_line_with_the_sources_category_for_other_labels(tmp_path):
    source = mmbench_like(tmp_path)
    done = curate("--source", f"jsonl:{source},category_map.color=perception,category_map.count=reasoning,category=search",
                  "--category-map", "reason=reasoning", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert done.summary["per_category"] == {"perception": 2, "reasoning": 4, "search": 2}
    categories = {row["question"]: row["category"] for row in read_table(tmp_path / "out").to_pylist()}
    assert categories[QUESTIONS[3]] == "search" and categories[QUESTIONS[1]] == "reasoning"  # ocr by the source's, count by its entry


def test_field_mappings_and_answer_type_on_the_command_line(tmp_path):
    rows = [{"query": QUESTIONS[i], "label": 7 * i, "kind": "reasoning"} for i in range(3)]
    source = write_jsonl(tmp_path / "renamed.jsonl", rows)
    done = curate("--source", f"jsonl:{source},answer_type=text", "--fields", "question=query", "--fields", "answer=label",
                  "--fields", "category=kind", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    out = sorted(read_table(tmp_path / "out").to_pylist(), key=lambda r: r["question"])
    assert [(r["answer"], r["answer_type"], r["category"]) for r in out] == [("0", "text", "reasoning"), ("7", "text", "reasoning"),
                                                                             ("14", "text", "reasoning")]


def test_a_pretty_printed_json_array_given_as_jsonl_is_read_as_rows(tmp_path):
    rows = own_rows(12, category="reasoning")
    (tmp_path / "array.jsonl").write_text(json.dumps(rows, indent=2))
    assert len((tmp_path / "array.jsonl").read_text().splitlines()) > 48  # one row over several lines
    for kind, name in (("jsonl", "a"), ("json", "b")):
        done = curate("--source", f"{kind}:{tmp_path / 'array.jsonl'}", "--out", str(tmp_path / name))
        assert done.code == 0, done.error
        assert done.summary["counts"] == {"rows_in": 12, "invalid": 0, "duplicates": 0, "near_duplicates": 0, "contaminated": 0, "rows_out": 12}
    (tmp_path / "mixed.json").write_text(json.dumps([*rows[:2], [1, 2], "text"], indent=1))
    done = curate("--source", f"json:{tmp_path / 'mixed.json'}", "--out", str(tmp_path / "c"))
    assert done.code == 0 and done.summary["counts"]["rows_out"] == 2
    assert sorted(r["origin"].rsplit("[", 1)[1] for r in quarantine(tmp_path / "c")) == ["2]", "3]"]


@pytest.mark.parametrize("content,says", [
    ("question,answer\nWhat is it?,a cat\nAnd this?,a dog\n", "it looks like CSV"),
    ('{\n  "data": [\n    {"question": "q", "answer": "a"}\n  ]\n}\n', "holds one JSON object, not rows"),
    ("PAR1\x00\x15\x04binary", "it looks like Parquet"),
])
def test_a_file_that_is_neither_json_lines_nor_a_json_array_says_so_in_one_line(tmp_path, content, says):
    (tmp_path / "data.jsonl").write_text(content)
    done = curate("--source", f"jsonl:{tmp_path / 'data.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 2 and "\n" not in done.error and says in done.error
    assert "data.jsonl" in done.error


def test_an_answer_that_is_an_object_or_a_list_is_quarantined(tmp_path):
    rows = [{"question": QUESTIONS[0], "answer": {"value": 3, "unit": "m"}, "category": "reasoning"},
            {"question": QUESTIONS[1], "answer": [3, 4], "category": "reasoning"},
            {"question": QUESTIONS[2], "answer": 12, "category": "reasoning"},
            {"question": QUESTIONS[3], "answer": True, "category": "reasoning"}]
    source = write_jsonl(tmp_path / "src.jsonl", rows)
    done = curate("--source", f"jsonl:{source}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert sorted(r["answer"] for r in read_table(tmp_path / "out").to_pylist()) == ["12", "yes"]  # a boolean is a yes/no answer
    reasons = [r["reason"] for r in quarantine(tmp_path / "out")]
    assert reasons == ["invalid_answer: not a scalar (a dict); map `fields.answer` to a column of text or numbers",
                       "invalid_answer: not a scalar (a list); map `fields.answer` to a column of text or numbers"]
    # A nested field mapped as the answer by mistake: the same.
    nested = write_jsonl(tmp_path / "nested.jsonl", [{"question": QUESTIONS[0], "reward_model": {"ground_truth": "4"}, "category": "reasoning"},
                                                     {"question": QUESTIONS[1], "reward_model": "5", "category": "reasoning"}])
    done = curate("--source", f"jsonl:{nested},fields.answer=reward_model", "--out", str(tmp_path / "nested"))
    assert done.code == 0 and done.summary["counts"]["rows_out"] == 1
    assert quarantine(tmp_path / "nested")[0]["reason"].startswith("invalid_answer: not a scalar (a dict)")


def test_an_hf_image_column_with_a_broken_image_is_quarantined_not_a_crash(tmp_path):
    import datasets

    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"), "image": datasets.Image()})
    table = datasets.Dataset.from_dict({"question": QUESTIONS[:3], "answer": ["1", "2", "3"],
                                        "image": [{"bytes": png(1), "path": None}, {"bytes": png(2)[:70], "path": None},
                                                  {"bytes": with_exif_chunk(png(3), b"junk"), "path": None}]}, features=features)
    table.to_parquet(str(tmp_path / "train.parquet"))
    done = curate("--source", f"hf:parquet,data_files={tmp_path / 'train.parquet'},category=perception", "--fields", "images=image",
                  "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert sorted(r["answer"] for r in read_table(tmp_path / "out").to_pylist()) == ["1", "3"]
    assert [r["reason"].split(":")[0] for r in quarantine(tmp_path / "out")] == ["image_undecodable"]


def test_per_source_options_parse_with_the_configs_names():
    spec = SourceSpec.parse_cli("jsonl:/data/x.jsonl,name=mine,category=search,answer_type=number,limit=5,fields.answer=label,"
                                "category_map.Spatial Relation=reasoning,include.split=test|val")
    assert (spec.kind, spec.path, spec.name, spec.category, spec.answer_type, spec.limit) == ("jsonl", "/data/x.jsonl", "mine", "search", "number", 5)
    assert spec.fields == {"answer": "label"} and spec.category_map == {"Spatial Relation": "reasoning"}
    assert spec.include == {"split": ["test", "val"]}
    assert SourceSpec.parse_cli("tsv:V_star.tsv") == SourceSpec(kind="tsv", path="V_star.tsv")
    assert SourceSpec.parse_cli("data/x.jsonl", [("category", "perception")]).category == "perception"
    assert SourceSpec.parse_cli("x.jsonl,category=reasoning", [("category", "perception")]).category == "reasoning"  # its own wins
    with pytest.raises(SourceError, match="unknown option 'catgory'"):
        SourceSpec.parse_cli("jsonl:x.jsonl,catgory=perception")
    with pytest.raises(SourceError, match="category: Input should be 'perception', 'reasoning', 'search' or 'direct'"):
        SourceSpec.parse_cli("jsonl:x.jsonl,category=percep")
    with pytest.raises(SourceError, match="fields.sum"):
        SourceSpec.parse_cli("jsonl:x.jsonl,fields.sum=total")


CATEGORIES_SAID = "Input should be 'perception', 'reasoning', 'search' or 'direct'"
OPTIONS_SAID = "(options: name, category, answer_type, limit, subset, split, data_files, fields.X, category_map.X, include.X)"


@pytest.mark.parametrize("option,says", [
    ("category=perceptoin", f"category: {CATEGORIES_SAID}; did you mean 'perception'?"),
    ("category=PERCEPTOIN", f"category: {CATEGORIES_SAID}; did you mean 'perception'?"),
    ("answer_type=nubmer", "answer_type: Input should be 'choice', 'number', 'math' or 'text'; did you mean 'number'?"),
    ("category_map.color=perceptoin", f"category_map.color: {CATEGORIES_SAID}; did you mean 'perception'?"),
    ("category=cooking", f"category: {CATEGORIES_SAID}"),  # nothing close: no guess
    ("categroy=perception", f"unknown option 'categroy'; did you mean 'category'? {OPTIONS_SAID}"),
    ("fieds.answer=label", f"unknown option 'fieds.answer'; did you mean 'fields.answer'? {OPTIONS_SAID}"),
])
def test_a_per_source_option_that_is_none_of_its_choices_says_the_closest_one(tmp_path, option, says):
    """Review r4: `--source jsonl:x,category=perceptoin` had no "did you mean", which the same
    typo in a config's source gets: both go through `curation.suggest`."""
    source = tmp_path / "x.jsonl"
    source.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(SourceError) as raised:
        SourceSpec.parse_cli(f"jsonl:{source},{option}")
    got = "" if "unknown option" in says else f" (got {option.split('=')[1]!r})"  # the value as received (review r5)
    assert str(raised.value) == f"--source 'jsonl:{source},{option}': {says}{got}"
    done = curate("--source", f"jsonl:{source},{option}", "--out", str(tmp_path / "out"))
    assert done.code == 2 and done.error == f"error: {raised.value}" and not (tmp_path / "out").exists()
    if "unknown option" not in says:  # the same value in a config's source: the same words
        from flows.config import ConfigError, load_config

        key, value = option.split("=")
        entry = f"{key.split('.')[0]}: {{{key.split('.')[1]}: {value}}}" if "." in key else f"{key}: {value}"
        (tmp_path / "c.yaml").write_text(f"curate:\n  sources:\n    - {{path: {source}, {entry}}}\n")
        with pytest.raises(ConfigError) as in_config:
            load_config(tmp_path / "c.yaml")
        assert str(in_config.value).splitlines()[-1].endswith(f"curate.sources.0.{says}")


def test_a_misspelt_source_kind_and_a_flag_for_every_source_say_the_closest_choice(tmp_path):
    with pytest.raises(SourceError, match=r"unknown source kind 'jsnl'; did you mean 'jsonl'\? \(kinds: jsonl, json, tsv, hf, verl;"):
        SourceSpec.parse_cli("jsnl:x.jsonl")
    with pytest.raises(SourceError, match=r"unknown source kind 'parquet' \(kinds:"):  # nothing close
        SourceSpec.parse_cli("parquet:x.parquet")
    with pytest.raises(SourceError, match=r"^--answer-type 'maths': Input should be 'choice', 'number', 'math' or 'text'; did you mean 'math'\?$"):
        SourceSpec.parse_cli("x.jsonl", [("answer_type", "maths")])  # the CLI's --answer-type, named as typed


KINDS = "(e.g. jsonl:data/a.jsonl; kinds: jsonl, json, tsv, hf, verl)"


@pytest.mark.parametrize("spec,says", [
    (":", f"--source ':': the kind and path of KIND:PATH are empty {KINDS}"),
    (" : ,limit=3", f"--source ' : ,limit=3': the kind and path of KIND:PATH are empty {KINDS}"),
    (":x.jsonl", f"--source ':x.jsonl': the kind of KIND:PATH is empty {KINDS}"),
    ("jsonl:", f"--source 'jsonl:': the path of KIND:PATH is empty {KINDS}"),
    ("hf: ,data_files=a.parquet", f"--source 'hf: ,data_files=a.parquet': the path of KIND:PATH is empty {KINDS}"),
])
def test_a_source_spec_with_an_empty_kind_or_path_says_which_part_is_missing(tmp_path, spec, says):
    """Review m5: `--source :` was `file not found: :`."""
    with pytest.raises(SourceError) as raised:
        SourceSpec.parse_cli(spec)
    assert str(raised.value) == says
    result = curate("--source", spec, "--out", str(tmp_path / "o"))  # the command's one line
    assert (result.code, result.error) == (2, f"error: {says}")


def test_a_file_whose_name_starts_with_a_colon_is_still_a_bare_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(":x.jsonl").write_text("")
    assert SourceSpec.parse_cli(":x.jsonl") == SourceSpec(path=":x.jsonl")


@pytest.mark.parametrize("section,says", [
    ("{max_pixels: 1000000000}", "curate.max_pixels: 1000000000 is above the 178956970 pixels pillow opens at all"),
    ("{min_side: 0}", "curate.min_side: Input should be greater than or equal to 1"),
    ("{max_aspect: 0.5}", "curate.max_aspect: Input should be greater than or equal to 1"),
    ("{rows_per_shard: 0}", "curate.rows_per_shard: Input should be greater than or equal to 1"),
    ("{max_question_chars: 0}", "curate.max_question_chars: Input should be greater than or equal to 1"),
    ("{max_answer_chars: 0}", "curate.max_answer_chars: Input should be greater than or equal to 1"),
    ("{min_side: 5000, max_pixels: 1000000}", "no image can have both"),
    ("{sources: [{path: x.jsonl, category: percep}]}", "curate.sources.0.category: Input should be 'perception', 'reasoning', 'search' or 'direct'"),
    ("{sources: [{path: x.jsonl, answer_type: boolean}]}", "curate.sources.0.answer_type: Input should be 'choice', 'number', 'math' or 'text'"),
    ("{sources: [{path: x.jsonl, category_map: {color: colour}}]}", "curate.sources.0.category_map.color: Input should be"),
    ("{sources: [{path: x.jsonl, fields: {answer: ''}}]}", "curate.sources.0.fields: an empty column name for ['answer']"),
    ("{sources: [{path: x.jsonl, name: ''}]}", "curate.sources.0.name: must not be empty"),
    ("{sources: [{kind: parquet, path: x.parquet}]}", "curate.sources.0.kind: unknown source kind 'parquet' (kinds: jsonl, json, tsv, hf, verl; parquet is read by an hf source: `kind: hf, path: parquet, data_files: [FILE]`)"),
])
def test_curation_settings_are_refused_when_the_config_loads(tmp_path, section, says):
    from flows.config import ConfigError, load_config

    (tmp_path / "x.jsonl").write_text("")
    config = tmp_path / "bad.yaml"
    config.write_text(f"curate: {section}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    assert says in str(raised.value)


def test_category_map_keys_from_yaml_numbers_and_booleans_match_the_rows(tmp_path):
    rows = [{"question": QUESTIONS[0], "answer": "a", "category": 1}, {"question": QUESTIONS[1], "answer": "b", "category": False}]
    source = write_jsonl(tmp_path / "src.jsonl", rows)
    config = tmp_path / "c.yaml"
    config.write_text(f"curate: {{sources: [{{path: {source}, category_map: {{1: reasoning, false: search}}}}]}}\n")
    done = curate("--config", str(config), "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    assert done.summary["per_category"] == {"reasoning": 1, "search": 1}


def test_a_number_answer_without_a_number_and_a_choice_without_choices_are_quarantined_naming_the_field(tmp_path):
    rows = [
        {"id": "many", "question": QUESTIONS[0], "answer": "many", "answer_type": "number", "category": "reasoning"},
        {"id": "none", "question": QUESTIONS[1], "answer": "B", "answer_type": "choice", "category": "reasoning"},
        {"id": "empty", "question": QUESTIONS[2], "answer": "B", "answer_type": "choice", "choices": [], "category": "reasoning"},
        {"id": "blank", "question": QUESTIONS[3], "answer": "B", "answer_type": "choice", "choices": ["", None], "category": "reasoning"},
        # Numbers as the judge reads them: digits with a unit, a fraction, a spelled number.
        {"id": "unit", "question": QUESTIONS[4], "answer": "3.5 cm", "answer_type": "number", "category": "reasoning"},
        {"id": "frac", "question": QUESTIONS[5], "answer": "1/2", "answer_type": "number", "category": "reasoning"},
        {"id": "word", "question": QUESTIONS[6], "answer": "forty-two", "answer_type": "number", "category": "reasoning"},
        {"id": "choice", "question": QUESTIONS[7], "answer": "no", "answer_type": "choice", "choices": ["yes", "no"], "category": "reasoning"},
    ]
    done = curate("--source", f"jsonl:{write_jsonl(tmp_path / 'src.jsonl', rows)}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {json.loads(q["row"])["id"]: q["reason"] for q in quarantine(tmp_path / "out")}
    assert reasons == {
        "many": "invalid_answer: answer_type is number but the answer 'many' holds no number",
        "none": "missing_choices: answer_type is choice but the row has no `choices` (or they are empty)",
        "empty": "missing_choices: answer_type is choice but the row has no `choices` (or they are empty)",
        "blank": "missing_choices: answer_type is choice but the row has no `choices` (or they are empty)",
    }
    kept = {row["id"]: row for row in read_table(tmp_path / "out").to_pylist()}
    assert set(kept) == {"unit", "frac", "word", "choice"} and kept["choice"]["answer"] == "B"
    assert_every_row_counted(tmp_path / "out", rows_in=8)


def test_our_categories_and_answer_types_are_read_in_any_case(tmp_path):
    import base64

    image = base64.b64encode(png(1)).decode()  # a perception row needs its image (missing_image)
    rows = [{"id": "a", "question": QUESTIONS[0], "answer": "4", "category": "Perception", "answer_type": "NUMBER", "images": [image]},
            {"id": "b", "question": QUESTIONS[1], "answer": "x", "category": " SEARCH "},
            {"id": "c", "question": QUESTIONS[2], "answer": "y", "category": "colour", "images": [image]}]
    source = write_jsonl(tmp_path / "src.jsonl", rows)
    done = curate("--source", f"jsonl:{source},category=Reasoning,category_map.colour=Perception", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    kept = {row["id"]: row for row in read_table(tmp_path / "out").to_pylist()}
    assert {k: (r["category"], r["answer_type"]) for k, r in kept.items()} == {
        "a": ("perception", "number"), "b": ("search", "text"), "c": ("perception", "text")}
    assert json.loads(kept["a"]["meta"]) == {} and json.loads(kept["c"]["meta"]) == {"source_category": "colour"}


@pytest.mark.parametrize("mix,says", [
    ("{rl: {Perception: 1}}", None),
    ("{rl: {perceptoin: 1}}", "select.mix: rl: unknown category 'perceptoin'; did you mean 'perception'?"),
])
def test_category_names_in_the_select_mix_and_reward_caps_are_ours_in_any_case_or_refused(tmp_path, mix, says):
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"select: {{mix: {mix}}}\nreward: {{answer_cap_chars: {{Search: 7}}, search_penalty_categories: [SEARCH]}}\n")
    if says is None:
        loaded = load_config(config, check=False)
        assert loaded.select.mix == {"rl": {"perception": 1.0}}
        assert loaded.reward.answer_cap_chars == {"search": 7} and loaded.reward.search_penalty_categories == ["search"]
    else:
        with pytest.raises(ConfigError) as raised:
            load_config(config, check=False)
        assert says in str(raised.value)


def test_an_empty_source_warns_and_only_empty_sources_fail_naming_the_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "none.json").write_text("[]\n")
    good = write_jsonl(tmp_path / "good.jsonl", own_rows(3, category="reasoning"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def run(*sources):
        args = [a for s in sources for a in ("--source", s)]
        return subprocess.run([sys.executable, "-m", "flows.cli", "curate", *args, "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=300, env=env)

    done = run(f"jsonl:{tmp_path / 'empty.jsonl'}", f"jsonl:{good}")
    assert done.returncode == 0 and json.loads(done.stdout)["counts"]["rows_out"] == 3
    assert done.stderr.strip() == f"warning: source 'empty' ({tmp_path / 'empty.jsonl'}): no rows"
    done = run(f"jsonl:{tmp_path / 'empty.jsonl'}", f"json:{tmp_path / 'none.json'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: source 'empty' ({tmp_path / 'empty.jsonl'}): no rows; source 'none' ({tmp_path / 'none.json'}): "
                                   "no rows: nothing to curate (an empty file, or a filter that keeps nothing)")


def test_a_json_array_that_does_not_parse_names_line_and_column_and_a_utf16_file_is_named(tmp_path):
    rows = own_rows(2, category="reasoning")
    (tmp_path / "comma.json").write_text(json.dumps(rows, indent=2)[:-1].rstrip() + ",\n]\n")
    done = curate("--source", f"json:{tmp_path / 'comma.json'}", "--out", str(tmp_path / "a"))
    assert done.code == 2
    assert done.error == (f"error: source 'comma': {tmp_path / 'comma.json'} is not valid JSON: Expecting value at line 12 column 1 "
                          "(a trailing comma before it?)")
    (tmp_path / "cut.json").write_text('[\n  {"question": "abc')  # a file cut short
    done = curate("--source", f"json:{tmp_path / 'cut.json'}", "--out", str(tmp_path / "b"))
    assert done.error == f"error: source 'cut': {tmp_path / 'cut.json'} is not valid JSON: Unterminated string starting at line 2 column 16"
    for encoding in ("utf-16", "utf-16-le"):  # with a byte-order mark, and without one
        (tmp_path / "wide.jsonl").write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode(encoding))
        done = curate("--source", f"jsonl:{tmp_path / 'wide.jsonl'}", "--out", str(tmp_path / "c"))
        assert done.error == f"error: source 'wide': {tmp_path / 'wide.jsonl'} is UTF-16 text: save it as UTF-8"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (pillow reads the size before any pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_image_too_large_and_a_file_that_is_no_image_has_a_stable_reason(tmp_path):
    import base64

    rows = [{"id": "bomb", "question": QUESTIONS[0], "answer": "1", "category": "perception",
             "images": [base64.b64encode(png_header_only(20000, 20000)).decode()]},
            {"id": "text", "question": QUESTIONS[1], "answer": "1", "category": "perception",
             "images": [base64.b64encode(b"not an image at all").decode()]},
            {"id": "ok", "question": QUESTIONS[2], "answer": "1", "category": "perception", "images": [base64.b64encode(png(3)).decode()]}]
    done = curate("--source", f"jsonl:{write_jsonl(tmp_path / 'src.jsonl', rows)}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {json.loads(q["row"])["id"]: q["reason"] for q in quarantine(tmp_path / "out")}
    assert reasons["bomb"].startswith("image_too_large: exceeds 64000000 pixels (Image size (400000000 pixels) exceeds limit")
    assert reasons["text"] == "image_undecodable: not an image pillow can read (19 bytes starting b'not an i')"
    assert [row["id"] for row in read_table(tmp_path / "out").to_pylist()] == ["ok"]


def test_a_binary_file_given_as_a_source_or_a_corpus_is_named_as_such(tmp_path):
    from curation.sources import TableFileError, read_table_file

    (tmp_path / "blob.jsonl").write_bytes(bytes(range(256)) * 4)
    done = curate("--source", f"jsonl:{tmp_path / 'blob.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 2 and done.error.startswith(f"error: source 'blob': {tmp_path / 'blob.jsonl'} is neither JSON Lines nor")
    assert done.error.endswith("(it is not text: a binary file?)")
    (tmp_path / "corpus.jsonl").write_bytes(json.dumps({"title": "t", "url": "u", "text": "x"}).encode("utf-16"))
    with pytest.raises(TableFileError) as raised:
        read_table_file(tmp_path / "corpus.jsonl", {"title"}, "search corpus")
    assert str(raised.value) == f"search corpus {tmp_path / 'corpus.jsonl'} is UTF-16 text: save it as UTF-8"


def test_a_question_that_is_a_number_or_a_boolean_is_quarantined_from_every_source_kind(tmp_path):
    """A question is text: a number or boolean there is a column mapped by mistake, in a JSON row,
    a Parquet column or a verl row alike. Numbers stay fine for the answer and the id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "int", "question": 123, "answer": "a", "category": "reasoning"},
            {"id": "bool", "question": True, "answer": "b", "category": "reasoning"},
            {"id": "float", "question": 2.5, "answer": "c", "category": "reasoning"},
            {"id": 7, "question": QUESTIONS[0], "answer": 12, "category": "reasoning"}]
    done = curate("--source", f"jsonl:{write_jsonl(tmp_path / 'src.jsonl', rows)}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {json.loads(q["row"])["id"]: q["reason"] for q in quarantine(tmp_path / "out")}
    assert reasons == {
        "int": "invalid_question: `question` holds a number (123), not text; check the field mapping (`fields.question`)",
        "bool": "invalid_question: `question` holds a boolean (true), not text; check the field mapping (`fields.question`)",
        "float": "invalid_question: `question` holds a number (2.5), not text; check the field mapping (`fields.question`)",
    }
    [kept] = read_table(tmp_path / "out").to_pylist()
    assert (kept["id"], kept["answer"], kept["answer_type"]) == ("7", "12", "number")
    assert_every_row_counted(tmp_path / "out", rows_in=4)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert next(s for s in report["steps"] if s["step"] == "validate")["dropped"] == {"invalid_question": 3}

    # Parquet: an int column mapped as the question. Every row fails alike: a mapping mistake, one line naming the fix.
    pq.write_table(pa.table({"qid": [1, 2], "text": QUESTIONS[1:3], "answer": [3, 4]}), tmp_path / "t.parquet")
    source = f"hf:parquet,data_files={tmp_path / 't.parquet'},category=reasoning"
    done = curate("--source", f"{source},fields.question=qid", "--out", str(tmp_path / "pq"))
    assert done.code == 2
    assert done.error.startswith("error: source 't': all 2 rows are unusable, 2 for invalid_question: map our `question` to the "
                                 "source's column of question text")
    assert [q["reason"] for q in quarantine(tmp_path / "pq")] == [
        f"invalid_question: `qid` holds a number ({n}), not text; check the field mapping (`fields.question`)" for n in (1, 2)]
    fixed = curate("--source", f"{source},fields.question=text", "--out", str(tmp_path / "pq-fixed"))
    assert fixed.code == 0 and fixed.summary["counts"]["rows_out"] == 2

    # verl: a number where the bare question goes (extra_info.question).
    from tests.test_interop_sources import verl_row

    bad = verl_row(QUESTIONS[4], "y", "reason", [])
    bad["extra_info"]["question"] = 42
    (tmp_path / "rl").mkdir()
    pq.write_table(pa.Table.from_pylist([verl_row(QUESTIONS[3], "x", "reason", [])]), tmp_path / "rl" / "a.parquet")
    pq.write_table(pa.Table.from_pylist([bad]), tmp_path / "rl" / "b.parquet")  # a column's type is one per file
    done = curate("--source", f"verl:{tmp_path / 'rl'}", "--out", str(tmp_path / "verl"))
    assert done.code == 0, done.error
    assert [q["reason"] for q in quarantine(tmp_path / "verl")] == [
        "invalid_question: `question` holds a number (42), not text; check the field mapping (`fields.question`)"]
    assert [r["question"] for r in read_table(tmp_path / "verl").to_pylist()] == [QUESTIONS[3]]


def test_a_boolean_answer_is_yes_or_no_and_a_boolean_id_or_category_is_quarantined(tmp_path):
    """A JSON boolean answer is a yes/no answer: `yes` / `no` (answer type text, which the judges
    read as yes/no), or among options the one that says it; `true` would match no model's "Yes".
    A boolean id or category label is a flag column mapped by mistake."""
    from synth.scoring.judge import rule_verdict

    rows = [
        {"id": "true", "question": QUESTIONS[0], "answer": True},
        {"id": "false", "question": QUESTIONS[1], "answer": False},
        {"id": "options", "question": QUESTIONS[2], "answer": False, "choices": ["Yes", "No"]},
        {"id": "truefalse", "question": QUESTIONS[3], "answer": True, "choices": ["True", "False"]},
        {"id": "number", "question": QUESTIONS[4], "answer": True, "answer_type": "number"},
        {"id": True, "question": QUESTIONS[5], "answer": "a"},
        {"id": "flag", "question": QUESTIONS[6], "answer": "b", "category": False},
        {"id": "count", "question": QUESTIONS[7], "answer": 3, "category": 2},  # numbers: an answer, a label (the source's category)
    ]
    done = curate("--source", f"jsonl:{write_jsonl(tmp_path / 'src.jsonl', rows)},category=reasoning", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    kept = {r["id"]: (r["answer"], r["answer_type"], r["category"]) for r in read_table(tmp_path / "out").to_pylist()}
    assert kept == {"true": ("yes", "text", "reasoning"), "false": ("no", "text", "reasoning"), "options": ("B", "choice", "reasoning"),
                    "truefalse": ("A", "choice", "reasoning"), "count": ("3", "number", "reasoning")}
    reasons = sorted(q["reason"] for q in quarantine(tmp_path / "out"))
    assert reasons == [
        "invalid_answer: answer_type is number but the answer 'yes' holds no number",
        "invalid_category: `category` holds a boolean (false), not a category label; check the field mapping (`fields.category`), "
        "or map the label with category_map",
        "invalid_id: `id` holds a boolean (true), not text or a number; check the field mapping (`fields.id`)",
    ]
    assert_every_row_counted(tmp_path / "out", rows_in=8)
    assert rule_verdict("Yes.", "yes", "text").correct and not rule_verdict("No.", "yes", "text").correct
    assert not rule_verdict("Yes.", "true", "text").correct  # what the boolean was read as before


def test_a_question_or_answer_past_the_length_limits_is_quarantined_naming_length_and_limit(tmp_path):
    """A 200,000-character question would overflow any context window later: `question_too_long`,
    as is a gold answer past `curate.max_answer_chars`; both limits are settings."""
    rows = [{"id": "long", "question": "x" * 200_000, "answer": "a"},
            {"id": "edge", "question": "y" * 20_000, "answer": "b"},  # exactly the limit: kept
            {"id": "gold", "question": QUESTIONS[0], "answer": "z" * 100_000},
            {"id": "gold-edge", "question": QUESTIONS[1], "answer": "w" * 10_000},
            {"id": "ok", "question": QUESTIONS[2], "answer": "c"}]
    source = write_jsonl(tmp_path / "src.jsonl", rows)
    done = curate("--source", f"jsonl:{source},category=reasoning", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {json.loads(q["row"])["id"]: q["reason"] for q in quarantine(tmp_path / "out")}
    assert reasons == {"long": "question_too_long: `question` has 200000 characters > 20000 (curate.max_question_chars)",
                       "gold": "answer_too_long: `answer` has 100000 characters > 10000 (curate.max_answer_chars)"}
    assert sorted(r["id"] for r in read_table(tmp_path / "out").to_pylist()) == ["edge", "gold-edge", "ok"]
    assert_every_row_counted(tmp_path / "out", rows_in=5)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert next(s for s in report["steps"] if s["step"] == "validate")["dropped"] == {"question_too_long": 1, "answer_too_long": 1}
    # The limits are the config's: raised, the same rows are kept; lowered, more go.
    config = tmp_path / "c.yaml"
    config.write_text(f"curate: {{sources: [{{path: {source}, category: reasoning}}], max_question_chars: 200000, max_answer_chars: 100000}}\n")
    done = curate("--config", str(config), "--out", str(tmp_path / "raised"))
    assert done.code == 0 and done.summary["counts"]["rows_out"] == 5
    config.write_text(f"curate: {{sources: [{{path: {source}, category: reasoning}}], max_question_chars: 19999}}\n")
    done = curate("--config", str(config), "--out", str(tmp_path / "lowered"))
    assert done.code == 0 and done.summary["counts"]["rows_out"] == 2
    assert "question_too_long: `question` has 20000 characters > 19999 (curate.max_question_chars)" in {
        q["reason"] for q in quarantine(tmp_path / "lowered")}


def test_image_reference_reasons_say_what_the_reference_is_in_one_line(tmp_path):
    rows = [{"id": "null", "question": QUESTIONS[0], "answer": "a", "images": [None], "category": "reasoning"},
            {"id": "int", "question": QUESTIONS[1], "answer": "a", "images": [7], "category": "reasoning"},
            {"id": "dataurl", "question": QUESTIONS[2], "answer": "a", "images": ["data:image/png;base64,@@@"], "category": "reasoning"},
            {"id": "newline", "question": QUESTIONS[3], "answer": "a", "images": ["a\nb.png"], "category": "reasoning"},
            {"id": "fine", "question": QUESTIONS[4], "answer": "a", "images": [], "category": "reasoning"}]
    done = curate("--source", f"jsonl:{write_jsonl(tmp_path / 'src.jsonl', rows)}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {json.loads(q["row"])["id"]: q["reason"] for q in quarantine(tmp_path / "out")}
    assert reasons["null"] == "image_ref_invalid: an image reference is null, not a path, base64 string or data URL"
    assert reasons["int"] == "image_ref_invalid: an image reference is a number (7), not a path, base64 string or data URL"
    assert reasons["dataurl"] == "image_ref_invalid: 'data:image/png;base64,@@@' is a data URL whose data is not base64"
    assert reasons["newline"].startswith("image_missing: ") and reasons["newline"].endswith("a\\nb.png") and "\n" not in reasons["newline"]


@pytest.mark.parametrize("option,expected", [
    ("Category=Perception", {"category": "perception"}),
    ("NAME=mine", {"name": "mine"}),
    ("Fields.answer=label", {"fields": {"answer": "label"}}),
    ("FIELDS.Answer=Label,category_map.Color=perception", {"fields": {"answer": "Label"}, "category_map": {"Color": "perception"}}),
    (" category=search", {"category": "search"}),
    ("  category = search , limit = 3", {"category": "search", "limit": 3}),
    ("ANSWER_TYPE=number,Include.split=test|val", {"answer_type": "number", "include": {"split": ["test", "val"]}}),
])
def test_source_kinds_and_option_names_are_read_in_any_case_with_spaces_trimmed(tmp_path, option, expected):
    """Review r5: `JSONL:`, `Category=` and `, category=x` were glued onto the path (`file not
    found: world/samples.jsonl,Category=Perception`)."""
    source = write_jsonl(tmp_path / "x.jsonl", own_rows(1, category="reasoning"))
    for kind in ("jsonl", "JSONL", "Jsonl"):
        spec = SourceSpec.parse_cli(f"{kind}:{source},{option}")
        assert (spec.kind, spec.path) == ("jsonl", str(source))
        assert {key: getattr(spec, key) for key in expected} == expected


@pytest.mark.parametrize("option,says", [
    ("category_map.=search", "option 'category_map.' names nothing after the dot (e.g. category_map.LABEL=perception)"),
    ("fields.=answer", "option 'fields.' names nothing after the dot (e.g. fields.answer=COLUMN)"),
    ("category", "option 'category' has no value (give NAME=VALUE, e.g. category=perception)"),
    ("Limit", "option 'Limit' has no value (give NAME=VALUE, e.g. limit=100)"),
    ("answer-type=number", f"unknown option 'answer-type'; did you mean 'answer_type'? {OPTIONS_SAID}"),
    ("category=search,", f"category: {CATEGORIES_SAID}; did you mean 'search'? (got 'search,')"),
    ("split=train", "split: an option of `hf` sources only, and this source is kind jsonl (one file: its path); remove it"),
    ("Split=train,data_files=a.csv", "split, data_files: options of `hf` sources only, and this source is kind jsonl (one file: its "
                                     "path); remove them"),
    ("subset=x", "subset: an option of `hf` sources only, and this source is kind jsonl (one file: its path); remove it"),
])
def test_a_malformed_or_misplaced_source_option_is_refused_by_name(tmp_path, option, says):
    """Review r5: `category_map.=x` became part of the path, `split=`/`data_files=` on a jsonl
    source were silently ignored, and `category=search,` was answered "did you mean 'search'?"
    without showing the value it got."""
    source = write_jsonl(tmp_path / "x.jsonl", own_rows(1, category="reasoning"))
    text = f"jsonl:{source},{option}"
    with pytest.raises(SourceError) as raised:
        SourceSpec.parse_cli(text)
    assert str(raised.value) == f"--source {text!r}: {says}"
    done = curate("--source", text, "--out", str(tmp_path / "out"))
    assert done.code == 2 and done.error == f"error: {raised.value}" and not (tmp_path / "out").exists()


def test_hf_only_options_in_a_config_source_of_another_kind_are_refused_when_it_loads(tmp_path):
    from flows.config import ConfigError, load_config

    source = write_jsonl(tmp_path / "x.jsonl", own_rows(1, category="reasoning"))
    (tmp_path / "c.yaml").write_text(f"curate:\n  sources:\n    - {{path: {source}, split: test}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "c.yaml")
    assert str(raised.value).splitlines()[-1].endswith(
        "curate.sources.0: split: an option of `hf` sources only, and this source is kind jsonl (one file: its path); remove it")
    spec = SourceSpec(path=str(source))
    assert SourceSpec.model_validate(spec.model_dump()) == spec  # a dumped spec (the flows pass them so) holds the defaults: read again
    (tmp_path / "c.yaml").write_text(f"curate:\n  sources:\n    - {{kind: hf, path: json, data_files: {source}, split: train}}\n")
    assert load_config(tmp_path / "c.yaml", check=False).curate.sources[0].split == "train"


LEVELS = [{"id": "t1", "flag": True, "level": 1}, {"id": "t2", "flag": True, "level": 2}, {"id": "f2", "flag": False, "level": 2.0},
          {"id": "s2", "flag": "true", "level": "2"}, {"id": "n1", "flag": 1, "level": 1.5}]


@pytest.mark.parametrize("cli,yaml_value,kept", [
    ("include.flag=true", "{flag: [true]}", {"t1", "t2", "s2"}),  # a boolean, and its text; never the number 1
    ("include.flag=True", "{flag: [True]}", {"t1", "t2", "s2"}),
    ("include.flag=false", "{flag: [false]}", {"f2"}),
    ("include.level=2", "{level: [2]}", {"t2", "f2", "s2"}),  # numbers as numbers: 2 is 2.0 and '2'
    ("include.level=2.0", "{level: [2.0]}", {"t2", "f2", "s2"}),
    ("include.level=1|1.5", "{level: [1, 1.5]}", {"t1", "n1"}),
    ("include.flag=1", "{flag: [1]}", {"n1"}),
    ("include.id=t1|s2", "{id: [t1, s2]}", {"t1", "s2"}),
])
def test_include_on_the_command_line_keeps_what_the_same_filter_in_a_config_keeps(tmp_path, cli, yaml_value, kept):
    """Review r5: command-line include values were compared as Python text (`include.flag=true`
    kept nothing where YAML `true` worked; `include.level=2` missed `2.0`)."""
    import yaml

    from curation.sources import read_source

    rows = [{**row, **own_rows(5)[i]} | {k: row[k] for k in ("id", "flag", "level")} for i, row in enumerate(LEVELS)]
    source = write_jsonl(tmp_path / "lv.jsonl", rows)
    from_cli = SourceSpec.parse_cli(f"jsonl:{source},{cli}")
    from_yaml = SourceSpec.model_validate({"path": str(source), "include": yaml.safe_load(yaml_value)})
    assert from_cli.include == from_yaml.include
    for spec in (from_cli, from_yaml):
        assert {row["id"] for row, _ in read_source(spec)} == kept


def test_an_include_that_keeps_nothing_names_the_values_an_hf_column_holds(tmp_path):
    """Review r5: for an `hf` source the error said the column "has no value" though it held values."""
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("question,answer,split,flag\n" + "".join(
        f"{q},{i},{split},{flag}\n" for i, (q, split, flag) in enumerate(zip(QUESTIONS, ["test", "train", "val", "train"],
                                                                            ["true", "false", "true", "true"]))))
    base = f"hf:csv,data_files={csv_file},category=reasoning"
    done = curate("--source", f"{base},include.split=tst", "--out", str(tmp_path / "o1"))
    assert done.code == 2 and done.error == ("error: source 'rows': include.split=tst removed 4 rows, so none is left (in its first rows, "
                                             "split has 'test', 'train', 'val'); check the filter's column and values")
    done = curate("--source", f"{base},include.flag=maybe", "--out", str(tmp_path / "o2"))
    assert done.code == 2 and "(in its first rows, flag has true, false)" in done.error
    done = curate("--source", f"{base},include.flag=true", "--out", str(tmp_path / "o3"))
    assert done.code == 0, done.error
    assert len(read_table(tmp_path / "o3").to_pylist()) == 3
