"""Long-CoT mixing: multimodal rows, the three openings (one, or a list drawn per row), unusable and
unverified rows to the quarantine, the rows' images as inputs of the cached stage, a warning when
no row was usable."""

import base64
import io
import json

import pytest
from PIL import Image

from curation.shards import QUARANTINE_DIR, read_manifest, read_table
from synth.long_cot import LongCotConfig, long_cot_rows
from synth.runtime.profile import load_profile
from synth.runtime.protocol import PROTOCOL_VERSION, load_prompts
from synth.stage import run_synthesize
from tests.test_synth import search_config, synth_config

RESPONSE = "<think>It says so.</think>\n<answer>{}</answer>"


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def source(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "card.png").write_bytes(_png("red"))
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    rows = [
        {"id": "text", "question": "What is 2 + 2?", "response": RESPONSE.format(4), "answer": "4"},
        {"id": "one", "question": "The ticket reads 123.", "response": RESPONSE.format(123), "images": ["img/card.png"]},
        {"id": "two", "question": "Two cards.", "response": RESPONSE.format(2),
         "images": ["img/card.png", "data:image/png;base64," + base64.b64encode(_png("blue")).decode()]},
        {"id": "missing", "question": "Where is it?", "response": RESPONSE.format(0), "images": ["img/nowhere.png"]},
        {"id": "string", "question": "One path as a string.", "response": RESPONSE.format(1), "images": "img/card.png"},
        {"id": "number", "question": "An image that is a number.", "response": RESPONSE.format(1), "images": [7]},
        {"id": "empty", "question": "An empty image file.", "response": RESPONSE.format(1), "images": ["img/empty.png"]},
        {"id": "yes", "question": "Is it red?", "response": RESPONSE.format("yes"), "answer": True},
    ]
    bad = [  # the fields a sample source checks, checked here too: each row to the quarantine, the file read on
        {"id": "q-number", "question": 123, "response": RESPONSE.format(7)},
        {"id": "q-list", "question": ["a"], "response": RESPONSE.format(7)},
        {"id": "r-number", "question": "Five?", "response": 5},
        {"id": "r-missing", "question": "No response."},
        {"id": "q-long", "question": "x" * 30_001, "response": RESPONSE.format(1)},
    ]
    path = tmp_path / "cot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n" + "".join(json.dumps(r) + "\n" for r in bad))
    return path


UNUSABLE = {  # id (or the line) -> the reason's key
    "missing": "long_cot_image_missing", "number": "long_cot_image_ref_invalid", "empty": "long_cot_image_undecodable",
    "q-number": "long_cot_invalid_question", "q-list": "long_cot_invalid_question", "r-number": "long_cot_invalid_response",
    "r-missing": "long_cot_missing_response", "q-long": "long_cot_question_too_long", "line 9": "long_cot_invalid_json",
}


def _unusable(rejected):
    return {row.get("id") or f"line {origin.rsplit(':', 1)[-1]}": reason.split(":")[0] for row, reason, origin in rejected}


def _by_sample(rows):
    return {r["sample_id"]: r for r in rows}


def test_images_are_read_and_placed_before_the_question_and_bad_rows_are_reported(source):
    rows, report, rejected = long_cot_rows(LongCotConfig(path=source, ratio=0.99), 100)  # wants every row
    kept = _by_sample(rows)
    assert set(kept) == {"text", "one", "two", "string", "yes"}  # one reference, as sample sources take it
    assert _unusable(rejected) == UNUSABLE
    reasons = {row.get("id"): reason for row, reason, _ in rejected}
    assert "img/nowhere.png" in reasons["missing"] and "empty.png: an empty file (0 bytes)" in reasons["empty"]
    # A long-CoT source has no field mapping: the advice names the keys it reads, not `fields.question`.
    assert reasons["q-number"] == ("long_cot_invalid_question: `question` holds a number (123), not text; synth.long_cot reads the keys "
                                   "question, response, answer, images and id as written (there is no field mapping)")
    assert reasons["q-long"] == "long_cot_question_too_long: `question` has 30001 characters > 20000 (synth.long_cot.max_question_chars)"
    assert {origin for row, _, origin in rejected if row.get("id") == "q-number"} == {f"{source}:10"}
    assert report["added"] == 5 and report["quarantined"] == len(UNUSABLE) and report["short_by"] == report["wanted"] - 5
    assert kept["string"]["images"] == kept["one"]["images"]
    assert kept["yes"]["answer"] == "yes"  # a boolean answer is a yes/no answer, as in curation
    assert kept["text"]["images"] == []
    assert [i["bytes"] for i in kept["two"]["images"]] == [_png("red"), _png("blue")]
    user = kept["two"]["messages"][1]["content"]
    assert [p["type"] for p in user] == ["image", "image", "text"] and user[2]["text"] == "Two cards."


