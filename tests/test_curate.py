import base64
import io
import json

import polars as pl
import pytest
from PIL import Image

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.schema import SAMPLE_SCHEMA
from curation.shards import read_manifest, read_table
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate


def test_demo_world_curates_with_planted_faults_removed(world, curated):
    table = pl.from_arrow(read_table(curated, SAMPLE_SCHEMA))
    assert table.height == 9  # 3 families x 3; the planted duplicate and broken image are out
    assert sorted(table["category"].unique().to_list()) == ["perception", "reasoning", "search"]
    assert set(table["pool"].unique().to_list()) <= {"coldstart", "rl", "eval"}
    assert table["id"].n_unique() == table.height
    reasons = read_table(curated / "quarantine").column("reason").to_pylist()
    planted = [r for r in reasons if r.startswith("exact_duplicate: of ")]
    assert len(planted) == 1 and planted[0].endswith("samples.jsonl:1")  # the duplicate of the first row (the world plants it)
    assert any(r.startswith("image_undecodable") for r in reasons)
    manifest = read_manifest(curated)
    assert manifest["schema_version"] == "sample/2"
    assert manifest["counts"] == {"rows_in": 11, "invalid": 1, "duplicates": 1, "near_duplicates": 0, "contaminated": 0, "rows_out": 9}


def test_pool_assignment_is_reproducible(world, curated, tmp_path):
    cfg = CurateConfig(sources=[SourceSpec(path=world["samples_path"], name="demo")], split={"coldstart": 0.6, "rl": 0.1, "eval": 0.3})
    run_curate(cfg, tmp_path / "again")
    first = read_table(curated).select(["id", "pool"]).to_pylist()
    again = read_table(tmp_path / "again").select(["id", "pool"]).to_pylist()
    assert first == again


def png_b64(size=(64, 48), mode="RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_bad_rows_are_quarantined_with_reasons_and_good_rows_go_on(tmp_path):
    (tmp_path / "ok.png").write_bytes(base64.b64decode(png_b64()))
    rows = [
        {"question": "good?", "answer": "yes", "images": ["ok.png"], "category": "perception", "answer_type": "text"},
        {"question": "b64?", "answer": "1", "images": [png_b64(mode="RGBA")], "category": "reasoning", "answer_type": "number"},
        {"question": "no answer", "images": ["ok.png"], "category": "perception", "answer_type": "text"},
        {"question": "missing file", "answer": "a", "images": ["gone.png"], "category": "perception", "answer_type": "text"},
        {"question": "tiny", "answer": "a", "images": [png_b64((8, 8))], "category": "perception", "answer_type": "text"},
        {"question": "bad category", "answer": "a", "images": [], "category": "cooking", "answer_type": "text"},
    ]
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    summary = run_curate(CurateConfig(sources=[SourceSpec(path=source)]), tmp_path / "out")
    assert summary["counts"] == {"rows_in": 7, "invalid": 5, "duplicates": 0, "near_duplicates": 0, "contaminated": 0, "rows_out": 2}
    good = read_table(tmp_path / "out").to_pylist()
    assert {r["question"] for r in good} == {"good?", "b64?"}
    assert all(r["source"] == "src" for r in good)
    quarantined = read_table(tmp_path / "out" / "quarantine").to_pylist()
    reasons = " | ".join(r["reason"] for r in quarantined)
    for expected in ("answer", "image_missing", "image_too_small", "category", "invalid_json"):
        assert expected in reasons
    assert all(r["origin"].startswith(str(source)) for r in quarantined)  # each names its file and line


def test_image_validation_normalizes_modes_and_guards_size():
    rgba = base64.b64decode(png_b64(mode="RGBA"))
    fixed = validate_image(rgba, ImageLimits())
    assert Image.open(io.BytesIO(fixed)).mode == "RGB"
    clean = base64.b64decode(png_b64())
    assert validate_image(clean, ImageLimits()) == clean  # already clean: the bytes are kept
    with pytest.raises(ImageRejected, match="image_too_large"):
        validate_image(clean, ImageLimits(max_pixels=100))
    with pytest.raises(ImageRejected, match="image_bad_aspect"):
        validate_image(base64.b64decode(png_b64((400, 30))), ImageLimits(max_aspect=5))
    with pytest.raises(ImageRejected, match="image_undecodable"):
        validate_image(clean[:60], ImageLimits())


def test_strict_table_reader_names_file_and_line(tmp_path):
    from curation.sources import TableFileError, read_table_file

    good = tmp_path / "good.jsonl"
    good.write_text('{"title": "a", "text": "b"}\n\n{"title": "c", "text": "d"}\n')
    assert [r["title"] for r in read_table_file(good, {"title", "text"})] == ["a", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "a", "text": "b"}\n{"title": "", "text": "d"}\n')
    with pytest.raises(TableFileError, match=r"bad.jsonl, line 2: missing or empty field\(s\) \['title'\]"):
        read_table_file(bad, {"title", "text"})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"title": "a"}\n{oops\n')
    with pytest.raises(TableFileError, match="broken.jsonl:2: invalid JSON"):
        read_table_file(broken, {"title"})
    with pytest.raises(TableFileError, match="corpus not found"):
        read_table_file(tmp_path / "none.jsonl", set(), "corpus")
