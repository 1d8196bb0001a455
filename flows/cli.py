"""The `deepeyes` command line."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from curation.strict_config import MAX_SEED, MAX_WORLD_SIZE
from flows.prefect_env import configure_prefect_env, quiet_model_loading_bars
from flows.signals import EXIT_CODES, SAID, Stop, Terminated, stop_signals
from flows.user_input import out_dir_option

app = typer.Typer(
    name="deepeyes",
    help="open-deepeyes: curate, synthesize tool-use trajectories, train (SFT, GRPO), evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input or environment: shown as one line, never a traceback."""
    from pydantic import ValidationError

    from curation.select import ProbeDataError
    from curation.shards import ShardError
    from curation.sources import SourceError
    from curation.worlds import WorldFolderError
    from eval.benchmarks import BenchmarkError
    from eval.report import ReportError
    from flows.config import ConfigError
    from flows.deploy import DeployError
    from synth.long_cot import LongCotError
    from synth.probe import ProbeInputError
    from synth.runtime.endpoint import EndpointError
    from synth.tools.sandbox import SandboxUnavailable
    from synth.tools.search import SearchError
    from flows.user_input import InputFileError
    from train.sft import TrainingDataError, TrainingSetupError

    return (ConfigError, ShardError, EndpointError, LongCotError, SandboxUnavailable, SearchError, TrainingDataError, TrainingSetupError,
            FileNotFoundError, SourceError, ProbeDataError, ValidationError, BenchmarkError, ReportError, ProbeInputError, DeployError,
            InputFileError, WorldFolderError)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task and flow with tracebacks, once per task, retry and subflow. For a
    user's mistake (a config, a file, an endpoint that is down) the command's own last line says it
    all: Prefect's records of it are dropped (other failures keep theirs)."""

    def __init__(self) -> None:
        super().__init__()
        names = "|".join(sorted({cls.__name__ for cls in _user_errors()}))
        self._mentions = re.compile(rf"\b(?:{names})\b[(:]")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], _user_errors()):
            record.exc_info, record.exc_text = None, None  # for any handler that sees the record after this one
            return False
        return not (record.levelno >= logging.ERROR and self._mentions.search(record.getMessage()))


def _quiet_user_error_tracebacks() -> None:
    """The filter on every Prefect logger (records made there: task and flow runs, the engines) and
    on their handlers (records that propagate to them)."""
    names = ["prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine",
             *(name for name in logging.root.manager.loggerDict if name.startswith("prefect."))]
    loggers = [logging.getLogger(name) for name in dict.fromkeys(names)]
    for target in [*loggers, *{h for logger in loggers for h in logger.handlers}]:
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in target.filters):
            target.addFilter(_NoTracebackForUserErrors())


def _run_pipeline(config: Any, run_dir: Path, dry_run: bool = False, flow: str = "retrain") -> None:
    from flows.user_input import check_out_dir

    from flows.config import check_flow_sections
    from flows.stage_inputs import check_flow_input

    check_out_dir(run_dir, "run directory")
    check_flow_sections(config, flow)  # before anything starts, and in the dry run too
    check_flow_input(config, flow, run_dir)  # a single-stage flow's input from an earlier flow: the same
    if dry_run:
        from flows.pipeline import plan

        typer.echo(f"run directory: {run_dir} (dry run: nothing is done)")
        for number, step in enumerate(plan(config, run_dir, flow), 1):
            typer.echo(f"{number:>2}. {step['stage']:<11} -> {step['out']}: {step['does']}")
        return
    configure_prefect_env()
    from flows.pipeline import flow_for
    from flows.prefect_env import local_run_settings, show_run_lines

    show_run_lines()

    _quiet_user_error_tracebacks()
    run_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"run directory: {run_dir}")
    with local_run_settings():
        summary = flow_for(flow, config)(config=config.model_dump(mode="json"), run_dir=str(run_dir))
    _print_summary(summary)


def _first_last(values: list[float]) -> str:
    return f"{values[0]:.3f} -> {values[-1]:.3f}" if values else "n/a"


