"""An `hf` source that names a `datasets` builder (`parquet`, `csv`, `imagefolder`, ...) reads the
files its `data_files` names. Without them `datasets` would read every file of the working
directory (review r5 #15: a stray `Failed to read schema from 'c1.yaml'` log line, then an Arrow
error about an unrelated file); with local patterns that match nothing it would fail only when the
stage runs. Both are refused in one line before anything is loaded: when the config loads (the
dry run too), and on the command line."""

from __future__ import annotations


import pytest

from curation.sources import SourceError, SourceSpec
from flows.config import ConfigError, load_config
from tests.curate_cli import main_in_process as deepeyes

NEEDS_FILES = ("data_files is needed: path {b!r} is a `datasets` builder, which reads the files data_files names "
               "(a file, a glob or a list of them); without it, it would read the working directory")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding files a builder would trip over (the reviewer ran from a folder of YAML files)."""
    (tmp_path / "c1.yaml").write_text("name: c1\n")
    (tmp_path / "notes.txt").write_text("not a table\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_builders_are_the_installed_datasets_packaged_modules():
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    from curation.sources import packaged_builders

    assert packaged_builders() == frozenset(_PACKAGED_DATASETS_MODULES)
    assert {"parquet", "csv", "json", "text", "imagefolder", "arrow", "webdataset"} <= packaged_builders()


@pytest.mark.parametrize("builder", ["parquet", "csv", "json", "text", "imagefolder", "arrow", "webdataset"])
def test_a_builder_without_data_files_is_refused_when_the_config_loads(workdir, builder):
    config = workdir / "cs.yaml"
    config.write_text(f"curate:\n  sources:\n    - {{kind: hf, path: {builder}}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    assert str(raised.value) == f"invalid config:\n  {config}:3: curate.sources.0: {NEEDS_FILES.format(b=builder)}"


@pytest.mark.parametrize("data_files", ["[]", "''"])
def test_empty_data_files_are_no_data_files(workdir, data_files):
    config = workdir / "cs.yaml"
    config.write_text(f"curate:\n  sources: [{{kind: hf, path: csv, data_files: {data_files}}}]\n")
    with pytest.raises(ConfigError, match=r"curate\.sources\.0: data_files is needed: path 'csv'"):
        load_config(config, check=False)


def test_a_hub_id_and_a_builder_with_files_need_nothing_more(workdir):
    assert SourceSpec.model_validate({"kind": "hf", "path": "org/dataset"}).exists()
    (workdir / "rows.csv").write_text("question,answer\nq,a\n")
    assert SourceSpec.model_validate({"kind": "hf", "path": "csv", "data_files": "rows.csv"}).exists()
    assert SourceSpec.model_validate({"kind": "hf", "path": "csv", "data_files": ["*.csv"]}).exists()


def test_the_dry_run_refuses_a_builder_without_data_files_and_loads_nothing(workdir, monkeypatch, capsys):
    config = workdir / "cs.yaml"
    config.write_text("name: cs\ncurate:\n  sources: [{kind: hf, path: parquet}]\n")
    code, out, err = deepeyes(monkeypatch, capsys, "run", str(config), "--run-dir", str(workdir / "run"), "--dry-run")
    assert (code, out, err) == (2, "", f"error: invalid config:\n  {config}:3: curate.sources.0: {NEEDS_FILES.format(b='parquet')}")


def test_the_command_line_refuses_a_builder_without_data_files_in_one_line(workdir, monkeypatch, capsys, caplog):
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:parquet", "--out", str(workdir / "cur"))
    assert (code, out, err) == (2, "", f"error: --source 'hf:parquet': {NEEDS_FILES.format(b='parquet')}")
    assert not (workdir / "cur").exists()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("datasets")] == []  # nothing was loaded
    with pytest.raises(SourceError, match=r"^--source 'hf:imagefolder,split=test': data_files is needed: path 'imagefolder'"):
        SourceSpec.parse_cli("hf:imagefolder,split=test")


@pytest.mark.parametrize("data_files,named", [
    ("hfdata/nope.csv", "{d}/hfdata/nope.csv"),
    ("[hfdata/rows.csv, hfdata/nope.csv]", "{d}/hfdata/nope.csv"),
    ("'hfdata/*.nope'", "{d}/hfdata/*.nope"),
])
def test_the_dry_run_refuses_local_data_files_that_match_nothing(workdir, monkeypatch, capsys, data_files, named):
    (workdir / "hfdata").mkdir()
    (workdir / "hfdata" / "rows.csv").write_text("question,answer\nq,a\n")
    config = workdir / "dr6.yaml"
    config.write_text(f"name: dr\ncurate:\n  sources: [{{kind: hf, path: csv, data_files: {data_files}}}]\n")
    code, out, err = deepeyes(monkeypatch, capsys, "run", str(config), "--run-dir", str(workdir / "run"), "--dry-run")
    assert (code, out, err) == (2, "", f"error: {config}:3: curate.sources.0: data_files: no file matches {named.format(d=workdir)}")


def test_local_data_files_that_match_pass_the_dry_run(workdir, monkeypatch, capsys):
    (workdir / "hfdata").mkdir()
    (workdir / "hfdata" / "rows.csv").write_text("question,answer\nq,a\n")
    config = workdir / "ok.yaml"
    config.write_text("name: ok\ncurate:\n  sources: [{kind: hf, path: csv, data_files: 'hfdata/*.csv'}]\n")
    code, _, err = deepeyes(monkeypatch, capsys, "run", str(config), "--run-dir", str(workdir / "run"), "--dry-run")
    assert (code, err) == (0, "")


def test_the_command_line_refuses_data_files_that_match_nothing_before_loading(workdir, monkeypatch, capsys, caplog):
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:csv,data_files=hfdata/nope.csv", "--out", str(workdir / "cur"))
    assert (code, out, err) == (2, "", "error: --source 'hf:csv,data_files=hfdata/nope.csv': data_files: no file matches hfdata/nope.csv")
    assert not (workdir / "cur").exists()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("datasets")] == []


def test_a_benchmark_whose_glob_matches_nothing_names_the_option_typed(workdir, monkeypatch, capsys):
    # Review r6 #16: it was `source 'WORKDIR': ...`, named after the working folder and not saying it is a benchmark.
    (workdir / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.chdir(workdir)
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "jsonl:rows.jsonl", "--benchmark", "hf:csv,data_files=zzz*.csv",
                              "--out", str(workdir / "cur"))
    assert (code, out, err) == (2, "", "error: --benchmark 'hf:csv,data_files=zzz*.csv': data_files: no file matches zzz*.csv")


def test_two_command_line_sources_of_one_name_are_refused_naming_both(workdir, monkeypatch, capsys):
    # Review r6 #13: they were merged into one row of the report's "By source".
    (workdir / "rows.csv").write_text("question,answer\nq,a\n")
    (workdir / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.chdir(workdir)
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:csv,data_files=rows.csv,name=a", "--source", "jsonl:rows.jsonl,name=a",
                              "--out", str(workdir / "cur"))
    assert (code, out, err) == (2, "", "error: --source 'hf:csv,data_files=rows.csv,name=a' and --source 'jsonl:rows.jsonl,name=a' are both "
                                       "named 'a': the report counts rows per source name; give each its own `name`")
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "jsonl:rows.jsonl", "--benchmark", "jsonl:rows.jsonl",
                              "--benchmark", "hf:csv,data_files=rows.csv", "--out", str(workdir / "cur"))
    assert (code, out, err) == (2, "", "error: --benchmark 'jsonl:rows.jsonl' and --benchmark 'hf:csv,data_files=rows.csv' are both named "
                                       "'rows' (after their files): the report counts rows per source name; give each its own `name`")


def test_a_config_and_a_command_line_source_of_one_name_are_refused(workdir, monkeypatch, capsys):
    (workdir / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (workdir / "c.yaml").write_text("curate:\n  sources: [{kind: jsonl, path: rows.jsonl, name: a}]\n")
    monkeypatch.chdir(workdir)
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--config", "c.yaml", "--source", "jsonl:rows.jsonl,name=a", "--out", "cur")
    assert (code, out, err) == (2, "", "error: c.yaml:2: curate.sources.0 and --source 'jsonl:rows.jsonl,name=a' are both named 'a': the report "
                                       "counts rows per source name; give each its own `name`")
    (workdir / "d.yaml").write_text("curate:\n  sources:\n    - {kind: jsonl, path: rows.jsonl, name: a}\n"
                                    "    - {kind: jsonl, path: rows.jsonl, name: a}\n")
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--config", "d.yaml", "--out", "cur")
    assert (code, out) == (2, "")
    assert err.endswith("d.yaml:2: curate.sources: entry 0 and entry 1 are both named 'a': the report counts rows per source name; "
                        "give each its own `name`"), err


def test_a_benchmark_definition_says_the_same_before_any_work(workdir, monkeypatch, capsys):
    (workdir / "b1.yaml").write_text("name: b\nsource: {kind: hf, path: csv, data_files: nope.csv}\n")
    (workdir / "b2.yaml").write_text("name: b\nsource: {kind: hf, path: csv}\n")
    url = ["--model-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(workdir / "ev")]  # never contacted
    code, _, err = deepeyes(monkeypatch, capsys, "evaluate", "--benchmark", "b1.yaml", *url)
    assert (code, err) == (2, f"error: --benchmark b1.yaml (b): data_files: no file matches {workdir}/nope.csv")
    code, _, err = deepeyes(monkeypatch, capsys, "evaluate", "--benchmark", "b2.yaml", *url)
    assert (code, err) == (2, f"error: b2.yaml:2: source: {NEEDS_FILES.format(b='csv')}")
    config = workdir / "e.yaml"
    config.write_text("name: x\neval: {benchmarks: [b1.yaml], model_url: 'http://127.0.0.1:9/v1', model_name: m}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == f"{config}:2: eval.benchmarks.0 (b): data_files: no file matches {workdir}/nope.csv"
    assert not (workdir / "ev").exists()


# Review r6 #6-#8: an hf builder source's mistakes, each in one line that names what is wrong.

def _rows_parquet(folder) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["What is 2+2?", "What is 3+3?"], "answer": ["4", "6"], "level": [1, 2],
                             "category": ["reasoning", "reasoning"]}), folder / "rows.parquet")


def test_a_field_mapped_to_a_column_an_hf_builder_source_lacks_names_the_columns(workdir, monkeypatch, capsys):
    """#6: the mapping was given; the column is not there: say so, with the columns there are and the closest."""
    _rows_parquet(workdir)
    code, _, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:parquet,data_files=rows.parquet,fields.answer=label",
                            "--out", str(workdir / "out"))
    assert (code, err) == (2, "error: source 'rows': fields.answer: 'label' (closest: 'level'): no such column in its first rows "
                              "(columns: answer, category, level, question)")
    config = workdir / "c.yaml"  # the dry run too
    config.write_text("curate: {sources: [{kind: hf, path: parquet, data_files: [rows.parquet], fields: {answer: nocol}}]}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"{config}:1: curate.sources.0: source 'rows': fields.answer: 'nocol': no such column in its first rows "
                                 "(columns: answer, category, level, question)")


