"""Prefect settings for this project, applied before Prefect is imported.

Prefect's ephemeral mode (no PREFECT_API_URL) keeps its SQLite database under Prefect's own home,
PREFECT_HOME (default `~/.prefect`), where Prefect users expect it: shared by every run, so a
global concurrency limit is one limit across them, and never inside the virtual environment,
which a reinstall wipes. A user's own PREFECT_HOME or PREFECT_API_URL is left as it is.
"""

from __future__ import annotations

import logging
import os
import sys


def configure_prefect_env() -> None:
    # Analytics off: it causes "database is locked" tracebacks on the ephemeral SQLite server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The default 20 s start-up limit of the ephemeral server is tight on 2 loaded cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    if not os.environ.get("PREFECT_API_URL"):
        # The ephemeral API ends with the command. Its task-run recorder and event persister take
        # SQLite's write lock for every task state and event, and each stalls a subflow's start by
        # up to 2 s (a cached re-run would be mostly such waits). Flow runs, artifacts and
        # concurrency limits are recorded without them; a Prefect server records everything.
        os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED", "false")
        # Run logs stay in the terminal and the run's log files: sent to the ephemeral API as well,
        # each line would cost a SQLite write nobody reads after the command, and once Ctrl-C or a
        # group SIGTERM has stopped that server, every line would print "Error logging to API".
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "WARNING")
    # Library progress bars drown the pipeline's own progress lines.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    quiet_model_loading_bars()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_model_loading_bars() -> None:
    """transformers' bars (`Loading weights` as a model loads, `Writing model shards` as one is saved)
    and the Hub's download bars off, for every command (`deepeyes` calls it first): transformers reads
    the Hub's switch, `HF_HUB_DISABLE_PROGRESS_BARS`, when it is imported. A user's own setting
    (`HF_HUB_DISABLE_PROGRESS_BARS=0`: bars wanted) is left as it is."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# Prefect's own lines about run states, which a command-line run leaves out (the run's own lines stay).
_RUN_STATE_LINES = ("Beginning flow run", "Beginning subflow run", "Finished in state", "Created task run", "Executing '",
                    "Submitting task run", "Created subflow run")


class _RunLinesOnly(logging.Filter):
    """Passes what a run prints (`log_prints`: stage done, GRPO steps) and any warning; drops
    Prefect's INFO lines about run states."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.getMessage().startswith(_RUN_STATE_LINES)


# How Prefect words a run crashed by Ctrl-C or SIGTERM; the command says `interrupted` or `terminated` itself.
_STOPPED = ("Execution was aborted by an interrupt signal.", "Execution was aborted by a termination signal.")


class _StopLinesOnlyOurs(logging.Filter):
    """Drops Prefect's lines about a run that a stop signal crashed (`Crash detected! Execution was
    aborted by an interrupt signal.`, `Finished in state Crashed('Execution was aborted by ...')`):
    the command ends in its own one line. A crash for any other reason is still told."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith(("Crash detected! ", "Finished in state Crashed(")) and any(s in text for s in _STOPPED))


class _NoFlushWaitLines(logging.Filter):
    """Drops `Still processing items: 6 items remaining...`, which Prefect's events client logs while it
    sends its last events at the end of the command: nothing for the user to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Still processing items:")


_EVENTS_LOGGER = "EventsWorker"  # Prefect's events client (`prefect.events.worker`) logs under its class name


class _QuietAfterAStop(logging.Filter):
    """After a stop signal, drops what Prefect's clients log about the API server that the signal
    stopped with the process group (`Unable to connect to 'ws://127.0.0.1:.../api/events/in'`,
    `Service 'EventsWorker' failed to process item Event(...)`): the command ends in its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.signals import STOPPING

        return not STOPPING.is_set()


# Where Prefect's events client and its services log a failure to reach the API server.
_CLIENT_LOGGERS = ("prefect.events.clients", "prefect._internal.concurrency", _EVENTS_LOGGER)


class _DillDisassemblyToDill(logging.Filter):
    """dill (inside `datasets`' fingerprinting, at the start of GRPO) finds a function's globals by
    disassembling it into a swapped `sys.stdout`: `dis.dis` prints with `file=None`, which Prefect's
    `log_prints` patch of `print` sends to the run logger instead (bytecode lines in the run's log, and
    dill reads no globals). A record made while `dill.detect.nestedglobals` is on the stack goes back
    where `dis` meant it, dill's buffer, and not to the log; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "nestedglobals" and frame.f_globals.get("__name__") == "dill.detect":
                sys.stdout.write(record.getMessage() + "\n")  # dill's capture('stdout') buffer
                return False
            frame = frame.f_back
        return True


_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # where Prefect's `log_prints` sends what a run prints


def _add_filter(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def keep_dill_out_of_run_logs() -> None:
    """Send dill's bytecode disassembly back to dill instead of the run's log (`_DillDisassemblyToDill`
    on Prefect's run loggers). Every flow of `flows.pipeline` calls it as it starts, and the shard
    tasks too (a Dask or Ray worker is another process), so a run from a deployment's worker or a
    Python call gets it as a command-line run does. Idempotent: one filter per logger however often
    it is called; it changes nothing else."""
    for name in _RUN_LOGGERS:
        _add_filter(logging.getLogger(name), _DillDisassemblyToDill)


def show_run_lines() -> None:
    """At the command line, show what the flows print (`[sft] done in 104.0 s`, `grpo step 3: reward
    ...`) while Prefect itself stays at WARNING: its run loggers at INFO, its state lines filtered,
    and neither its lines about a run a stop signal crashed (the command says `interrupted`), nor its
    clients' failures to reach the API server the signal stopped, nor its events client's wait at exit. Call after Prefect is imported (its logging set up)."""
    keep_dill_out_of_run_logs()
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        _add_filter(logger, _RunLinesOnly)
        _add_filter(logger, _StopLinesOnlyOurs)
    _add_filter(logging.getLogger(_EVENTS_LOGGER), _NoFlushWaitLines)
    for name in _CLIENT_LOGGERS:
        _add_filter(logging.getLogger(name), _QuietAfterAStop)


def local_run_settings():
    """Settings for a flow run in this process. Without a Prefect server (ephemeral mode) flow-run
    heartbeats detect nothing (the API ends with the process) and cost up to a second at the end of
    every subflow, which a cached re-run would mostly spend waiting: they are off then."""
    from contextlib import nullcontext

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