def test_the_default_opening_is_the_tool_free_system_prompt_and_the_question_as_written(source):
    rows, report, _ = long_cot_rows(LongCotConfig(path=source, ratio=0.99), 100)
    row = _by_sample(rows)["one"]
    assert report["opening"] == "question" and row["protocol_version"] == PROTOCOL_VERSION
    assert row["messages"][0]["content"][0]["text"] == load_prompts(tools=False).system
    assert row["messages"][1]["content"][-1]["text"] == "The ticket reads 123."


@pytest.mark.parametrize("opening", ["tools", "no_tools"])
@pytest.mark.parametrize("profile", ["deepeyes-v2", "deepeyes-v2-compact", "deepeyesv2-reference"])
def test_a_profile_opening_is_what_an_episode_with_or_without_tools_is_asked(source, opening, profile):
    rows, _, _ = long_cot_rows(LongCotConfig(path=source, ratio=0.99, opening=opening), 100, profile)
    row = _by_sample(rows)["one"]
    loaded = load_profile(profile)
    assert row["messages"][:2] == loaded.messages("The ticket reads 123.", 1, tools=opening == "tools")
    assert row["protocol_version"] == loaded.version
    assert row["messages"][2] == {"role": "assistant", "content": [{"type": "text", "text": RESPONSE.format(123)}]}


def test_a_list_of_openings_draws_each_rows_from_it_reproducibly_and_in_equal_shares(tmp_path):
    path = tmp_path / "cot.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "question": f"The ticket reads {i}.", "response": RESPONSE.format(i)}) + "\n"
                            for i in range(400)))
    cfg = LongCotConfig(path=path, ratio=0.8, opening=["tools", "question"])
    rows, report, _ = long_cot_rows(cfg, 100, "deepeyes-v2-compact")
    tools_system = load_profile("deepeyes-v2-compact").messages("q", 0, tools=True)[0]
    with_tools = {r["sample_id"] for r in rows if r["messages"][0] == tools_system}
    tool_free = {r["sample_id"] for r in rows if r["messages"][0]["content"][0]["text"] == load_prompts(tools=False).system}
    assert len(rows) == 400 and with_tools | tool_free == {r["sample_id"] for r in rows} and not with_tools & tool_free
    assert report["rows_by_opening"] == {"question": len(tool_free), "tools": len(with_tools)}
    assert 160 <= len(with_tools) <= 240  # equal chance: 200 expected, 4 standard deviations either side
    assert {r["sample_id"]: r["protocol_version"] for r in rows if r["sample_id"] in tool_free} == dict.fromkeys(tool_free, PROTOCOL_VERSION)
    again, _, _ = long_cot_rows(cfg, 100, "deepeyes-v2-compact")
    assert [r["messages"] for r in again] == [r["messages"] for r in rows]  # the same draw every time
    reseeded, _, _ = long_cot_rows(cfg.model_copy(update={"seed": 1}), 100, "deepeyes-v2-compact")
    assert {r["sample_id"] for r in reseeded if r["messages"][0] == tools_system} != with_tools
    only_tools, _, _ = long_cot_rows(cfg.model_copy(update={"opening": ["tools", "tools"]}), 100, "deepeyes-v2-compact")
    assert all(r["messages"][0] == tools_system for r in only_tools)


@pytest.mark.parametrize(("given", "message"), [
    ("tool", "Input should be 'question', 'no_tools' or 'tools'"),
    (["tools", "quest"], "'quest' in the list should be 'question', 'no_tools' or 'tools'; did you mean 'question'?"),
    ([], "an empty list"),
])
def test_a_wrong_opening_is_refused_with_one_message(given, message):
    with pytest.raises(ValueError) as caught:
        LongCotConfig(opening=given)
    assert len(caught.value.errors()) == 1 and message in str(caught.value)


