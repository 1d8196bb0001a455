"""GRPO with live multi-turn tool rollouts, on TRL's `GRPOTrainer`.

Rollouts run the shared agent loop (`synth.runtime.agent.run_episode`) with the live Python kernel and
search, driven token-in/token-out by `train.rollout.TokenPolicy`. Why a `GRPOTrainer` subclass
that overrides `_generate`, not one of TRL's hooks:

- `tools=` / `environment_factory` speak the chat template's JSON tool calls; the paper's protocol
  is `<code>` blocks and `<tool_call>` search tags parsed by our protocol module;
- `rollout_func` returns ids but not images: TRL then trains with the dataset's images only, so
  the images the code produced would have placeholders in the sequence and no pixels behind them.

The override returns the full image list of each episode (inputs, then tool images) through TRL's
tool-image path, so the forward pass gets every image in placeholder order (checked here, not
silently dropped), and the environment mask, so observation tokens never enter the loss.
Rewards are the shared ones (`synth.scoring.reward.score_response`, run inside the agent loop for every
rollout: 0.8·accuracy + 0.2·format, the search penalty, the answer cap, no tool bonus), as two
reward functions so TRL logs each component.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import iter_rows
from curation.stage import PoolNames
from curation.strict_config import Seed, StrictConfig
from synth.runtime import aio
from synth.runtime.agent import AgentConfig, ToolBox, open_toolbox, run_episode
from synth.runtime.profile import IMAGE_SLOT, Profile, load_profile
from synth.runtime.protocol import load_prompts
from synth.scoring.judge import Judge, JudgeConfig, check_judge
from synth.scoring.reward import RewardConfig
from synth.tools.search import SearchConfig
from train.rollout import RolloutError, TokenPolicy, VLLMTokenPolicy, encoded_image_tokens
from train.sft import (LrScheduler, TrainingDataError, TrainingSetupError, apply_pixel_budget, check_max_steps, freeze_vision_tower,
                       quiet_checkpointing_aliases, trainer_arguments)
from train.weight_sync import DiskWeightSync, http_vllm_client

logger = logging.getLogger(__name__)



class VLLMRolloutConfig(StrictConfig):
    """Rollouts sampled by a vLLM server (TRL's server mode), the policy's weights pushed to it before each step's rollouts.

    The server runs in its own environment (`vllm serve` with its development routes, see the README).
    `weight_sync: nccl` is TRL's: the tensors are broadcast into the server's workers (CUDA on both
    sides, and `vllm` importable in the trainer). `disk` saves the policy to `weight_dir` each step and
    has the server reload it in place (`train.weight_sync`): no NCCL, no `vllm` in the trainer."""

    url: str  # the server's base URL, e.g. http://HOST:8000 (a trailing /v1 is dropped)
    timeout_s: float = Field(240.0, ge=0)  # how long to wait for the server at start (0: one check, no wait)
    group_port: int = Field(51216, ge=1, le=65535)  # the NCCL weight-transfer group's port (weight_sync: nccl)
    max_in_flight: int = Field(64, ge=1)  # generation requests each training process keeps in flight
    importance_sampling_correction: bool = True  # TRL's correction for the sampler/trainer mismatch (uses vLLM's log-probs)
    weight_sync: Literal["nccl", "disk"] = "nccl"
    # weight_sync: disk: where the trainer writes the weights, a path the server reads as it is (a shared
    # file system across machines); None: <the GRPO output>/vllm-weights
    weight_dir: str | None = None


class GRPOStageConfig(StrictConfig):
    """The paper's RL recipe by default: no KL, clip 0.2, token-mean loss, 16 rollouts, T=1, lr 1e-6, 9 turns."""

    pools: PoolNames = Field(default_factory=lambda: ["rl"], min_length=1)  # the curated pools whose samples are the RL prompts
    learning_rate: float = Field(1e-6, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs; -1: train for epochs
    num_generations: int = Field(16, ge=2)  # rollouts per prompt (a GRPO group: advantages need two at least)
    # Rollouts per device and step. TRL's generation batch, batch_size × grad_accum × processes, holds whole
    # groups: it must be a multiple of num_generations (`generation_batch_problem`).
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)  # KL coefficient: the paper uses none
    epsilon: float = Field(0.2, gt=0)  # clip range, both sides
    # dapo: token-mean over the batch's active tokens. TRL's luspo and vespo need settings this stage does not expose.
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo"] = "dapo"
    lr_scheduler: LrScheduler = "constant"
    freeze_vision: bool = True
    max_pixels: int | None = Field(None, ge=1)  # the image pixel budget; None: the processor's own
    logging_steps: int = Field(1, ge=1)
    seed: Seed = 0
    bf16: bool = False
    gradient_checkpointing: bool = True  # TRL's default; off pays for tiny models on a CPU
    max_samples: int | None = Field(None, ge=1)  # the first N RL samples; None: all
    # The reward-hacking watch: warn when tool calls per trajectory fall below this (after the first
    # steps), or when more than this share of code cells print nothing and show nothing.
    warn_min_tool_calls: float = Field(0.05, ge=0)
    warn_noop_code_share: float = Field(0.5, ge=0, le=1)  # a share of code cells
    # The reference's RL environment pre-fills "<think>" after every observation.
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(max_turns=9, max_tokens_per_turn=2048, temperature=1.0,
                                                                   think_prefix="after_observation"))
    vllm: VLLMRolloutConfig | None = None  # None: rollouts generate with the policy in the training processes

    max_steps_rule = field_validator("max_steps")(check_max_steps)

    def generation_batch_problem(self, processes: int = 1) -> str | None:
        """Why TRL would refuse this batch on `processes` training processes, or None. TRL's generation
        batch is batch_size × grad_accum × processes rollouts and must hold whole GRPO groups of
        num_generations (TRL's `GRPOConfig.__post_init__`: "generation_batch_size must be divisible by
        num_generations"). The message names the settings and the nearest batch sizes that work."""
        per_step = self.batch_size * self.grad_accum * processes
        if per_step % self.num_generations == 0:
            return None
        works = [b for b in range(1, self.batch_size + self.num_generations + 1)
                 if (b * self.grad_accum * processes) % self.num_generations == 0]
        nearest = [b for b in (max((b for b in works if b < self.batch_size), default=None), min(b for b in works if b > self.batch_size))
                   if b is not None]
        if self.grad_accum == 1 and processes == 1:
            counted = f"{per_step} rollouts per step"
        else:
            counted = (f"batch_size × grad_accum{' × processes' if processes != 1 else ''} = {self.batch_size} × {self.grad_accum}"
                       f"{f' × {processes}' if processes != 1 else ''} = {per_step} rollouts per step")
        return (f"grpo.batch_size: {counted} is not a whole number of GRPO groups of grpo.num_generations ({self.num_generations}) "
                f"rollouts; set batch_size to {' or '.join(map(str, nearest))}, or change num_generations")