def _print_summary(summary: dict[str, Any]) -> None:
    """What each stage that ran (or was cached) did, one line each."""
    stages = summary["stages"]
    typer.echo("")
    if "curate" in stages:
        curate = stages["curate"]["counts"]
        typer.echo(f"curate:     {curate['rows_in']} rows in, {curate['rows_out']} out; dropped {curate['invalid']} invalid, "
                   f"{curate['duplicates']} duplicates, {curate.get('near_duplicates', 0)} near duplicates, "
                   f"{curate.get('contaminated', 0)} contaminated")
        for warning in stages["curate"].get("warnings", []):
            typer.echo(f"warning:    {warning}")
    if "probe" in stages:
        probe = stages["probe"]["counts"]
        typer.echo(f"probe:      {probe['samples']} samples x {probe['episodes'] // max(1, probe['samples'])} student episodes, "
                   f"{probe['failed_attempts']} failed")
    if "select" in stages:
        select = stages["select"]
        pools = ", ".join(f"{pool} {n}" for pool, n in sorted(select["per_pool"].items()))
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(select["dropped"].items())) or "none"
        typer.echo(f"select:     {pools}; dropped {dropped}")
    if "synthesize" in stages:
        synth = stages["synthesize"]["counts"]
        mixed = stages["synthesize"].get("long_cot") or {}
        long_cot = f" (+{synth['long_cot']} long-CoT rows)" if synth.get("long_cot") else ""
        if mixed.get("short_by"):  # a source too short for the ratio: said where it is seen, not only in the manifest
            fix = f"; {mixed['fix']}" if mixed.get("fix") else ""
            long_cot += (f" (long-CoT source short by {mixed['short_by']} of {mixed['wanted']} rows: ratio {mixed['achieved_ratio']} "
                         f"for {mixed['target_ratio']}{fix})")
        if mixed.get("quarantined"):
            long_cot += f" ({mixed['quarantined']} long-CoT rows quarantined)"
        retry = " (the teacher failed them: the next run asks again for exactly those)" if synth["failed"] else ""
        typer.echo(f"synthesize: {synth['kept']} trajectories kept{long_cot}, {synth['rejected']} rejected, {synth['failed']} failed{retry}")
        for warning in stages["synthesize"].get("warnings", []):  # no long-CoT row usable
            typer.echo(f"warning:    {warning}")
    if "base" in stages:
        base = stages["base"]
        typer.echo(f"base:       {base['trajectories']['kept']} instruct trajectories (+{base['trajectories'].get('long_cot', 0)} direct rows), "
                   f"{base['sft']['steps']} steps, loss {_first_last(base['sft']['losses'])}")
    if "sft" in stages:
        sft = stages["sft"]
        typer.echo(f"sft:        {sft['steps']} steps on {sft['rows']} rows, loss {_first_last(sft['losses'])}")
    if "grpo" in stages:
        grpo = stages["grpo"]
        calls = ", ".join(f"{c:.2f}" for c in grpo["tool_calls_per_trajectory"] if c is not None)
        typer.echo(f"grpo:       {grpo['steps']} steps on {grpo['prompts']} prompts, reward {_first_last(grpo['rewards'])}, "
                   f"tool calls per trajectory by step [{calls}]" + (f"; {len(grpo['warnings'])} warning(s)" if grpo["warnings"] else ""))
    if "evaluate" in stages:
        for bench, entry in stages["evaluate"]["benchmarks"].items():
            for run_name, metrics in entry["runs"].items():
                from eval.metrics import summary_line

                typer.echo(summary_line(bench, run_name, metrics["overall"], entry.get("unreadable", 0),
                                        (entry.get("failed") or {}).get(run_name, 0)))
        typer.echo(f"metrics:    {stages['evaluate']['metrics_path']}")
    if "report" in stages:
        typer.echo(f"report:     {stages['report']['html']}")
    if summary.get("cached"):
        typer.echo(f"cached:     {', '.join(summary['cached'])} (same config, inputs and code; `cache: false` runs everything)")
    total = summary["timings_s"].get("total", sum(summary["timings_s"].values()))
    typer.echo(f"took {total:.1f} s; run directory: {summary['run_dir']}")


FLOW_NAMES = ("retrain", "curate", "synthesize", "train_sft", "train_grpo", "evaluate")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory.", callback=out_dir_option)] = Path("runs/demo"),
    per_family: Annotated[int | None, typer.Option(help=f"Samples per task family in the demo world (1 to {MAX_WORLD_SIZE:,}, as world.per_family).",
                                                   min=1, max=MAX_WORLD_SIZE)] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan and stop.")] = False,
) -> None:
    """Run the whole pipeline on the embedded demo world (configs/demo.yaml)."""
    from flows.config import load_demo_config

    config = load_demo_config()
    if per_family is not None:  # its range is the option's (as world.per_family's), checked before a dry run too
        config.world.per_family = per_family
    _run_pipeline(config, out.resolve(), dry_run)


def _flow_option(flow: str) -> str:
    from curation.suggest import did_you_mean

    if flow not in FLOW_NAMES:
        raise typer.BadParameter(f"unknown flow {flow!r}{did_you_mean(flow, FLOW_NAMES)} (flows: {', '.join(FLOW_NAMES)})",
                                 param_hint="--flow")
    return flow


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline config (YAML).", metavar="CONFIG")],
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default: <runs_dir>/<name>).", callback=out_dir_option)] = None,
    flow: Annotated[str, typer.Option(help=f"The flow to run: {', '.join(FLOW_NAMES)}.", callback=_flow_option)] = "retrain",
    dry_run: Annotated[bool, typer.Option(help="Validate the config, print the plan and stop.")] = False,
) -> None:
    """Run the whole pipeline (the `retrain` flow), or one of its flows, from a config file."""
    from flows.config import load_config

    cfg = load_config(config)
    _run_pipeline(cfg, (run_dir or cfg.runs_dir / cfg.name).resolve(), dry_run, flow)


