"""The authors' released SFT layout (LLaMA-Factory sharegpt) imports, curates and trains: a fixture
of three rows of our own in that layout (a code cell whose plot comes back as an image, an image
search then a text search, a text-only long chain of thought), and a decoded batch that shows
each image's tokens in the turn whose `<image>` marker it replaced, with no `<image>` text left."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from curation.shards import ShardError, read_table
from curation.sources import SourceError
from synth.runtime.profile import load_profile
from synth.sharegpt import ImportConfig, ShareGPTFormat, dataset_info_entries, import_row, import_sharegpt
from synth.trajectory import TRAJECTORY_SCHEMA
from train.sft import SFTStageConfig, load_trajectories, run_sft, sft_arguments

FIXTURE = Path(__file__).parent / "fixtures" / "released_sft"
ROWS = json.loads((FIXTURE / "sft_part_0.json").read_text())


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def vision_tokens(path: Path) -> int:
    """Tokens the tiny Qwen3-VL gives an image: one per 32 x 32 pixels (16-pixel patches, merged 2 x 2);
    the fixture's images are sized to be kept as they are (between 32² and 64² pixels)."""
    width, height = Image.open(path).size
    return (width // 32) * (height // 32)


def expected_runs(row) -> list[list[int]]:
    """Per message of a fixture row: the vision tokens of each image its `<image>` markers take, in order."""
    images = iter(row["images"])
    return [[vision_tokens(FIXTURE / next(images)) for _ in range(m["content"].count("<image>"))] for m in row["messages"]]


def runs_per_turn(ids: list[int], tokenizer) -> list[list[int]]:
    """Per chat turn (split at `<|im_start|>`): the lengths of its runs of image-pad tokens."""
    start, pad = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|image_pad|>")
    turns, runs = [], None
    for token in ids:
        if token == start:
            runs = []
            turns.append(runs)
        elif runs is not None and token == pad:
            if runs and previous == pad:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = token
    return turns


@pytest.fixture(scope="module")
def trainer_for(tiny_model, tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)

    def make(dataset):
        return SFTTrainer(model=model, args=sft_arguments(SFTStageConfig(), tmp_path_factory.mktemp("sft")), train_dataset=dataset,
                          processing_class=processor)
    return make, processor.tokenizer


@pytest.mark.parametrize("layout", ["keep", "ours"])
def test_each_image_s_tokens_sit_in_the_turn_of_its_marker(layout, trainer_for, tmp_path):
    entries = dataset_info_entries(FIXTURE / "dataset_info.json")  # LLaMA-Factory's registry, trailing comma and all
    summary = import_sharegpt([(path, fmt) for path, fmt, _ in entries], tmp_path / "import", ImportConfig(layout=layout))
    assert summary["counts"]["trajectories"] == 3 and summary["counts"]["quarantined"] == 0
    dataset = load_trajectories([tmp_path / "import" / "trajectories"])
    make, tokenizer = trainer_for
    trainer = make(dataset)
    assert len(dataset) == len(ROWS)
    for row, example in zip(ROWS, dataset, strict=True):
        batch = trainer.data_collator([example])
        ids = batch["input_ids"][0].tolist()
        assert runs_per_turn(ids, tokenizer) == expected_runs(row)
        text = tokenizer.decode(ids, skip_special_tokens=False)
        assert "<image>" not in text
        if row["images"]:  # the image tensors follow the markers' order: grid i is image i
            grids = batch["image_grid_thw"].tolist()
            assert [t * h * w // 4 for t, h, w in grids] == [vision_tokens(FIXTURE / p) for p in row["images"]]
        trained = tokenizer.decode([i for i, label in zip(ids, batch["labels"][0].tolist(), strict=True) if label != -100])
        assert "Code execution result" not in trained and "<tool_response>" not in trained  # observations stay masked
    if layout == "ours":
        observations = ["".join(p["text"] or "" for p in m["content"]) for m in dataset[0]["messages"] if m["role"] == "user"][1:]
        assert observations[0].startswith("Code execution result:\nstdout:\nred bar: 12")  # our layout: no fences

    # The check can fail: the plain conversion the issue warns about (strings with `<image>`, all images
    # handed over beside them) puts every image in the first user turn and keeps the marker's text.
    import datasets

    naive = datasets.Dataset.from_list([{"messages": ROWS[1]["messages"],
                                         "images": [Image.open(FIXTURE / p).convert("RGB") for p in ROWS[1]["images"]]}])
    naive_ids = trainer.data_collator([naive[0]])["input_ids"][0].tolist()
    assert runs_per_turn(naive_ids, tokenizer) != expected_runs(ROWS[1])
    assert "<image>" in tokenizer.decode(naive_ids, skip_special_tokens=False)


def test_released_sft_layout_imports_curates_and_trains_one_step(tiny_model, tmp_path):
    info = FIXTURE / "dataset_info.json"
    imported = run_cli(["import", "sharegpt", "--dataset-info", str(info), "--out", str(tmp_path / "import")], tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert json.loads(imported.stdout)["counts"] == {"rows": 3, "trajectories": 3, "quarantined": 0, "samples": 3,
                                                       "without_sample": 0, "not_kept": 0}
    (tmp_path / "curate.yaml").write_text("curate: {split: {coldstart: 0.5, eval: 0.5}, seed: 3}\n")
    curated = run_cli(["curate", "--source", f"jsonl:{tmp_path / 'import' / 'samples.jsonl'}", "--config", str(tmp_path / "curate.yaml"),
                       "--out", str(tmp_path / "curate")], tmp_path)
    assert curated.returncode == 0, curated.stderr[-3000:]
    samples = read_table(tmp_path / "curate").to_pylist()
    by_question = {s["question"]: s for s in samples}
    assert by_question["Who designed the tower in this photo?"]["category"] == "search"
    assert by_question["What is the ratio of the red bar to the blue bar?"]["answer"] == "0.5"
    assert by_question["A train leaves at 9:40 and arrives at 13:05. How many minutes is the journey?"]["category"] == "reasoning"
    kept = {s["id"] for s in samples if s["pool"] != "eval"}
    assert 0 < len(kept) < 3  # the held-out share is not trained on
    again = run_cli(["import", "sharegpt", "--dataset-info", str(info), "--out", str(tmp_path / "train-data"),
                     "--curated", str(tmp_path / "curate")], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trajectories = read_table(tmp_path / "train-data" / "trajectories", TRAJECTORY_SCHEMA).to_pylist()
    assert {t["sample_id"] for t in trajectories} == kept
    result = run_sft(SFTStageConfig(max_steps=1, learning_rate=1e-3), tiny_model, [tmp_path / "train-data" / "trajectories"], tmp_path / "sft")
    assert result["steps"] == 1 and result["train_loss"] > 0 and Path(result["checkpoint"]).is_dir()


def test_marker_and_image_counts_must_agree(tmp_path):
    rows = [{**ROWS[0], "images": ROWS[0]["images"][:1]},  # two markers, one image
            {**ROWS[2], "images": ["images/chart.png"]},  # no marker, one image
            {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "<answer>x</answer>"}], "images": []}]
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(SourceError, match=r"all 3 rows were quarantined, 2 for image_count_mismatch \(first: \S*bad.json\[0\]: image_count_mismatch"):
        import_sharegpt([(tmp_path / "bad.json", None)], tmp_path / "out", ImportConfig(image_root=str(FIXTURE)))
    summary = json.loads((tmp_path / "out" / "import.json").read_text())  # written before the error: what each row got
    reasons = sorted(r["reason"] for r in read_table(tmp_path / "out" / "trajectories" / "quarantine").to_pylist())
    assert summary["counts"]["quarantined"] == 3 and summary["counts"]["trajectories"] == 0
    assert reasons[0].startswith("image_count_mismatch: 1 <image> marker(s) in the messages and 2 image(s)") or \
        reasons[0].startswith("image_count_mismatch: 0 <image> marker(s) in the messages and 1 image(s)")
    assert sum(r.startswith("image_count_mismatch") for r in reasons) == 2
    assert any(r.startswith("invalid_role: 'human'") for r in reasons)


def test_llama_factory_default_tags_and_observation_role(tmp_path):
    """LLaMA-Factory's own sharegpt defaults: `conversations` of `from`/`value`, human/gpt, and the observation role."""
    reference = load_profile("deepeyesv2-reference")
    row = {"conversations": [
        {"from": "human", "value": "<image>What is the total?"},
        {"from": "gpt", "value": "<think>Add them.</think><code>\n```python\nprint(3 + 4)\n```\n</code>"},
        {"from": "observation", "value": reference.render_code("7\n", "", 0)},
        {"from": "gpt", "value": "<think>7.</think><answer>7</answer>"}], "images": ["images/landmark.png"]}
    trajectory, sample, why = import_row(row, ImportConfig(layout="ours"), FIXTURE, "t")
    assert why is None and sample["question"] == "What is the total?" and sample["answer"] == "7"
    assert [m["role"] for m in trajectory["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert trajectory["tool_calls"] == [{"turn": 0, "tool": "python", "outcome": "ok", "latency_ms": None, "images": 0}]
    observation = trajectory["messages"][3]["content"][0]["text"]
    assert observation == load_profile("deepeyes-v2").render_code("7\n", "", 0)  # rewritten into our layout
    kept, _, _ = import_row(row, ImportConfig(layout="keep"), FIXTURE, "t")
    assert kept["messages"][2]["content"][0]["text"] == reference.render_code("7\n", "", 0) and kept["protocol_version"] == "deepeyesv2-reference/1"
    # An observation the data's profile cannot read is named, not silently mangled.
    broken = {**row, "conversations": [*row["conversations"][:2], {"from": "observation", "value": "free text"}, row["conversations"][3]]}
    with pytest.raises(ValueError, match="observation_unparsed: observation 1 does not follow the layout of deepeyesv2-reference/1"):
        import_row(broken, ImportConfig(layout="ours"), FIXTURE, "t")
    assert ShareGPTFormat().resolved(row)[:3] == ("conversations", "from", "value")


def test_curating_the_sharegpt_file_itself_says_how_to_import_it(tmp_path):
    done = run_cli(["curate", "--source", f"json:{FIXTURE / 'sft_part_0.json'},category=perception", "--out", str(tmp_path / "cur")], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "all 3 rows are unusable, 3 for sharegpt_row: this is LLaMA-Factory's sharegpt layout" in done.stderr
    assert "deepeyes import sharegpt FILE --out DIR" in done.stderr


TEXT_ROWS = [  # LLaMA-Factory's default tags: from/value, human/gpt/observation/function_call/system
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is 3 + 4?"},
                       {"from": "gpt", "value": "<think>Add.</think><answer>7</answer>"}]},
    {"conversations": [{"from": "human", "value": "Capital of France?"},
                       {"from": "function_call", "value": '{"name": "search", "arguments": {"query": "capital of France"}}'},
                       {"from": "observation", "value": "Paris is the capital of France."},
                       {"from": "gpt", "value": "<think>Found.</think><answer>Paris</answer>"}]},
]


def test_dataset_info_without_tags_takes_llama_factory_defaults(tmp_path):
    """An entry naming its columns but no `tags` means LLaMA-Factory's default tags, whatever the
    messages column is called (r2: `columns: {messages: conversations}` quarantined every row)."""
    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {
        "file_name": "rows.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "images": "images"}}}))
    [(path, fmt, name)] = dataset_info_entries(tmp_path / "dataset_info.json")
    assert (fmt.role_tag, fmt.content_tag, fmt.user_tag, fmt.assistant_tag) == ("from", "value", "human", "gpt")
    summary = import_sharegpt([(path, fmt)], tmp_path / "out", ImportConfig())
    assert summary["counts"]["trajectories"] == 2 and summary["counts"]["quarantined"] == 0
    trajectories = read_table(tmp_path / "out" / "trajectories").to_pylist()
    assert [[m["role"] for m in t["messages"]] for t in trajectories] == [
        ["system", "user", "assistant"], ["user", "assistant", "user", "assistant"]]
    assert trajectories[1]["messages"][1]["content"][0]["text"].startswith("<tool_call>\n{")  # function_call: the call
    # Tags given in part: the rest are LLaMA-Factory's defaults too.
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {
        "file_name": "rows.json", "formatting": "sharegpt", "tags": {"user_tag": "person"}}}))
    [(_, fmt, _)] = dataset_info_entries(tmp_path / "dataset_info.json")
    assert (fmt.messages, fmt.role_tag, fmt.user_tag, fmt.assistant_tag) == ("conversations", "from", "person", "gpt")


def test_import_in_which_every_row_is_quarantined_exits_2_with_the_top_cause(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {  # tags that are not the data's
        "file_name": "rows.json", "formatting": "sharegpt", "tags": {"role_tag": "role", "content_tag": "content"}}}))
    done = run_cli(["import", "sharegpt", "--dataset-info", str(tmp_path / "dataset_info.json"), "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "all 2 rows were quarantined, 2 for invalid_messages (first: " in done.stderr
    assert "rows.json[0]: invalid_messages: message 0 has no text under `content`); check the format's columns and tags" in done.stderr
    assert len(read_table(tmp_path / "out" / "trajectories" / "quarantine")) == 2  # each row's reason is kept
    # One good row among bad ones: the import goes on (exit 0) and the bad row is quarantined.
    (tmp_path / "rows.json").write_text(json.dumps([TEXT_ROWS[0], {"conversations": [{"from": "x", "value": "hi"}]}]))
    done = run_cli(["import", "sharegpt", str(tmp_path / "rows.json"), "--out", str(tmp_path / "out2")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] | {} == {"rows": 2, "trajectories": 1, "quarantined": 1, "samples": 1,
                                                     "without_sample": 0, "not_kept": 0}


def test_curated_folder_without_curated_shards_is_refused_before_anything_is_written(tmp_path):
    """`--curated` is checked as `select --probes` checks its folder (`check_input_shards`): an empty
    folder, or shards of another kind, is refused in one line naming the option; no --out is made."""
    from flows.cli_interop import curated_sample_ids

    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS))
    (tmp_path / "emptydir").mkdir()
    done = run_cli(["import", "sharegpt", str(tmp_path / "rows.json"), "--out", str(tmp_path / "out"), "--curated", str(tmp_path / "emptydir")],
                   tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (f"error: --curated {tmp_path / 'emptydir'}: no parquet shards in this folder (it should "
                                                    "hold the part-*.parquet curated samples that `deepeyes curate` writes)")
    assert not (tmp_path / "out").exists()
    import_sharegpt([(tmp_path / "rows.json", None)], tmp_path / "imported", ImportConfig())
    shards = tmp_path / "imported" / "trajectories"  # trajectories, not curated samples
    with pytest.raises(ShardError, match=r"^--curated: \S*part-00000.parquet holds no curated samples \(trajectory/3, not sample/2\): missing "
                                         r"column\(s\) source, question, answer_type \(it takes the parquet shards that `deepeyes curate` writes\)$"):
        curated_sample_ids(shards)
    with pytest.raises(FileNotFoundError, match=r"^--curated: path not found: \S*nothere$"):
        curated_sample_ids(tmp_path / "nothere")


def test_an_import_that_keeps_no_row_exits_2_with_the_commonest_reason(tmp_path):
    """Every row not kept (by --curated, or quarantined, or both) is a mistake, not an empty dataset:
    one line with how many rows and why, the commonest reason first; the quarantine and import.json
    stay, and no trajectory shards, manifest or samples.jsonl that training or curation would take."""
    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS))
    out = tmp_path / "out"
    with pytest.raises(SourceError) as refused:
        import_sharegpt([(tmp_path / "rows.json", None)], out, ImportConfig(), {"another-sample"}, "--curated c")
    assert str(refused.value) == ("no row of 2 was kept: 2 not among the 1 sample --curated c keeps for training "
                                  "(is it the curate output of this data's samples.jsonl?)")
    assert json.loads((out / "import.json").read_text())["counts"] == {
        "rows": 2, "trajectories": 0, "quarantined": 0, "samples": 0, "without_sample": 0, "not_kept": 2}
    assert sorted(p.name for p in out.iterdir()) == ["import.json", "trajectories"]
    assert sorted(p.name for p in (out / "trajectories").iterdir()) == ["quarantine"]
    # A mix: the commonest reason first, and where the quarantined rows' reasons are.
    (tmp_path / "mix.json").write_text(json.dumps([*TEXT_ROWS, {"conversations": [{"from": "x", "value": "hi"}]}]))
    with pytest.raises(SourceError) as refused:
        import_sharegpt([(tmp_path / "mix.json", None)], tmp_path / "mix", ImportConfig(), set(), "--curated c")
    assert str(refused.value) == (
        "no row of 3 was kept: 2 not kept: --curated c holds no sample outside the eval pool (training never takes those), "
        f"1 quarantined for invalid_role (first: {tmp_path / 'mix.json'}[2]: invalid_role: 'x' is none of human, gpt, "
        "system, observation, function_call (set the format's tags)); each quarantined row's reason is in "
        f"{tmp_path / 'mix' / 'trajectories' / 'quarantine'}")
    # Every row quarantined: the same, with no samples.jsonl or trajectory manifest either.
    (tmp_path / "bad.json").write_text(json.dumps([{"conversations": [{"from": "x", "value": "hi"}]}]))
    with pytest.raises(SourceError, match=r"^all 1 rows were quarantined, 1 for invalid_role \(first: "):
        import_sharegpt([(tmp_path / "bad.json", None)], tmp_path / "bad", ImportConfig())
    assert sorted(p.name for p in (tmp_path / "bad" / "trajectories").iterdir()) == ["quarantine"]
    assert not (tmp_path / "bad" / "samples.jsonl").exists()


def test_curated_output_of_other_samples_exits_2_from_the_cli(tmp_path):
    """`--curated` naming a curate output of other samples keeps nothing: exit 2, not an empty dataset."""
    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS[:1]))
    (tmp_path / "other.json").write_text(json.dumps(TEXT_ROWS[1:]))
    import_sharegpt([(tmp_path / "other.json", None)], tmp_path / "other", ImportConfig())
    (tmp_path / "curate.yaml").write_text("curate: {split: {coldstart: 1.0}}\n")
    curated = run_cli(["curate", "--source", f"jsonl:{tmp_path / 'other' / 'samples.jsonl'}", "--config", str(tmp_path / "curate.yaml"),
                       "--out", str(tmp_path / "curate")], tmp_path)
    assert curated.returncode == 0, curated.stderr[-3000:]
    done = run_cli(["import", "sharegpt", str(tmp_path / "rows.json"), "--out", str(tmp_path / "out"), "--curated", str(tmp_path / "curate")],
                   tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no row of 1 was kept: 1 not among the 1 sample --curated {tmp_path / 'curate'} keeps for training "
        "(is it the curate output of this data's samples.jsonl?)")
    assert not (tmp_path / "out" / "trajectories" / "_manifest.json").exists()