def load_prompts_dataset(curated_dir: str | Path, pools: list[str], agent: AgentConfig, max_samples: int | None = None):
    """RL samples as a `datasets.Dataset`: the conversational `prompt` and `images` TRL expects, and
    the sample itself (as JSON, and its images' original bytes) for the rollout and the judge."""
    import datasets

    rows = [r for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] in pools][: max_samples or None]
    if not rows:
        raise TrainingDataError(f"no samples of pool(s) {pools} in {curated_dir}")
    prompts = load_prompts(agent.tools, agent.profile)
    records = []
    for row in rows:
        sample = Sample.from_row(row)
        records.append({
            "prompt": [{"role": "system", "content": prompts.system}, {"role": "user", "content": prompts.user_text(sample.question)}],
            "images": [{"bytes": image.bytes, "path": None} for image in sample.images],
            "image_bytes": [image.bytes for image in sample.images],
            "sample": json.dumps({**sample.to_row(), "images": None}),
        })
    features = datasets.Features({
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "images": datasets.List(datasets.Image()),
        "image_bytes": datasets.List(datasets.Value("binary")),
        "sample": datasets.Value("string"),
    })
    return datasets.Dataset.from_list(records, features=features)


def noop_code_cells(row: dict[str, Any], profile: Profile | None = None) -> tuple[int, int]:
    """(code cells that ran, of which printed nothing and showed nothing) in a trajectory row.

    Messages alternate after the prompt: assistant turn t at 2 + 2t, its observation at 3 + 2t."""
    ran = noop = 0
    # A cell that printed nothing and showed nothing, in the layout the episode was shown (`profile`; ours by default).
    empty = (profile or load_profile()).render_code("", "", 0).replace(IMAGE_SLOT, "").strip()
    for call in row["tool_calls"]:
        if call["tool"] != "python" or call["outcome"] != "ok":
            continue
        ran += 1
        position = 3 + 2 * call["turn"]
        observation = row["messages"][position] if position < len(row["messages"]) else {"content": []}
        text = "".join(part.get("text") or "" for part in observation["content"])
        noop += text.strip() == empty and call["images"] == 0
    return ran, noop


