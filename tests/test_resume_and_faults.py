"""Synthesis under faults and crashes: no sample lost, none duplicated, nothing paid for twice."""

import json
import subprocess
import sys

import pytest

from curation.demo_world import WorldConfig, generate_world
from curation.shards import read_table
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from synth.runtime.request_cache import REQUESTS_DB
from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig
from tests.conftest import kill_when_answered, start_replay


def rows_signature(directory):
    """What must be identical between two runs: ids, answers, verdicts, conversations."""
    table = read_table(directory).to_pylist()
    return sorted((r["id"], r["final_answer"], r["correct"], json.dumps(r["messages"]), len(r["images"])) for r in table)


@pytest.fixture(scope="module")
def bigger_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bigger")
    world = generate_world(root / "world", WorldConfig(seed=11, per_family=8, distractor_docs=10))
    run_curate(CurateConfig(sources=[SourceSpec(path=world["samples_path"])], split={"coldstart": 1.0}), root / "curate")
    return world, root / "curate"


def synth_cli(world, curated, out, url, concurrency):
    return [sys.executable, "-m", "flows.cli", "synth", "--input", str(curated), "--out", str(out), "--teacher-url", url,
            "--teacher-model", "demo-teacher", "--concurrency", str(concurrency), "--attempts", "2",
            "--corpus", world["corpus_path"], "--image-corpus", world["image_corpus_path"]]


def test_kill_9_then_resume_resends_only_in_flight_requests_and_writes_the_same_rows(bigger_world, tmp_path):
    world, curated = bigger_world
    server, url = start_replay(world, tmp_path, latency_ms=60, wrong_rate=0.2, code_error_rate=0.2)
    concurrency = 4
    try:
        reference = subprocess.run(synth_cli(world, curated, tmp_path / "reference", url, concurrency), capture_output=True, text=True, timeout=300)
        assert reference.returncode == 0, reference.stderr[-2000:]
        total = json.loads(reference.stdout.strip().splitlines()[-1])["counts"]["requests_sent"]

        out = tmp_path / "crashed"
        proc = subprocess.Popen(synth_cli(world, curated, out, url, concurrency), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        answered = kill_when_answered(proc, out / REQUESTS_DB, total // 2)

        resumed = subprocess.run(synth_cli(world, curated, out, url, concurrency), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        counts = json.loads(resumed.stdout.strip().splitlines()[-1])["counts"]
    finally:
        server.stop()
    assert counts["requests_replayed"] >= answered
    assert counts["requests_sent"] + counts["requests_replayed"] == total
    # Only what was in flight at the kill is sent again: at most one request per sample in flight.
    assert counts["requests_sent"] - (total - answered - concurrency) <= concurrency
    assert rows_signature(out) == rows_signature(tmp_path / "reference")
    assert rows_signature(out / "rejects") == rows_signature(tmp_path / "reference" / "rejects")


def test_transport_faults_lose_and_duplicate_nothing(world, curated, tmp_path):
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])
    cfg = SynthConfig(pools=["coldstart", "rl", "eval"], attempts=1, request_timeout_s=1.0, max_retries=12, resume=False)
    clean_server, clean_url = start_replay(world, tmp_path / "clean")
    try:
        run_synthesize(cfg.model_copy(update={"teacher_url": clean_url}), curated, tmp_path / "clean", search)
    finally:
        clean_server.stop()
    server, url = start_replay(world, tmp_path / "faulty", fault_rate=0.2, hang_s=3, retry_after_s=0.01, seed=5)
    try:
        import httpx

        summary = run_synthesize(cfg.model_copy(update={"teacher_url": url}), curated, tmp_path / "faulty", search)
        stats = httpx.get(url.replace("/v1", "/stats")).json()
    finally:
        server.stop()
    counts = summary["counts"]
    assert counts["failed"] == 0 and counts["done"] == counts["samples"] == 9
    assert counts["request_retries"] > 0
    assert sum(v for k, v in stats.items() if k.startswith("fault_")) == stats["requests"] - stats["answered"]
    assert {k for k, v in stats.items() if k.startswith("fault_") and v} >= {"fault_429", "fault_500"}
    kept = read_table(tmp_path / "faulty").column("id").to_pylist()
    assert len(kept) == len(set(kept))  # none duplicated
    assert rows_signature(tmp_path / "faulty") == rows_signature(tmp_path / "clean")  # none lost, none changed