def test_synthesis_quarantines_unusable_long_cot_rows_and_keeps_the_rest(world, curated, replay_url, source, tmp_path):
    cfg = synth_config(replay_url, attempts=1, long_cot=LongCotConfig(path=source, ratio=0.9, opening="tools"))
    summary = run_synthesize(cfg, curated, tmp_path / "out", search_config(world))
    assert summary["long_cot"]["added"] == 5 and summary["long_cot"]["quarantined"] == len(UNUSABLE)
    cot = [r for r in read_table(tmp_path / "out").to_pylist() if r["category"] == "long_cot"]
    assert sorted(r["sample_id"] for r in cot) == ["one", "string", "text", "two", "yes"]
    quarantined = read_table(tmp_path / "out" / QUARANTINE_DIR).to_pylist()
    assert sorted(r["reason"].split(":")[0] for r in quarantined) == sorted(UNUSABLE.values())
    assert all(r["origin"].startswith(f"{source}:") for r in quarantined)
    reasons = read_manifest(tmp_path / "out" / QUARANTINE_DIR)["reasons"]
    assert sum(reasons.values()) == len(UNUSABLE) and reasons["long_cot_invalid_question"] == 2


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_rows_that_fail_the_format_check_or_their_answer_and_duplicates_are_quarantined(tmp_path):
    """DeepEyesV2 keeps only verified trajectories: the protocol's format check, and the rule-based
    judge against the row's `answer` where it has one."""
    think = "<think>a</think>"
    path = _write(tmp_path / "cot.jsonl", [
        {"id": "good", "question": "What is 2 + 2?", "response": RESPONSE.format(4), "answer": 4},               # line 1
        {"question": "No tags at all", "response": "The answer is 4."},                                         # line 2
        {"question": "No tags at all", "response": "The answer is 4."},                                         # line 3: the same again
        {"id": "code", "question": "Has code", "response": f"{think}<code>```python\nprint(1)\n```</code>"},  # line 4
        {"id": 7, "question": "Numeric id", "response": f"{think}<answer>1</answer>", "answer": 1.5},           # line 5
        {"id": "no", "question": "Is it red?", "response": RESPONSE.format("yes"), "answer": False},            # line 6
        {"id": "empty", "question": "Empty answer", "response": f"{think}<answer> </answer>"},                  # line 7
        {"id": "think", "question": "Unclosed think", "response": "<think>a<think>b</think><answer>3</answer>"},  # line 8
        {"id": "good", "question": "What is 2 + 2?", "response": RESPONSE.format(4), "answer": 4},               # line 9: line 1 again
        {"id": "other-image", "question": "What is 2 + 2?", "response": RESPONSE.format(4), "images": ["a.png"]},  # not a duplicate
        {"id": "4.0", "question": "Four?", "response": RESPONSE.format("4.0"), "answer": "4"},                  # the rules match numbers
        {"id": "free", "question": "Who?", "response": RESPONSE.format("no gold answer")},                      # nothing to compare
        {"id": "hedge", "question": "Which?", "response": RESPONSE.format("\\boxed{2} or \\boxed{3}"), "answer": "2"},  # line 13: the rules cannot tell
    ])
    (tmp_path / "a.png").write_bytes(_png("green"))
    rows, report, rejected = long_cot_rows(LongCotConfig(path=path, ratio=0.99), 100)
    reasons = {origin.rsplit(":", 1)[-1]: reason for _, reason, origin in rejected}
    assert reasons == {
        "2": "long_cot_no_answer: the response has no <answer> after its last </think> (or an empty one); a long-CoT response ends in its answer",
        "3": "long_cot_no_answer: the response has no <answer> after its last </think> (or an empty one); a long-CoT response ends in its answer",
        "4": "long_cot_tool_call: the response calls a tool (a `<code>` or `<tool_call>` block) and gives no <answer>; a long-CoT row "
             "answers without tools",
        "5": "long_cot_answer_mismatch: the response answers '1', the row's `answer` is '1.5'",
        "6": "long_cot_answer_mismatch: the response answers 'yes', the row's `answer` is 'no'",
        "7": "long_cot_no_answer: the response has no <answer> after its last </think> (or an empty one); a long-CoT response ends in its answer",
        "8": "long_cot_bad_format: think tags unbalanced or missing",
        "9": f"long_cot_duplicate: of {path}:1",
    }
    kept = _by_sample(rows)
    assert sorted(kept) == ["4.0", "free", "good", "hedge", "other-image"]
    assert all(r["format_ok"] and r["final_answer"] for r in rows)
    assert kept["4.0"]["judge_method"] == "number" and kept["free"]["judge_method"] == "source"
    # The rules cannot compare `\boxed{2} or \boxed{3}` with 2: kept, marked, counted (math-verify or an LLM could tell).
    assert kept["hedge"]["judge_method"] == "unverified" and report["unverified"] == 1
    assert report["available"] == 5 and report["quarantined"] == 8