@app.command()
def deploy(
    config: Annotated[Path, typer.Argument(help="Pipeline config (YAML); each scheduled run reads it again.", metavar="CONFIG")],
    flow: Annotated[str, typer.Option(help=f"The flow to deploy: {', '.join(FLOW_NAMES)}.", callback=_flow_option)] = "retrain",
    name: Annotated[str | None, typer.Option(help="Deployment name (default: <config name>-<flow>).")] = None,
    cron: Annotated[str | None, typer.Option(help="Cron schedule, e.g. '0 3 * * 1' (Mondays 03:00).")] = None,
    timezone: Annotated[str, typer.Option(help="Time zone of the cron schedule.")] = "UTC",
    work_pool: Annotated[str, typer.Option(help="Prefect work pool (a `process` pool is created when missing).")] = "deepeyes",
    run_dir: Annotated[Path | None, typer.Option(help="Run directory of the scheduled runs (default: <runs_dir>/<name>).", callback=out_dir_option)] = None,
) -> None:
    """Register a flow with a Prefect server as a deployment, with an optional cron schedule; a worker
    on the work pool runs it (`prefect worker start --pool deepeyes`)."""
    from flows.config import load_config

    cfg = load_config(config)  # a scheduled run must not be the first to find a mistake
    configure_prefect_env()
    from flows.deploy import check_schedule, deploy_flow, require_prefect_server

    check_schedule(cron, timezone)
    require_prefect_server()
    deployment = deploy_flow(flow, config.resolve(), (run_dir or cfg.runs_dir / cfg.name).resolve(), name or f"{cfg.name}-{flow}",
                             work_pool, cron, timezone)
    typer.echo(f"deployment {deployment['name']} ({deployment['id']}) on work pool {work_pool}"
               + (f", schedule {cron} {timezone}" if cron else ", no schedule"))
    typer.echo(f"run it now: prefect deployment run '{deployment['name']}'")


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run directory.", metavar="RUN")]) -> None:
    """Each stage of a run: complete, partial (some failed), stale (an input or an upstream stage changed since), incomplete, missing,
    or not in config (the run's config has no such stage). A moved or copied run is judged where it is; a folder of stage outputs
    written outside a flow (no run.json, no summary.json) shows the stage folders it holds."""
    from flows.lineage import RUN_RECORD_NAME, STAGE_DIRS, read_run_record, run_record_problem, stage_output_status
    from flows.lineage import status as run_status

    if run_dir.exists() and not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is a file, not a run directory (give the directory a run wrote: runs/NAME)")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not any((run_dir / name).exists() for name in (*STAGE_DIRS, RUN_RECORD_NAME, "summary.json")):
        if (row := stage_output_status(run_dir)) is not None:  # `deepeyes curate --out DIR` and the like
            typer.echo(f"{run_dir}: one stage's output ({row['stage']}), not a run directory")
            typer.echo(_status_line(row, {}, "rerunning the command"))
            return
        from curation.worlds import holds_world

        if holds_world(run_dir):  # `deepeyes generate-world --out DIR`: inputs of a run, not one
            raise FileNotFoundError(f"{run_dir} is a world written by deepeyes generate-world, not a run directory "
                                    "(give the directory a run wrote: runs/NAME)")
        raise FileNotFoundError(f"{run_dir} holds no run: none of {', '.join(STAGE_DIRS)}, {RUN_RECORD_NAME} "
                                f"(give the directory a run wrote: runs/NAME)")
    summary_path = run_dir / "summary.json"
    timings = json.loads(summary_path.read_text()).get("timings_s", {}) if summary_path.exists() else {}
    total = timings.get("total")
    command = (read_run_record(run_dir) or {}).get("command")
    # Neither run.json nor summary.json: stage folders written outside a flow (a fidelity bench's `base/`), not a run.
    not_a_run = not (run_dir / RUN_RECORD_NAME).exists() and not summary_path.exists()
    if not_a_run:
        typer.echo(f"{run_dir}: stage outputs, not a run directory (no {RUN_RECORD_NAME}): the stage folders it holds")
    else:
        typer.echo(f"run {run_dir}" + (f" (took {total:.1f} s)" if total else "") + (f" (written by deepeyes {command})" if command else ""))
    if problem := run_record_problem(run_dir):
        typer.echo(f"warning: {problem}; without it, a stage the config lacks shows as missing", err=True)
    # A command's directory holds its one stage: the stages no flow ran there are left out, not listed as not in config.
    next_run = f"rerunning deepeyes {command}" if command else "the next run"
    for row in run_status(run_dir):
        if not (command and row["state"] == "not in config") and not (not_a_run and row["state"] == "missing"):
            typer.echo(_status_line(row, timings, next_run))


def _status_line(row: dict[str, Any], timings: dict[str, Any], next_run: str = "the next run") -> str:
    """One stage's line of `deepeyes status`; `next_run`: what runs the stage again (the next run of
    the flow, or the command that wrote the directory), for the hint of one that did not finish."""
    from flows.lineage import FLOW_OF_DIR

    launched = f"; launcher log {row['launch_log']}" if "launch_log" in row else ""
    configured = row.get("configured", True)
    # An output of a stage the run's config does not have: an earlier config's, which no run of this one redoes.
    unplanned = "" if configured or row["state"] == "not in config" else "; not in the run's config (an earlier config's output)"
    if row["state"] in ("missing", "incomplete", "corrupt", "not in config"):
        # A corrupt manifest: the flow that writes the stage runs it again (a flow that only reads it refuses it).
        writer = f" of the {FLOW_OF_DIR[row['stage']]} flow" if next_run == "the next run" and row["stage"] in FLOW_OF_DIR else ""
        problem = f": {row['problem']}{f'; {next_run}{writer} runs the stage again' if configured else ''}" if "problem" in row else ""
        if row["state"] == "incomplete" and configured:  # what finished is kept: shards, answered requests, checkpoints
            problem = f": it did not finish; {next_run} resumes it"
        if "stopped" in row:  # a command that refused its input (every row unusable) wrote its report, no output
            problem = f": {row['stopped']}; {next_run} runs it again once that is fixed"
        return f"  {row['stage']:<11} {row['state']}{problem}{unplanned}{launched}"
    shown, more = row["changed_inputs"][:5], len(row["changed_inputs"]) - 5
    changed = f"; changed since: {', '.join(shown)}" + (f" and {more} more" if more > 0 else "") if shown else ""
    if row.get("also"):  # the world's rows besides its samples: `; also 100 long-CoT rows`
        changed = f"; also {', '.join(row['also'])}" + changed
    if row["failed"]:  # the endpoint failed some: not a complete output, the next run sends those again
        changed += f"; {row['failed']} failed ({next_run} retries them)"
    # The stage's wall time over all its tasks when the last run took it, else its last task's.
    took = timings.get(_TIMING_NAMES.get(row["stage"], row["stage"]), row["seconds"])
    seconds = f"{took:.1f} s" if took is not None else "-"
    # Written by calling the stage's function directly (a fidelity bench's arm): no lineage to judge its inputs by.
    unrecorded = "; no lineage (written outside a flow: whether an input changed since is not known)" if row.get("unrecorded") else ""
    return (f"  {row['stage']:<11} {row['state']:<9} rows {row['rows'] if row['rows'] is not None else '-':<6} {seconds:<8} "
            f"config {row['config_hash'] or '-'}  commit {row['git_commit'] or '-'}{changed}{unrecorded}{unplanned}{launched}")