def accuracy_reward(completions, episode_accuracy, **kwargs) -> list[float]:
    """0 or 1 for a right answer under the length cap, less the search penalty (weighted
    `reward.accuracy_weight`, 0.8): the rollout row's `accuracy_reward`."""
    return list(episode_accuracy)


def format_reward(completions, episode_format, **kwargs) -> list[float]:
    """1 for a well-formed trajectory under the length cap (weighted `reward.format_weight`, 0.2):
    the rollout row's `format_reward`."""
    return list(episode_format)


def episode_rewards(row: dict[str, Any]) -> tuple[float, float, float]:
    """(accuracy reward, format reward, the accuracy the search penalty took) of a rollout row, as
    the agent loop scored it: GRPO recomputes nothing."""
    accuracy, penalty = row["accuracy_reward"], row["search_penalty"]
    return accuracy, row["format_reward"], accuracy * penalty / (1.0 - penalty)


def _make_trainer_class(policy_class: type[TokenPolicy] = TokenPolicy):
    from trl import GRPOTrainer

    class ToolRolloutGRPOTrainer(GRPOTrainer):
        """`GRPOTrainer` whose generation is our agent loop with live tools (see the module docstring)."""

        def __init__(self, *args, toolbox: ToolBox, agent: AgentConfig, judge: Judge, vllm: VLLMRolloutConfig | None = None,
                     reward: RewardConfig | None = None, weight_dir: str | Path | None = None, **kwargs) -> None:
            disk = vllm is not None and vllm.weight_sync == "disk"
            if disk:  # TRL's server mode would join the server's NCCL group now: the disk sync stands in for it
                kwargs["args"].use_vllm = False
            super().__init__(*args, **kwargs)
            if disk:
                self.args.use_vllm = self.use_vllm = True
                self._last_loaded_step = -1  # as TRL's server mode sets it: the first step syncs too
                client = None
                if self.accelerator.is_main_process:
                    client = http_vllm_client(self.args.vllm_server_base_url, self.args.vllm_server_timeout)
                    check_disk_sync_server(client, self.model, self.vllm_importance_sampling_correction)
                self.vllm_generation = DiskWeightSync(lambda: self.model_wrapped, self.accelerator, client, weight_dir)
                self.accelerator.wait_for_everyone()
            self.toolbox = toolbox
            self.agent_cfg = agent
            self.judge = judge
            self.reward_cfg = reward or RewardConfig()
            self.vllm_cfg = vllm  # set exactly when TRL's `use_vllm` is (see `vllm_arguments`)
            self._vllm_policy: VLLMTokenPolicy | None = None
            self._batch_inputs: list[dict[str, Any]] = []
            self._rollouts = 0
            # TRL sends a batch's images through its tool-image path only when it has tools; ours are
            # not TRL tools (they run inside `_generate`), so this marks the path, nothing more.
            self.tools = [run_episode]

        def _generate_and_score_completions(self, inputs):
            self._batch_inputs = inputs  # `_generate` gets only prompts; the rollout needs the samples
            return super()._generate_and_score_completions(inputs)

        def _vllm_rollout_policy(self) -> VLLMTokenPolicy:
            """The vLLM policy, with the main process's client (TRL's, which also syncs weights) or, on the
            other processes, a client of their own: every process generates its own rollouts."""
            if self._vllm_policy is None:
                client = getattr(self.vllm_generation, "vllm_client", None)
                if client is None:
                    client = http_vllm_client(self.args.vllm_server_base_url, self.args.vllm_server_timeout)
                self._vllm_policy = VLLMTokenPolicy(client, self.processing_class, name="policy", max_in_flight=self.vllm_cfg.max_in_flight)
            return self._vllm_policy

        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:  # the vLLM policy's request threads live as long as training
                if self._vllm_policy is not None:
                    aio.run(self._vllm_policy.aclose())
                    self._vllm_policy = None

        def _run_rollouts(self, policy: TokenPolicy, samples: list[Sample], start: int) -> list[dict[str, Any]]:
            async def rollouts():
                return await asyncio.gather(*(
                    run_episode(sample, policy, self.toolbox, self.agent_cfg, attempt=start + i, seed=self.args.seed + start + i,
                                judge=self.judge, reward=self.reward_cfg)
                    for i, sample in enumerate(samples)
                ))

            return aio.run(rollouts())

        def _generate(self, prompts: list):
            from trl.models import unwrap_model_for_generation

            mode = "train" if self.model.training else "eval"
            # The original bytes, not the decoded PIL images TRL holds: the kernel and the judge see the inputs as they are.
            samples = [Sample.model_validate({**json.loads(x["sample"]), "images": [{"bytes": b} for b in x["image_bytes"] or []]})
                       for x in self._batch_inputs]
            start = self._rollouts
            self._rollouts += len(samples)
            if self.use_vllm:
                # The server must sample from the weights being trained: push them once per optimizer step, as TRL does.
                if self.state.global_step != self._last_loaded_step:
                    self.vllm_generation.sync_weights()
                    self._last_loaded_step = self.state.global_step
                policy = self._vllm_rollout_policy()
                rows = self._run_rollouts(policy, samples, start)
            else:
                with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
                    was_training = model.training
                    model.eval()
                    policy = policy_class(model, self.processing_class, name="policy")
                    rows = self._run_rollouts(policy, samples, start)
                    if was_training:
                        model.train()
            episodes = [policy.take(f"{sample.id}/{start + i}") for i, sample in enumerate(samples)]

            images, accuracy, fmt, penalties = [], [], [], []
            for episode, row in zip(episodes, rows, strict=True):
                ids = episode.prompt_ids + episode.completion_ids
                placeholders = sum(1 for t in ids if t == policy.image_pad_id)
                encoded, expected = encoded_image_tokens(self.processing_class, episode)
                if placeholders != expected or encoded != len(episode.images):  # TRL would drop the batch's images: refuse instead
                    raise RolloutError(f"rollout {row['id']}: {placeholders} image placeholders for {expected} image features")
                images.append(list(episode.images) or None)
                accuracy_part, format_part, taken = episode_rewards(row)
                accuracy.append(accuracy_part)
                fmt.append(format_part)
                penalties.append(taken)
            self._log_rollouts(mode, rows, episodes)
            self._metrics[mode]["rewards/search_penalty/mean"].append(sum(penalties) / len(penalties))  # taken off accuracy
            # A verdict nobody could give scores accuracy 0 here (GRPO needs a number); its share is logged apart.
            self._metrics[mode]["judge/failed_share"].append(sum(1 for r in rows if r["judge_failed"]) / len(rows))
            completions = [[{"role": "assistant", "content": "".join(
                p["text"] for m in row["messages"][2:] if m["role"] == "assistant" for p in m["content"])}] for row in rows]
            extra = {"env_mask": [e.env_mask for e in episodes], "episode_accuracy": accuracy, "episode_format": fmt}
            has_images = any(images)
            return (
                [e.prompt_ids for e in episodes],
                [e.completion_ids for e in episodes],
                extra.pop("env_mask"),
                completions,
                [e.logprobs for e in episodes] if self.use_vllm else None,  # the sampler's: TRL's importance-sampling correction
                extra,
                images if has_images else None,
                images if has_images else [[] for _ in episodes],
            )

        def _log_rollouts(self, mode: str, rows: list[dict[str, Any]], episodes) -> None:
            metrics = self._metrics[mode]
            calls = [len(r["tool_calls"]) for r in rows]
            failed = sum(1 for r in rows for c in r["tool_calls"] if c["outcome"] != "ok")
            ran, noop = map(sum, zip(*(noop_code_cells(r, self.agent_cfg.protocol) for r in rows), strict=True)) if rows else (0, 0)
            metrics["tools/calls_per_trajectory"].append(sum(calls) / len(rows))
            metrics["tools/failure_rate"].append(failed / sum(calls) if sum(calls) else 0.0)
            metrics["tools/noop_code_share"].append(noop / ran if ran else 0.0)
            for tool in ("python", "search", "image_search"):
                metrics[f"tools/{tool}_per_trajectory"].append(sum(1 for r in rows for c in r["tool_calls"] if c["tool"] == tool) / len(rows))
            metrics["rollout/turns"].append(sum(r["turns"] for r in rows) / len(rows))
            metrics["rollout/response_tokens"].append(sum(sum(e.env_mask) for e in episodes) / len(episodes))
            metrics["rollout/accuracy"].append(sum(r["correct"] for r in rows) / len(rows))
            for category in sorted({r["category"] for r in rows}):
                group = [r for r in rows if r["category"] == category]
                metrics[f"accuracy/{category}"].append(sum(r["correct"] for r in group) / len(group))
                # Per category: whether RL makes tool use selective shows on the items that need no tool.
                metrics[f"tools/calls_per_trajectory/{category}"].append(sum(len(r["tool_calls"]) for r in group) / len(group))

    return ToolRolloutGRPOTrainer


