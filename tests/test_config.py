import re
import subprocess
import sys

import pytest

from flows.config import ConfigError, load_config, load_demo_config

GOOD = """\
name: t
world:
  per_family: 2
replay: {}
synth:
  attempts: 2
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_the_embedded_demo_config_is_valid():
    cfg = load_demo_config()
    assert cfg.world is not None and cfg.replay is not None and cfg.synth.teacher_model == "demo-teacher"


def test_a_good_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.synth.attempts == 2 and cfg.world.per_family == 2


def test_unknown_field_names_field_file_and_line(tmp_path):
    path = write(tmp_path, GOOD + "  agnet:\n    max_turns: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:7: synth.agnet: unknown field" in str(info.value)


def test_bad_value_names_the_field(tmp_path):
    path = write(tmp_path, GOOD.replace("attempts: 2", "attempts: zero"))
    with pytest.raises(ConfigError, match=r"c.yaml:6: synth.attempts: .*integer"):
        load_config(path)


def test_missing_source_file_is_named(tmp_path):
    path = write(tmp_path, "curate:\n  sources:\n    - {path: data/nope.jsonl}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: curate.sources.0.path: file not found: .*data/nope.jsonl"):
        load_config(path)
    (tmp_path / "data" / "folder").mkdir(parents=True)
    (tmp_path / "data" / "empty").mkdir()
    for source, said in [("{path: data/folder}", "is a folder; a jsonl source is one file (a folder of parquet files is kind verl)"),
                         ("{kind: verl, path: data/empty}", "no parquet files in this folder")]:
        with pytest.raises(ConfigError, match=rf"c.yaml:3: curate.sources.0.path: {re.escape(said)}: .*data/"):
            load_config(write(tmp_path, f"curate:\n  sources:\n    - {source}\n"))


def test_replay_without_world_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="replay"):
        load_config(write(tmp_path, "replay: {}\n"))


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD + "  agnet: 1\n", "synth.agnet: unknown field"),
        (None, "config file not found"),
        ("", "c.yaml: the config file is empty (no settings)"),
        (GOOD + "orchestration: {task_runner: spark}\n", "c.yaml:7: orchestration.task_runner: Input should be 'threads', 'dask' or 'ray'"),
        (GOOD + "  concurrency: 64\norchestration: {endpoint_max_in_flight: 32}\n", "synth.concurrency: 64 requests in flight is above"),
    ],
)
def test_cli_reports_user_mistakes_in_one_message_without_traceback(tmp_path, text, expected):
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.yaml"
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()  # it failed before any work


@pytest.mark.parametrize("text", ["", "\n  \n", "# my settings, to come\n\n"])
def test_an_empty_config_file_is_named_before_anything_else(tmp_path, text):
    """An empty (or comments-only) file had been told as its first missing setting, `curate.sources: no source given`."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}: the config file is empty (no settings); start from configs/demo.yaml"
    assert load_config(write(tmp_path, "# the demo world\n" + GOOD)).world.per_family == 2  # comments beside settings are fine


def test_a_config_path_that_is_no_regular_file_is_named_so(tmp_path):
    """/dev/null exists: it had been told `config file not found`, as a folder is `is a directory`."""
    with pytest.raises(ConfigError) as raised:
        load_config("/dev/null")
    assert str(raised.value) == "config file is not a regular file (a device, pipe or socket): /dev/null"
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path)
    assert str(raised.value) == f"config file is a directory, not a file: {tmp_path}"


def test_vllm_rollouts_need_a_training_environment_with_vllm(tmp_path):
    """Without `vllm` here, grpo.vllm needs a launcher from an environment that has it; with one, the config loads."""
    text = GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002'}\n"
    with pytest.raises(ConfigError, match=r"grpo.vllm: .*training.command"):
        load_config(write(tmp_path, text))
    cfg = load_config(write(tmp_path, text + "training: {command: [/opt/grpo-env/bin/accelerate, launch]}\n"))
    assert cfg.training.command[-1] == "launch" and cfg.grpo.vllm.url == "http://127.0.0.1:8002"