# A stage's directory and the name its time has in `summary.json`'s `timings_s` where they differ.
_TIMING_NAMES = {"eval": "evaluate", "model-base": "build-model"}


class _LazyBar:
    """A tqdm progress bar that appears with the first progress report: a run that fails before
    any sample (a preflight) prints its one error line and nothing else."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self._bar = desc, unit, None

    def update(self, total: int, done: int, **postfix: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(unit=self.unit, dynamic_ncols=True, desc=self.desc)
        self._bar.total, self._bar.n = total, done
        self._bar.set_postfix(refresh=False, **postfix)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _bar(desc: str, unit: str = "sample") -> _LazyBar:
    return _LazyBar(desc, unit)


@app.command()
def curate(
    out: Annotated[Path, typer.Option(help="Output directory for the curated shards, quarantine and report.", callback=out_dir_option)],
    source: Annotated[list[str] | None, typer.Option(
        help="KIND:PATH of a source (jsonl:, json:, tsv:, hf:), then optional per-source ,NAME=VALUE options with the config's "
             "names, e.g. jsonl:mine.jsonl,category=perception,fields.answer=label,category_map.color=perception; repeatable.")] = None,
    benchmark: Annotated[list[str] | None, typer.Option(help="KIND:PATH[,NAME=VALUE...] of an eval set to decontaminate against; repeatable.")] = None,
    config: Annotated[Path | None, typer.Option(help="A pipeline YAML whose `curate:` section sets everything else.")] = None,
    probes: Annotated[bool, typer.Option(help="Leave cold start / RL to `deepeyes select` (only eval is split off).")] = False,
    category: Annotated[str | None, typer.Option(help="Category of the --source rows without one of ours (perception, reasoning, search).")] = None,
    answer_type: Annotated[str | None, typer.Option(help="Answer type of the --source rows that have none (choice, number, math, text).")] = None,
    fields: Annotated[list[str] | None, typer.Option(help="OURS=THEIRS: our field read from the --source column THEIRS, e.g. answer=label; repeatable.")] = None,
    category_map: Annotated[list[str] | None, typer.Option(help="LABEL=OURS: a --source category label read as ours, e.g. color=perception; repeatable.")] = None,
) -> None:
    """Load, normalize, validate, deduplicate and decontaminate sources into sample shards.

    --category, --answer-type, --fields and --category-map apply to every --source given here;
    a source's own ,NAME=VALUE options win over them."""
    from curation.sources import SourceError, SourceSpec, check_mapped_columns, cli_source_defaults, same_name_message
    from curation.stage import CurateConfig, run_curate
    from curation.validation_errors import field_path
    from flows.config import config_place, load_config, source_entry_problem

    cfg = load_config(config, check=False).curate if config is not None else CurateConfig()
    defaults = cli_source_defaults(category, answer_type, fields or [], category_map or [])
    if defaults and not source:
        raise typer.BadParameter("--category, --answer-type, --fields and --category-map apply to a --source given here", param_hint="--source")
    # Each spec with where the user wrote it: a config entry's location (`curate.sources.0`, told with the
    # config's FILE:LINE as the config's own checks tell it), or the option typed (`--benchmark 'hf:csv,...'`).
    labelled: dict[str, list[tuple[tuple[str | int, ...] | str, SourceSpec]]] = {}
    for section, specs, typed, option in (("sources", cfg.sources, source, "--source"), ("benchmarks", cfg.benchmarks, benchmark, "--benchmark")):
        labelled[section] = [*((("curate", section, i), spec) for i, spec in enumerate(specs)),
                             *((f"{option} {text!r}", SourceSpec.parse_cli(text, defaults if option == "--source" else (), option=option))
                               for text in typed or [])]
        labels = [at if isinstance(at, str) else field_path(at) for at, _ in labelled[section]]
        if problem := same_name_message([spec for _, spec in labelled[section]], labels):
            first = next(at for (at, _), label in zip(labelled[section], labels) if problem.startswith(f"{label} and "))
            raise SourceError(problem if isinstance(first, str) else f"{config_place(config, first)}: {problem}")
    cfg.sources = [spec for _, spec in labelled["sources"]]
    cfg.benchmarks = [spec for _, spec in labelled["benchmarks"]]
    if not cfg.sources:
        raise typer.BadParameter("give at least one --source (or a --config with curate.sources)", param_hint="--source")
    for at, spec in [*labelled["sources"], *labelled["benchmarks"]]:
        if isinstance(at, str):  # an option typed: its messages name it (a mapped column's, the source's name)
            if not spec.exists():
                raise FileNotFoundError(f"{at}: {spec.missing()}")
            check_mapped_columns(spec)
            continue
        if problem := source_entry_problem(at, spec):  # the config's own check, told at the setting's line
            message, line_at = problem
            raise SourceError(f"{config_place(config, line_at)}: {message}")
    summary = run_curate(cfg, out, probes=probes)
    for warning in summary.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps({**summary, "report": str(out / "report.md")}))


def _agent_and_request(agent: Any, max_tokens: int | None, max_turns: int | None, stop: bool, extra_body: str | None,
                       seed: bool = True) -> tuple[Any, Any]:
    """The stage's agent and request settings with the command line's knobs applied."""
    from synth.runtime.policy import RequestOptions

    updates = {k: v for k, v in (("max_tokens_per_turn", max_tokens), ("max_turns", max_turns)) if v is not None}
    try:
        extra = json.loads(extra_body) if extra_body else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc.msg}", param_hint="--extra-body") from None
    if not isinstance(extra, dict):
        raise typer.BadParameter("a JSON object of request fields, e.g. '{\"chat_template_kwargs\": {\"enable_thinking\": false}}'",
                                 param_hint="--extra-body")
    return agent.model_copy(update=updates), RequestOptions(send_stop=stop, send_seed=seed, extra_body=extra)