def test_an_input_without_rows_exits_2_naming_the_file_and_writes_nothing(tmp_path):
    """An empty file (or an empty JSON array, or a dataset_info.json whose file is empty) is the
    mistake `deepeyes curate` refuses as `nothing to curate`: one line naming the file, exit 2, no
    --out made, and an earlier import there left as it was. An empty file beside files with rows is
    a warning."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "array.json").write_text("[]\n")
    done = run_cli(["import", "sharegpt", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'empty.jsonl'}: no rows: nothing to import (an empty file, "
                                                    "or an empty JSON array)")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SourceError) as refused:
        import_sharegpt([(tmp_path / "array.json", None), (tmp_path / "empty.jsonl", None)], tmp_path / "out", ImportConfig())
    assert str(refused.value) == (f"{tmp_path / 'array.json'}: no rows; {tmp_path / 'empty.jsonl'}: no rows: nothing to import "
                                  "(an empty file, or an empty JSON array)")
    assert not (tmp_path / "out").exists()
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "empty.jsonl", "formatting": "sharegpt"}}))
    [(path, fmt, _)] = dataset_info_entries(tmp_path / "dataset_info.json")
    with pytest.raises(SourceError, match=r"empty.jsonl: no rows: nothing to import"):
        import_sharegpt([(path, fmt)], tmp_path / "out", ImportConfig())
    assert not (tmp_path / "out").exists()
    # A missing file among good ones: refused before anything is written.
    (tmp_path / "rows.json").write_text(json.dumps(TEXT_ROWS))
    with pytest.raises(SourceError, match=r"^\S*missing.json: file not found$"):
        import_sharegpt([(tmp_path / "rows.json", None), (tmp_path / "missing.json", None)], tmp_path / "out", ImportConfig())
    assert not (tmp_path / "out").exists()
    # An earlier import in --out is left as it was.
    import_sharegpt([(tmp_path / "rows.json", None)], tmp_path / "out", ImportConfig())
    before = sorted((p.relative_to(tmp_path / "out"), p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(SourceError, match="nothing to import"):
        import_sharegpt([(tmp_path / "empty.jsonl", None)], tmp_path / "out", ImportConfig())
    assert sorted((p.relative_to(tmp_path / "out"), p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*")) == before
    # An empty file beside one with rows: the import goes on, and says so.
    done = run_cli(["import", "sharegpt", str(tmp_path / "rows.json"), str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "out2")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"warning: {tmp_path / 'empty.jsonl'}: no rows"
    summary = json.loads(done.stdout)
    assert summary["counts"]["trajectories"] == 2 and summary["warnings"] == [f"{tmp_path / 'empty.jsonl'}: no rows"]
