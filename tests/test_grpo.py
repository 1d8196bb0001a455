"""GRPO with live tool rollouts: observation tokens masked, sampled tokens kept as sampled, tool
images in the training forward pass with their placeholders aligned, one real training step."""

import json

import pytest

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import read_table
from synth.runtime import aio
from synth.runtime.agent import AgentConfig, open_toolbox, run_episode
from synth.tools.search import SearchConfig
from train.rollout import TokenPolicy, image_token_count


class ScriptedTokenPolicy(TokenPolicy):
    """The tiny model's processor and template, with the teacher's turns as the "sampled" tokens,
    spelled one character per token: a tokenization the tokenizer itself would never produce, so
    any decode-and-re-encode would show."""

    scripts: dict[str, list[str]] = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sampled: dict[str, list[list[int]]] = {}  # per episode, the ids of each turn

    def sample(self, inputs, *, stop, max_tokens, temperature, seed, tags):
        batch = []
        for tag in tags:
            turns = self.scripts[tag.rsplit("/", 1)[0]]
            done = self.sampled.setdefault(tag, [])
            turn = turns[min(len(done), len(turns) - 1)]
            ids = [i for ch in turn for i in self.tokenizer(ch, add_special_tokens=False)["input_ids"]]
            if not any(turn.endswith(s) for s in stop):
                ids.append(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
            done.append(ids)
            batch.append(ids)
        return batch


@pytest.fixture(scope="module")
def scripted(world):
    scripts = {}
    for line in open(world["scripts_path"]):
        script = json.loads(line)
        scripts[script["sample_id"]] = script["teacher"]
    ScriptedTokenPolicy.scripts = scripts
    return ScriptedTokenPolicy


def perception_sample(curated) -> Sample:
    rows = [r for r in read_table(curated, SAMPLE_SCHEMA).to_pylist() if r["category"] == "perception"]
    return Sample.from_row(rows[0])


def test_rollout_tokens_masks_and_images(world, curated, tiny_model, scripted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    policy = scripted(model, processor)
    sample = perception_sample(curated)
    agent = AgentConfig(max_turns=4, max_tokens_per_turn=512)
    with open_toolbox(agent, SearchConfig()) as tools:
        row = aio.run(run_episode(sample, policy, tools, agent, attempt=0))
    episode = policy.take(f"{sample.id}/0")

    assert row["correct"] and any(c["tool"] == "python" and c["images"] for c in row["tool_calls"])
    # Token-in/token-out: the model's segments are exactly the sampled ids, in order.
    sampled = policy.sampled[f"{sample.id}/0"]
    segments, current = [], []
    for token, mask in zip(episode.completion_ids, episode.env_mask, strict=True):
        if mask:
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    segments += [current] if current else []
    assert segments == sampled
    assert sampled[0] != processor.tokenizer(row["messages"][2]["content"][0]["text"], add_special_tokens=False)["input_ids"]
    # Observation tokens are the environment's: masked, and they hold the tool's output.
    environment = processor.tokenizer.decode([t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if not m])
    assert "Code execution result" in environment and "<|im_start|>user" in environment
    assert "Code execution result" not in processor.tokenizer.decode(
        [t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if m])
    # Every image (input, then the crop the code showed) has exactly its placeholders.
    assert len(episode.images) == len(row["images"]) == 2
    pads = sum(1 for t in episode.prompt_ids + episode.completion_ids if t == policy.image_pad_id)
    assert pads == image_token_count(processor, episode.images)
    assert sum(1 for t in episode.completion_ids if t == policy.image_pad_id) == image_token_count(processor, episode.images[1:])


def test_think_prefilled_after_observations_is_the_environments(world, curated, tiny_model, scripted):
    """GRPO's default, as the reference's environment: after an observation the turn starts with a
    pre-filled `<think>`, tokenized as the environment's (masked), and the model continues after it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from train.grpo import GRPOStageConfig

    class Continuing(scripted):
        def sample(self, inputs, *, stop, max_tokens, temperature, seed, tags):
            turns = super().sample(inputs, stop=stop, max_tokens=max_tokens, temperature=temperature, seed=seed, tags=tags)
            think = self.tokenizer("<think>", add_special_tokens=False)["input_ids"]
            out = []
            for tag, ids in zip(tags, turns, strict=True):
                if len(self.sampled[tag]) > 1:  # after an observation the prefix is already there: the model goes on
                    spelled = [i for ch in "<think>" for i in self.tokenizer(ch, add_special_tokens=False)["input_ids"]]
                    ids = ids[len(spelled):] if ids[: len(spelled)] == spelled else ids
                    self.sampled[tag][-1] = ids
                out.append(ids)
            self.think_ids = think
            return out

    processor = AutoProcessor.from_pretrained(tiny_model)
    policy = Continuing(AutoModelForImageTextToText.from_pretrained(tiny_model), processor)
    sample = perception_sample(curated)
    agent = GRPOStageConfig().agent.model_copy(update={"max_turns": 4, "max_tokens_per_turn": 512})
    assert agent.think_prefix == "after_observation"
    with open_toolbox(agent, SearchConfig()) as tools:
        row = aio.run(run_episode(sample, policy, tools, agent, attempt=0))
    episode = policy.take(f"{sample.id}/0")
    assistant = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 2 and all(text.startswith("<think>") for text in assistant)
    assert row["correct"] and row["format_ok"] and row["reward"] == 1.0
    second = policy.sampled[f"{sample.id}/0"][1]
    start = max(i for i in range(len(episode.completion_ids)) if episode.completion_ids[i : i + len(second)] == second)
    before = episode.completion_ids[start - len(policy.think_ids) : start]
    assert before == policy.think_ids and not any(episode.env_mask[start - len(policy.think_ids) : start])


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_one_grpo_step_trains_with_tool_images_in_the_forward_pass(world, curated, family, scripted, tmp_path, monkeypatch, request):
    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    from train.grpo import GRPOStageConfig, run_grpo

    tiny_model = request.getfixturevalue("tiny_model" if family == "qwen3_vl" else "tiny_qwen25")
    base = Qwen3VLModel if family == "qwen3_vl" else Qwen2_5_VLModel
    seen_grids = []
    original = base.get_image_features

    def recording(self, pixel_values, image_grid_thw=None, **kwargs):
        if torch.is_grad_enabled():  # the training forward pass (rollouts and old log-probs run without grad)
            seen_grids.append(image_grid_thw.shape[0])
        return original(self, pixel_values, image_grid_thw, **kwargs)

    monkeypatch.setattr(base, "get_image_features", recording)
    import trl

    batches = []
    score = trl.GRPOTrainer._generate_and_score_completions

    def capturing(self, inputs):
        output = score(self, inputs)
        batches.append(output)
        return output

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", capturing)
    cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=1, num_generations=2, batch_size=2, max_samples=1,
                          learning_rate=1e-3, agent=AgentConfig(max_turns=4, max_tokens_per_turn=512, temperature=1.0))
    # The first sample of the curated shards: a perception one, whose script crops and shows an image.
    rows = [r for r in read_table(curated, SAMPLE_SCHEMA).to_pylist()]
    assert rows[0]["category"] == "perception"
    result = run_grpo(cfg, tiny_model, curated, tmp_path / "grpo", SearchConfig(corpus_path=world["corpus_path"],
                      image_corpus_path=world["image_corpus_path"]), policy_class=scripted)
    assert result["steps"] == 1
    assert seen_grids and max(seen_grids) == 4  # 2 rollouts x (input image + the crop the code showed)
    step = json.loads((tmp_path / "grpo" / "dynamics.jsonl").read_text().splitlines()[0])
    assert step["rewards/accuracy_reward/mean"] == 1.0 and step["rewards/format_reward/mean"] == 1.0
    assert step["tools/calls_per_trajectory"] == 1.0 and step["tools/python_per_trajectory"] == 1.0
    assert "accuracy/perception" in step and step["warnings"] == []
    assert step["tools/calls_per_trajectory/perception"] == 1.0  # each of the two rollouts ran one code cell
    assert (tmp_path / "grpo" / "checkpoint" / "config.json").is_file()
    # What the loss sees: TRL's loss mask is completion_mask * tool_mask, and the observation is out.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = batches[0]
    for ids, completion_mask, tool_mask in zip(batch["completion_ids"], batch["completion_mask"], batch["tool_mask"], strict=True):
        trained = tokenizer.decode([t for t, c, m in zip(ids.tolist(), completion_mask.tolist(), tool_mask.tolist(), strict=True) if c and m])
        masked = tokenizer.decode([t for t, c, m in zip(ids.tolist(), completion_mask.tolist(), tool_mask.tolist(), strict=True) if c and not m])
        assert "<code>" in trained and "<answer>" in trained and "Code execution result" not in trained
        assert "Code execution result" in masked and "<|image_pad|>" in masked


def test_batched_rollouts_generate_what_single_ones_do(curated, tiny_model):
    """Episodes waiting together are generated as one left-padded batch: greedy tokens must not change."""
    import asyncio

    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()
    rows = read_table(curated, SAMPLE_SCHEMA).to_pylist()
    samples = [Sample.from_row(next(r for r in rows if r["category"] == c)) for c in ("perception", "reasoning", "search")]

    def messages(sample):
        return [{"role": "system", "content": [{"type": "text", "text": "You are careful."}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]

    async def run(policy, together):
        calls = [policy.generate(messages(s), [s.images[0].bytes], stop=["</code>"], max_tokens=12, temperature=0.0, tag=s.id)
                 for s in samples]
        if together:
            return await asyncio.gather(*calls)
        return [await call for call in calls]

    single = TokenPolicy(model, processor)
    single.max_batch = 1
    batched = TokenPolicy(model, processor)
    alone = aio.run(run(single, together=False))
    together = aio.run(run(batched, together=True))
    assert [g.text for g in together] == [g.text for g in alone]
    assert [batched.episodes[s.id].completion_ids for s in samples] == [single.episodes[s.id].completion_ids for s in samples]
    assert len({len(single.episodes[s.id].prompt_ids) for s in samples}) > 1  # the batch really needed padding


def test_noop_code_cells_are_found():
    from synth.runtime.protocol import render_code_observation
    from train.grpo import noop_code_cells

    def text(t):
        return {"role": "user", "content": [{"type": "text", "text": t}]}

    row = {
        "messages": [text("system"), text("question"), text("turn 0"), text(render_code_observation("", "", 0)),
                     text("turn 1"), text(render_code_observation("42\n", "", 0)), text("turn 2"),
                     text(render_code_observation("", "", 1)), text("answer")],
        "tool_calls": [{"tool": "python", "outcome": "ok", "turn": 0, "images": 0}, {"tool": "python", "outcome": "ok", "turn": 1, "images": 0},
                       {"tool": "python", "outcome": "ok", "turn": 2, "images": 1}],
    }
    assert noop_code_cells(row) == (3, 1)


def test_a_grpo_step_prints_no_deprecated_checkpointing_warning(world, curated, tiny_model, scripted, tmp_path):
    """TRL's rollout and old-log-prob passes read `is_gradient_checkpointing` and call
    `gradient_checkpointing_disable` / `_enable` (FutureWarnings in transformers 5) on every step:
    filtered where we run the trainer, so a GRPO run's stderr has none of them."""
    import warnings

    from train.grpo import GRPOStageConfig, run_grpo

    cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=1, num_generations=2, batch_size=2, max_samples=1,
                          gradient_checkpointing=True, agent=AgentConfig(max_turns=4, max_tokens_per_turn=512, temperature=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_grpo(cfg, tiny_model, curated, tmp_path / "grpo", SearchConfig(corpus_path=world["corpus_path"],
                          image_corpus_path=world["image_corpus_path"]), policy_class=scripted)
    assert result["steps"] == 1
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)] == []


def test_a_launched_run_checks_the_generation_batch_on_its_own_processes(monkeypatch, tmp_path):
    """2 rollouts per device are whole groups of 4 on 2 processes, not on 3: refused before anything loads."""
    from train.grpo import GRPOStageConfig, run_grpo
    from train.sft import TrainingSetupError

    cfg = GRPOStageConfig(batch_size=2, num_generations=4)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TrainingSetupError) as raised:
        run_grpo(cfg, tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out")
    assert str(raised.value) == ("grpo.batch_size: batch_size × grad_accum × processes = 2 × 1 × 3 = 6 rollouts per step is not a whole "
                                 "number of GRPO groups of grpo.num_generations (4) rollouts; set batch_size to 4, or change num_generations")
    assert not (tmp_path / "out").exists()