MaxTokens = Annotated[int | None, typer.Option(help="Tokens per assistant turn (max_tokens of each request).", min=1)]
MaxTurns = Annotated[int | None, typer.Option(help="Assistant turns per episode.", min=1)]
RequestTimeout = Annotated[float, typer.Option(help="Seconds one request may take (at least 0.1).", min=0.1)]
Limit = Annotated[int | None, typer.Option(help="Only the first N samples.", min=1)]
Stop = Annotated[bool, typer.Option("--stop/--no-stop", help="Send stop strings to the server (--no-stop for servers that refuse "
                                    "`stop`, e.g. transformers serve with a vision model; they are applied on the client either way).")]
Seed = Annotated[bool, typer.Option("--seed/--no-seed", help="Send each request's `seed` (--no-seed for servers that refuse it; "
                                    "sampled turns are then not reproducible).")]
ExtraBody = Annotated[str | None, typer.Option(help="Extra request fields as a JSON object, e.g. '{\"chat_template_kwargs\": {...}}'.")]


@app.command()
def probe(
    input: Annotated[Path, typer.Option("--input", help="Curated shards (`deepeyes curate --probes`).")],
    out: Annotated[Path, typer.Option(help="Output directory for the probe shards.", callback=out_dir_option)],
    student_url: Annotated[str, typer.Option(help="OpenAI-compatible base URL of the student, e.g. http://host:8001/v1.")],
    student_model: Annotated[str, typer.Option(help="Model name the endpoint serves.")],
    k: Annotated[int, typer.Option(help="Attempts per sample, without tools and with tools.")] = 4,
    concurrency: Annotated[int, typer.Option(help="Requests in flight to the student.")] = 64,
    max_tokens: MaxTokens = None,
    max_turns: MaxTurns = None,
    request_timeout: RequestTimeout = 120.0,
    limit: Limit = None,
    stop: Stop = True,
    seed: Seed = True,
    extra_body: ExtraBody = None,
    corpus: Annotated[Path | None, typer.Option(help="Local text search corpus (JSONL/Parquet).")] = None,
    image_corpus: Annotated[Path | None, typer.Option(help="Local image search corpus (JSONL).")] = None,
    api_key_env: str = "OPENAI_API_KEY",
) -> None:
    """The student's pass@k without and with tools for every curated candidate (resumable). The
    endpoint is checked before any sample goes out; a run where every attempt failed exits with 2."""
    from synth.probe import ProbeConfig, run_probes
    from synth.tools.search import SearchConfig

    _check_files(("--input", input, False), ("--corpus", corpus, True), ("--image-corpus", image_corpus, True))
    _check_curated_input(input, "deepeyes curate --probes")
    agent, request = _agent_and_request(ProbeConfig().agent, max_tokens, max_turns, stop, extra_body, seed)
    cfg = ProbeConfig(student_url=student_url, student_model=student_model, k=k, concurrency=concurrency, api_key_env=api_key_env,
                      request_timeout_s=request_timeout, agent=agent, request=request)
    bar = _bar("probe")

    def progress(counts: dict[str, int]) -> None:
        bar.update(counts["samples"], counts["done"], failed=counts["failed_attempts"])

    before = _previous_rows(out)
    try:
        summary = run_probes(cfg, input, out, SearchConfig(corpus_path=corpus, image_corpus_path=image_corpus), progress=progress,
                             limit=limit)
    finally:
        bar.close()
    _note_replaced(summary, out, before, limit)
    typer.echo(json.dumps(summary))


def _check_files(*paths: tuple[str, Path | None, bool]) -> None:
    """Each (option, path, must be a file): raise FileNotFoundError naming the option."""
    for option, path, is_file in paths:
        if path is not None and not (path.is_file() if is_file else path.exists()):
            raise FileNotFoundError(f"{option}: {'file' if is_file else 'path'} not found: {path}")


def _check_curated_input(path: Path, made_by: str) -> None:
    """`--input` of probe, select and synth: curated sample shards (one check for the three commands)."""
    from curation.schema import SAMPLE_SCHEMA
    from curation.shards import check_input_shards

    check_input_shards(path, SAMPLE_SCHEMA, "--input", "curated samples", made_by)


@app.command()
def select(
    input: Annotated[Path, typer.Option("--input", help="Curated shards (`deepeyes curate --probes`).")],
    probes: Annotated[Path, typer.Option(help="Probe shards (`deepeyes probe`).")],
    out: Annotated[Path, typer.Option(help="Output directory for the selected shards and report.", callback=out_dir_option)],
    max_pass_rate_no_tools: Annotated[float, typer.Option(help="Drop items the student solves more often than this without tools.")] = 0.5,
    min_tool_benefit: Annotated[float, typer.Option(help="RL needs pass rate with tools - without >= this.")] = 0.0,
    seed: int = 0,
) -> None:
    """Split probed candidates by the paper's rule: solved with tools -> RL, unsolved -> cold start."""
    from curation.select import SelectConfig, run_select
    from curation.shards import check_input_shards
    from synth.probe import PROBE_SCHEMA

    cfg = SelectConfig(max_pass_rate_no_tools=max_pass_rate_no_tools, min_tool_benefit=min_tool_benefit, seed=seed)
    _check_files(("--input", input, False), ("--probes", probes, False))
    _check_curated_input(input, "deepeyes curate --probes")
    check_input_shards(probes, PROBE_SCHEMA, "--probes", "probe results", "deepeyes probe")
    typer.echo(json.dumps({**run_select(cfg, input, probes, out), "report": str(out / "report.md")}))


