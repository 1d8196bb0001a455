"""Training step time: our SFT and GRPO stages ÷ stock TRL scripts on the same tiny model, data
and settings, in the same run.

    python -m bench.train --json [--steps 24] [--warmup 4] [--repeats 5] [--torch-threads 1] [--data DIR]

- `sft_step_ratio`: `run_sft` (our stage: TRL `SFTTrainer` with the stage's arguments) ÷ a plain
  `SFTTrainer` script on the same trajectory shards, time per optimizer step.
- `grpo_step_ratio`: `run_grpo` (our trainer: rollouts through the agent loop with live tools,
  token-in/token-out) ÷ a stock `GRPOTrainer` generating single-turn completions on the same prompts
  and images, with the same generations per prompt, batch, token budget and sampling; our rollouts
  are single-turn too (`max_turns: 1`), so both do the same work per step and the ratio is the cost
  of our rollout path. Target ≤ 1.02 for both.

A step's time is the interval between two consecutive step ends (a `TrainerCallback` on both
sides), so it holds everything the training loop does per step: fetching and collating the batch,
rollouts, forward, backward, the optimizer, logging. The first `--warmup` steps are dropped
(allocations, first-call costs); the median of the rest is the run's figure.

Each trainer runs in a fresh process, `--repeats` times interleaved, and the fastest run counts
(`*_step_ratio`): noise on a shared machine only adds time, and the SFT stage, which calls TRL with
the stock script's very arguments, still gave run medians 12% apart. Printed beside it: the ratio
of the median runs (`*_median_ratio`) and of the trainer process's CPU time per step
(`*_cpu_ratio`, which misses waits and child processes, so the target is on wall time).

The inputs (a demo world, its curated samples and trajectories, a tiny model) are built in a
temporary folder, or once into `--data DIR` and reused from there: a GPU machine that holds only
the training stack can then time the trainers on inputs prepared elsewhere.

Both sides run torch on `--torch-threads` threads (1 by default): on a small CPU, torch's OpenMP
team spinning against whatever runs on the other cores swung whole runs by ±30% (measured here);
on GPUs those threads compute nothing anyway.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback

from curation.shards import shard_files
from synth.agent import AgentConfig
from synth.search import SearchConfig
from train.grpo import GRPOStageConfig, load_prompts_dataset, run_grpo
from train.sft import SFTStageConfig, run_sft


class StepClock(TrainerCallback):
    """Times every step from the previous step's end to its own (the first from the start of training)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[tuple[float, float]] = []  # (wall, this process's CPU) at each step end

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = [(time.perf_counter(), time.process_time())]

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append((time.perf_counter(), time.process_time()))

    def seconds_per_step(self) -> dict[str, float]:
        """Median wall and CPU seconds of the steady steps."""
        steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(self.ends)][self.warmup :]
        if not steps:
            raise SystemExit(f"--steps must exceed --warmup ({self.warmup})")
        return {"wall": statistics.median(w for w, _ in steps), "cpu": statistics.median(c for _, c in steps)}


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


def measure(which: str, root: Path, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per steady step of one trainer; each runs in a fresh process, so none inherits another's state."""
    model = root / "tiny"
    grpo = GRPO_BENCH.model_copy(update={"max_steps": steps})
    search = SearchConfig(corpus_path=root / "world" / "corpus.jsonl", image_corpus_path=root / "world" / "image_corpus.jsonl",
                          cache_dir=root / "cache")
    clock = StepClock(warmup)
    if which == "sft":
        run_sft(SFTStageConfig(max_steps=steps, logging_steps=steps), model, [root / "trajectories"], root / which, callbacks=[clock])
    elif which == "stock_sft":
        stock_sft(model, root / "trajectories", steps, root / which, clock)
    elif which == "grpo":
        run_grpo(grpo, model, root / "curate", root / which, search, callbacks=[clock])
    else:
        stock_grpo(model, root / "curate", grpo, root / which, clock)
    return clock.seconds_per_step()


PREPARED = "prepared.json"  # written last: a folder without it is rebuilt


def prepare(root: Path) -> None:
    """The trainers' inputs: a demo world, its curated samples, trajectories synthesized through the
    replay server, and a tiny model."""
    from curation.demo_world import WorldConfig, generate_world
    from curation.sources import SourceSpec
    from curation.stage import CurateConfig, run_curate
    from synth.endpoint import ManagedServer, free_port
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4, help="first steps of each run left out of its median")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each trainer; the fastest counts")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's CPU threads on both sides (OMP_NUM_THREADS)")
    parser.add_argument("--data", type=Path, help="build the inputs into DIR once and reuse them (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", choices=["sft", "stock_sft", "grpo", "stock_grpo"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.steps, args.warmup)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        if not (root / PREPARED).is_file():
            prepare(root)
        runs: dict[str, list[float]] = {}  # wall seconds per steady step, a run each
        cpu: dict[str, list[float]] = {}  # the trainer process's CPU seconds per steady step (its threads, not its children)
        for repeat in range(args.repeats):  # interleaved, so a slow moment of the machine hits both sides
            for which in ("stock_sft", "sft", "stock_grpo", "grpo"):
                done = subprocess.run([sys.executable, "-m", "bench.train", "--measure", which, "--root", str(root), "--steps", str(args.steps),
                                       "--warmup", str(args.warmup)],
                                      capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": str(args.torch_threads)})
                if done.returncode != 0:
                    raise SystemExit(f"{which} failed:\n{done.stderr[-3000:]}")
                step = json.loads(done.stdout.strip().splitlines()[-1])
                runs.setdefault(which, []).append(step["wall"])
                cpu.setdefault(which, []).append(step["cpu"])
                print(f"run {repeat + 1}/{args.repeats} {which}: {step['wall']:.4f} s/step", file=sys.stderr, flush=True)
        seconds = {which: min(values) for which, values in runs.items()}
        medians = {which: statistics.median(values) for which, values in runs.items()}
        cpu_medians = {which: statistics.median(values) for which, values in cpu.items()}

    import torch

    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch_threads": args.torch_threads,
        "runs_s": {which: [round(v, 4) for v in values] for which, values in runs.items()},
        "sft_step_s": round(seconds["sft"], 4),
        "stock_sft_step_s": round(seconds["stock_sft"], 4),
        "sft_step_ratio": round(seconds["sft"] / seconds["stock_sft"], 3),
        "sft_median_ratio": round(medians["sft"] / medians["stock_sft"], 3),
        "grpo_step_s": round(seconds["grpo"], 4),
        "stock_grpo_step_s": round(seconds["stock_grpo"], 4),
        "grpo_step_ratio": round(seconds["grpo"] / seconds["stock_grpo"], 3),
        "grpo_median_ratio": round(medians["grpo"] / medians["stock_grpo"], 3),
        "sft_cpu_ratio": round(cpu_medians["sft"] / cpu_medians["stock_sft"], 3),
        "grpo_cpu_ratio": round(cpu_medians["grpo"] / cpu_medians["stock_grpo"], 3),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
