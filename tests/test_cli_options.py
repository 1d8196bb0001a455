"""Command-line mistakes around `deepeyes evaluate --benchmark` and the options, through
`flows.cli.main` in-process (the arguments parsed as typed, the error printed as the user sees it):
one line naming the option or file the user gave, with the closest choice, and nothing written."""

from __future__ import annotations

import json
import sys
import time

import pytest

from curation.suggest import closest
from eval.benchmarks import BenchmarkError, load_spec
from flows.cli import main

URL = ["--model-url", "http://127.0.0.1:9/v1", "--model", "m"]  # never contacted: every case fails before


def deepeyes(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of `deepeyes ARGS`."""
    monkeypatch.setattr(sys, "argv", ["deepeyes", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err.strip()


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in range(3)))
    return path


BENCHMARK_FILES = [
    ("name: b\nsource: {kind: jsonl, path: rows.jsonl}\njudge: llmm\n",
     "{f}:3: judge: Input should be 'rules', 'math' or 'llm'; did you mean 'llm'?"),
    ("name: b\nsource: {kind: parquet, path: rows.jsonl}\n",
     "{f}:2: source.kind: unknown source kind 'parquet' (kinds: jsonl, json, tsv, hf, verl, shards; Parquet, CSV and other files: "
     "`kind: hf, path: parquet, data_files: [FILE]`)"),
    ("name: b\nsource: {kind: jsnl, path: rows.jsonl}\n",
     "{f}:2: source.kind: unknown source kind 'jsnl'; did you mean 'jsonl'? (kinds: jsonl, json, tsv, hf, verl, shards; Parquet, CSV "
     "and other files: `kind: hf, path: parquet, data_files: [FILE]`)"),
    ("name: b\nsourc: {kind: jsonl, path: rows.jsonl}\n",
     "invalid benchmark definition:\n  {f}:1: source: Field required\n  {f}:2: sourc: unknown field; did you mean 'source'?"),
    ("name: b\nsource: {kind: jsonl, path: rows.jsonl, fieds: {answer: a}}\n",
     "{f}:2: source.fieds: unknown field; did you mean 'fields'?"),
    ("name: b\nsource: {kind: shards, path: x, pol: eval}\n", "{f}:2: source.pol: unknown field; did you mean 'pool'?"),
    ("name: b\nsource: {kind: jsonl, path: rows.jsonl}\ntext_match: contain\n",
     "{f}:3: text_match: Input should be 'exact' or 'contains'; did you mean 'contains'?"),
    ("- name: b\n", "{f}: a benchmark definition is a mapping of name, source, judge, text_match, prompt (found list)"),
]


@pytest.mark.parametrize("text,says", BENCHMARK_FILES)
def test_a_benchmark_definition_s_mistakes_are_named_by_file_line_and_field(tmp_path, rows, text, says):
    definition = tmp_path / "b.yaml"
    definition.write_text(text)
    with pytest.raises(BenchmarkError) as raised:
        load_spec(str(definition))
    assert str(raised.value) == says.format(f=definition)


def test_an_unknown_benchmark_name_gets_the_closest_shipped_one():
    with pytest.raises(BenchmarkError, match=r"^unknown benchmark 'vstr': not a file, nor a shipped one; did you mean 'vstar'\? \(shipped: "):
        load_spec("vstr")


def test_a_close_choice_is_found_by_spelling_or_as_a_whole_part():
    assert closest("vstr", ["vstar", "mathvista"]) == ["vstar"]
    assert closest("sft", ["retrain", "train_sft", "train_grpo"]) == ["train_sft"]
    assert closest("grpo", ["train_sft", "train_grpo"]) == ["train_grpo"]
    assert closest("xyz", ["train_sft"]) == [] and closest("", ["a"]) == []


def test_evaluate_checks_each_benchmark_before_writing_anything(monkeypatch, capsys, tmp_path, rows):
    misspelt = tmp_path / "bmy.yaml"
    misspelt.write_text("name: b\nsource: {kind: jsonl, path: rows.jsonl, fields: {question: qq}}\n")
    wrong = tmp_path / "bmx.yaml"
    wrong.write_text("name: b\nsource: {kind: jsonl, path: rows.jsonl}\njudge: llmm\n")
    out = tmp_path / "ev"
    cases = [
        ([str(misspelt)], f"--benchmark {misspelt} (b): source 'rows': fields.question: 'qq': no such column in its first rows "
                          "(columns: answer, question)"),
        ([str(wrong)], f"{wrong}:3: judge: Input should be 'rules', 'math' or 'llm'; did you mean 'llm'?"),
        (["demo-heldout"], "--benchmark demo-heldout: reads a pipeline run's own held-out samples (${run_dir}/select): evaluate it in a "
                           "run (eval.benchmarks: [demo-heldout] in a config for `deepeyes run`), or give --out the directory of a run "
                           "that made them (it has select/)"),
        (["vstar", "--data-root", str(tmp_path / "none")],
         f"--benchmark vstar: file not found: {tmp_path / 'none' / 'V_star.tsv'} (--data-root is {tmp_path / 'none'}: give the folder "
         "that holds the benchmark's files)"),
        (["vstr"], "--benchmark vstr: unknown benchmark 'vstr': not a file, nor a shipped one; did you mean 'vstar'?"),
    ]
    for args, says in cases:
        code, err = deepeyes(monkeypatch, capsys, "evaluate", *URL, "--benchmark", *args, "--out", str(out))
        assert code == 2 and err.startswith(f"error: {says}"), err
        assert "\n" not in err and not out.exists()


@pytest.mark.parametrize("args,says", [
    (["evaluate", *URL, "--benchmark", "vstar", "--think-prefix", "always"],
     "--think-prefix 'always': Input should be 'none', 'after_observation' or 'every_turn'"),
    (["evaluate", *URL, "--benchmark", "vstar", "--profile", "nope"],
     "--profile: unknown protocol profile 'nope': not a file, and not one of deepeyes-v2, deepeyes-v2-compact, deepeyesv2-reference"),
    (["run", "configs/demo.yaml", "--flow", "sft"],
     "--flow: unknown flow 'sft'; did you mean 'train_sft'? (flows: retrain, curate, synthesize, train_sft, train_grpo, evaluate)"),
    (["import", "sharegpt", "x.json", "--layout", "our"], "--layout: unknown layout 'our'; did you mean 'ours'? (layouts: keep, ours)"),
])
def test_an_option_s_bad_value_is_named_by_the_option_typed(monkeypatch, capsys, tmp_path, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text("[]")
    code, err = deepeyes(monkeypatch, capsys, *args, "--out" if args[0] != "run" else "--run-dir", str(tmp_path / "o"))
    assert (code, err) == (2, f"error: {says}")


def test_import_options_get_the_closest_choice(monkeypatch, capsys, tmp_path):
    (tmp_path / "x.json").write_text("[]")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "x.json", "formatting": "sharegpt"}}))
    code, err = deepeyes(monkeypatch, capsys, "import", "sharegpt", "--dataset-info", str(info), "--dataset", "mnie", "--out", str(tmp_path / "o"))
    assert (code, err) == (2, f"error: {info}: no dataset named mnie; did you mean 'mine'? (there are: mine)")
    code, err = deepeyes(monkeypatch, capsys, "import", "sharegpt", str(tmp_path / "x.json"), "--category", "percepton", "--out", str(tmp_path / "o"))
    assert (code, err) == (2, "error: --category 'percepton': Input should be 'perception', 'reasoning', 'search' or 'direct'; "
                              "did you mean 'perception'?")


@pytest.mark.parametrize("extra,says", [
    (["--benchmark", "jsnl:{rows}"], "--benchmark 'jsnl:{rows}': unknown source kind 'jsnl'; did you mean 'jsonl'?"),
    (["--benchmark", "jsonl:{rows},limt=3"], "--benchmark 'jsonl:{rows},limt=3': unknown option 'limt'; did you mean 'limit'?"),
    (["--category", "perceptoin"], "--category 'perceptoin': Input should be 'perception', 'reasoning', 'search' or 'direct'; "
                                   "did you mean 'perception'?"),
    (["--answer-type", "nmber"], "--answer-type 'nmber': Input should be 'choice', 'number', 'math' or 'text'; did you mean 'number'?"),
    (["--category-map", "color=perceptoin"], "--category-map 'color=perceptoin': category_map.color: Input should be 'perception', "
                                             "'reasoning', 'search' or 'direct'; did you mean 'perception'?"),
])
def test_curate_names_the_option_a_bad_value_came_from(monkeypatch, capsys, tmp_path, rows, extra, says):
    args = [a.format(rows=rows) for a in extra]
    code, err = deepeyes(monkeypatch, capsys, "curate", "--source", f"jsonl:{rows}", "--out", str(tmp_path / "o"), *args)
    assert code == 2 and err.startswith(f"error: {says.format(rows=rows)}"), err


def test_a_hub_id_without_network_fails_at_once_from_the_cache(monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants

    import curation.hub_offline as hub
    from curation.sources import SourceError, SourceSpec, read_source

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert hub.hub_unreachable(timeout_s=1.0).startswith("127.0.0.1: ")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    before = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"the Hub cannot be reached: 127\.0\.0\.1: .*only the local cache was read"):
        list(read_source(SourceSpec(kind="hf", path="nonexistent-org/nonexistent-ds")))
    assert time.monotonic() - started < 20  # ~25 s of retries without the probe
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == before


@pytest.mark.parametrize("args,says", [
    (["status"], "error: Missing argument 'RUN'."),
    (["report"], "error: Missing argument 'RUN'."),
    (["deploy"], "error: Missing argument 'CONFIG'."),
    (["generate-world"], "error: Missing argument 'OUT'."),
])
def test_a_missing_argument_is_named_as_the_readme_writes_it(monkeypatch, capsys, args, says):
    """Review r6 #18: `Missing argument 'run_dir'.` where the README's usage says `deepeyes status RUN`."""
    assert deepeyes(monkeypatch, capsys, *args) == (2, says)


@pytest.mark.parametrize("args,says", [
    (["curate", "--out", "x", "--bogus"], "error: No such option: --bogus"),  # was `(Possible options: --out)`
    (["curate", "--out", "x", "--ot", "y"], "error: No such option: --ot (Possible options: --out)"),
    (["curate", "--sorce", "jsonl:x.jsonl", "--out", "x"], "error: No such option: --sorce (Possible options: --source)"),
    (["evaluate", "--modl", "m"], "error: No such option: --modl (Possible options: --model, --model-url)"),
    (["sandbox", "exec", "--tmeout", "3"], "error: No such option: --tmeout (Possible options: --timeout)"),
    (["--bogus"], "error: No such option: --bogus"),
    # review r7 #11: closest first, not click's alphabetical order
    (["probe", "--studnet-url", "x"], "error: No such option: --studnet-url (Possible options: --student-url, --student-model)"),
    # review r7 #11: a name whose words begin an option's words, in order, names it (`--no-tools` got `--no-stop`)
    (["evaluate", "--no-tools"], "error: No such option: --no-tools (Possible options: --no-tool-free-control)"),
    (["evaluate", "--max"], "error: No such option: --max (Possible options: --max-turns, --max-tokens, --max-samples)"),
    (["evaluate", "--judge"], "error: No such option: --judge (Possible options: --judge-url, --judge-model)"),
    # review r8 F6: a flag's off switch only for a name typed as one (`--dryrun` never meant `--no-dry-run`)
    (["evaluate", "--tool-free"], "error: No such option: --tool-free (Possible options: --tool-free-control)"),
    (["run", "x", "--dryrun"], "error: No such option: --dryrun (Possible options: --dry-run)"),
    (["run", "x", "--no-dry"], "error: No such option: --no-dry (Possible options: --no-dry-run)"),
    (["run", "x", "-n"], "error: No such option: -n"),  # one letter begins too many names; it got `--no-dry-run`
    (["evaluate", "--no"], "error: No such option: --no (Possible options: --no-seed, --no-stop, --no-tool-free-control)"),
    (["probe", "--student"], "error: No such option: --student (Possible options: --student-url, --student-model)"),
    (["probe", "--request-timeouts", "3"], "error: No such option: --request-timeouts (Possible options: --request-timeout)"),
    (["curate", "--out", "x", "--answer", "y"], "error: No such option: --answer (Possible options: --answer-type)"),
    (["curate", "--out", "x", "--no-probe"], "error: No such option: --no-probe (Possible options: --no-probes)"),
    (["run", "x", "--dry"], "error: No such option: --dry (Possible options: --dry-run)"),
    (["generate-world", "x", "--per-familiy", "2"], "error: No such option: --per-familiy (Possible options: --per-family)"),
    (["evaluate", "--bogus-tools"], "error: No such option: --bogus-tools"),  # every word must begin one: `bogus` begins none
])
def test_an_unknown_option_suggests_only_the_close_ones(monkeypatch, capsys, tmp_path, args, says):
    """Review r6 #18: click compares option names with their `--`, so `--bogus` got `--out`; only close names are
    suggested, as for commands, in every command (a subcommand's group's too); the exit code stays 2."""
    monkeypatch.chdir(tmp_path)
    assert deepeyes(monkeypatch, capsys, *args) == (2, says)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("env,enabled", [({}, "False"), ({"HF_HUB_DISABLE_PROGRESS_BARS": "0"}, "True")])
def test_transformers_loading_bars_are_off_for_every_command_unless_asked_for(tmp_path, env, enabled):
    """Review m8: `deepeyes evaluate CHECKPOINT` printed transformers' `Loading weights: 100%|███| 51/51`
    bar before its result lines (only `deepeyes run` had turned the bars off). `deepeyes` turns them
    off before any command imports transformers; `HF_HUB_DISABLE_PROGRESS_BARS=0` keeps them."""
    import os
    import subprocess

    code = ("import sys\nfrom flows import cli\nsys.argv = ['deepeyes', 'report', '--help']\ntry:\n    cli.main()\nexcept SystemExit:\n"
            "    pass\nfrom transformers.utils import logging\nprint(logging.is_progress_bar_enabled())\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")} | env
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environ, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == enabled