@app.command()
def synth(
    input: Annotated[Path, typer.Option("--input", help="Curated sample shards (a curate output directory).")],
    out: Annotated[Path, typer.Option(help="Output directory for trajectory shards.", callback=out_dir_option)],
    teacher_url: Annotated[str, typer.Option(help="OpenAI-compatible base URL, e.g. http://host:8000/v1.")],
    teacher_model: Annotated[str, typer.Option(help="Model name the endpoint serves.")],
    concurrency: Annotated[int, typer.Option(help="Requests in flight to the teacher (samples being solved: 1.25 times as many).")] = 64,
    attempts: int = 2,
    pools: Annotated[str, typer.Option(help="Comma-separated pools to solve.")] = "coldstart",
    max_tokens: MaxTokens = None,
    max_turns: MaxTurns = None,
    request_timeout: RequestTimeout = 120.0,
    limit: Limit = None,
    stop: Stop = True,
    seed: Seed = True,
    extra_body: ExtraBody = None,
    corpus: Annotated[Path | None, typer.Option(help="Local text search corpus (JSONL/Parquet).")] = None,
    image_corpus: Annotated[Path | None, typer.Option(help="Local image search corpus (JSONL).")] = None,
    search_cache: Annotated[Path | None, typer.Option(help="Persistent search cache directory.")] = None,
    api_key_env: str = "OPENAI_API_KEY",
) -> None:
    """Synthesize verified tool-use trajectories with a teacher endpoint (resumable after a crash).
    The endpoint is checked before any sample goes out; a run where every sample failed exits with 2."""
    from curation.shards import ShardError
    from synth.stage import SynthConfig, run_synthesize
    from synth.tools.search import SearchConfig

    _check_files(("--input", input, False), ("--corpus", corpus, True), ("--image-corpus", image_corpus, True))
    _check_curated_input(input, "deepeyes curate")
    agent, request = _agent_and_request(SynthConfig().agent, max_tokens, max_turns, stop, extra_body, seed)
    cfg = SynthConfig(teacher_url=teacher_url, teacher_model=teacher_model, concurrency=concurrency, attempts=attempts,
                      pools=[p for p in pools.split(",") if p], api_key_env=api_key_env, request_timeout_s=request_timeout,
                      agent=agent, request=request)
    search = SearchConfig(corpus_path=corpus, image_corpus_path=image_corpus, cache_dir=search_cache)
    bar = _bar("synthesize")
    before = _previous_rows(out)

    def progress(counts: dict[str, int]) -> None:
        bar.update(counts["samples"], counts["done"], kept=counts["kept"], rejected=counts["rejected"], failed=counts["failed"])

    try:
        summary = run_synthesize(cfg, input, out, search, progress=progress, limit=limit)
    finally:
        bar.close()
    if not summary["counts"]["samples"]:
        raise ShardError(f"--input {input}: no samples in pool(s) {', '.join(cfg.pools)} (--pools chooses them)")
    _note_replaced(summary, out, before, limit)
    summary.pop("files_read", None)  # for the flow's cache records
    for warning in summary.get("warnings", []):  # no long-CoT row usable
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(summary))


def _note_replaced(summary: dict[str, Any], out: Path, before: int | None, limit: int | None) -> None:
    """A stage's output is rewritten whole: when a re-run into the same `--out` left fewer rows than
    the last (a smaller `--limit`), say so in the summary (`replaced`) and on stderr."""
    after = _previous_rows(out) or 0
    if before is not None and before > after:
        summary["replaced"] = (f"replaced {before} rows with {after}" + (f" (--limit {limit})" if limit else "")
                               + "; the request cache keeps the other answers")
        typer.echo(f"note: {out}: {summary['replaced']}", err=True)


def _previous_rows(out: Path) -> int | None:
    """The rows an earlier run left in a stage's output directory (None: none, or unreadable)."""
    from curation.shards import read_manifest

    try:
        rows = (read_manifest(out) or {}).get("rows") if out.is_dir() else None
    except Exception:  # noqa: BLE001 - an unreadable old manifest is replaced; the run reports its own problems
        return None
    return rows if isinstance(rows, int) else None


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to put side by side (e.g. base, SFT, SFT+RL).", metavar="RUN")],
    out: Annotated[Path | None, typer.Option(help="Output directory (default: <first run>/report).", callback=out_dir_option)] = None,
) -> None:
    """One self-contained HTML report (and a Markdown twin) of one or more runs' evaluations."""
    from eval.report import build_report

    paths = build_report(runs, out or runs[0] / "report")
    typer.echo(json.dumps(paths))


@app.command("generate-world")
def generate_world_cmd(
    out: Annotated[Path, typer.Argument(help="Directory for the world.", callback=out_dir_option, metavar="OUT")],
    seed: Annotated[int, typer.Option(help="Seed of the world's generator (0 to 2**32-1, as world.seed).", min=0, max=MAX_SEED)] = 0,
    per_family: Annotated[int, typer.Option(help=f"Samples per family (perception, reasoning, search); 1 to {MAX_WORLD_SIZE:,} (as world.per_family).",
                                            min=1, max=MAX_WORLD_SIZE)] = 12,
) -> None:
    """Write the demo world: samples, search corpus, replay scripts (replacing a world already in OUT)."""
    from curation.worlds import check_world_folder, generate

    check_world_folder(out)
    typer.echo(json.dumps(generate("classic", out, {"seed": seed, "per_family": per_family}), indent=2))