def _dynamics_callback(path: Path, cfg: GRPOStageConfig):
    from transformers import TrainerCallback

    class DynamicsLog(TrainerCallback):
        """Per-step training dynamics as JSONL, and the reward-hacking watch."""

        def __init__(self) -> None:
            self.warnings: list[str] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            notes = []
            calls = logs.get("tools/calls_per_trajectory")
            if calls is not None and state.global_step > 1 and calls < cfg.warn_min_tool_calls:
                notes.append(f"tool calls collapsing: {calls:.3f} per trajectory at step {state.global_step}")
            noop = logs.get("tools/noop_code_share")
            if noop is not None and noop > cfg.warn_noop_code_share:
                notes.append(f"{noop:.0%} of code cells do nothing at step {state.global_step} (a reward hack to watch)")
            print(
                f"grpo step {state.global_step}: reward {logs['reward']:.3f}, tool calls {calls or 0:.2f} per trajectory "
                f"(python {logs.get('tools/python_per_trajectory', 0):.2f}, search {logs.get('tools/search_per_trajectory', 0):.2f}, "
                f"image search {logs.get('tools/image_search_per_trajectory', 0):.2f}), tool failures {logs.get('tools/failure_rate', 0):.0%}, "
                f"{logs.get('rollout/response_tokens', 0):.0f} response tokens"
            )
            for note in notes:
                logger.warning(note)
            self.warnings += notes
            with open(path, "a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs, "warnings": notes}) + "\n")

    return DynamicsLog()


def check_disk_sync_server(client, model, importance_sampling_correction: bool) -> None:
    """What `weight_sync: disk` needs of the server, asked once before training: its development routes;
    on a CPU server, an LM head of its own (vLLM 0.31's CPU backend keeps a packed copy of a head tied to
    the embeddings, which a reload leaves at the old weights); and, as TRL checks in server mode,
    log-probs after temperature for the importance-sampling correction. Raises `TrainingSetupError`."""
    try:
        info = client.get_server_info()
    except RuntimeError as exc:  # TRL's message: no development routes
        raise TrainingSetupError(f"grpo.vllm.weight_sync: disk: {exc}") from None
    if info.get("device_config", {}).get("device") == "cpu" and getattr(model.config, "tie_word_embeddings", False):
        raise TrainingSetupError(
            "grpo.vllm.weight_sync: disk: the vLLM server runs on a CPU, where reloaded weights never reach an LM head tied to "
            "the embeddings (vLLM 0.31 keeps the head's packed copy); serve on a GPU, or untie the checkpoint's embeddings")
    mode = info["model_config"]["logprobs_mode"]
    if importance_sampling_correction and mode != "processed_logprobs":
        logger.warning(f"The vLLM server runs with `--logprobs-mode {mode}`, which biases the importance sampling correction. "
                       "Restart it with `--logprobs-mode processed_logprobs`, or set grpo.vllm.importance_sampling_correction: false.")


def check_vllm_trainer_environment() -> None:
    """vLLM rollouts need `vllm` in the trainer's environment too: TRL pushes the weights to the server
    through vLLM's NCCL weight-transfer engine. Said before the model loads, not deep in TRL (the
    pipeline's config check asks the same before any work starts)."""
    from trl.import_utils import is_vllm_available

    if not is_vllm_available():
        raise TrainingSetupError(
            "grpo.vllm: `vllm` is not importable here, and TRL syncs the policy's weights to the server through vLLM's "
            "NCCL engine. Run GRPO with `accelerate launch -m train.launch grpo` from a training environment with "
            "`trl[vllm]` (README: vLLM generation for GRPO), set grpo.vllm.weight_sync: disk (the server reloads the "
            "weights from a folder), or remove grpo.vllm to generate in the training processes.")


def unreachable_server_errors(vllm: VLLMRolloutConfig | None) -> tuple[type[BaseException], ...]:
    if vllm is None:
        return ()
    import requests  # TRL's vLLM client is built on it

    return (requests.exceptions.ConnectionError,)


def grpo_arguments(cfg: GRPOStageConfig, out_dir: Path, reward: RewardConfig | None = None):
    from trl import GRPOConfig

    reward = reward or RewardConfig()
    return trainer_arguments(
        GRPOConfig, cfg, out_dir,
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        reward_weights=[reward.accuracy_weight, reward.format_weight],
        max_completion_length=cfg.agent.max_total_tokens,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        **vllm_arguments(cfg.vllm),
    )


def vllm_arguments(vllm: VLLMRolloutConfig | None) -> dict[str, Any]:
    """TRL's server-mode settings: TRL then connects to the server, joins its NCCL weight-transfer
    group and corrects for the sampler's log-probs; our rollouts do the generating."""
    if vllm is None:
        return {"use_vllm": False}
    return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": vllm.url.rstrip("/").removesuffix("/v1"),
            "vllm_server_timeout": vllm.timeout_s, "vllm_group_port": vllm.group_port,
            "vllm_importance_sampling_correction": vllm.importance_sampling_correction}


