"""GRPO rollouts sampled by a vLLM server (TRL's server mode), through TRL's own `VLLMClient` over
HTTP against a stand-in for vLLM's routes (tests/vllm_double.py): no GPU or vLLM here.

What stands in for vLLM is the server and, in the training test, the NCCL weight transfer (which
needs CUDA): TRL's `init_communicator` and `update_named_params` are replaced by a copy of the
streamed tensors into the stand-in's model. Everything else is TRL's and ours as it runs on a cluster."""

import asyncio
import json

import pytest

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import read_table
from synth.runtime import aio
from synth.runtime.agent import AgentConfig, open_toolbox, run_episode
from synth.tools.search import SearchConfig
from tests.vllm_double import VLLMDouble, model_reloader, model_sampler
from train.rollout import RolloutError, VLLMTokenPolicy, image_token_count, place_image_features


@pytest.fixture
def vllm_available(monkeypatch):
    """TRL refuses to build its client unless `vllm` imports; the client's generation is plain HTTP."""
    import trl.generation.vllm_client as vllm_client
    import trl.generation.vllm_generation as vllm_generation
    import trl.import_utils as import_utils

    for module in (vllm_client, vllm_generation, import_utils):
        monkeypatch.setattr(module, "is_vllm_available", lambda *a, **k: True)


def one_char_per_token(tokenizer, text: str) -> list[int]:
    # A tokenization the tokenizer itself would never produce: any decode-and-re-encode would show.
    return [i for ch in text for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]


def test_vllm_rollout_is_token_in_token_out(world, curated, tiny_model, vllm_available):
    from transformers import AutoProcessor
    from trl.generation.vllm_client import VLLMClient

    processor = AutoProcessor.from_pretrained(tiny_model)
    tokenizer = processor.tokenizer
    sample = Sample.from_row(next(r for r in read_table(curated, SAMPLE_SCHEMA).to_pylist() if r["category"] == "perception"))
    script = next(json.loads(line)["teacher"] for line in open(world["scripts_path"]) if json.loads(line)["sample_id"] == sample.id)
    turns: list[tuple[list[int], list[float]]] = []

    def scripted(token_ids, images, params):
        text = script[min(len(turns), len(script) - 1)]
        ids = one_char_per_token(tokenizer, text)
        if not any(text.endswith(s) for s in params["stop"]):
            ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        logprobs = [-(len(turns) + 1) - k / 1000 for k in range(len(ids))]
        turns.append((ids, logprobs))
        return ids, logprobs

    double = VLLMDouble(scripted, processor).start()
    try:
        policy = VLLMTokenPolicy(VLLMClient(base_url=double.url), processor, max_in_flight=4)
        agent = AgentConfig(max_turns=4, max_tokens_per_turn=512, temperature=1.0)
        with open_toolbox(agent, SearchConfig()) as tools:
            row = aio.run(run_episode(sample, policy, tools, agent, attempt=0, seed=11))
        episode = policy.take(f"{sample.id}/0")
        aio.run(policy.aclose())
    finally:
        double.stop()

    assert row["correct"] and any(c["tool"] == "python" and c["images"] for c in row["tool_calls"])
    assert len(double.requests) == len(turns) >= 2
    # Token-in: every request is the episode's ids as they stood, with no re-tokenization.
    sequence = episode.prompt_ids + episode.completion_ids
    for request, (ids, _) in zip(double.requests, turns, strict=True):
        sent = request["token_ids"]
        assert sequence[: len(sent)] == sent and sequence[len(sent) : len(sent) + len(ids)] == ids
    # Token-out: the model's segments are exactly the sampled ids, their log-probs beside them.
    segments, current = [], []
    for token, logprob, mask in zip(episode.completion_ids, episode.logprobs, episode.env_mask, strict=True):
        if mask:
            current.append((token, logprob))
        else:
            assert logprob == 0.0
            if current:
                segments.append(current)
                current = []
    segments += [current] if current else []
    assert segments == [list(zip(ids, lps, strict=True)) for ids, lps in turns]
    # Images: the input, then the crop the code showed; the server checked every run of placeholders.
    assert [r["images"] for r in double.requests] == [1] + [2] * (len(turns) - 1)
    assert double.renders == [1, 2]  # features fetched again only when the crop added an image
    assert sum(1 for t in sequence if t == policy.image_pad_id) == image_token_count(processor, episode.images)
    # Sampling as the rollout asked: the protocol's stops, the episode's seed, vision tokens banned.
    params = double.requests[0]["sampling_params"]
    assert params["stop"] == ["</code>", "</tool_call>"] and params["include_stop_str_in_output"] and params["seed"] == 11
    assert params["temperature"] == 1.0 and params["max_tokens"] == 512 and params["n"] == 1
    assert {int(t) for t in params["logit_bias"]} == set(policy.vision_ids) and len(policy.vision_ids) >= 2