sandbox_app = typer.Typer(help="The Python sandbox that runs model-written code.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("exec")
def sandbox_exec(
    file: Annotated[Path, typer.Argument(help="Python file to run in a fresh kernel.", metavar="FILE")],
    image: Annotated[list[Path] | None, typer.Option(help="Input image, preloaded as image_1, image_2, ...")] = None,
    timeout: Annotated[float, typer.Option(help="Wall time-out in seconds.")] = 20.0,
    allow_unisolated: Annotated[bool, typer.Option(help="Run without isolation when bubblewrap is missing.")] = False,
) -> None:
    """Run one file in a fresh sandboxed kernel; print one JSON object with the outcome."""
    import io

    from PIL import Image, UnidentifiedImageError

    from synth.tools.kernel import KernelConfig, PythonKernel
    from synth.tools.sandbox import KernelPool, SandboxConfig

    from flows.user_input import InputFileError, read_text_file

    code = read_text_file(file, "file")
    images = []
    for path in image or []:
        if not path.is_file():
            raise FileNotFoundError(f"--image {path}: {'a directory, not an image file' if path.is_dir() else 'image not found'}")
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
        except UnidentifiedImageError:
            raise InputFileError(f"--image {path}: not an image (pillow knows no such format)") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's
            from curation.sources import exception_words

            raise InputFileError(f"--image {path}: not an image pillow can read ({exception_words(exc)})") from None
        images.append(data)
    cfg = KernelConfig(timeout_s=timeout, sandbox=SandboxConfig(allow_unisolated=allow_unisolated))
    with KernelPool(cfg.sandbox) as pool, PythonKernel(images, pool, cfg) as kernel:
        result = kernel.execute(code)
    sizes = [list(Image.open(io.BytesIO(data)).size) for data in result.images]
    typer.echo(json.dumps({
        "status": result.status,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "images": {"count": len(sizes), "sizes": sizes},
        "duration_ms": round(result.duration_ms, 3),
        "isolation": pool.mode,
    }))


def _fault_kinds_option(value: str) -> str:
    """`--faults`: comma-separated kinds the replay server knows, checked before the server starts."""
    from synth.replay import FAULTS

    unknown = [kind for kind in value.split(",") if kind and kind not in FAULTS]
    if unknown:
        raise typer.BadParameter(f"unknown fault kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(FAULTS)}", param_hint="--faults")
    return value


@app.command("serve-replay")
def serve_replay(
    scripts: Annotated[Path, typer.Option(help="replay_scripts.jsonl written by the demo world.")],
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=1, max=65535)] = 8008,
    teacher_model: str = "demo-teacher",
    student_model: str = "demo-student",
    instruct_model: Annotated[str, typer.Option(help="The persona that answers the learnable world's instruct samples.")] = "demo-instruct",
    wrong_rate: Annotated[float, typer.Option(help="Share of teacher episodes whose final answer is wrong.", min=0.0, max=1.0)] = 0.0,
    code_error_rate: Annotated[float, typer.Option(help="Share of teacher code turns that raise an error.", min=0.0, max=1.0)] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of teacher episodes whose final turn is malformed.", min=0.0, max=1.0)] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.", min=0.0)] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the scripted draws (0 to 2**32-1, as replay.seed).", min=0, max=MAX_SEED)] = 0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests that fail at the transport level.", min=0.0, max=1.0)] = 0.0,
    faults: Annotated[str, typer.Option(help="Fault kinds to draw from: 429,500,hang,drop,malformed,empty.",
                                        callback=_fault_kinds_option)] = "429,500,hang,drop,malformed,empty",
    hang_s: Annotated[float, typer.Option(help="Seconds a `hang` fault holds the request.", min=0.0)] = 30.0,
    retry_after_s: Annotated[float, typer.Option(help="Retry-After of a 429 fault.", min=0.0)] = 0.05,
    faults_after: Annotated[int, typer.Option(help="Requests answered before faults start (a server that fails mid-run).", min=0)] = 0,
    refuse_fields: Annotated[str, typer.Option(help="Request fields to refuse as transformers serve does (e.g. stop).")] = "",
) -> None:
    """Serve scripted teacher and student turns over the OpenAI chat API."""
    from synth.replay import SCRIPTS_NAME, ReplayScripts, ReplaySettings, check_port_free, serve

    if scripts.is_dir():
        inside = scripts / SCRIPTS_NAME
        raise FileNotFoundError(f"--scripts {scripts} is a folder; give the scripts file" +
                                (f" in it: {inside}" if inside.is_file() else f": a world's {SCRIPTS_NAME} (deepeyes generate-world writes it)"))
    if not scripts.is_file():
        raise FileNotFoundError(f"--scripts {scripts}: replay scripts not found")
    settings = ReplaySettings(
        scripts_path=scripts, teacher_model=teacher_model, student_model=student_model, instruct_model=instruct_model, wrong_rate=wrong_rate,
        code_error_rate=code_error_rate, malformed_rate=malformed_rate, latency_ms=latency_ms, seed=seed,
        fault_rate=fault_rate, faults=tuple(f for f in faults.split(",") if f), hang_s=hang_s, retry_after_s=retry_after_s,
        faults_after=faults_after, refuse_fields=tuple(f for f in refuse_fields.split(",") if f),
    )
    ReplayScripts(scripts)  # a file that is not scripts, and a busy port, are said before the server is announced
    check_port_free(host, port)
    typer.echo(f"replay server on http://{host}:{port}/v1 (models: {', '.join(settings.personas())})")
    serve(settings, host=host, port=port)


from flows.cli_interop import register  # noqa: E402 - the commands of flows/cli_interop.py join this app

register(app)