def test_unknown_fields_get_the_closest_known_names(tmp_path):
    path = write(tmp_path, GOOD + "  agent: {max_turn: 3, kernel: {timeout: 5}}\nevall: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "synth.agent.max_turn: unknown field; did you mean 'max_turns'?" in message
    assert "synth.agent.kernel.timeout: unknown field; did you mean 'timeout_s'?" in message
    assert "evall: unknown field; did you mean 'eval'?" in message


def test_an_explicit_teacher_url_beside_a_replay_section_is_refused(tmp_path):
    """A copy of configs/demo.yaml with synth.teacher_url set: the replay server would answer and the
    user's server get no request, so the config is refused in one line (issue 17)."""
    from flows.config import demo_config_text

    text = demo_config_text().replace("synth:\n", "synth:\n  teacher_url: http://127.0.0.1:8011/v1\n", 1)
    with pytest.raises(ConfigError, match=r"synth.teacher_url and replay: both name the teacher") as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)
    student = demo_config_text().replace("  student_model: demo-student", "  student_url: http://127.0.0.1:8011/v1\n  student_model: demo-student")
    with pytest.raises(ConfigError, match=r"probe.student_url and replay: both name the student"):
        load_config(write(tmp_path, student))
    assert load_demo_config().synth.teacher_model == "demo-teacher"  # the demo itself names one teacher


@pytest.mark.parametrize("section", ["sft", "eval"])
def test_a_local_model_path_must_be_a_folder(tmp_path, section):
    """A file passed (sft.model_path: /etc/hostname) and failed stages later in from_pretrained."""
    weights = tmp_path / "model.safetensors"
    weights.write_text("")
    for path, said in ((weights, "a file, not a model directory"), (tmp_path / "nope", "directory not found")):
        with pytest.raises(ConfigError) as raised:
            load_config(write(tmp_path, GOOD + f"{section}: {{model_path: {path}}}\n"))
        assert str(raised.value).endswith(f"c.yaml:7: {section}.model_path: {said}: {path}")
    (tmp_path / "ckpt").mkdir()
    assert getattr(load_config(write(tmp_path, GOOD + f"{section}: {{model_path: {tmp_path / 'ckpt'}}}\n")), section).model_path == str(tmp_path / "ckpt")
    assert getattr(load_config(write(tmp_path, GOOD + f"{section}: {{model_path: org/name}}\n")), section).model_path == "org/name"  # a hub id


@pytest.mark.parametrize("field,text", [
    ("synth.teacher_url", "synth: {teacher_url: 'localhost:8000/v1'}\n"),
    ("eval.model_url", "eval: {model_url: '127.0.0.1:8000/v1', model_name: m}\n"),
    ("judge.llm_url", "judge: {llm_url: 'ftp://host/v1', llm_model: j}\n"),
])
def test_a_url_without_http_is_named_before_any_work(tmp_path, field, text):
    config = "curate: {sources: [{path: s.jsonl}]}\n" + text
    (tmp_path / "s.jsonl").write_text("")
    with pytest.raises(ConfigError, match=rf"{field}: '.*' is not an http:// or https:// URL"):
        load_config(write(tmp_path, config))