def test_an_exact_duplicate_of_an_unreadable_row_is_not_called_one(tmp_path):
    """Only a usable row is remembered: the second copy of a quarantined row gets its own reason."""
    path = _write(tmp_path / "cot.jsonl", [{"question": "Q", "response": "no tags"}] * 2)
    _, _, rejected = long_cot_rows(LongCotConfig(path=path, ratio=0.5), 10)
    assert [reason.split(":")[0] for _, reason, _ in rejected] == ["long_cot_no_answer", "long_cot_no_answer"]


def test_wrong_fields_are_advised_in_long_cot_terms_and_sample_sources_keep_their_advice(tmp_path):
    from curation.mapping import RowRejected, scalar_text

    path = _write(tmp_path / "cot.jsonl", [
        {"id": "a", "question": "Q1", "response": RESPONSE.format(1), "answer": {"value": 1}},
        {"id": True, "question": "Q2", "response": RESPONSE.format(1)},
    ])
    _, _, rejected = long_cot_rows(LongCotConfig(path=path, ratio=0.5), 10)
    fix = "synth.long_cot reads the keys question, response, answer, images and id as written (there is no field mapping)"
    assert [reason for _, reason, _ in rejected] == [
        f"long_cot_invalid_answer: not a scalar (a dict); {fix}",
        f"long_cot_invalid_id: `id` holds a boolean (true), not text or a number; {fix}",
    ]
    assert all("fields." not in reason for _, reason, _ in rejected)
    with pytest.raises(RowRejected) as caught:  # a sample source's reason is unchanged
        scalar_text(True, "id", "label")
    assert str(caught.value) == "invalid_id: `label` holds a boolean (true), not text or a number; check the field mapping (`fields.id`)"


def test_a_csv_given_as_the_long_cot_source_is_refused_with_advice_it_can_follow(tmp_path):
    from synth.long_cot import LongCotError

    path = tmp_path / "cot.jsonl"
    path.write_text("question,response\nWhat?,<answer>1</answer>\n")
    with pytest.raises(LongCotError) as caught:
        long_cot_rows(LongCotConfig(path=path, ratio=0.5), 10)
    message = str(caught.value)
    assert message.startswith("synth.long_cot.path: ") and "kind:" not in message
    assert message.endswith("(it looks like CSV: synth.long_cot.path takes JSON Lines, or Parquet named *.parquet, with the keys "
                            "question, response, answer, images, id)")


@pytest.mark.parametrize(("rows", "why"), [
    ([], "it has no rows"),
    ([{"question": "Q", "response": "no tags"}, {"question": "R", "response": 3}, "not json"],
     "all 3 rows quarantined: long_cot_no_answer 1, long_cot_invalid_response 1, long_cot_invalid_json 1"),
])
def test_a_source_without_one_usable_row_is_warned_about_naming_the_file(tmp_path, rows, why):
    path = _write(tmp_path / "cot.jsonl", rows)
    _, report, _ = long_cot_rows(LongCotConfig(path=path, ratio=0.8), 10)
    assert report["warnings"] == [f"synth.long_cot.path: no long-CoT row of {path} was usable ({why}); the cold-start set has no "
                                  f"long-CoT rows (ratio 0.8 asked for); add rows to {path} or lower synth.long_cot.ratio"]
    ok = _write(tmp_path / "ok.jsonl", [{"question": "Q", "response": RESPONSE.format(1)}])
    _, fine, _ = long_cot_rows(LongCotConfig(path=ok, ratio=0.8), 10)
    assert fine["warnings"] == []  # short, but not empty: the short_by figure says so, with the fix (review r7 #3)
    assert (fine["short_by"], fine["fix"]) == (39, f"add rows to {ok} or lower synth.long_cot.ratio")
    _, enough, _ = long_cot_rows(LongCotConfig(path=ok, ratio=0.5), 1)
    assert enough["short_by"] == 0 and "fix" not in enough