def run_grpo(
    cfg: GRPOStageConfig, model_path: str | Path, curated_dir: str | Path, out_dir: str | Path,
    search: SearchConfig | None = None, judge: JudgeConfig | None = None, policy_class: type[TokenPolicy] = TokenPolicy,
    callbacks: list | None = None, reward: RewardConfig | None = None,
) -> dict[str, Any]:
    """GRPO on the curated RL pool from `model_path` (the SFT checkpoint); writes the checkpoint,
    `dynamics.jsonl` and TensorBoard logs (when installed) under `out_dir`. `callbacks` are more
    `transformers.TrainerCallback`s for the trainer; `judge` and `reward` score the rollouts as
    synthesis and evaluation score episodes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    started = time.time()
    # The processes `accelerate launch` (torchrun) started; the config check assumed one.
    if problem := cfg.generation_batch_problem(int(os.environ.get("WORLD_SIZE", "1"))):
        raise TrainingSetupError(problem)
    if cfg.vllm is not None and cfg.vllm.weight_sync == "nccl":
        check_vllm_trainer_environment()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_prompts_dataset(curated_dir, cfg.pools, cfg.agent, cfg.max_samples)
    check_judge(judge or JudgeConfig())  # an LLM judge that cannot answer fails here, not in the first reward
    processor = AutoProcessor.from_pretrained(model_path)
    apply_pixel_budget(processor, cfg.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    frozen = freeze_vision_tower(model) if cfg.freeze_vision else 0
    dynamics_path = out_dir / "dynamics.jsonl"
    dynamics_path.unlink(missing_ok=True)
    callback = _dynamics_callback(dynamics_path, cfg)
    trainer_class = _make_trainer_class(policy_class)
    shared_judge = Judge(judge or JudgeConfig())
    # TRL's generation and old-log-prob passes read `is_gradient_checkpointing` on every step.
    with open_toolbox(cfg.agent, search or SearchConfig()) as toolbox, quiet_checkpointing_aliases():
        try:
            trainer = trainer_class(
                model=model, reward_funcs=[accuracy_reward, format_reward], args=grpo_arguments(cfg, out_dir, reward),
                train_dataset=dataset, processing_class=processor, callbacks=[callback, *(callbacks or [])], toolbox=toolbox,
                agent=cfg.agent, judge=shared_judge, vllm=cfg.vllm, reward=reward,
                weight_dir=(cfg.vllm.weight_dir or out_dir / "vllm-weights") if cfg.vllm is not None else None,
            )
        except unreachable_server_errors(cfg.vllm) as exc:  # TRL's client gave up waiting for the vLLM server
            raise TrainingSetupError(f"grpo.vllm.url: {exc}") from None
        result = trainer.train()
    aio.run(shared_judge.aclose())
    checkpoint = out_dir / "checkpoint"
    trainer.save_model(str(checkpoint))
    processor.save_pretrained(str(checkpoint))
    steps = [json.loads(line) for line in dynamics_path.read_text().splitlines()] if dynamics_path.exists() else []
    return {
        "checkpoint": str(checkpoint),
        "prompts": len(dataset),
        "steps": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "rewards": [s["reward"] for s in steps],
        "tool_calls_per_trajectory": [s.get("tools/calls_per_trajectory") for s in steps],
        "warnings": callback.warnings,
        "frozen_vision_tensors": frozen,
        "dynamics_path": str(dynamics_path),
        "seconds": round(time.time() - started, 3),
    }
