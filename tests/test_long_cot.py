"""Long-CoT mixing: multimodal rows, the three openings (one, or a list drawn per row), unusable rows to the quarantine."""

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
    assert reasons["q-number"] == "long_cot_invalid_question: `question` holds a number (123), not text; check the field mapping (`fields.question`)"
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