def test_a_generated_world_s_long_cot_source_names_world_long_cot_when_short_or_empty(tmp_path):
    """Review r7 #2, #3: the world's long_cot.jsonl is as long as `world.long_cot` says: a source too
    short, or empty, names that setting and the count the ratio needs, not `synth.long_cot.path`."""
    from pathlib import Path

    from curation.worlds import generate, world_files

    generate("classic", tmp_path / "w", {"per_family": 1, "long_cot": 3})
    path = Path(world_files("classic", tmp_path / "w")["long_cot_path"])
    _, report, _ = long_cot_rows(LongCotConfig(path=path, ratio=0.8), 10)
    assert (report["added"], report["short_by"], report["fix"]) == (3, 37, "raise world.long_cot to at least 40")
    generate("classic", tmp_path / "w", {"per_family": 1, "long_cot": 0})
    _, empty, _ = long_cot_rows(LongCotConfig(path=path, ratio=0.8), 10)
    assert empty["warnings"] == [f"world.long_cot: no long-CoT row of {path} was usable (it has no rows); the cold-start set has no "
                                 "long-CoT rows (ratio 0.8 asked for); raise world.long_cot to at least 40"]
    (tmp_path / "mine").mkdir()
    copy = _write(tmp_path / "mine" / "long_cot.jsonl", [])  # a file of the same name outside a world is the user's
    assert long_cot_rows(LongCotConfig(path=copy, ratio=0.8), 10)[1]["fix"] == f"add rows to {copy} or lower synth.long_cot.ratio"


def test_the_synthesize_summary_and_the_run_show_the_warning(world, curated, replay_url, tmp_path, capsys):
    from flows.cli import _print_summary

    path = _write(tmp_path / "cot.jsonl", [])
    cfg = synth_config(replay_url, attempts=1, long_cot=LongCotConfig(path=path))
    summary = run_synthesize(cfg, curated, tmp_path / "out", search_config(world))
    warning = f"synth.long_cot.path: no long-CoT row of {path} was usable (it has no rows); the cold-start set has no long-CoT rows " \
              f"(ratio 0.816 asked for); add rows to {path} or lower synth.long_cot.ratio"
    assert summary["warnings"] == [warning] and summary["files_read"] == []
    assert read_manifest(tmp_path / "out")["long_cot"]["warnings"] == [warning]
    _print_summary({"stages": {"synthesize": summary}, "timings_s": {}, "run_dir": str(tmp_path)})
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("synthesize: "))
    assert f"short by 40 of 40 rows: ratio 0.0 for 0.816; add rows to {path} or lower synth.long_cot.ratio)" in lines[at] and lines[at + 1] == f"warning:    {warning}"


def _red_card_source(tmp_path):
    """A long-CoT source of one row whose image is a red card: (the image's path, the source's path)."""
    (tmp_path / "lc").mkdir()
    image = tmp_path / "lc" / "card.png"
    image.write_bytes(_png("red"))
    path = _write(tmp_path / "lc" / "cot.jsonl", [{"id": "card", "question": "What colour is the card?",
                                                   "response": RESPONSE.format("red"), "images": ["card.png"]}])
    return image, path