def _one_line(exc: BaseException) -> str:
    """A user error's message; a pydantic error (settings built from command-line options) as one
    line naming the option given (`timeout_s` is `--timeout`), the rule and the value."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    from curation.validation_errors import error_message, field_path, plain_errors

    given = {arg.split("=", 1)[0] for arg in sys.argv[1:] if arg.startswith("--")}
    parts = []
    for error in plain_errors(exc.errors()):
        loc = [str(p) for p in error["loc"] if p != "[key]"]
        field = field_path(loc)
        # The option is named by the field or its last parts (`agent.think_prefix` is --think-prefix), less a
        # unit or scope suffix (`timeout_s` is --timeout, `max_tokens_per_turn` is --max-tokens).
        stems = ["_".join(loc[i:]) for i in range(len(loc))]
        names = [f"--{stem.removesuffix(cut).replace('_', '-')}" for stem in stems for cut in ("", "_s", "_per_turn")]
        name = next((n for n in names if n in given), field)
        message = error_message(error)
        if error["type"] == "literal_error":  # `--category 'percepton': Input should be ...; did you mean 'perception'?`
            parts.append(f"{name} {error['input']!r}: {message}")
        else:
            parts.append(f"{name}: {message} (got {error['input']!r})" if "input" in error and error["type"] != "value_error"
                         and "(got " not in message else f"{name}: {message}")  # a validator's own message says what it got
    return "; ".join(parts)


def _usage_line(exc: BaseException) -> str:
    """A command-line usage error as one line: a value an option refuses as `--option: why`, like the
    other user errors; an unknown or missing option in click's words; never typer's usage box."""
    if hasattr(exc, "param_hint") and "Missing" not in type(exc).__name__:  # a bad value (click's BadParameter)
        hint, param = exc.param_hint, getattr(exc, "param", None)
        if not isinstance(hint, str) and param is not None:
            opts = getattr(param, "opts", None) or []
            hint = opts[0] if opts and opts[0].startswith("-") else (getattr(param, "name", "") or "").upper()
        if hint:
            return f"{hint}: {exc.message}{_value_given(exc)}"
    if getattr(exc, "possibilities", None):  # click sorts them by name; `close_options` gives them closest first
        return f"{exc.message} (Possible options: {', '.join(exc.possibilities)})"
    return exc.format_message() if hasattr(exc, "format_message") else str(exc)


def _value_given(exc: BaseException) -> str:
    """` (got 'abc')` for a value typer's pydantic coercion refused (`--per-family abc`, `--seed -1`),
    as the checks of our own say it (`--per-family 0`); "" where the message already says it."""
    from pydantic import ValidationError

    cause = exc.__cause__
    if not isinstance(cause, ValidationError) or "(got " in str(getattr(exc, "message", "")):
        return ""
    errors = cause.errors()
    if not errors or "input" not in errors[0]:
        return ""
    given = errors[0]["input"]
    try:  # a number as typed, unquoted: `(got 0)` as our own checks say it, `(got 'abc')` for text
        float(given)
        return f" (got {given})"
    except (TypeError, ValueError):
        return f" (got {given!r})"


def close_options(exc: BaseException) -> list[str]:
    """For click's `NoSuchOption` `exc`: the long options of the command it was raised for (its
    `ctx.command`; hidden ones left out) close to the one typed, by the one rule of every "did you
    mean" (`curation.suggest.closest`, at most 3), compared without their leading dashes. click
    compares them with the dashes, and the shared `--` makes every option look close to any
    (`--bogus` got `--out`); so `--ot` gets `--out` and `--bogus` none, and a shortened name the
    options whose words its words begin (`--no-tools` gets `--no-tool-free-control`, not the
    similar-looking `--no-stop`); a flag's off switch only when the name typed begins with `no`
    (`--dryrun` gets `--dry-run`, not `--no-dry-run`). [] for another error."""
    from curation.suggest import closest

    ctx, typed = getattr(exc, "ctx", None), getattr(exc, "option_name", None)
    if ctx is None or not isinstance(typed, str):
        return []
    # A flag's off switch (`--no-dry-run`) only for a name typed as one: a misspelt `--dryrun` never meant it.
    off_switches = typed.lstrip("-").lower().startswith("no")
    names = {opt.lstrip("-"): opt for param in ctx.command.get_params(ctx) if not getattr(param, "hidden", False)
             for opt in (*param.opts, *(param.secondary_opts if off_switches else ())) if opt.startswith("--")}
    return [names[name] for name in closest(typed.lstrip("-"), names, n=3)]


def main() -> None:
    """The `deepeyes` command; SIGTERM stops it as Ctrl-C does, each ending in one line (`flows.signals`)."""
    quiet_model_loading_bars()  # before any command imports transformers
    with stop_signals() as stop:
        try:
            _run_app(stop)
        except Exception:
            if stop.received is None:
                raise
            # After the signal: Prefect's API server, in the same process group, stopped first and its client failed.
            _stopped_by(stop.received)


def _stopped_by(signum: int) -> NoReturn:
    typer.echo(SAID[signum], err=True)
    sys.exit(EXIT_CODES[signum])


def _run_app(stop: Stop) -> None:
    """Run the typer app; every way it ends is an exit code, a user error or usage error one line on stderr."""
    from typer.exceptions import TyperException  # typer's click usage errors (it vendors click) derive from it

    try:
        # Not standalone: usage errors come here and are told in one line like every other user error.
        code = app(standalone_mode=False)
    except TyperException as exc:
        if hasattr(exc, "possibilities") and hasattr(exc, "option_name"):  # click's NoSuchOption: only close suggestions
            exc.possibilities = close_options(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `deepeyes` alone: the help
            typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(f"error: {_usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except _user_errors() as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except Terminated:
        _stopped_by(signal.SIGTERM)
    except KeyboardInterrupt:
        _stopped_by(signal.SIGINT)
    if code == EXIT_CODES[signal.SIGINT] and stop.received == signal.SIGINT:  # typer made Ctrl-C an exit 130
        _stopped_by(signal.SIGINT)
    sys.exit(code if isinstance(code, int) else 0)  # a typer.Exit's code (click returns it when not standalone)


if __name__ == "__main__":
    main()
