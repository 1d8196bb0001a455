"""Cold-start SFT with TRL's `SFTTrainer` on trajectory shards, loss on assistant tokens only.

Trajectory shards are already in TRL's conversational format (`messages` with image
placeholders, `images`), so the stock trainer and collator read them as they are.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from curation.datasets_quiet import builder_error_lines_off, datasets_progress_bars_off
from curation.shards import CorruptManifest, read_manifest, shard_files
from curation.strict_config import Seed, StrictConfig


# transformers' schedules that need no setting we do not expose (`cosine_with_min_lr` wants a minimum,
# `reduce_lr_on_plateau` an eval metric): a schedule outside these fails in the trainer, not at load time.
LrScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"]


def check_max_steps(value: int) -> int:
    """A training length setting's `max_steps`: -1 (train for `epochs`) or a number of steps > 0. 0
    would train nothing and still mark the stage complete. Raises `ValueError` with the rule."""
    if value == 0 or value < -1:
        raise ValueError(f"{value} steps: give a number of steps > 0, or -1 to train for `epochs`")
    return value


class LoraSettings(StrictConfig):
    """LoRA adapters on the language model (peft); merged into the weights when training ends."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)  # a probability: 1 would drop every adapter activation
    target_modules: str | list[str] = "all-linear"


class SFTStageConfig(StrictConfig):
    model_path: str | None = None  # a local dir or hub id; None: the flow builds the tiny model
    learning_rate: float = Field(1e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs; -1: train for epochs
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr_scheduler: LrScheduler = "cosine"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    # None: never cut. A length that would cut a row inside its image tokens is refused before training (`check_max_length`).
    max_length: int | None = Field(None, ge=1)
    freeze_vision: bool = True  # the paper freezes the vision tower and projector
    max_pixels: int | None = Field(None, ge=1)  # the image pixel budget (the paper's 512×512 = 262144); None: the processor's own
    logging_steps: int = Field(5, ge=1)
    seed: Seed = 0
    bf16: bool = False
    gradient_checkpointing: bool = True  # TRL's default: recompute activations in the backward pass (memory for time); off pays for tiny models
    lora: LoraSettings | None = None  # None: full fine-tune (the paper)
    # Checkpoint every N steps under <out>/trainer; None: only the final model. TRL needs N ≥ 1 (0 or
    # a negative number had loaded and silently meant "never").
    save_steps: int | None = Field(None, ge=1)
    resume: bool = True  # continue from the newest checkpoint under <out>/trainer when there is one

    max_steps_rule = field_validator("max_steps")(check_max_steps)


class TrainingDataError(ValueError):
    """Training data that cannot be used; names the directory."""


class TrainingSetupError(RuntimeError):
    """A training setup that cannot start as configured (a missing package, an unreachable server); says what to do."""


def _why_no_trajectories(directory: str | Path) -> str | None:
    """Why a synthesize output holds no trajectory, from its manifest's counts (`samples`, `kept`,
    `reject_reasons`), as one clause with what to do; None when it has no readable manifest of the
    synthesize stage (then only the directory can be named)."""
    try:
        manifest = read_manifest(directory)
    except CorruptManifest:
        return None
    counts = manifest.get("counts") if manifest and manifest.get("stage") == "synthesize" else None
    if not isinstance(counts, dict) or not isinstance(counts.get("samples"), int) or not isinstance(counts.get("kept"), int):
        return None
    samples, kept = counts["samples"], counts["kept"]
    head = f"synthesize kept {kept} trajectories of {samples} cold-start sample{'s' if samples != 1 else ''}"
    if samples == 0:
        return (f"{head} (select's cold-start pool was empty); give the world more samples (a larger world.per_family) "
                "or check select's pools (`status` counts them)")
    reasons = manifest.get("reject_reasons")
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3] if isinstance(reasons, dict) and all(
        isinstance(v, int) for v in reasons.values()) else []
    rejected = f" (rejected: {', '.join(f'{name} {n}' for name, n in top)})" if top else ""
    return (f"{head}{rejected}; see the rejects' reasons in {Path(directory) / 'rejects'}, or give the world more samples "
            "(a larger world.per_family)")


