"""Long-CoT mixing: multimodal rows, the three openings, unusable rows to the quarantine."""

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
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def source(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "card.png").write_bytes(_png("red"))
    rows = [
        {"id": "text", "question": "What is 2 + 2?", "response": RESPONSE.format(4), "answer": "4"},
        {"id": "one", "question": "The ticket reads 123.", "response": RESPONSE.format(123), "images": ["img/card.png"]},
        {"id": "two", "question": "Two cards.", "response": RESPONSE.format(2),
         "images": ["img/card.png", "data:image/png;base64," + base64.b64encode(_png("blue")).decode()]},
        {"id": "missing", "question": "Where is it?", "response": RESPONSE.format(0), "images": ["img/nowhere.png"]},
        {"id": "string", "question": "One path as a string.", "response": RESPONSE.format(1), "images": "img/card.png"},
        {"id": "number", "question": "An image that is a number.", "response": RESPONSE.format(1), "images": [7]},
    ]
    path = tmp_path / "cot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _by_sample(rows):
    return {r["sample_id"]: r for r in rows}


def test_images_are_read_and_placed_before_the_question_and_bad_rows_are_reported(source):
    rows, report, rejected = long_cot_rows(LongCotConfig(path=source, ratio=0.99), 100)  # wants every row
    kept = _by_sample(rows)
    assert set(kept) == {"text", "one", "two", "string"}  # one reference, as sample sources take it
    assert sorted((r["id"], reason.split(":")[0]) for r, reason in rejected) == [
        ("missing", "long_cot_image_missing"), ("number", "long_cot_image_ref_invalid")]
    assert "img/nowhere.png" in dict((r["id"], reason) for r, reason in rejected)["missing"]
    assert report["added"] == 4 and report["quarantined"] == 2 and report["short_by"] == report["wanted"] - 4
    assert kept["string"]["images"] == kept["one"]["images"]
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


def test_synthesis_quarantines_unusable_long_cot_rows_and_keeps_the_rest(world, curated, replay_url, source, tmp_path):
    cfg = synth_config(replay_url, attempts=1, long_cot=LongCotConfig(path=source, ratio=0.9, opening="tools"))
    summary = run_synthesize(cfg, curated, tmp_path / "out", search_config(world))
    assert summary["long_cot"]["added"] == 4 and summary["long_cot"]["quarantined"] == 2
    cot = [r for r in read_table(tmp_path / "out").to_pylist() if r["category"] == "long_cot"]
    assert sorted(r["sample_id"] for r in cot) == ["one", "string", "text", "two"]
    quarantined = read_table(tmp_path / "out" / QUARANTINE_DIR).to_pylist()
    assert sorted(r["reason"].split(":")[0] for r in quarantined) == ["long_cot_image_missing", "long_cot_image_ref_invalid"]
    assert {r["origin"] for r in quarantined} == {str(source)}
    assert read_manifest(tmp_path / "out" / QUARANTINE_DIR)["reasons"] == {"long_cot_image_missing": 1, "long_cot_image_ref_invalid": 1}
