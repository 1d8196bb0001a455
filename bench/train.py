"""Training step time: our SFT and GRPO stages ÷ stock TRL scripts on the same tiny model, data
and settings, in the same run.

    python -m bench.train --json [--steps 100] [--warmup 4] [--repeats 4] [--torch-threads 1] [--data DIR]

- `sft_step_ratio`: `run_sft` (our stage: TRL `SFTTrainer` with the stage's arguments) ÷ a plain
  `SFTTrainer` script on the same trajectory shards, time per optimizer step.
- `grpo_step_ratio`: `run_grpo` (our trainer: rollouts through the agent loop with live tools,
  token-in/token-out) ÷ a stock `GRPOTrainer` generating single-turn completions on the same prompts
  and images, with the same generations per prompt, batch, token budget and sampling; our rollouts
  are single-turn too (`max_turns: 1`), so both do the same work per step and the ratio is the cost
  of our rollout path. Target ≤ 1.02 for both.

A step's time runs from the end of the step before it (or the start of training) to its own end
(a `TrainerCallback` on both sides), so it holds everything the training loop does per step:
fetching and collating the batch, rollouts, forward, backward, the optimizer, logging.

The two trainers of a comparison run at once in fresh processes and take turns, step by step: one
runs a step while the other waits on a pipe, then hands the turn back. Step i of ours and step i of
the stock script thus run back to back, on the same machine state and the same batch, and a run's
ratio is the median over its steady pairs of steps (after `--warmup` pairs). A slow moment of a
shared machine then slows both sides of the pair it touches, instead of whichever run it fell on.

What pairing cannot remove is the process itself: two fresh processes of the very same stock
script, paired, still differ by up to ±7% for a whole run on this 2-core machine, and up to 13%
with ASLR off and a fixed hash seed, so it is not their memory layout. So a comparison is several
runs: `*_step_ratio` is the mean of the
`--repeats` runs' ratios (`*_run_ratios`, alternating which side starts), with a 95% bootstrap
interval (`*_ratio_ci95`); `*_cpu_ratio` is the same from the trainer process's CPU time (which
misses child processes, so the target is on wall time). Steps are cheap and process starts are
not, and short runs are noisy: in the same 11 minutes, 4 runs of 100 steps spread SFT's run
ratios over 0.97-1.08, 10 runs of 30 steps over 0.79-1.15.

The inputs (a demo world, its curated samples and trajectories, a tiny model) are built in a
temporary folder, or once into `--data DIR` and reused from there: a GPU machine that holds only
the training stack can then time the trainers on inputs prepared elsewhere.

Both sides run torch on `--torch-threads` threads (1 by default): on a small CPU, torch's OpenMP
team spinning against whatever runs on the other cores swung whole runs by ±30% (measured here);
on GPUs those threads compute nothing anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback

from curation.shards import shard_files
from synth.runtime.agent import AgentConfig
from synth.tools.search import SearchConfig
from train.grpo import GRPOStageConfig, load_prompts_dataset, run_grpo
from train.sft import SFTStageConfig, run_sft


class Baton:
    """The turn between two trainer processes, passed as a byte over a pipe each way."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def wait(self) -> None:
        if not os.read(self.read_fd, 1):
            raise SystemExit("the other trainer ended early")

    def hand_over(self) -> None:
        try:
            os.write(self.write_fd, b"t")
        except BrokenPipeError:  # the other side has finished
            pass


class StepClock(TrainerCallback):
    """Times every step, from the end of the one before (or the start of training) to its own end,
    waiting for its turn before each step and handing the turn over after it."""

    def __init__(self, baton: Baton) -> None:
        self.baton = baton
        self.steps: list[tuple[float, float]] = []  # (wall, this process's CPU) seconds per step
        self._start = (0.0, 0.0)

    def _resume(self) -> None:
        self.baton.wait()
        self._start = (time.perf_counter(), time.process_time())

    def on_train_begin(self, args, state, control, **kwargs):
        self._resume()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))
        self.baton.hand_over()
        if state.global_step < state.max_steps:
            self._resume()


