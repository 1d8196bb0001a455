"""Shared fixtures: a small demo world, its curated shards, a replay server, a tiny model."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from curation.demo_world import WorldConfig, generate_world
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from synth.runtime.endpoint import ManagedServer, free_port


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    return generate_world(tmp_path_factory.mktemp("world"), WorldConfig(seed=7, per_family=3, distractor_docs=10))


@pytest.fixture(scope="session")
def curated(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curate") / "curate"
    cfg = CurateConfig(sources=[SourceSpec(path=world["samples_path"], name="demo")], split={"coldstart": 0.6, "rl": 0.1, "eval": 0.3})
    run_curate(cfg, out)
    return out


class AstOverlap:
    """Counts threads inside `ast.parse` at once; each parse is slowed so that overlap shows."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_at_once = 0
        self._count = threading.Lock()

    def wrap(self, parse):
        def slow_parse(*args, **kwargs):
            with self._count:
                self.inside += 1
                self.most_at_once = max(self.most_at_once, self.inside)
            try:
                time.sleep(0.01)  # holds the window open for a second thread
                return parse(*args, **kwargs)
            finally:
                with self._count:
                    self.inside -= 1

        return slow_parse


@pytest.fixture
def ast_overlap(monkeypatch) -> AstOverlap:
    """`ast.parse` patched to record how many threads were inside it at once (cpython gh-106905)."""
    overlap = AstOverlap()
    monkeypatch.setattr(ast, "parse", overlap.wrap(ast.parse))
    return overlap


def in_threads(target, n: int = 4) -> list[BaseException]:
    """Run `target()` in `n` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def command_seconds(command: list[str], start_modules: tuple[str, ...] = ("flows.cli", "synth.stage"),
                    timeout_s: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command`; return it and its seconds beyond a fresh interpreter's start-up.

    The start-up (importing `start_modules`, what the CLI loads before it does anything) is measured
    just before, on the same machine, so a time bound on the rest measures the command's own work
    (no retries, no backoff) and holds on two busy cores as on an idle one."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {', '.join(start_modules)}"], check=True, timeout=timeout_s)
    start_up = time.monotonic() - started
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    return done, time.monotonic() - started - start_up


def answered_requests(db_path: Path) -> int:
    """Responses committed to a stage's request cache so far (0 while it does not exist yet)."""
    import sqlite3

    try:
        with sqlite3.connect(db_path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_when_answered(proc, db_path: Path, target: int, timeout_s: float = 120) -> int:
    """`kill -9` the process once `target` responses are committed; how many were."""
    import os
    import signal
    import time

    deadline, answered = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline and answered < target and proc.poll() is None:
        time.sleep(0.05)
        answered = answered_requests(db_path)
    assert proc.poll() is None, "the run finished before the kill point: make the world bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return answered


def start_replay(world: dict, log_dir: Path, port: int | None = None, **rates) -> tuple[ManagedServer, str]:
    port = port or free_port()
    command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", world["scripts_path"], "--port", str(port)]
    for key, value in rates.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    url = f"http://127.0.0.1:{port}/v1"
    return ManagedServer(command, url, log_dir / "replay.log", ready_timeout_s=60).start(), url


@pytest.fixture(scope="session")
def replay_url(world, tmp_path_factory):
    server, url = start_replay(world, tmp_path_factory.mktemp("replay"))
    yield url
    server.stop()


@pytest.fixture(scope="session")
def tiny_model(world, tmp_path_factory) -> Path:
    from train.tiny import TinyModelConfig, build_tiny_model

    texts = Path(world["scripts_path"]).read_text().splitlines() + Path(world["corpus_path"]).read_text().splitlines()
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), texts, TinyModelConfig(vocab_size=1024))


@pytest.fixture(scope="session")
def tiny_qwen25(world, tmp_path_factory) -> Path:
    """The paper's base family (Qwen2.5-VL), tiny."""
    from train.tiny import TinyModelConfig, build_tiny_model

    texts = Path(world["scripts_path"]).read_text().splitlines() + Path(world["corpus_path"]).read_text().splitlines()
    return build_tiny_model(tmp_path_factory.mktemp("tiny25"), texts, TinyModelConfig(family="qwen2_5_vl", vocab_size=1024))


# The real vLLM server (tests marked `vllm`, run by `make test-vllm`): see tests/vllm_server.py.


@pytest.fixture(scope="session")
def vllm_samples(curated) -> list:
    """One sample of each task family, each with its image: what the vLLM tests ask the served model."""
    from curation.schema import SAMPLE_SCHEMA, Sample
    from curation.shards import iter_rows

    rows = list(iter_rows(curated, SAMPLE_SCHEMA))
    return [Sample.from_row(next(r for r in rows if r["category"] == family and r["images"])) for family in ("perception", "reasoning", "search")]


@pytest.fixture(scope="session")
def vllm_server(world, vllm_samples, tmp_path_factory):
    """`vllm serve` (from `make vllm-env`) on the scripted student, for the whole session; stopped at its end."""
    import torch

    from tests.vllm_server import VLLMServer

    # The server computes on the same cores: torch's own team of threads, competing with it, made
    # the fixture's SFT and the GRPO steps ten times slower on 2 cores.
    torch.set_num_threads(1)
    server = VLLMServer.start(world, vllm_samples, tmp_path_factory.mktemp("vllm"))
    yield server
    server.stop()
