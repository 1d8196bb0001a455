"""An `hf` source whose `path` is a hub id, not a packaged `datasets` builder (review r8 F1).

`hf:cvs,data_files=rows.csv` (a misspelt `csv`) was taken for a hub id and, with `data_files`,
skipped the Hub reachability probe: ~26 s of `huggingface_hub` retries, a dozen log lines, then a
message naming `LocalEntryNotFoundError`. Now a bare name one edit from a builder is refused when the
source is parsed (config load, dry run, command line), any other hub id (with `data_files` or not)
is read from the local cache only when the Hub cannot be reached, the retry lines are dropped and
the message has no class names."""

from __future__ import annotations

import logging

import pytest

from curation import sources
from curation.datasets_quiet import hub_retry_lines_off
from curation.sources import SourceSpec, exception_words, misspelt_builder
from flows.config import ConfigError, load_config
from tests.curate_cli import main_in_process as deepeyes

NOT_A_BUILDER = "hf source path {p!r}: not a datasets builder; did you mean {b!r}? (a Hub dataset is owner/name)"
UNREACHABLE = "huggingface.co: Name or service not known"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "rows.csv").write_text("question,answer\nq,a\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("path", "builder"), [("cvs", "csv"), ("jsonn", "json"), ("parket", "parquet"), ("Jsn", "json"),
                                               ("arow", "arrow"), ("webdatset", "webdataset"), (" imagefoldr ", "imagefolder")])
def test_a_bare_name_one_edit_from_a_builder_is_that_builder_misspelt(path, builder):
    assert misspelt_builder(path) == builder


@pytest.mark.parametrize("path", ["csv", "parquet", "squad", "wikitext", "textvqa", "glue", "mnist", "imdb", "org/cvs", "someorg/jsonn"])
def test_builders_hub_ids_and_bare_hub_names_far_from_a_builder_are_not_misspelt(path):
    assert misspelt_builder(path) is None


def test_a_local_folder_named_like_a_builder_is_not_misspelt(workdir):
    (workdir / "cvs").mkdir()
    assert misspelt_builder("cvs") is None


@pytest.mark.parametrize(("source", "path", "builder"), [("hf:cvs,data_files=rows.csv", "cvs", "csv"), ("hf:jsonn", "jsonn", "json"),
                                                         ("hf:Parket ,data_files=rows.csv", "Parket", "parquet")])
def test_the_command_line_refuses_a_misspelt_builder_before_loading(workdir, monkeypatch, capsys, source, path, builder):
    monkeypatch.setattr(sources, "hub_unreachable", lambda: pytest.fail("the Hub was probed"))
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", source, "--category", "perception", "--out", "o")
    assert (code, out, err) == (2, "", f"error: --source {source!r}: {NOT_A_BUILDER.format(p=path, b=builder)}")
    assert not (workdir / "o").exists()


def test_a_config_and_its_dry_run_refuse_a_misspelt_builder_at_its_path_line(workdir, monkeypatch, capsys):
    config = workdir / "hf.yaml"
    config.write_text("name: h\ncurate:\n  sources:\n    - kind: hf\n      path: cvs\n      data_files: rows.csv\n")
    expected = f"invalid config:\n  {config}:5: curate.sources.0: {NOT_A_BUILDER.format(p='cvs', b='csv')}"
    with pytest.raises(ConfigError) as raised:
        load_config(config, check=False)
    assert str(raised.value) == expected
    code, out, err = deepeyes(monkeypatch, capsys, "run", str(config), "--flow", "curate", "--run-dir", "r", "--dry-run")
    assert (code, out, err) == (2, "", f"error: {expected}")


@pytest.mark.parametrize("path", ["squad", "someorg/somedata", "csv"])
def test_a_builder_and_hub_ids_still_parse(workdir, path):
    spec = SourceSpec.parse_cli(f"hf:{path},data_files=rows.csv")
    assert (spec.kind, spec.path) == ("hf", path)


@pytest.mark.parametrize(("source", "name", "files"), [("hf:someorg/somedata,data_files=rows.csv", "rows", " (data_files rows.csv)"),
                                                       ("hf:someorg/somedata", "someorg__somedata", ""), ("hf:squad", "squad", "")])
def test_a_hub_id_without_the_hub_reads_the_cache_only_in_one_line(workdir, monkeypatch, capsys, caplog, source, name, files):
    """With `data_files` too: the probe runs, the load is offline (no request, so no retry), and the message says so in words."""
    probed = []
    monkeypatch.setattr(sources, "hub_unreachable", lambda: probed.append(1) or UNREACHABLE)
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http, "http_backoff", lambda *a, **k: pytest.fail("a request to the Hub was made"))
    caplog.set_level(logging.INFO)
    code, out, err = deepeyes(monkeypatch, capsys, "curate", "--source", source, "--category", "perception", "--out", "o")
    dataset = source.removeprefix("hf:").partition(",")[0]
    assert (code, out, err) == (2, "", f"error: source {name!r}: datasets cannot load {dataset!r}{files}: Couldn't reach {dataset!r} on "
                                       f"the Hub (offline mode is enabled) (the Hub cannot be reached: {UNREACHABLE}; only the local cache was read)")
    assert probed == [1]
    assert [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage() or "thrown while" in r.getMessage()] == []


def test_a_builder_reading_local_files_does_not_probe_the_hub(workdir, monkeypatch):
    monkeypatch.setattr(sources, "hub_unreachable", lambda: pytest.fail("the Hub was probed"))
    rows = list(sources.read_source(SourceSpec.parse_cli("hf:csv,data_files=rows.csv,category=reasoning")))
    assert [row for row, _ in rows] == [{"question": "q", "answer": "a"}]


def test_the_hub_clients_retry_lines_are_dropped_while_a_load_runs(caplog):
    logger = logging.getLogger("huggingface_hub.utils._http")
    caplog.set_level(logging.WARNING)
    with hub_retry_lines_off():
        logger.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD https://huggingface.co/datasets/x")
        logger.warning("Retrying in 8s [Retry 5/5].")
        logger.warning("something else")
    logger.warning("Retrying in 1s [Retry 1/5].")
    assert [r.getMessage() for r in caplog.records] == ["something else", "Retrying in 1s [Retry 1/5]."]


@pytest.mark.parametrize(("message", "words"), [
    ("Couldn't reach 'cvs' on the Hub (LocalEntryNotFoundError)", "Couldn't reach 'cvs' on the Hub (local entry not found)"),
    ("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)", "Couldn't reach 'x' on the Hub (offline mode is enabled)"),
    ("failed (huggingface_hub.errors.HfHubHTTPError)", "failed (hf hub http)"),
    ("no file (see the docs) (x)", "no file (see the docs) (x)")])
def test_a_class_name_inside_a_librarys_message_is_told_in_words(message, words):
    assert exception_words(ConnectionError(message)) == words