def test_a_prompts_rollouts_fetch_its_image_features_once(world, curated, tiny_model, vllm_available):
    from transformers import AutoProcessor
    from trl.generation.vllm_client import VLLMClient

    processor = AutoProcessor.from_pretrained(tiny_model)
    sample = Sample.from_row(next(r for r in read_table(curated, SAMPLE_SCHEMA).to_pylist() if r["category"] == "perception"))
    answer = next(json.loads(line)["teacher"] for line in open(world["scripts_path"]) if json.loads(line)["sample_id"] == sample.id)[-1]

    def answering(token_ids, images, params):
        ids = one_char_per_token(processor.tokenizer, answer) + [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        return ids, [-1.0] * len(ids)

    double = VLLMDouble(answering, processor).start()
    try:
        policy = VLLMTokenPolicy(VLLMClient(base_url=double.url), processor, max_in_flight=4)
        agent = AgentConfig(max_turns=2, max_tokens_per_turn=512, temperature=1.0)

        async def group():
            return await asyncio.gather(*(run_episode(sample, policy, tools, agent, attempt=i, seed=i) for i in range(4)))

        with open_toolbox(agent, SearchConfig()) as tools:
            rows = aio.run(group())
        for i in range(4):
            policy.take(f"{sample.id}/{i}")
        aio.run(policy.aclose())
    finally:
        double.stop()
    assert [row["correct"] for row in rows] == [True] * 4 and len(double.requests) == 4
    assert double.renders == [1]  # four rollouts of one prompt, in flight together: one fetch of its image's features


def test_features_must_match_the_prompts_images():
    features = {"mm_placeholders": {"image": [{"offset": 3, "length": 4}, {"offset": 103, "length": 1}]}}
    placed = place_image_features(features, [1, 9, 9, 9, 9, 2, 5, 9, 2], image_token_id=9)
    assert placed["mm_placeholders"]["image"] == [{"offset": 1, "length": 4}, {"offset": 7, "length": 1}]
    with pytest.raises(RolloutError, match="pixel budget"):
        place_image_features(features, [1, 9, 9, 2, 9, 2], image_token_id=9)


def test_grpo_steps_with_vllm_rollouts(world, curated, tiny_model, vllm_available, tmp_path, monkeypatch):
    import threading

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.generation.vllm_client import VLLMClient

    from train.grpo import GRPOStageConfig, VLLMRolloutConfig, run_grpo

    processor = AutoProcessor.from_pretrained(tiny_model)
    served = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()
    with torch.no_grad():  # the server starts from other weights: only the weight sync makes them the policy's
        for param in served.parameters():
            param.add_(0.05 * torch.randn_like(param))
    lock = threading.Lock()
    syncs: list[int] = []

    def receive(self, metadata, named_params):  # stands in for the NCCL broadcast into the server's workers
        params = dict(served.named_parameters())
        with lock, torch.no_grad():
            for name, tensor in named_params:
                params[name].copy_(tensor)
        syncs.append(len(metadata))

    monkeypatch.setattr(VLLMClient, "init_communicator", lambda self, device=0: None)
    monkeypatch.setattr(VLLMClient, "update_named_params", receive)
    double = VLLMDouble(model_sampler(served, processor, lock), processor).start()
    try:
        cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=2, num_generations=2, batch_size=2, max_samples=2,
                              learning_rate=1e-2, agent=AgentConfig(max_turns=2, max_tokens_per_turn=12, temperature=1.0),
                              vllm=VLLMRolloutConfig(url=double.url + "/v1", max_in_flight=4))
        result = run_grpo(cfg, tiny_model, curated, tmp_path / "grpo", SearchConfig(corpus_path=world["corpus_path"],
                          image_corpus_path=world["image_corpus_path"]))
    finally:
        double.stop()

    assert result["steps"] == 2
    trained = dict(AutoModelForImageTextToText.from_pretrained(tmp_path / "grpo" / "checkpoint").named_parameters())
    # Weights were pushed before each step's rollouts (every parameter, then the prefix cache reset).
    assert syncs == [len(trained)] * 2 and double.prefix_cache_resets == 2
    assert double.requests and all(r["images"] >= 1 for r in double.requests)
    steps = [json.loads(line) for line in (tmp_path / "grpo" / "dynamics.jsonl").read_text().splitlines()]
    for step in steps:
        # TRL compared the server's log-probs with the policy's on the same tokens: they agree because the
        # server had the step's weights and every log-prob sits on its own token (a shift would cost nats).
        # (The server bans vision placeholders, so it puts their small probability mass on the other tokens.)
        assert step["sampling/sampling_logp_difference/max"] < 0.02, step


