"""Synthesis throughput and crash recovery against the replay server with injected latency.

    python -m bench.synth --json [--in-flight 512] [--latency-ms 200] [--per-family 200]

`efficiency` = achieved trajectories per second ÷ (in-flight ÷ a trajectory's endpoint latency),
where a trajectory's endpoint latency is its turns × the injected per-turn latency: 1.0 means the
teacher was kept saturated. Measured over the steady state (between 10% and 90% of samples done),
so start-up and the last stragglers do not count. `resent_fraction` = requests the endpoint saw
twice ÷ requests of an uninterrupted run, after a `kill -9` at the midpoint and a resume (from the
endpoint's own request counter). Targets: efficiency ≥ 0.97, resent_fraction ≤ 0.01.

Client, endpoint and tools share this machine, so the bench also reports the CPU each request
costs (`cpu_ms_per_request`: the whole machine; `client_` and `server_` apart) and
`cpu_ceiling_efficiency`, the best efficiency this machine's cores allow at that cost (all over
the same steady state): when it is below the target, the target needs more cores, not a better
scheduler. Requests in flight at the kill are sent again by design, so resent_fraction can only
reach 0.01 on a run with about 100× more requests than in flight (`--per-family`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from curation.demo_world import WorldConfig, generate_world
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from curation.strict_config import MAX_WORLD_SIZE
from synth.runtime.endpoint import ManagedServer, free_port
from synth.runtime.request_cache import REQUESTS_DB
from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig


def _server_requests(url: str) -> int:
    return httpx.get(url.replace("/v1", "/stats")).json()["requests"]


def _machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _process_cpu_s(pid: int | None = None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_family(text: str) -> int:
    """`--per-family`: 1 to MAX_WORLD_SIZE, as the config's `world.per_family`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_WORLD_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_WORLD_SIZE}, as world.per_family (got {value})")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--per-family", type=_per_family, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Small images: the bench measures the pipeline's scheduling, not PNG encoding.
        world = generate_world(root / "world", WorldConfig(seed=1, per_family=args.per_family, perception_size=(384, 288),
                                                           chart_size=(320, 240), landmark_size=(256, 256), long_cot=0))
        run_curate(CurateConfig(sources=[SourceSpec(path=world["samples_path"])], split={"coldstart": 1.0}), root / "curate")
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", world["scripts_path"], "--port", str(port),
                   "--latency-ms", str(args.latency_ms)]
        search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=root / "cache")
        with ManagedServer(command, url, root / "replay.log") as server:
            cfg = SynthConfig(teacher_url=url, concurrency=args.in_flight, attempts=1, request_timeout_s=120)
            done_at: list[float] = []
            cpu_at: list[tuple[float, float, float]] = []  # machine, client, server CPU seconds at each done sample

            def on_progress(counts: dict[str, int]) -> None:
                done_at.append(time.perf_counter())
                cpu_at.append((_machine_busy_s(), _process_cpu_s(), _process_cpu_s(server.pid)))

            started = time.perf_counter()
            summary = run_synthesize(cfg, root / "curate", root / "steady", search, progress=on_progress)
            wall = time.perf_counter() - started
            total_requests = summary["counts"]["requests_sent"]
            samples = summary["counts"]["samples"]
            turns_per_trajectory = total_requests / samples
            lo, hi = int(0.1 * samples), int(0.9 * samples) - 1
            steady_rate = (hi - lo) / (done_at[hi] - done_at[lo])
            ideal_rate = args.in_flight / (turns_per_trajectory * args.latency_ms / 1000)
            steady_requests = (hi - lo) * turns_per_trajectory
            machine_cpu, client_cpu, server_cpu = (b - a for a, b in zip(cpu_at[lo], cpu_at[hi], strict=True))
            cpu_per_request = machine_cpu / steady_requests
            ceiling = min(1.0, os.cpu_count() / (cpu_per_request * ideal_rate * turns_per_trajectory))

            cli = [sys.executable, "-m", "flows.cli", "synth", "--input", str(root / "curate"), "--out", str(root / "crash"),
                   "--teacher-url", url, "--teacher-model", "demo-teacher", "--concurrency", str(args.in_flight), "--attempts", "1",
                   "--corpus", world["corpus_path"], "--image-corpus", world["image_corpus_path"], "--search-cache", str(root / "cache")]
            before = _server_requests(url)
            proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            answered = 0
            while answered < total_requests // 2 and proc.poll() is None:
                time.sleep(0.05)
                try:
                    with sqlite3.connect(root / "crash" / REQUESTS_DB, timeout=1) as db:
                        answered = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.Error:
                    pass
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            resumed = subprocess.run(cli, capture_output=True, text=True, check=True)
            seen = _server_requests(url) - before
            resent = seen - total_requests
            resumed_counts = json.loads(resumed.stdout.strip().splitlines()[-1])["counts"]

    result = {
        "in_flight": args.in_flight,
        "latency_ms": args.latency_ms,
        "samples": samples,
        "turns_per_trajectory": round(turns_per_trajectory, 3),
        "achieved_trajectories_per_s": round(steady_rate, 2),
        "ideal_trajectories_per_s": round(ideal_rate, 2),
        "efficiency": round(steady_rate / ideal_rate, 4),
        "cores": os.cpu_count(),
        "cpu_ms_per_request": round(cpu_per_request * 1000, 2),
        "client_cpu_ms_per_request": round(client_cpu / steady_requests * 1000, 2),
        "server_cpu_ms_per_request": round(server_cpu / steady_requests * 1000, 2),
        "cpu_ceiling_efficiency": round(ceiling, 4),
        "wall_s": round(wall, 2),
        "killed_after_answered": answered,
        "resent_requests": resent,
        "resent_fraction": round(resent / total_requests, 5),
        "resume_replayed": resumed_counts["requests_replayed"],
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
