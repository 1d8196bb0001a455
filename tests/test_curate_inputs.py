"""Nothing stale: the files a source's rows point to, and a benchmark's, are inputs of the curate
stage. Replacing one makes `deepeyes status` say stale, and the next run re-runs the stage and
writes the new image."""

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from curation.shards import read_table


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_replacing_an_image_a_row_points_to_reruns_the_stage_and_status_says_stale(tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "a.png").write_bytes(png(1))
    (data / "img" / "b.png").write_bytes(png(2))
    (data / "bench.png").write_bytes(png(3))
    rows = [{"id": "a", "question": "What is in the first picture?", "answer": "a cat", "images": ["img/a.png"]},
            {"id": "b", "question": "How many dots are there?", "answer": "4", "images": ["img/b.png"]}]
    (data / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (data / "bench.jsonl").write_text(json.dumps({"question": "Which city is this?", "answer": "Paris", "images": ["bench.png"]}) + "\n")
    config = tmp_path / "inputs.yaml"
    config.write_text(f"""\
name: inputs
curate: {{sources: [{{path: {data / "mine.jsonl"}, category: perception}}],
         benchmarks: [{{path: {data / "bench.jsonl"}, category: perception}}], split: {{coldstart: 1.0}}}}
""")
    run = tmp_path / "run"

    def curate():
        done = run_cli(["run", str(config), "--flow", "curate", "--run-dir", str(run)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def status():  # in-process: `deepeyes status` reads files only, no Prefect run to keep apart
        from tests.curate_cli import cli

        done = cli("status", str(run))
        assert done.code == 0, done.error
        return next(line for line in done.stdout.splitlines() if line.strip().startswith("curate "))

    def image_of(sample_id):
        return next(r["images"][0]["bytes"] for r in read_table(run / "curate").to_pylist() if r["id"] == sample_id)

    curate()
    assert image_of("a") == png(1)
    assert " complete " in status()

    (data / "img" / "a.png").write_bytes(png(4))  # the same name, another picture
    line = status()
    assert " stale " in line and str(data / "img" / "a.png") in line
    again = curate()
    assert "cached:" not in again  # every task ran again
    assert image_of("a") == png(4)
    assert " complete " in status()

    (data / "bench.png").write_bytes(png(5))  # a benchmark's image: the decontamination step read it
    line = status()
    assert " stale " in line and str(data / "bench.png") in line


def test_a_task_whose_read_files_changed_runs_again_under_the_same_key(tmp_path):
    """The flow's refresh rule for any task (here without Prefect): same key, same declared inputs,
    but a file the last run found and read has changed since."""
    from flows.config import PipelineConfig
    from flows import lineage
    from flows.pipeline import Stages

    source, image, out = tmp_path / "rows.jsonl", tmp_path / "a.png", tmp_path / "out"
    source.write_text("{}\n")
    image.write_bytes(png(1))
    stages = Stages(PipelineConfig(curate={"sources": [{"path": str(source)}]}), tmp_path)
    key, _, refresh = stages._key("curate", out, {"x": 1}, (str(source),))
    assert refresh  # nothing recorded yet
    lineage.record(out, "curate", {"x": 1}, [str(source)], 0.1, key=key, read_files=[str(image)])
    assert Stages(stages.cfg, tmp_path)._key("curate", out, {"x": 1}, (str(source),)) == (key, [str(source)], False)
    image.write_bytes(png(2))
    assert lineage.changed_read_files(out) == [str(image)]
    assert Stages(stages.cfg, tmp_path)._key("curate", out, {"x": 1}, (str(source),)) == (key, [str(source)], True)
    image.unlink()  # a file that went is a change too
    assert lineage.changed_read_files(out) == [str(image)]


def test_search_and_benchmark_files_are_inputs_of_the_stages_that_read_them(tmp_path):
    """The image corpus names its images; replacing one is a new image-search index (not the
    cached hashes of the old picture). A benchmark's definition and data file are eval's inputs."""
    from eval.benchmarks import benchmark_files
    from synth.tools.search import LocalImageSearch, SearchConfig, search_input_files

    (tmp_path / "a.png").write_bytes(png(1))
    (tmp_path / "b.png").write_bytes(png(2))
    corpus = tmp_path / "images.jsonl"
    corpus.write_text("".join(json.dumps({"image": name, "title": name, "url": f"http://x/{name}"}) + "\n" for name in ("a.png", "b.png")))
    text = tmp_path / "corpus.jsonl"
    text.write_text(json.dumps({"title": "t", "url": "http://x", "text": "words"}) + "\n")
    cfg = SearchConfig(corpus_path=text, image_corpus_path=corpus)
    assert search_input_files(cfg) == [text, corpus, tmp_path / "a.png", tmp_path / "b.png"]
    first = LocalImageSearch.from_corpus(corpus, tmp_path / "index")
    assert LocalImageSearch.from_corpus(corpus, tmp_path / "index").backend_id == first.backend_id  # reused
    (tmp_path / "a.png").write_bytes(png(3))
    replaced = LocalImageSearch.from_corpus(corpus, tmp_path / "index")
    assert replaced.backend_id != first.backend_id
    assert replaced.search(png(3), 1)[0]["title"] == "a.png" and replaced.search(png(3), 1)[0]["distance"] == 0

    (tmp_path / "bench.tsv").write_text("index\tquestion\tanswer\n0\tWhat?\tA\n")
    definition = tmp_path / "mybench.yaml"
    definition.write_text("name: mybench\nsource: {kind: tsv, path: ${data_root}/bench.tsv, category: perception}\n")
    assert benchmark_files(str(definition), tmp_path) == [definition, tmp_path / "bench.tsv"]


# ---------------------------------------------------------------------------------------------
# `include` filters that match nothing: named, never an empty success (review r2).

from tests.curate_cli import curate  # noqa: E402


def test_include_on_a_column_no_row_has_is_named_before_any_work(tmp_path):
    source = tmp_path / "arr.json"
    source.write_text(json.dumps([{"question": "What is 2 + 2?", "answer": "4", "category": "reasoning"}]))
    done = curate("--source", f"json:{source},include.split=train", "--out", str(tmp_path / "out"))
    assert done.code == 2
    assert done.error == "error: source 'arr': include.split: no such column in its first rows (columns: answer, category, question)"
    assert not (tmp_path / "out").exists()  # refused before any work
    # The config's check says the same (a dry run loads it).
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"curate: {{sources: [{{kind: json, path: {source}, include: {{split: [train]}}}}]}}\n")
    try:
        load_config(config)
    except ConfigError as exc:
        assert f"{config}:1: curate.sources.0: source 'arr': include.split: no such column in its first rows" in str(exc)
    else:
        raise AssertionError("load_config accepted an include on a column no row has")
    # A dotted path into a nested column is a column that exists.
    source.write_text(json.dumps([{"question": "What is 2 + 2?", "answer": "4", "category": "reasoning", "meta": {"split": "train"}}]))
    nested = curate("--source", f"json:{source},include.meta.split=train", "--out", str(tmp_path / "nested"))
    assert nested.code == 0, nested.error
    assert nested.summary["counts"]["rows_out"] == 1


def test_an_include_that_keeps_no_row_exits_2_naming_the_filter(tmp_path):
    source = tmp_path / "rows.jsonl"
    good = [{"question": f"What is {n} + {n}?", "answer": str(2 * n), "category": "reasoning", "split": "test"} for n in range(5)]
    source.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    done = curate("--source", f"jsonl:{source},include.split=train", "--out", str(tmp_path / "out"))
    assert done.code == 2
    assert done.error == ("error: source 'rows': include.split=train removed 5 rows, so none is left (in its first rows, split has "
                          "'test'); check the filter's column and values")
    # Bad rows mixed in: the filter is named for what it removed, not invalid_json for the rest.
    source.write_text("\n".join(json.dumps(r) for r in good) + "\n{not json\n{\"question\": 3\n")
    mixed = curate("--source", f"jsonl:{source},include.split=train", "--out", str(tmp_path / "mixed"))
    assert mixed.code == 2
    assert mixed.error.startswith("error: source 'rows': include.split=train removed 5 rows and the other 2 are unusable (2 invalid_json), "
                                  "so none is left")
    assert (tmp_path / "mixed" / "quarantine").is_dir()  # the unusable rows keep their reasons
    # A filter that keeps some: the rows it left out are counted apart from the invalid ones.
    source.write_text("\n".join(json.dumps(r) for r in good[:3]) + "\n"
                      + "\n".join(json.dumps({**r, "split": "train"}) for r in good[3:]) + "\n{not json\n")
    kept = curate("--source", f"jsonl:{source},include.split=train", "--out", str(tmp_path / "kept"))
    assert kept.code == 0, kept.error
    assert kept.summary["counts"] == {"rows_in": 3, "invalid": 1, "duplicates": 0, "near_duplicates": 0, "contaminated": 0,
                                      "rows_out": 2, "filtered_by_include": 3}


def test_image_problems_name_the_file_and_what_to_do(tmp_path):
    """Perception rows need an image (`images: []` is quarantined as missing_image; a reasoning row
    without one is fine); a URL is not fetched; an empty or non-image file is named, not pillow's
    in-memory buffer; a folder given as an image is unreadable, not 'not base64'."""
    from tests.curate_cli import accounting

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.png").write_bytes(png(5))
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    (tmp_path / "img" / "text.png").write_bytes(b"hello, not an image")
    rows = [
        {"question": "What is in the picture?", "answer": "noise", "images": ["img/ok.png"], "category": "perception"},
        {"question": "What colour is the square?", "answer": "red", "images": [], "category": "perception"},
        {"question": "What is 12 times 12?", "answer": "144", "images": [], "category": "reasoning"},
        {"question": "What is in this photo?", "answer": "a", "images": ["https://example.com/a.png"], "category": "perception"},
        {"question": "What is in that file?", "answer": "b", "images": ["img/empty.png"], "category": "perception"},
        {"question": "What does the text file show?", "answer": "c", "images": ["img/text.png"], "category": "perception"},
        {"question": "What is in the folder?", "answer": "d", "images": ["img"], "category": "perception"},
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    done = curate("--source", f"jsonl:{tmp_path / 'rows.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    reasons = {q["origin"].rsplit(":", 1)[1]: q["reason"] for q in accounting(tmp_path / "out").quarantined}
    img = tmp_path / "img"
    assert reasons == {
        "2": "missing_image: a perception sample needs an image, and `images` holds none",
        "4": "image_url: https://example.com/a.png: URLs are not fetched; download the images and give local paths (or base64, or bytes)",
        "5": f"image_undecodable: {img / 'empty.png'}: an empty file (0 bytes), not an image",
        "6": f"image_undecodable: {img / 'text.png'}: not an image pillow can read (19 bytes starting b'hello, n')",
        "7": f"image_unreadable: {img}: Is a directory",
    }
    assert done.summary["counts"]["rows_out"] == 2  # the perception row with its image, the reasoning row without one


def test_images_as_one_string_is_one_image_and_null_or_empty_is_none(tmp_path):
    """`images` may be one path (or base64 string) instead of a list, and null or "" for none: a
    perception row without an image is then `missing_image`, a reasoning row is text-only."""
    import base64

    from tests.curate_cli import assert_every_row_counted

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok5.png").write_bytes(png(5))
    rows = [
        {"id": "path", "question": "What is in the picture?", "answer": "noise", "images": "img/ok5.png", "category": "perception"},
        {"id": "b64", "question": "What does this one show?", "answer": "dots", "images": base64.b64encode(png(6)).decode(),
         "category": "perception"},
        {"id": "null", "question": "What is 12 times 12?", "answer": "144", "images": None, "category": "reasoning"},
        {"id": "empty", "question": "What is 7 times 8?", "answer": "56", "images": "", "category": "reasoning"},
        {"id": "null-perception", "question": "What colour is the square?", "answer": "red", "images": None, "category": "perception"},
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    done = curate("--source", f"jsonl:{tmp_path / 'rows.jsonl'}", "--out", str(tmp_path / "out"))
    assert done.code == 0, done.error
    kept = {r["id"]: r["images"] for r in read_table(tmp_path / "out").to_pylist()}
    assert {k: [i["bytes"] for i in v] for k, v in kept.items()} == {"path": [png(5)], "b64": [png(6)], "null": [], "empty": []}
    assert kept["path"][0]["path"] == str(tmp_path / "img" / "ok5.png")
    seen = assert_every_row_counted(tmp_path / "out", rows_in=5)
    assert [q["reason"] for q in seen.quarantined] == ["missing_image: a perception sample needs an image, and `images` holds none"]


def test_the_readme_quotes_the_unknown_kind_message_as_the_code_says_it(tmp_path):
    from pathlib import Path

    source = tmp_path / "s.jsonl"
    source.write_text('{"question": "q?", "answer": "a"}\n')
    done = curate("--source", f"parquet:{source}", "--out", str(tmp_path / "out"))
    assert done.code == 2
    quoted = done.error.split(": ", 2)[2]  # after `error: --source '...': `
    assert quoted.startswith("unknown source kind 'parquet' (kinds: jsonl, json, tsv, hf, verl;")
    assert f"`{quoted}`" in (Path(__file__).resolve().parent.parent / "README.md").read_text()