def test_rows_all_missing_a_column_they_were_never_mapped_to_list_the_columns(workdir, monkeypatch, capsys):
    """#6 (related): no `fields` given, and the source has no `question` column: the error lists what it has."""
    (workdir / "other.csv").write_text("prompt,label\nq,1\n")
    out = workdir / "out"
    code, _, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:csv,data_files=other.csv", "--out", str(out))
    assert (code, err) == (2, "error: source 'other': all 1 rows are unusable, 1 for missing_question: our `question` is read from "
                              "column 'question' (no `fields.question`): no such column (columns: label, prompt); map it with "
                              f"`fields.question=COLUMN`; each row's reason is in {out / 'quarantine'}")


@pytest.mark.parametrize(("make", "builder", "cause"), [
    (lambda d: (d / "empty.csv").write_text(""), "csv:empty.csv", "No columns to parse from file"),
    (lambda d: (d / "empty.csv").write_bytes(b"\xff\xfe\x00\xba\x01\x02"), "csv:empty.csv",
     "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_a_datasets_failure_gives_its_cause_not_the_wrapper(workdir, monkeypatch, capsys, make, builder, cause):
    """#7: `DatasetGenerationError: An error occurred while generating the dataset` says nothing; its cause does.
    Review r7 #10: in words, naming the source, the builder and the file, without Python class names (`EmptyDataError: `)."""
    make(workdir)
    name, file = builder.split(":")
    code, _, err = deepeyes(monkeypatch, capsys, "curate", "--source", f"hf:{name},data_files={file}", "--out", str(workdir / "out"))
    assert (code, err) == (2, f"error: source 'empty': the datasets builder {name!r} cannot read {file}: {cause}")


def test_the_cause_chain_is_one_line_outermost_first_in_words():
    """Review r7 #10: no class names; a message that says nothing alone gets the class name's words."""
    from curation.sources import exception_chain_text

    class EmptyDataError(ValueError):
        pass

    try:
        try:
            try:
                raise EmptyDataError()
            except EmptyDataError as innermost:
                raise KeyError("col") from innermost
        except KeyError as inner:
            raise ValueError("bad table\nsecond line") from inner
    except ValueError as exc:
        assert exception_chain_text(exc) == "bad table; caused by no key 'col'; caused by empty data error"
        assert isinstance(exc.__cause__, KeyError)  # the chain itself is kept for a debugger



@pytest.mark.parametrize("builder", ["Parquet", "PARQUET", "Csv"])
def test_a_builder_name_in_another_case_is_the_builder(workdir, monkeypatch, capsys, builder):
    """#8: `hf:Parquet` is the parquet builder: without data_files the builder's refusal, with them its rows."""
    _rows_parquet(workdir)
    code, _, err = deepeyes(monkeypatch, capsys, "curate", "--source", f"hf:{builder}", "--out", str(workdir / "o1"))
    assert (code, err) == (2, f"error: --source 'hf:{builder}': {NEEDS_FILES.format(b=builder.lower())}")
    assert SourceSpec(kind="hf", path=builder, data_files="rows.parquet").path == builder.lower()
    assert SourceSpec(kind="hf", path="Org/Parquet").path == "Org/Parquet"  # a hub id stays a hub id


def test_a_capitalised_builder_reads_its_files(workdir, monkeypatch, capsys):
    _rows_parquet(workdir)
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:Parquet,data_files=rows.parquet", "--out", str(workdir / "o"))
    assert code == 0, err
    assert '"rows_out": 2' in out


ONE_SPLIT = "`datasets` builder 'csv' reads data_files (a file, a glob or a list of them) as the one split 'train'"


@pytest.mark.parametrize(("split", "hint"), [("tset", "; leave split out"), ("trian", "; did you mean 'train'?"),
                                             ("train+tset[:5]", "; leave split out")])
def test_a_builder_split_its_data_files_lack_is_refused_at_its_line_when_the_config_loads(workdir, monkeypatch, capsys, split, hint):
    """Review r7 #10: `split: tset` on `hf:csv` passed the dry run and failed during the scan. A builder's splits are its
    data_files' (`datasets.data_files.sanitize_patterns`: a file, a glob or a list is the one split `train`)."""
    (workdir / "rows.csv").write_text("question,answer\nq,a\n")
    config = workdir / "sp.yaml"
    config.write_text(f"name: sp\ncurate:\n  sources:\n    - kind: hf\n      path: csv\n      data_files: rows.csv\n"
                      f"      split: '{split}'\n      category: reasoning\n")
    code, out, err = deepeyes(monkeypatch, capsys, "run", str(config), "--run-dir", str(workdir / "run"), "--dry-run")
    name = split.split("+")[-1].split("[")[0]
    assert (code, out, err) == (2, "", f"error: invalid config:\n  {config}:7: curate.sources.0: split: no split {name!r}; {ONE_SPLIT}{hint}")


@pytest.mark.parametrize("split", ["train", "train[:1]", "train[:50%]", " train + train[0:1] ", "all"])
def test_a_builder_split_expression_of_its_train_split_loads(workdir, split):
    (workdir / "rows.csv").write_text("question,answer\nq,a\n")
    assert SourceSpec(kind="hf", path="csv", data_files=["rows.csv"], split=split).split == split


def test_the_command_line_refuses_a_builder_split_its_data_files_lack_before_loading(workdir, monkeypatch, capsys, caplog):
    (workdir / "rows.csv").write_text("question,answer\nq,a\n")
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:csv,data_files=rows.csv,split=test", "--out", str(workdir / "o"))
    assert (code, out, err) == (2, "", f"error: --source 'hf:csv,data_files=rows.csv,split=test': split: no split 'test'; {ONE_SPLIT}; "
                                       "leave split out")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("datasets")] == []


def test_a_dataset_split_known_only_when_it_loads_is_one_line_without_class_names(workdir, monkeypatch, capsys):
    """A dataset folder (as a hub dataset) has its splits from its files' names: told when it loads, in our words."""
    (workdir / "ds").mkdir()
    for split in ("train", "test"):
        (workdir / "ds" / f"{split}.csv").write_text("question,answer\nq,a\n")
    code, _, err = deepeyes(monkeypatch, capsys, "curate", "--source", "hf:ds,split=tets,category=reasoning", "--out", str(workdir / "o"))
    assert (code, err) == (2, "error: source 'ds': split: no split 'tets' in dataset 'ds' (its splits: train, test); did you mean 'test'?")
