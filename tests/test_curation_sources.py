"""Sources, normalization and image validation: every kind of bad input lands in quarantine with
its reason while the valid rows go on."""

import base64
import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.normalize import clean_text, infer_answer_type, normalize_answer
from curation.shards import read_table
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def noise(size=(64, 48), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def quarantined(out) -> dict[str, str]:
    """origin or question -> reason"""
    return {r["origin"]: r["reason"] for r in read_table(out / "quarantine").to_pylist()}


def test_every_image_mode_becomes_rgb_and_keeps_its_content():
    sixteen = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 0, 0))
    transparent = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    palette = noise().convert("P")
    for data, pixel in [(encode(sixteen), None), (encode(cmyk, "JPEG"), (255, 0, 255)), (encode(transparent), (255, 255, 255)),
                        (encode(palette), None), (encode(noise().convert("LA")), None)]:
        fixed = Image.open(io.BytesIO(validate_image(data, ImageLimits())))
        assert fixed.mode == "RGB"
        if pixel is not None:
            assert fixed.getpixel((5, 5)) == pixel
    fixed = Image.open(io.BytesIO(validate_image(encode(sixteen), ImageLimits())))
    assert fixed.getextrema()[0] == (0, 255)  # scaled to 8 bits, not clipped to white


def test_exif_orientation_is_applied():
    image = noise((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    fixed = Image.open(io.BytesIO(validate_image(encode(image, "JPEG", exif=exif), ImageLimits())))
    assert fixed.size == (40, 80)


def test_decompression_bomb_and_limits_are_refused():
    big = encode(Image.new("RGB", (3000, 3000)))
    with pytest.raises(ImageRejected, match="image_too_large"):
        validate_image(big, ImageLimits(max_pixels=1_000_000))
    with pytest.raises(ImageRejected, match="image_too_small"):
        validate_image(encode(noise((10, 100))), ImageLimits(min_side=28))
    with pytest.raises(ImageRejected, match="image_bad_aspect"):
        validate_image(encode(noise((600, 30))), ImageLimits(max_aspect=10))
    with pytest.raises(ImageRejected, match="image_undecodable"):
        validate_image(encode(noise())[:100], ImageLimits())


@pytest.mark.parametrize(
    "answer,answer_type,choices,expected",
    [("(B)", "choice", ["cat", "dog"], "B"), ("dog", "choice", ["cat", "dog"], "B"), ("b.", "choice", ["x", "y"], "B"),
     ("1,234", "number", None, "1234"), (" 42 ", "text", None, "42")],
)
def test_answers_are_normalized(answer, answer_type, choices, expected):
    assert normalize_answer(answer, answer_type, choices) == expected


def test_text_cleaning_and_type_inference():
    assert clean_text("Ｗhat\u200b  is\tthis?\x00\n\n ok ") == "What is this?\nok"
    assert infer_answer_type("B", ["a", "b"]) == "choice"
    assert infer_answer_type("-3.5", None) == "number"
    assert infer_answer_type("\\frac{1}{2}", None) == "math"
    assert infer_answer_type("Paris", None) == "text"


def test_jsonl_rows_with_every_kind_of_mistake(tmp_path):
    (tmp_path / "ok.png").write_bytes(encode(noise(seed=1)))
    rows = [
        {"id": "good", "question": "Which animal?", "answer": "dog", "choices": ["cat", "dog"], "images": ["ok.png"], "category": "perception"},
        {"id": "b64", "question": "How many?", "answer": "1,000", "images": [b64(encode(noise(seed=2)))], "category": "reasoning"},
        {"id": "noanswer", "question": "No answer here", "images": ["ok.png"], "category": "perception"},
        {"id": "missing", "question": "Missing file", "answer": "a", "images": ["gone.png"], "category": "perception"},
        {"id": "badb64", "question": "Bad base64", "answer": "a", "images": ["!!!notbase64!!!" * 80], "category": "perception"},
        {"id": "badchoice", "question": "Pick", "answer": "E", "choices": ["x", "y"], "images": [], "category": "reasoning"},
        {"id": "badcat", "question": "Cooking?", "answer": "a", "images": [], "category": "cooking"},
        {"id": "truncated", "question": "Broken image", "answer": "a", "images": [b64(encode(noise(seed=3))[:80])], "category": "perception"},
        {"id": "typo", "question": "Misspelt?", "answer": "a", "images": [], "category": "perceptoin"},
    ]
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n[1, 2]\n{not json\n")
    summary = run_curate(CurateConfig(sources=[SourceSpec(path=source)], split={"coldstart": 1.0}), tmp_path / "out")
    good = {r["id"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert set(good) == {"good", "b64"}
    assert good["good"]["answer"] == "B" and good["good"]["answer_type"] == "choice"
    assert good["b64"]["answer"] == "1000" and good["b64"]["answer_type"] == "number"
    reasons = quarantined(tmp_path / "out")
    by_line = {int(origin.rsplit(":", 1)[1]): reason for origin, reason in reasons.items()}
    assert by_line[3].startswith("missing_answer")
    assert by_line[4].startswith("image_missing")
    assert by_line[5].startswith("image_ref_invalid")
    assert by_line[6].startswith("invalid_answer: answer 'E' is neither a letter A-B")
    assert by_line[7].startswith("unknown_category: 'cooking'") and "category_map" in by_line[7] and "did you mean" not in by_line[7]
    assert by_line[8].startswith("image_undecodable")
    assert by_line[9].startswith("unknown_category: 'perceptoin' is not one of") and "(did you mean 'perception'?)" in by_line[9]
    assert by_line[10].startswith("invalid_json: line 10") and by_line[11].startswith("invalid_json: line 11")
    assert summary["counts"]["rows_in"] == 11 and summary["counts"]["invalid"] == 9
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    validate = next(s for s in report["steps"] if s["step"] == "validate")
    assert validate == {"step": "validate", "in": 11, "out": 2,
                        "dropped": {"missing_answer": 1, "invalid_answer": 1, "unknown_category": 2, "image_missing": 1,
                                    "image_ref_invalid": 1, "image_undecodable": 1, "invalid_json": 2}}
    assert report["by_source"]["src"]["in"] == 11 and report["by_source"]["src"]["out"] == 2
    assert "| validate | 11 | 2 | 9 |" in (tmp_path / "out" / "report.md").read_text()


def test_vlmevalkit_tsv_with_base64_images(tmp_path):
    path = tmp_path / "bench.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "image", "question", "hint", "A", "B", "C", "answer", "category"])
        writer.writerow([0, b64(encode(noise(seed=4))), "What color is the car?", "", "red", "blue", "green", "B", "perception"])
        writer.writerow([1, json.dumps([b64(encode(noise(seed=5))), b64(encode(noise(seed=6)))]), "Which is larger?", "Look closely",
                         "left", "right", "", "A", "reasoning"])
        writer.writerow([2, "not-an-image", "Broken?", "", "x", "y", "", "A", "perception"])
    run_curate(CurateConfig(sources=[SourceSpec(kind="tsv", path=path)], split={"coldstart": 1.0}), tmp_path / "out")
    rows = {r["id"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert rows["0"]["choices"] == ["red", "blue", "green"] and rows["0"]["answer"] == "B" and len(rows["0"]["images"]) == 1
    assert rows["1"]["question"].startswith("Hint: Look closely") and len(rows["1"]["images"]) == 2 and rows["1"]["choices"] == ["left", "right"]
    assert list(quarantined(tmp_path / "out").values())[0].startswith("image_ref_invalid")


def test_datasets_parquet_with_field_mapping_and_filters(tmp_path):
    """`datasets.load_dataset("parquet")` on a local file, with our fields mapped from theirs."""
    table = pa.table({
        "problem": ["What is 2+3?", "What is 10/4?", "Skip me"],
        "solution": ["5", "2.5", "0"],
        "level": ["easy", "hard", "trivial"],
        "picture": [{"bytes": encode(noise(seed=7)), "path": None}, {"bytes": encode(noise(seed=8)), "path": None},
                    {"bytes": encode(noise(seed=9)), "path": None}],
    })
    pq.write_table(table, tmp_path / "train.parquet")
    spec = SourceSpec(kind="hf", path="parquet", data_files=[str(tmp_path / "train.parquet")], name="math", category="reasoning",
                      fields={"question": "problem", "answer": "solution", "images": "picture"}, include={"level": ["easy", "hard"]})
    summary = run_curate(CurateConfig(sources=[spec], split={"coldstart": 1.0}), tmp_path / "out")
    rows = read_table(tmp_path / "out").to_pylist()
    assert sorted(r["question"] for r in rows) == ["What is 10/4?", "What is 2+3?"]
    assert {r["source"] for r in rows} == {"math"} and {r["answer_type"] for r in rows} == {"number"}
    assert all(len(r["images"]) == 1 for r in rows)
    assert summary["counts"]["rows_in"] == 2
    assert json.loads((tmp_path / "out" / "report.json").read_text())["filtered_by_include"] == {"math": 1}


def test_an_unopenable_dataset_is_named(tmp_path):
    from curation.sources import SourceError

    spec = SourceSpec(kind="hf", path="parquet", data_files=[str(tmp_path / "nothing-*.parquet")], name="ghost")
    with pytest.raises(SourceError, match="ghost"):
        run_curate(CurateConfig(sources=[spec]), tmp_path / "out")


@pytest.fixture
def progress_switch(monkeypatch):
    """`datasets`' progress-bar switch, free of the environment (a test before may have set
    HF_DATASETS_DISABLE_PROGRESS_BARS), and put back as it was after the test."""
    import importlib

    import datasets

    hf_tqdm = importlib.import_module("datasets.utils.tqdm")  # the module (`datasets.utils.tqdm` the attribute is its class)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setattr(hf_tqdm, "HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    was = hf_tqdm.are_progress_bars_disabled()
    yield hf_tqdm
    (datasets.disable_progress_bars if was else datasets.enable_progress_bars)()


@pytest.mark.parametrize("disabled_before", [False, True])
def test_an_hf_source_prints_no_progress_bars_and_leaves_the_switch_as_it_was(tmp_path, capfd, progress_switch, disabled_before):
    """Review r4: `Generating train split: 4 examples ...` on stderr for every `hf:` source."""
    import datasets

    from curation.sources import read_source

    (datasets.disable_progress_bars if disabled_before else datasets.enable_progress_bars)()
    (tmp_path / "rows.csv").write_text("question,answer\nWhat is 2+2?,4\nAnd 3+3?,6\n")
    capfd.readouterr()
    rows = list(read_source(SourceSpec(kind="hf", path="csv", data_files=str(tmp_path / "rows.csv"))))
    assert [row["answer"] for row, _ in rows] == [4, 6]
    err = capfd.readouterr().err
    assert "Generating train split" not in err and "examples/s" not in err, err
    assert progress_switch.are_progress_bars_disabled() is disabled_before


def test_the_progress_switch_comes_back_when_the_last_of_overlapping_loads_ends(progress_switch, monkeypatch):
    """Scan tasks load `hf` sources in parallel threads: the first load's end must not turn the
    bars on under the second, nor the second's end leave them off."""
    import datasets

    from curation.datasets_quiet import datasets_progress_bars_off

    datasets.enable_progress_bars()
    first, second = datasets_progress_bars_off(), datasets_progress_bars_off()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert progress_switch.are_progress_bars_disabled()  # the second load is still running
    second.__exit__(None, None, None)
    assert not progress_switch.are_progress_bars_disabled()
    # HF_DATASETS_DISABLE_PROGRESS_BARS=0: the user wants the bars; they stay on (and `datasets` warns of nothing).
    monkeypatch.setattr(datasets.config, "HF_DATASETS_DISABLE_PROGRESS_BARS", False)
    with datasets_progress_bars_off():
        assert not progress_switch.are_progress_bars_disabled()


def test_a_file_a_builder_cannot_read_is_told_in_our_line_only(tmp_path, capfd):
    """Review m1: a truncated parquet file printed `datasets`' own `Failed to read schema from '...' with
    error ArrowInvalid: ...` before our `error: source 'trunc': ...` line, which says the same."""
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.datasets_quiet import _builder_loggers
    from curation.sources import SourceError, read_source

    pq.write_table(pa.table({"question": ["q"] * 20, "answer": ["a"] * 20}), tmp_path / "full.parquet")
    whole = (tmp_path / "full.parquet").read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(whole[: len(whole) // 2])
    parquet = logging.getLogger("datasets.packaged_modules.parquet.parquet")
    assert parquet in _builder_loggers()
    filters = {logger.name: list(logger.filters) for logger in _builder_loggers()}
    capfd.readouterr()
    with pytest.raises(SourceError) as raised:
        list(read_source(SourceSpec(kind="hf", path="parquet", data_files=str(tmp_path / "trunc.parquet"))))
    assert str(raised.value) == (f"source 'trunc': the datasets builder 'parquet' cannot read {tmp_path / 'trunc.parquet'}: Parquet "
                                 "magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.")
    assert capfd.readouterr().err == ""
    assert {logger.name: list(logger.filters) for logger in _builder_loggers()} == filters  # as they were
    from curation.datasets_quiet import builder_error_lines_off

    def record(level):
        return logging.LogRecord(parquet.name, level, __file__, 1, "Skipping bad file", None, None)

    with builder_error_lines_off():  # a builder's warnings (`Skipping bad file ...`) still pass
        assert parquet.filter(record(logging.WARNING)) and not parquet.filter(record(logging.ERROR))
    assert parquet.filter(record(logging.ERROR))


def test_cli_curate_from_a_jsonl_source(world, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "curate", "--source", f"jsonl:{world['samples_path']}", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["counts"]["rows_out"] == 9
    assert (out / "report.md").is_file()
    missing = subprocess.run([sys.executable, "-m", "flows.cli", "curate", "--source", "tsv:/no/such.tsv", "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "file not found: /no/such.tsv" in missing.stderr and "Traceback" not in missing.stderr


def test_datasets_csv_with_image_paths_next_to_the_file(tmp_path):
    folder = tmp_path / "csvdata"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(noise(seed=10)))
    (folder / "rows.csv").write_text("query,label,img,kind\nWhat is shown?,a cat,a.png,perception\nAnd here?,2,missing.png,reasoning\n")
    spec = SourceSpec(kind="hf", path="csv", data_files=str(folder / "rows.csv"), name="csvsrc",
                      fields={"question": "query", "answer": "label", "images": "img", "category": "kind"})
    summary = run_curate(CurateConfig(sources=[spec], split={"coldstart": 1.0}), tmp_path / "out")
    rows = read_table(tmp_path / "out").to_pylist()
    assert [r["question"] for r in rows] == ["What is shown?"] and rows[0]["images"][0]["path"].endswith("a.png")
    assert summary["counts"]["invalid"] == 1
    assert list(quarantined(tmp_path / "out").values())[0].startswith("image_missing")


def test_a_repeated_source_id_is_quarantined_as_such(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(noise(seed=11)))
    rows = [{"id": "x1", "question": "First?", "answer": "a", "images": ["a.png"], "category": "perception"},
            {"id": "x1", "question": "Another question entirely?", "answer": "b", "images": [], "category": "reasoning"}]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run_curate(CurateConfig(sources=[SourceSpec(path=tmp_path / "s.jsonl")], split={"coldstart": 1.0}), tmp_path / "out")
    assert [r["question"] for r in read_table(tmp_path / "out").to_pylist()] == ["First?"]
    reason = next(iter(quarantined(tmp_path / "out").values()))
    assert reason.startswith("duplicate_id: x1 (first at ") and reason.endswith(":1)")


def test_two_csv_sources_are_named_and_placed_by_their_files(tmp_path):
    """`hf:csv` reading local files is named by its first data file, so two such sources stay apart
    in the report and in quarantine origins (both were `csv`, their rows `csv[train][i]`)."""
    for name in ("rows", "more"):
        (tmp_path / f"{name}.csv").write_text("question,answer,category\nWhat is 2+2?,4,reasoning\nAnd 3+3?,,reasoning\n".replace("2+2", name))
    specs = [SourceSpec(kind="hf", path="csv", data_files=str(tmp_path / f"{name}.csv")) for name in ("rows", "more")]
    assert [s.source_name for s in specs] == ["rows", "more"]
    assert SourceSpec(kind="hf", path="parquet", data_files=[str(tmp_path / "d" / "*.parquet")]).source_name == "d"
    assert SourceSpec(kind="hf", path="org/dataset").source_name == "org__dataset"
    run_curate(CurateConfig(sources=specs, split={"coldstart": 1.0}), tmp_path / "out")
    assert sorted({r["source"] for r in read_table(tmp_path / "out").to_pylist()}) == ["more", "rows"]
    origins = sorted(q["origin"] for q in read_table(tmp_path / "out" / "quarantine").to_pylist())
    assert origins == ["more[train][1]", "rows[train][1]"]