def test_an_unreachable_vllm_server_is_named(curated, tiny_model, vllm_available, tmp_path):
    from synth.runtime.endpoint import free_port
    from train.grpo import GRPOStageConfig, VLLMRolloutConfig, run_grpo
    from train.sft import TrainingSetupError

    cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=1, num_generations=2, batch_size=2, max_samples=1,
                          vllm=VLLMRolloutConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=0))
    with pytest.raises(TrainingSetupError, match="grpo.vllm.url: The vLLM server can't be reached"):
        run_grpo(cfg, tiny_model, curated, tmp_path / "grpo")


def perturbed_copy(tiny_model):
    """The tiny model with other weights: only a weight sync makes it the policy."""
    import torch
    from transformers import AutoModelForImageTextToText

    served = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        for param in served.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return served


def test_grpo_steps_with_disk_weight_sync(world, curated, tiny_model, tmp_path):
    """`weight_sync: disk` with no `vllm` here (TRL's client is built without it): the policy is saved each
    step and the stand-in reloads the folder, as vLLM's development routes do."""
    import threading

    from transformers import AutoProcessor

    from train.grpo import GRPOStageConfig, VLLMRolloutConfig, run_grpo

    processor = AutoProcessor.from_pretrained(tiny_model)
    served, lock = perturbed_copy(tiny_model), threading.Lock()
    double = VLLMDouble(model_sampler(served, processor, lock), processor, reload=model_reloader(served, lock)).start()
    try:
        cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=2, num_generations=2, batch_size=2, max_samples=2,
                              learning_rate=1e-2, agent=AgentConfig(max_turns=2, max_tokens_per_turn=12, temperature=1.0),
                              vllm=VLLMRolloutConfig(url=double.url, max_in_flight=4, weight_sync="disk"))
        result = run_grpo(cfg, tiny_model, curated, tmp_path / "grpo", SearchConfig(corpus_path=world["corpus_path"],
                          image_corpus_path=world["image_corpus_path"]))
    finally:
        double.stop()

    weights = tmp_path / "grpo" / "vllm-weights"
    assert result["steps"] == 2
    # Before each step's rollouts: the policy saved, reloaded, the server's caches of the old weights dropped.
    assert double.reloads == [str(weights / "step-0"), str(weights / "step-1")]
    assert double.encoder_cache_resets == 2 and double.prefix_cache_resets == 2
    assert sorted(p.name for p in weights.iterdir()) == ["step-1"]  # the folder the server holds; older ones removed
    for line in (tmp_path / "grpo" / "dynamics.jsonl").read_text().splitlines():
        # The stand-in started from other weights: a reload that missed any tensor would cost nats here.
        assert json.loads(line)["sampling/sampling_logp_difference/max"] < 0.02


@pytest.mark.parametrize("device, routes, expected", [
    ("cpu", True, "tied to the embeddings"),  # vLLM's CPU backend never reloads a tied LM head
    ("cuda", False, "VLLM_SERVER_DEV_MODE=1"),  # no development routes: nothing can be reloaded
])
def test_disk_weight_sync_refuses_a_server_that_cannot_take_the_weights(curated, tiny_model, tmp_path, device, routes, expected):
    import threading

    from transformers import AutoProcessor

    from train.grpo import GRPOStageConfig, VLLMRolloutConfig, run_grpo
    from train.sft import TrainingSetupError

    processor = AutoProcessor.from_pretrained(tiny_model)
    served, lock = perturbed_copy(tiny_model), threading.Lock()
    double = VLLMDouble(model_sampler(served, processor, lock), processor, reload=model_reloader(served, lock) if routes else None,
                        device=device).start()
    try:
        cfg = GRPOStageConfig(pools=["coldstart", "rl", "eval"], max_steps=1, num_generations=2, batch_size=2, max_samples=1,
                              agent=AgentConfig(max_turns=1, max_tokens_per_turn=4),
                              vllm=VLLMRolloutConfig(url=double.url, weight_sync="disk"))
        with pytest.raises(TrainingSetupError, match=f"grpo.vllm.weight_sync.*{expected}"):
            run_grpo(cfg, tiny_model, curated, tmp_path / "grpo")
    finally:
        double.stop()
    assert double.requests == []  # refused before any rollout