def stock_sft(model_path: Path, shards: Path, steps: int, out: Path, clock) -> None:
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in shard_files(shards)], split="train")
    dataset = dataset.select_columns(["messages", "images"])
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    for name, param in model.named_parameters():
        if "visual" in name:
            param.requires_grad_(False)
    args = SFTConfig(output_dir=str(out), learning_rate=1e-5, max_steps=steps, per_device_train_batch_size=1, assistant_only_loss=True,
                     max_length=None, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
                     dataloader_num_workers=0, disable_tqdm=True, logging_steps=steps, warmup_steps=0.1, lr_scheduler_type="cosine", seed=0, bf16=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(model_path),
                         callbacks=[clock])
    trainer.train()


def stock_grpo(model_path: Path, selected: Path, cfg: GRPOStageConfig, out: Path, clock) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    dataset = load_prompts_dataset(selected, cfg.pools, cfg.agent, cfg.max_samples).remove_columns(["sample", "image_bytes"])
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    for name, param in model.named_parameters():
        if "visual" in name:
            param.requires_grad_(False)

    def length_reward(completions, **kwargs):
        return [0.0 for _ in completions]

    args = GRPOConfig(output_dir=str(out), learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                      num_generations=cfg.num_generations, temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.epsilon,
                      loss_type=cfg.loss_type, max_completion_length=cfg.agent.max_tokens_per_turn, save_strategy="no", report_to="none",
                      use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed,
                      logging_steps=cfg.max_steps, bf16=cfg.bf16, lr_scheduler_type=cfg.lr_scheduler)
    trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=dataset,
                          processing_class=AutoProcessor.from_pretrained(model_path), callbacks=[clock])
    trainer.train()


GRPO_BENCH = GRPOStageConfig(pools=["rl"], num_generations=4, batch_size=4, learning_rate=1e-6, max_samples=4,
                             agent=AgentConfig(max_turns=1, max_tokens_per_turn=32, temperature=1.0, prestart_kernel=False))


def measure(which: str, root: Path, steps: int, baton: Baton) -> dict[str, list[float]]:
    """Wall and CPU seconds of each step of one trainer, run in this (fresh) process."""
    model = root / "tiny"
    grpo = GRPO_BENCH.model_copy(update={"max_steps": steps})
    search = SearchConfig(corpus_path=root / "world" / "corpus.jsonl", image_corpus_path=root / "world" / "image_corpus.jsonl",
                          cache_dir=root / "cache")
    clock = StepClock(baton)
    if which == "sft":
        run_sft(SFTStageConfig(max_steps=steps, logging_steps=steps), model, [root / "trajectories"], root / which, callbacks=[clock])
    elif which == "stock_sft":
        stock_sft(model, root / "trajectories", steps, root / which, clock)
    elif which == "grpo":
        run_grpo(grpo, model, root / "curate", root / which, search, callbacks=[clock])
    else:
        stock_grpo(model, root / "curate", grpo, root / which, clock)
    return {"wall": [w for w, _ in clock.steps], "cpu": [c for _, c in clock.steps]}


def measure_pair(first: str, second: str, root: Path, steps: int, torch_threads: int) -> dict[str, dict[str, list[float]]]:
    """Two trainers in two fresh processes taking turns step by step, `first` starting."""
    to_first, to_second = os.pipe(), os.pipe()  # (read, write) each
    ends = {first: (to_first[0], to_second[1]), second: (to_second[0], to_first[1])}
    procs, logs = {}, {}
    for which, (read_fd, write_fd) in ends.items():
        logs[which] = tempfile.TemporaryFile(mode="w+")  # files, not pipes: a full pipe would stall a turn
        procs[which] = subprocess.Popen(
            [sys.executable, "-m", "bench.train", "--measure", which, "--root", str(root), "--steps", str(steps),
             "--baton", f"{read_fd},{write_fd}"],
            pass_fds=(read_fd, write_fd), stdout=logs[which], stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(torch_threads)},
        )
    os.write(to_first[1], b"t")
    for fd in (*to_first, *to_second):  # only the trainers hold them now: one that dies ends the other's wait
        os.close(fd)
    results = {}
    for which, proc in procs.items():
        proc.wait()
        logs[which].seek(0)
        output = logs[which].read()
        if proc.returncode != 0:
            raise SystemExit(f"{which} failed:\n{output[-3000:]}")
        results[which] = json.loads(output.strip().splitlines()[-1])
    return results


PREPARED = "prepared.json"  # written last: a folder without it is rebuilt