def load_trajectories(trajectory_dirs: list[str | Path], columns: tuple[str, ...] = ("messages", "images")):
    """Trajectory shards as a `datasets.Dataset` with just `columns` (TRL's `messages` and `images` by default).
    Raises `TrainingDataError` when the directories hold no shard, one line that says why where a
    synthesize manifest's counts tell it (0 kept of N cold-start samples, the top reject reasons)."""
    import datasets

    files = [str(f) for d in trajectory_dirs for f in shard_files(d)]
    if not files:
        why = "; ".join(filter(None, (_why_no_trajectories(d) for d in trajectory_dirs)))
        raise TrainingDataError(f"no trajectory shards in {', '.join(map(str, trajectory_dirs))}" + (f": {why}" if why else ""))
    with datasets_progress_bars_off(), builder_error_lines_off():
        dataset = datasets.load_dataset("parquet", data_files=files, split="train")
    return dataset.select_columns(list(columns))


def image_tokens_end(processor, messages: list[dict], images: list) -> int:
    """How many tokens a conversation needs to hold all its image tokens: the position after its last
    image token, tokenized as TRL's collator does (`prepare_multimodal_messages`, the chat template,
    no truncation); 0 without images."""
    import transformers
    from packaging.version import Version
    from trl.data_utils import prepare_multimodal_messages

    if not images:
        return 0
    tokenizing = {"add_special_tokens": False}  # as TRL's collator: the template already holds them
    # transformers 5.4 moved the processor's arguments under `processor_kwargs` (as TRL's collator does)
    template_kwargs = {"processor_kwargs": tokenizing} if Version(transformers.__version__) >= Version("5.4.0") else tokenizing
    output = processor.apply_chat_template(prepare_multimodal_messages(messages, images=images), tokenize=True, return_dict=True,
                                           **template_kwargs)
    ids = list(output["input_ids"][0])
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return max((i + 1 for i, token in enumerate(ids) if token == image_id), default=0)


def check_max_length(dataset, processor, max_length: int | None, setting: str = "sft") -> None:
    """Refuse an `sft.max_length` that would cut a row inside its image tokens (transformers then
    stops the run with "Mismatch in `image` token count"). `dataset` has `id`, `messages`, `images`.
    Raises `TrainingDataError` naming the setting (under `setting`, the SFT section's path: `sft`, or
    `base.sft` for the instruct stage), a row, and the length every row fits in. Each image row is
    tokenized once (with its images), so this runs only when a length is set."""
    if max_length is None:
        return
    needed = [(row["id"], image_tokens_end(processor, row["messages"], row["images"])) for row in dataset if row["images"]]
    cut = [(row_id, n) for row_id, n in needed if n > max_length]
    if cut:
        row_id, first = cut[0]
        raise TrainingDataError(
            f"{setting}.max_length: {max_length} tokens would cut {len(cut)} of {len(dataset)} rows inside their image tokens "
            f"(row {row_id!r} needs {first} tokens to hold its images); set it to at least {max(n for _, n in needed)}, "
            "or leave it unset to never cut")


def freeze_vision_tower(model) -> int:
    """Freeze the vision encoder and its merger/projector; return how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual."):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def trainer_arguments(config_class, cfg, out_dir: Path, **stage_specific):
    """A TRL config (`SFTConfig`, `GRPOConfig`) with the settings every stage shares: the schedule
    from the stage config, CPU when there is no GPU, no progress bars, checkpoints under `trainer/`."""
    import torch

    shared = {
        "output_dir": str(out_dir / "trainer"),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "lr_scheduler_type": cfg.lr_scheduler,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "no",
        "report_to": "none",
        "seed": cfg.seed,
        "bf16": cfg.bf16,  # explicit: TRL's default is bf16, which is slow on a CPU
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        # transformers 5 renamed the argument (`gradient_checkpointing` is a deprecated alias, with a
        # FutureWarning); set under the new name, the old one mirrors it for code that reads it.
        "activation_checkpointing": cfg.gradient_checkpointing,
    }
    return config_class(**(shared | stage_specific))


# The deprecated names TRL 1.16 and peft still use inside their trainers (`_unwrap_model_for_generation`,
# `disable_gradient_checkpointing`, `PeftModel.__init__`), each a FutureWarning from transformers 5
# on every GRPO step, and once per LoRA SFT run. Not our calls, so nothing of ours can move to the new
# names: `quiet_checkpointing_aliases` filters exactly these where we run a trainer. Drop it once TRL
# and peft read `is_activation_checkpointing`.
DEPRECATED_CHECKPOINTING_ALIASES = ("is_gradient_checkpointing", "gradient_checkpointing_disable", "gradient_checkpointing_enable")


@contextmanager
def quiet_checkpointing_aliases() -> Iterator[None]:
    """Ignore transformers' FutureWarning for `DEPRECATED_CHECKPOINTING_ALIASES` (`` `X` is
    deprecated and will be removed in v6``) inside the block, and nothing else: any other warning,
    a FutureWarning about another name included, still shows."""
    with warnings.catch_warnings():
        for name in DEPRECATED_CHECKPOINTING_ALIASES:
            warnings.filterwarnings("ignore", message=re.escape(f"`{name}` is deprecated and will be removed in v6"),
                                    category=FutureWarning, module=r"transformers\.modeling_utils")
        yield


def sft_arguments(cfg: SFTStageConfig, out_dir: Path):
    """TRL's `SFTConfig` for our stage config: assistant-only loss, never cutting image tokens."""
    from trl import SFTConfig

    return trainer_arguments(
        SFTConfig, cfg, out_dir,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        max_length=cfg.max_length,
        assistant_only_loss=True,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
    )