def test_the_long_cot_rows_images_are_inputs_of_the_synthesize_stage(world, curated, replay_url, tmp_path):
    """Replacing an image a long-CoT row points to makes `status` say stale, and the next run
    re-runs the stage and writes the new image (as curation's images do). The pipeline's own merge
    task (the stage that mixes the rows in) and its cache decision, in-process: the CLI runs of the
    same are the slow test below."""
    from flows import lineage
    from flows.cli import _status_line
    from flows.config import PipelineConfig
    from flows.pipeline import Stages, synthesize_merge_task

    image, path = _red_card_source(tmp_path)
    run = tmp_path / "run"
    out, shard = run / "synthesize", run / "synthesize" / "_shards" / "part-00000"
    run_synthesize(synth_config(replay_url, attempts=1), curated, shard, search_config(world))  # a shard task's output: no long-CoT rows
    cfg = synth_config(replay_url, attempts=1, long_cot=LongCotConfig(path=path, ratio=0.5)).model_dump(mode="json")

    def key():  # what the flow decides: the key, and whether the stage must run even on a cache record
        found, _, refresh = Stages(PipelineConfig(), run)._key("synthesize", out, cfg, (str(shard),))
        return found, refresh

    def merge():
        synthesize_merge_task.fn(cfg, [str(shard)], str(out), {"stage": "synthesize", "config": cfg, "inputs": [str(shard)], "key": key()[0]})

    def status():
        return _status_line(next(row for row in lineage.status(run) if row["stage"] == "synthesize"), {})

    def card():
        [row] = [r for r in read_table(out).to_pylist() if r["sample_id"] == "card"]
        return row["images"][0]["bytes"]

    merge()
    assert card() == _png("red") and " complete " in status() and key()[1] is False
    image.write_bytes(_png("green"))  # the same name, another picture
    line = status()
    assert " stale " in line and str(image) in line and key()[1] is True
    merge()
    assert card() == _png("green") and " complete " in status() and key()[1] is False


@pytest.mark.slow
def test_the_long_cot_rows_images_are_inputs_of_the_synthesize_stage_through_the_cli(world, replay_url, tmp_path):
    """The same as the test above, through `deepeyes run --flow` and `deepeyes status` (four runs, minutes)."""
    from tests.test_curate_inputs import run_cli

    image, path = _red_card_source(tmp_path)
    config = tmp_path / "lc.yaml"
    config.write_text(f"""\
name: lc
curate: {{sources: [{{path: {world["samples_path"]}}}], split: {{coldstart: 1.0}}}}
search: {{corpus_path: {world["corpus_path"]}, image_corpus_path: {world["image_corpus_path"]}}}
synth: {{teacher_url: "{replay_url}", attempts: 1, agent: {{max_turns: 5, max_tokens_per_turn: 512}}, long_cot: {{path: {path}, ratio: 0.5}}}}
""")
    run = tmp_path / "run"

    def flow(name):
        done = run_cli(["run", str(config), "--flow", name, "--run-dir", str(run)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def status():
        done = run_cli(["status", str(run)], tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return next(line for line in done.stdout.splitlines() if line.strip().startswith("synthesize "))

    def card():
        [row] = [r for r in read_table(run / "synthesize").to_pylist() if r["sample_id"] == "card"]
        return row["images"][0]["bytes"]

    flow("curate")
    flow("synthesize")
    assert card() == _png("red") and " complete " in status()
    image.write_bytes(_png("green"))  # the same name, another picture
    line = status()
    assert " stale " in line and str(image) in line
    again = flow("synthesize")
    assert "cached:" not in again or "synthesize" not in again.split("cached:")[1]
    assert card() == _png("green") and " complete " in status()


def test_the_dry_run_plan_says_the_synthesize_stage_mixes_in_long_cot_rows(tmp_path):
    from flows.config import PipelineConfig
    from flows.pipeline import plan

    source = _write(tmp_path / "rows.jsonl", [{"question": "Q", "answer": "1"}])
    path = _write(tmp_path / "cot.jsonl", [{"question": "Q", "response": RESPONSE.format(1)}])
    cfg = PipelineConfig(curate={"sources": [{"path": str(source)}]}, synth={"long_cot": {"path": str(path), "ratio": 0.5}})
    [step] = [s for s in plan(cfg, tmp_path / "run") if s["stage"] == "synthesize"]
    assert step["does"].endswith(f"; then mixes in verified long-CoT rows from {path} to ratio 0.5")
    [plain] = [s for s in plan(cfg.model_copy(update={"synth": cfg.synth.model_copy(update={"long_cot": None})}), tmp_path / "run")
               if s["stage"] == "synthesize"]
    assert "long-CoT" not in plain["does"]