def prepare(root: Path) -> None:
    """The trainers' inputs: a demo world, its curated samples, trajectories synthesized through the
    replay server, and a tiny model."""
    from curation.demo_world import WorldConfig, generate_world
    from curation.sources import SourceSpec
    from curation.stage import CurateConfig, run_curate
    from synth.runtime.endpoint import ManagedServer, free_port
    from synth.stage import SynthConfig, run_synthesize
    from train.tiny import TinyModelConfig, build_tiny_model

    world = generate_world(root / "world", WorldConfig(seed=3, per_family=4, distractor_docs=10, long_cot=0))
    run_curate(CurateConfig(sources=[SourceSpec(path=world["samples_path"])], split={"coldstart": 0.5, "rl": 0.5}), root / "curate")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=root / "cache")
    command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", world["scripts_path"], "--port", str(port)]
    with ManagedServer(command, url, root / "replay.log"):
        run_synthesize(SynthConfig(teacher_url=url, attempts=1), root / "curate", root / "trajectories", search)
    build_tiny_model(root / "tiny", Path(world["scripts_path"]).read_text().splitlines(), TinyModelConfig())
    (root / PREPARED).write_text(json.dumps({"world_seed": 3, "tiny_model": TinyModelConfig().model_dump()}))


def run_ratio(ours: list[float], stock: list[float], warmup: int) -> float:
    """The median, over a run's steady pairs of steps, of our step's time ÷ the stock step's beside it."""
    pairs = list(zip(ours, stock, strict=True))[warmup:]
    if not pairs:
        raise SystemExit(f"--steps must exceed --warmup ({warmup})")
    return statistics.median(o / s for o, s in pairs)


def mean_ci95(values: list[float], resamples: int = 10_000) -> tuple[float, float]:
    """A 95% bootstrap interval of the mean (percentiles of resampled means, seeded)."""
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=4, help="first step pairs of each run left out")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each comparison, alternating which side starts")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's CPU threads on both sides (OMP_NUM_THREADS)")
    parser.add_argument("--data", type=Path, help="build the inputs into DIR once and reuse them (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", choices=["sft", "stock_sft", "grpo", "stock_grpo"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baton", help=argparse.SUPPRESS)  # READ_FD,WRITE_FD: the turn's pipes
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.steps, Baton(*map(int, args.baton.split(","))))))
        return

    comparisons = {"sft": "stock_sft", "grpo": "stock_grpo"}
    wall_ratios: dict[str, list[float]] = {name: [] for name in comparisons}  # a run each
    cpu_ratios: dict[str, list[float]] = {name: [] for name in comparisons}
    step_s: dict[str, list[float]] = {}  # median wall seconds per steady step, a run each
    with tempfile.TemporaryDirectory() if args.data is None else contextlib.nullcontext(args.data) as where:
        root = Path(where)
        if not (root / PREPARED).is_file():
            prepare(root)
        for repeat in range(args.repeats):
            for ours, stock in comparisons.items():
                order = (stock, ours) if repeat % 2 == 0 else (ours, stock)
                steps = measure_pair(*order, root, args.steps, args.torch_threads)
                wall_ratios[ours].append(run_ratio(steps[ours]["wall"], steps[stock]["wall"], args.warmup))
                cpu_ratios[ours].append(run_ratio(steps[ours]["cpu"], steps[stock]["cpu"], args.warmup))
                for which in (ours, stock):
                    step_s.setdefault(which, []).append(statistics.median(steps[which]["wall"][args.warmup :]))
                print(f"run {repeat + 1}/{args.repeats} {ours}: {wall_ratios[ours][-1]:.3f} of stock "
                      f"({step_s[ours][-1]:.4f} s/step against {step_s[stock][-1]:.4f})", file=sys.stderr, flush=True)

    import torch

    result: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch_threads": args.torch_threads,
        "runs_s": {which: [round(v, 4) for v in values] for which, values in step_s.items()},
    }
    for ours, stock in comparisons.items():
        result[f"{ours}_step_s"] = round(statistics.median(step_s[ours]), 4)
        result[f"{stock}_step_s"] = round(statistics.median(step_s[stock]), 4)
        result[f"{ours}_step_ratio"] = round(statistics.fmean(wall_ratios[ours]), 3)
        result[f"{ours}_ratio_ci95"] = [round(bound, 3) for bound in mean_ci95(wall_ratios[ours])]
        result[f"{ours}_run_ratios"] = [round(r, 3) for r in wall_ratios[ours]]
        result[f"{ours}_cpu_ratio"] = round(statistics.fmean(cpu_ratios[ours]), 3)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