def latest_checkpoint(trainer_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` under the trainer's output directory."""
    found = [p for p in trainer_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None


def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    # The language model only: the vision tower and projector stay as they are (frozen).
    targets = settings.target_modules
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, task_type="CAUSAL_LM",
                      target_modules=targets, exclude_modules=r".*visual.*")


def unmatched_lora_targets(settings: LoraSettings, model, setting: str = "sft") -> str:
    """The message for `target_modules` that name no linear layer of the language model (peft's
    `NoMatchingPeftModuleError`): the setting (under `setting`, the SFT section's path), what it
    named, and the names there are."""
    import torch

    names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and ".visual." not in f".{name}."})
    return (f"{setting}.lora.target_modules: {settings.target_modules!r} matches no linear layer of the language model "
            f"(the vision tower is never adapted); its layers are named {', '.join(names)}, or give 'all-linear'")


def apply_pixel_budget(processor, max_pixels: int | None) -> None:
    """Cap the pixels of each image (Qwen-VL processors resize to fit `longest_edge` pixels)."""
    if max_pixels is None:
        return
    image_processor = processor.image_processor
    size = dict(getattr(image_processor, "size", None) or {})
    size["longest_edge"] = max_pixels
    size["shortest_edge"] = min(size.get("shortest_edge", max_pixels), max_pixels)
    image_processor.size = size
    if hasattr(image_processor, "max_pixels"):
        image_processor.max_pixels = max_pixels


def run_sft(cfg: SFTStageConfig, model_path: str | Path, trajectory_dirs: list[str | Path], out_dir: str | Path,
            callbacks: list | None = None, setting: str = "sft") -> dict[str, Any]:
    """SFT on the trajectory shards from `model_path`; `callbacks` are `transformers.TrainerCallback`s for the trainer.
    `setting`: where `cfg` is in the pipeline's config (`sft`, or `base.sft`), for the errors that name a setting."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    started = time.time()
    out_dir = Path(out_dir)
    rows = load_trajectories(trajectory_dirs, columns=("id", "messages", "images"))
    dataset = rows.select_columns(["messages", "images"])
    processor = AutoProcessor.from_pretrained(model_path)
    apply_pixel_budget(processor, cfg.max_pixels)
    check_max_length(rows, processor, cfg.max_length, setting)
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    frozen = freeze_vision_tower(model) if cfg.freeze_vision else 0
    resume_from = latest_checkpoint(out_dir / "trainer") if cfg.resume else None
    unmatched_targets: tuple[type[BaseException], ...] = ()
    if cfg.lora:
        from peft.utils.error import NoMatchingPeftModuleError

        unmatched_targets = (NoMatchingPeftModuleError,)
    with quiet_checkpointing_aliases():  # peft reads `is_gradient_checkpointing` when it wraps the model
        try:
            trainer = SFTTrainer(model=model, args=sft_arguments(cfg, out_dir), train_dataset=dataset, processing_class=processor,
                                 peft_config=lora_config(cfg.lora) if cfg.lora else None, callbacks=callbacks)
        except unmatched_targets:
            raise TrainingSetupError(unmatched_lora_targets(cfg.lora, model, setting)) from None
        result = trainer.train(resume_from_checkpoint=resume_from)
    checkpoint = out_dir / "checkpoint"
    if cfg.lora:  # later stages load a plain model: merge the adapters into the weights
        trainer.model.merge_and_unload().save_pretrained(str(checkpoint))
    else:
        trainer.save_model(str(checkpoint))
    processor.save_pretrained(str(checkpoint))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    losses = [entry["loss"] for entry in logged]
    return {
        "checkpoint": str(checkpoint),
        "rows": len(dataset),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "losses": losses,
        "loss_steps": [entry["step"] for entry in logged],  # the training step each loss was logged at
        "frozen_vision_tensors": frozen,
        "resumed_from": resume_from,
        "lora": cfg.lora is not None,
        "seconds": round(time.time() - started, 3),
    }
