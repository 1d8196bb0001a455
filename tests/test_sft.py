"""Cold-start SFT: the stock TRL trainer on our shards, loss on the model's own tokens only."""

import pytest
import torch

from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig
from train.sft import SFTStageConfig, load_trajectories, run_sft, sft_arguments


@pytest.fixture(scope="module")
def trajectories(world, curated, replay_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-data") / "synthesize"
    cfg = SynthConfig(teacher_url=replay_url, pools=["coldstart", "rl", "eval"], attempts=1)
    run_synthesize(cfg, curated, out, SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"]))
    return out


def test_labels_cover_assistant_tokens_only(tiny_model, trajectories, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    dataset = load_trajectories([trajectories])
    processor = AutoProcessor.from_pretrained(tiny_model)
    trainer = SFTTrainer(
        model=AutoModelForImageTextToText.from_pretrained(tiny_model),
        args=sft_arguments(SFTStageConfig(), tmp_path),  # the stage's own arguments
        train_dataset=dataset,
        processing_class=processor,
    )
    tokenizer = processor.tokenizer
    for example in dataset.select(range(3)):
        batch = trainer.data_collator([example])
        labels, ids = batch["labels"][0], batch["input_ids"][0]
        trained = tokenizer.decode(ids[labels != -100], skip_special_tokens=False)
        assistant = [m["content"][0]["text"] for m in example["messages"] if m["role"] == "assistant"]
        assert trained.replace("<|im_end|>", "").replace("\n", "") == "".join(assistant).replace("\n", "")
        masked = tokenizer.decode(ids[labels == -100], skip_special_tokens=False)
        assert "Code execution result" in masked or "<tool_response>" in masked  # observations are masked
        assert "careful visual reasoning agent" in masked  # so is the system prompt
        assert trained.count("<|im_end|>") == len(assistant)  # the model learns to stop
        assert "pixel_values" in batch and batch["pixel_values"].shape[0] > 0


def test_run_sft_trains_saves_and_keeps_the_vision_tower_frozen(tiny_model, trajectories, tmp_path):
    from transformers import AutoModelForImageTextToText

    cfg = SFTStageConfig(learning_rate=5e-3, max_steps=6, logging_steps=2)
    summary = run_sft(cfg, tiny_model, [trajectories], tmp_path)
    assert summary["steps"] == 6 and summary["frozen_vision_tensors"] > 0
    # The training step each loss was logged at, for the report's SFT curve (review m6).
    assert summary["loss_steps"] == [2, 4, 6] and len(summary["losses"]) == 3
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(summary["checkpoint"]).state_dict()
    vision = [k for k in before if ".visual." in f".{k}"]
    text = [k for k in before if "language_model" in k and "layers" in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in text)


def test_a_stock_trl_sft_step_on_the_shards_with_no_project_code(tiny_model, trajectories, tmp_path):
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.load_dataset("parquet", data_files=str(trajectories / "part-*.parquet"), split="train")
    dataset = dataset.select_columns(["messages", "images"])
    trainer = SFTTrainer(
        model=AutoModelForImageTextToText.from_pretrained(tiny_model),
        args=SFTConfig(output_dir=str(tmp_path), max_steps=1, max_length=None, report_to="none", use_cpu=True),
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(tiny_model),
    )
    assert trainer.train().global_step == 1


def test_lora_adapters_train_the_language_model_and_are_merged(tiny_model, trajectories, tmp_path):
    from transformers import AutoModelForImageTextToText

    from train.sft import LoraSettings

    cfg = SFTStageConfig(learning_rate=5e-2, max_steps=3, lora=LoraSettings(r=4, alpha=8))
    summary = run_sft(cfg, tiny_model, [trajectories], tmp_path)
    before = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(summary["checkpoint"]).state_dict()
    assert set(after) == set(before)  # merged: a plain model, no adapter weights left
    assert all(torch.equal(before[k], after[k]) for k in before if ".visual." in f".{k}")
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k and "proj" in k)


def test_sft_resumes_from_its_last_checkpoint(tiny_model, trajectories, tmp_path):
    first = run_sft(SFTStageConfig(learning_rate=5e-3, max_steps=2, save_steps=2), tiny_model, [trajectories], tmp_path)
    assert first["resumed_from"] is None and (tmp_path / "trainer" / "checkpoint-2").is_dir()
    again = run_sft(SFTStageConfig(learning_rate=5e-3, max_steps=4, save_steps=2), tiny_model, [trajectories], tmp_path)
    assert again["resumed_from"].endswith("checkpoint-2") and again["steps"] == 4


def test_sft_on_the_papers_base_family(tiny_qwen25, trajectories, tmp_path):
    """Qwen2.5-VL (the paper's base), tiny: the same stage, assistant-only loss, frozen vision tower."""
    summary = run_sft(SFTStageConfig(learning_rate=5e-3, max_steps=2), tiny_qwen25, [trajectories], tmp_path)
    assert summary["steps"] == 2 and summary["frozen_vision_tensors"] > 0 and summary["train_loss"] > 0


def test_a_tiny_sft_run_prints_no_deprecated_checkpointing_warning(tiny_model, trajectories, tmp_path):
    """transformers 5 renamed gradient checkpointing to activation checkpointing (the old names
    warn with a FutureWarning). Our TRL arguments use the new name; the old names TRL and peft still
    read inside (`is_gradient_checkpointing`, ...) are filtered where we run the trainer, exactly
    those: another FutureWarning still shows."""
    import warnings

    from train.sft import LoraSettings, quiet_checkpointing_aliases

    def deprecated(caught):
        return [str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = sft_arguments(SFTStageConfig(gradient_checkpointing=False), tmp_path / "args")
        assert (args.activation_checkpointing, args.gradient_checkpointing) == (False, False)  # the old name mirrors the new
        # With LoRA: peft reads `is_gradient_checkpointing` when it wraps the model.
        cfg = SFTStageConfig(max_steps=1, gradient_checkpointing=True, lora=LoraSettings(r=4, alpha=8))
        assert run_sft(cfg, tiny_model, [trajectories], tmp_path / "sft")["steps"] == 1
    assert deprecated(caught) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_checkpointing_aliases():
            warnings.warn("`activation_checkpointing_foo` is deprecated and will be removed in v6", FutureWarning)
    assert deprecated(caught) == ["`activation_checkpointing_foo` is deprecated and will be removed in v6"]


def test_a_max_length_that_cuts_image_tokens_is_refused_before_training_naming_the_setting(tiny_model, trajectories, tmp_path):
    import re

    from train.sft import TrainingDataError

    with pytest.raises(TrainingDataError) as raised:
        run_sft(SFTStageConfig(max_length=16, max_steps=1), tiny_model, [trajectories], tmp_path / "short")
    message = str(raised.value)
    found = re.fullmatch(r"sft.max_length: 16 tokens would cut (\d+) of (\d+) rows inside their image tokens \(row '[^']+' needs (\d+) "
                         r"tokens to hold its images\); set it to at least (\d+), or leave it unset to never cut", message)
    assert found, message
    cut, rows, first, enough = map(int, found.groups())
    assert 0 < cut <= rows and 16 < first <= enough
    with pytest.raises(TrainingDataError, match=f"sft.max_length: {enough - 1} tokens would cut [0-9]+ of"):
        run_sft(SFTStageConfig(max_length=enough - 1, max_steps=1), tiny_model, [trajectories], tmp_path / "one-short")
    # the length it names holds every row's images: TRL's collator no longer finds a mismatch
    summary = run_sft(SFTStageConfig(max_length=enough, max_steps=1, gradient_checkpointing=False), tiny_model, [trajectories], tmp_path / "enough")
    assert summary["steps"] == 1


def test_the_instruct_stages_sft_settings_are_named_under_base(tiny_model, tmp_path):
    """Review r5 #23: SFT settings inside `base:` (the instruct stage) were named `sft.`, the main
    stage's section; the instruct stage runs for real here (curate, the replay server's instruct
    persona, SFT), and SFT refuses its max_length before training."""
    from curation.learnable_world import LearnableWorldConfig, generate_learnable_world
    from tests.conftest import start_replay
    from train.base import BaseStageConfig, run_base
    from train.sft import TrainingDataError

    world = generate_learnable_world(tmp_path / "world", LearnableWorldConfig(per_family=1, instruct_per_family=2,
                                                                              families=("perception",), distractor_docs=2, long_cot=0))
    server, url = start_replay(world, tmp_path)
    try:
        cfg = BaseStageConfig(concurrency=2, sft=SFTStageConfig(max_length=16, max_steps=1))
        with pytest.raises(TrainingDataError) as raised:
            run_base(cfg, tiny_model, world["instruct_path"], url, tmp_path / "base")
    finally:
        server.stop()
    assert str(raised.value).startswith("base.sft.max_length: 16 tokens would cut ")


def test_lora_target_modules_that_match_nothing_are_named_with_the_layers_there_are(tiny_model, trajectories, tmp_path):
    from train.sft import LoraSettings, TrainingSetupError

    cfg = SFTStageConfig(max_steps=1, lora=LoraSettings(r=4, target_modules=["nonexistent_proj"]))
    with pytest.raises(TrainingSetupError) as raised:
        run_sft(cfg, tiny_model, [trajectories], tmp_path)
    assert str(raised.value) == ("sft.lora.target_modules: ['nonexistent_proj'] matches no linear layer of the language model (the vision "
                                 "tower is never adapted); its layers are named down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                                 "up_proj, v_proj, or give 'all-linear'")


@pytest.mark.parametrize(("samples", "reasons", "why"), [
    (0, {}, "synthesize kept 0 trajectories of 0 cold-start samples (select's cold-start pool was empty); give the world more "
            "samples (a larger world.per_family) or check select's pools (`status` counts them)"),
    (3, {"wrong_answer": 2, "malformed": 1}, "synthesize kept 0 trajectories of 3 cold-start samples (rejected: wrong_answer 2, "
                                             "malformed 1); see the rejects' reasons in {out}/rejects, or give the world more "
                                             "samples (a larger world.per_family)"),
])
def test_no_trajectories_says_why_from_the_synthesize_manifest(tmp_path, samples, reasons, why):
    """Review s15: `no trajectory shards in DIR` alone, when synthesize ran and kept nothing."""
    from curation.shards import ShardWriter
    from synth.trajectory import TRAJECTORY_SCHEMA
    from train.sft import TrainingDataError, load_trajectories

    out = tmp_path / "synthesize"
    with ShardWriter(out, TRAJECTORY_SCHEMA) as writer:
        writer.manifest_extra.update({"stage": "synthesize", "counts": {"samples": samples, "kept": 0, "rejected": sum(reasons.values())},
                                      "reject_reasons": reasons})
    with pytest.raises(TrainingDataError) as raised:
        load_trajectories([out])
    assert str(raised.value) == f"no trajectory shards in {out}: " + why.format(out=out)


def test_no_trajectories_without_a_manifest_names_the_directory(tmp_path):
    from train.sft import TrainingDataError, load_trajectories

    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError) as raised:
        load_trajectories([tmp_path / "empty"])
    assert str(raised.value) == f"no trajectory shards in {tmp_path / 'empty'}"