def test_benchmarks_are_checked_before_any_work(tmp_path):
    base = GOOD + "eval:\n  data_root: " + str(tmp_path / "data") + "\n"
    with pytest.raises(ConfigError, match=r"c.yaml:9: eval.benchmarks.0: unknown benchmark 'vstar-typo'"):
        load_config(write(tmp_path, base + "  benchmarks: [vstar-typo]\n"))
    with pytest.raises(ConfigError, match=r"c.yaml:9: eval.benchmarks.0 \(mathvista\): data file not found: .*MathVista_MINI.tsv"):
        load_config(write(tmp_path, base + "  benchmarks: [mathvista]\n"))
    (tmp_path / "broken.yaml").write_text("name: b\nsource: {kind: tsv}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:9: eval.benchmarks.0: .*broken.yaml"):
        load_config(write(tmp_path, base + f"  benchmarks: [{tmp_path / 'broken.yaml'}]\n"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "MathVista_MINI.tsv").write_text("index\tquestion\tanswer\n")
    assert load_config(write(tmp_path, base + "  benchmarks: [mathvista]\n")).eval.benchmarks == ["mathvista"]


def test_an_unknown_source_kind_and_a_mapping_to_a_missing_column_are_named_before_any_work(tmp_path):
    from tests.curate_cli import curate

    source = tmp_path / "s.jsonl"
    source.write_text('{"query": "How many?", "label": "4"}\n' * 3)
    unknown = curate("--source", f"parquet:{source}", "--out", str(tmp_path / "a"))
    assert unknown.code == 2 and "unknown source kind 'parquet' (kinds: jsonl, json, tsv, hf" in unknown.error
    missing = curate("--source", f"{source},fields.question=query,fields.answer=answer_text,category=reasoning", "--out", str(tmp_path / "b"))
    assert missing.code == 2 and "fields.answer: 'answer_text': no such column in its first rows (columns: label, query)" in missing.error
    assert not (tmp_path / "b").exists()  # refused before any work
    ok = curate("--source", f"{source},fields.question=query,fields.answer=label,category=reasoning", "--out", str(tmp_path / "c"))
    assert ok.code == 0 and ok.summary["counts"]["rows_in"] == 3
    config = write(tmp_path, f"curate: {{sources: [{{path: {source}, category: reasoning, fields: {{question: query, answer: ans}}}}]}}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: curate.sources.0: source 's': fields.answer: 'ans': no such column"):
        load_config(config)


def test_disk_weight_sync_needs_no_vllm_here(tmp_path):
    """`grpo.vllm.weight_sync: disk` reloads the weights through HTTP: the pipeline's own environment trains."""
    cfg = load_config(write(tmp_path, GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002', weight_sync: disk}\n"))
    assert cfg.grpo.vllm.weight_sync == "disk" and cfg.training is None
    with pytest.raises(ConfigError, match="grpo.vllm.weight_sync"):
        load_config(write(tmp_path, GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002', weight_sync: gloo}\n"))


@pytest.mark.parametrize("text,expected", [
    ("curate:\n  near_dup: {max_edits: true}\n", "c.yaml:2: curate.near_dup.max_edits: a number is expected, not a boolean"),
    ("curate:\n  split: {coldstart: true, eval: 0}\n", "c.yaml:2: curate.split.coldstart: a number is expected, not a boolean"),
    ("synth:\n  attempts: false\n", "c.yaml:2: synth.attempts: a number is expected, not a boolean"),
    ("curate:\n  seed: 1\n  seed: 2\n", "c.yaml: not valid YAML: line 3 column 3: duplicate key 'seed' (first at line 2)"),
    ("\tcurate: {}\n", "(YAML indents with spaces, not tabs)"),
    # review r7 #12: PyYAML's `but found another document (expected a single document in the stream)`, in words
    ("curate: {}\n---\nworld: {}\n", "c.yaml: not valid YAML: line 2 column 1: a second YAML document starts here (`---` after the "
     "first's content); the file is read as one document"),
])
def test_booleans_for_numbers_and_duplicate_keys_are_refused_naming_field_and_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), check=False)
    assert expected in str(raised.value)


def test_a_yaml_merge_key_may_be_overridden_and_booleans_stay_booleans(tmp_path):
    text = ("name: t\nsynth:\n  agent: &agent {max_turns: 3, max_tokens_per_turn: 64}\nprobe:\n  agent:\n    <<: *agent\n"
            "    max_turns: 2\ncurate:\n  near_dup: {enabled: false}\n")
    config = load_config(write(tmp_path, text), check=False)
    assert (config.synth.agent.max_turns, config.probe.agent.max_turns, config.probe.agent.max_tokens_per_turn) == (3, 2, 64)
    assert config.curate.near_dup.enabled is False


@pytest.mark.parametrize("content,expected", [
    (b"\xea\x01\x9c\x00binary", "config file {path} is not UTF-8 text (byte 0xea at offset 0): is it a binary file?"),
    ("name: t\n".encode("utf-16"), "config file {path} is UTF-16 text: save it as UTF-8"),
    (b"\xef\xbb\xbfname: t\n", None),  # UTF-8 with a byte-order mark is UTF-8
])
def test_a_config_that_is_not_utf8_text_is_named_in_one_line(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    if expected is None:
        assert load_config(path, check=False).name == "t"
        return
    with pytest.raises(ConfigError) as raised:
        load_config(path, check=False)
    assert str(raised.value) == expected.format(path=path)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "error: " + expected.format(path=path)


def test_a_benchmark_definition_that_is_not_text_is_named(tmp_path):
    (tmp_path / "bench.yaml").write_bytes(b"\xea\x01\x9cnot yaml")
    config = write(tmp_path, f"eval:\n  benchmarks: [{tmp_path / 'bench.yaml'}]\n  model_url: http://x/v1\n  model_name: m\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"{config}:2: eval.benchmarks.0: {tmp_path / 'bench.yaml'}: not UTF-8 text (invalid continuation byte "
                                 "at byte 0); a benchmark definition is YAML")


def test_every_relative_path_in_a_config_resolves_against_the_config_file(tmp_path, monkeypatch):
    """The released-7b example copied beside its data and run from another folder: eval.data_root
    (and so every benchmark's data file), the search corpus and cache, a benchmark definition file
    (and its own relative data path), a protocol-profile file and a local model all resolve
    against the config's folder, not the working directory (review r2)."""
    import json
    import shutil
    from pathlib import Path

    from eval.benchmarks import benchmark_files, load_spec

    repo = Path(__file__).resolve().parent.parent
    exp = tmp_path / "exp"
    (exp / "data" / "eval").mkdir(parents=True)
    tsv = "index\tquestion\tA\tB\tanswer\tcategory\n1\tWhich?\tred\tblue\tA\tc\n"
    for name in ("V_star.tsv", "HRBench4K.tsv", "MathVista_MINI.tsv"):
        (exp / "data" / "eval" / name).write_text(tsv)
    (exp / "data" / "eval" / "fvqa_test.jsonl").write_text(json.dumps({"question": "Who?", "answer": "Ada"}) + "\n")
    (exp / "data" / "image_corpus.jsonl").write_text(json.dumps({"image": "a.png", "title": "A", "url": "u"}) + "\n")
    (exp / "bench").mkdir()
    (exp / "bench" / "mine.yaml").write_text("name: mine\nsource: {kind: jsonl, path: rows.jsonl, category: reasoning}\n")
    (exp / "bench" / "rows.jsonl").write_text(json.dumps({"question": "2 + 2?", "answer": "4"}) + "\n")
    (exp / "profiles").mkdir()
    shutil.copy(repo / "synth" / "runtime" / "profiles" / "deepeyes-v2.yaml", exp / "profiles" / "mine.yaml")
    shutil.copytree(repo / "synth" / "runtime" / "prompts", exp / "prompts")  # the prompts it names, relative to it
    (exp / "ckpt").mkdir()
    text = (repo / "configs" / "released-7b.example.yaml").read_text()
    text = text.replace("benchmarks: [vstar, hrbench-4k, mathvista, fvqa]", "benchmarks: [vstar, hrbench-4k, mathvista, fvqa, bench/mine.yaml]")
    text += "synth:\n  agent: {profile: profiles/mine.yaml}\nsft:\n  model_path: ckpt\n"
    (exp / "released-7b.yaml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(Path("..") / "exp" / "released-7b.yaml")  # checks every benchmark's data file exists
    root = exp.resolve()
    assert Path(cfg.eval.data_root) == root / "data" / "eval"
    assert cfg.search.image_corpus_path == root / "data" / "image_corpus.jsonl"
    assert cfg.search.cache_dir == root / "cache" / "search"
    assert cfg.eval.benchmarks[-1] == str(root / "bench" / "mine.yaml")
    assert Path(load_spec(cfg.eval.benchmarks[-1], cfg.eval.data_root).source.path) == root / "bench" / "rows.jsonl"
    assert root / "data" / "eval" / "V_star.tsv" in benchmark_files("vstar", cfg.eval.data_root)
    assert cfg.synth.agent.profile == str(root / "profiles" / "mine.yaml")
    assert cfg.sft.model_path == str(root / "ckpt")
    assert cfg.runs_dir == Path("runs")  # runs go under the working directory, as documented
    # Without an eval section, the default data/eval is the config's too.
    (exp / "bare.yaml").write_text("name: bare\nworld: {per_family: 2}\nreplay: {}\n")
    assert Path(load_config(exp / "bare.yaml").eval.data_root) == root / "data" / "eval"


@pytest.mark.parametrize("name", ["../../../escape", "a/b", "..", "", "back\\\\slash"])
def test_a_run_name_that_is_a_path_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=r"name: .* is not a folder name: the run directory is runs_dir/name"):
        load_config(write(tmp_path, GOOD.replace("name: t", f"name: '{name}'")))


def test_a_numeric_run_name_is_its_text(tmp_path):
    cfg = load_config(write(tmp_path, GOOD.replace("name: t", "name: 123")))
    assert cfg.name == "123"


@pytest.mark.parametrize(("section", "field"), [("synth:\n  long_cot: {path: %s}\n", "synth.long_cot.path"),
                                                 ("search:\n  corpus_path: %s\n", "search.corpus_path")])
def test_a_mixing_source_or_corpus_that_is_a_folder_or_missing_is_named(tmp_path, section, field):
    (tmp_path / "folder").mkdir()
    (tmp_path / "src.jsonl").write_text("")
    sources = "curate:\n  sources:\n    - {path: src.jsonl}\n"
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: a folder, not a file: .*folder"):
        load_config(write(tmp_path, sources + section % "folder"))
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: file not found: .*nope.jsonl"):
        load_config(write(tmp_path, sources + section % "nope.jsonl"))


def test_a_wide_text_long_cot_source_and_a_misspelt_choice_are_refused_at_load_time(tmp_path):
    (tmp_path / "src.jsonl").write_text("")
    (tmp_path / "cot.jsonl").write_text('{"question": "q", "response": "r"}\n', encoding="utf-16")
    sources = "curate:\n  sources:\n    - {path: src.jsonl}\n"
    with pytest.raises(ConfigError, match=r"synth.long_cot.path: .*cot.jsonl is UTF-16 text: save it as UTF-8"):
        load_config(write(tmp_path, sources + "synth:\n  long_cot: {path: cot.jsonl}\n"))
    (tmp_path / "cot.jsonl").write_text('{"question": "q", "response": "r"}\n')
    for given, said in [("tool", "; did you mean 'tools'?"), ("TOOLS", "; did you mean 'tools'?"), ("zzz", "")]:
        with pytest.raises(ConfigError) as raised:
            load_config(write(tmp_path, sources + f"synth:\n  long_cot: {{path: cot.jsonl, opening: {given}}}\n"))
        line = str(raised.value).splitlines()[-1]
        assert line.endswith("synth.long_cot.opening: Input should be 'question', 'no_tools' or 'tools'" + said), line


@pytest.mark.parametrize("section,says", [
    ("synth: {pools: [coldstrat]}", "synth.pools: unknown pool 'coldstrat'; did you mean 'coldstart'? (pools: coldstart, rl, eval)"),
    ("synth: {pools: []}", "synth.pools: List should have at least 1 item after validation, not 0"),
    ("eval: {pools: [rl, evl]}", "eval.pools: unknown pool 'evl'; did you mean 'eval'? (pools: coldstart, rl, eval)"),
    ("eval: {pools: [heldout]}", "eval.pools: unknown pool 'heldout' (pools: coldstart, rl, eval)"),
    ("curate: {split: {coldstrat: 0.5, eval: 0.5}}",
     "curate.split: unknown pool 'coldstrat'; did you mean 'coldstart'? (pools: coldstart, rl, eval)"),
    ("select: {mix: {RL: {perception: 1}}}", "select.mix: unknown pool 'RL'; did you mean 'rl'? (pools: coldstart, rl)"),
])
def test_a_pool_name_that_no_stage_writes_is_refused_when_the_config_loads(tmp_path, section, says):
    """Review r5: `synth.pools: [coldstrat]` passed --dry-run, and synthesis then 'completed' with 0 rows."""
    path = write(tmp_path, GOOD.replace("synth:\n  attempts: 2\n", "") + section + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines()[-1] == f"  {path}:5: {says}"


def test_the_pools_a_stage_reads_may_be_any_of_the_pools_curation_and_select_write(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "  pools: [coldstart, rl]\neval: {pools: [eval, rl]}\n"))
    assert cfg.synth.pools == ["coldstart", "rl"] and cfg.eval.pools == ["eval", "rl"]


def test_a_select_section_without_probe_is_refused_as_it_would_not_run(tmp_path):
    """Review r5: `select:` without `probe:` was left out of the plan without a word."""
    path = write(tmp_path, GOOD + "select: {max_pass_rate_no_tools: 0.3}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}:7: select: the select stage splits curated rows by the student's probe pass rates, and the config "
                               "has no `probe:` section; add one (`probe: {}` for its defaults), or remove `select:` (without probes, "
                               "curate.split assigns the pools by hash)")
    cfg = load_config(write(tmp_path, GOOD + "probe: {}\nselect: {max_pass_rate_no_tools: 0.3}\n"))
    assert cfg.select.max_pass_rate_no_tools == 0.3


@pytest.mark.parametrize("text,expected", [
    # TRL's generation batch (batch_size × grad_accum × processes) holds whole GRPO groups
    ("grpo: {batch_size: 3, num_generations: 2}\n",
     "c.yaml:7: grpo.batch_size: 3 rollouts per step is not a whole number of GRPO groups of grpo.num_generations (2) rollouts; "
     "set batch_size to 2 or 4, or change num_generations"),
    ("grpo: {batch_size: 3, grad_accum: 2, num_generations: 4}\n",
     "c.yaml:7: grpo.batch_size: batch_size × grad_accum = 3 × 2 = 6 rollouts per step is not a whole number of GRPO groups of "
     "grpo.num_generations (4) rollouts; set batch_size to 2 or 4, or change num_generations"),
    ("grpo: {num_generations: 1, batch_size: 1}\n", "c.yaml:7: grpo.num_generations: Input should be greater than or equal to 2"),
    ("grpo: {pools: [coldstrat]}\n",
     "c.yaml:7: grpo.pools: unknown pool 'coldstrat'; did you mean 'coldstart'? (pools: coldstart, rl, eval)"),
    ("grpo: {pools: []}\n", "c.yaml:7: grpo.pools: List should have at least 1 item after validation, not 0"),
    ("grpo: {loss_type: dpo}\n",
     "c.yaml:7: grpo.loss_type: Input should be 'dapo', 'grpo', 'dr_grpo', 'bnpo', 'cispo' or 'sapo'; did you mean 'dapo'?"),
    ("grpo: {epochs: 0}\n", "c.yaml:7: grpo.epochs: Input should be greater than 0"),
    ("grpo: {max_steps: 0}\n", "c.yaml:7: grpo.max_steps: 0 steps: give a number of steps > 0, or -1 to train for `epochs`"),
    ("sft: {epochs: 0}\n", "c.yaml:7: sft.epochs: Input should be greater than 0"),
    ("sft: {max_steps: -2}\n", "c.yaml:7: sft.max_steps: -2 steps: give a number of steps > 0, or -1 to train for `epochs`"),
    ("sft: {max_length: 0}\n", "c.yaml:7: sft.max_length: Input should be greater than or equal to 1"),
    ("sft: {lr_scheduler: cosin}\n", "c.yaml:7: sft.lr_scheduler: Input should be 'linear', 'cosine', "),
    ("sft: {lr_scheduler: cosin}\n", "; did you mean 'cosine'?"),
    ("sft: {save_steps: -5}\n", "c.yaml:7: sft.save_steps: Input should be greater than or equal to 1"),
    ("sft: {save_steps: 0}\n", "c.yaml:7: sft.save_steps: Input should be greater than or equal to 1"),
    ("sft: {lora: {dropout: 1.0}}\n", "c.yaml:7: sft.lora.dropout: Input should be less than 1"),
    ("grpo: {warn_noop_code_share: 1.5}\n", "c.yaml:7: grpo.warn_noop_code_share: Input should be less than or equal to 1"),
    ("grpo: {vllm: {url: 'http://127.0.0.1:8002', timeout_s: -1}}\n", "c.yaml:7: grpo.vllm.timeout_s: Input should be greater than or equal to 0"),
    ("reward: {answer_cap_chars: {perception: -1}}\n",
     "c.yaml:7: reward.answer_cap_chars.perception: Input should be greater than or equal to 1"),
    ("tiny_model: {hidden_size: 64, heads: 3, kv_heads: 2}\n",
     "c.yaml:7: tiny_model: heads: 3 query heads cannot be shared among kv_heads 2 key/value heads "
     "(grouped-query attention): heads must be a multiple of kv_heads"),
    ("tiny_model: {min_pixels: 5000, max_pixels: 100}\n",
     "c.yaml:7: tiny_model: min_pixels: 5000 is above max_pixels (100); the processor resizes every image to between the two"),
    ("tiny_model: {vision_hidden: 20}\n", "c.yaml:7: tiny_model.vision_hidden: Input should be a multiple of 8"),
])
def test_training_settings_that_trl_or_torch_would_refuse_are_named_at_load_time(tmp_path, text, expected):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, GOOD + text))
    assert expected in str(raised.value)


@pytest.mark.parametrize("field,value,bound", [
    ("memory_mb", -1, "greater than or equal to 1"), ("cpu_s", 0, "greater than or equal to 1"),
    ("file_size_mb", 0, "greater than or equal to 1"), ("open_files", -3, "greater than or equal to 1"),
    ("processes", 0, "greater than or equal to 1"), ("output_limit", 0, "greater than or equal to 1"),
    ("max_images", 0, "greater than or equal to 1"), ("min_image_side", 0, "greater than or equal to 1"),
    ("max_image_aspect", 0.5, "greater than or equal to 1"), ("max_image_pixels", -1, "greater than or equal to 1"),
    ("timeout_s", 0, "greater than 0"),
])
def test_kernel_limits_that_the_sandbox_could_not_apply_are_named_at_load_time(tmp_path, field, value, bound):
    """A 0 or negative rlimit would make every kernel session die as it starts (memory_mb: -1 had loaded)."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, GOOD + f"  agent: {{kernel: {{{field}: {value}}}}}\n"))
    assert f"c.yaml:7: synth.agent.kernel.{field}: Input should be {bound}" in str(raised.value)


def test_sandbox_ready_timeout_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"synth.agent.kernel.sandbox.ready_timeout_s: Input should be greater than 0"):
        load_config(write(tmp_path, GOOD + "  agent: {kernel: {sandbox: {ready_timeout_s: 0}}}\n"))


def test_an_answer_cap_of_null_means_no_cap(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "reward: {answer_cap_chars: {perception: null, search: 1}}\n"))
    assert cfg.reward.answer_cap_chars == {"perception": None, "search": 1}
    assert not cfg.reward.capped("x" * 10_000, "perception") and cfg.reward.capped("x", "search")


def test_synthesis_cannot_keep_more_trajectories_than_it_tries(tmp_path):
    """Each attempt yields one trajectory at most: keep_per_sample above attempts had loaded and meant attempts."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, GOOD + "  keep_per_sample: 10\n"))
    assert ("c.yaml:7: synth.keep_per_sample: 10 kept per sample is more than synth.attempts (2) tries per sample; "
            "raise attempts to 10 or more, or keep at most 2") in str(raised.value)
    assert load_config(write(tmp_path, GOOD + "  keep_per_sample: 2\n")).synth.keep_per_sample == 2


@pytest.mark.parametrize("text,expected", [
    ("world: {kind: learnable, families: []}\n",
     "c.yaml:1: world.families: empty; leave it out for all four, or name some of perception, reasoning, search, direct"),
    # A typo of extra zeros would fill the disk, as world.long_cot's cap says
    ("world: {per_family: 1000000000}\n", "c.yaml:1: world.per_family: Input should be less than or equal to 100000"),
    ("world: {kind: learnable, instruct_per_family: 1000000}\n",
     "c.yaml:1: world.instruct_per_family: Input should be less than or equal to 100000"),
    # Seeds as bench.fidelity --seeds takes them (numpy's): 0 to 2**32-1
    ("world: {seed: -1}\n", "c.yaml:1: world.seed: Input should be greater than or equal to 0"),
    ("world: {}\nreplay: {seed: 4294967296}\n", "c.yaml:2: replay.seed: Input should be less than or equal to 4294967295"),
    ("world: {}\ncurate: {seed: -1}\n", "c.yaml:2: curate.seed: Input should be greater than or equal to 0"),
    ("world: {}\nsft: {seed: -1}\n", "c.yaml:2: sft.seed: Input should be greater than or equal to 0"),
])
def test_world_sizes_and_seeds_that_make_no_sense_are_refused(tmp_path, text, expected):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert expected in str(raised.value)


def test_the_largest_world_and_seed_load(tmp_path):
    cfg = load_config(write(tmp_path, "world: {per_family: 100000, seed: 4294967295}\nreplay: {seed: 0}\n"))
    assert (cfg.world.per_family, cfg.world.seed) == (100_000, 2**32 - 1)


def test_a_grpo_batch_of_whole_groups_loads_and_a_launcher_defers_the_check_to_its_processes(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "grpo: {batch_size: 6, grad_accum: 2, num_generations: 4}\n"))
    assert cfg.grpo.generation_batch_problem() is None
    # 2 per device on 8 processes is 16 rollouts: whole groups of 16, though one device holds less than a group
    cfg = load_config(write(tmp_path, GOOD + "grpo: {batch_size: 2, num_generations: 16}\ntraining: {command: [accelerate, launch]}\n"))
    assert cfg.grpo.generation_batch_problem(processes=8) is None
    assert cfg.grpo.generation_batch_problem(processes=3) == (
        "grpo.batch_size: batch_size × grad_accum × processes = 2 × 1 × 3 = 6 rollouts per step is not a whole number of GRPO groups "
        "of grpo.num_generations (16) rollouts; set batch_size to 16, or change num_generations")


def test_a_bad_grpo_batch_is_refused_by_a_dry_run_in_one_line(tmp_path):
    path = write(tmp_path, GOOD + "grpo: {batch_size: 3, num_generations: 2}\n")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "grpo.batch_size: 3 rollouts per step is not a whole number of GRPO groups" in result.stderr
