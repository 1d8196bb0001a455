"""Token-in/token-out rollouts for GRPO: the shared agent loop driving a local model by token ids.

`TokenPolicy` is a `ChatPolicy`, so GRPO rollouts run `synth.runtime.agent.run_episode` (the one agent
loop) with live tools. What it adds is the bookkeeping training needs:

- the model's tokens are kept exactly as sampled, never decoded and re-encoded: the loop gets the
  decoded text to parse, and the episode's ids grow by the sampled ids;
- only what the environment adds (the end of the model's turn, the observation turn with its
  image placeholders expanded by the processor, a forced prefix) is tokenized, and it is marked 0
  in `env_mask` so it never enters the loss;
- the episode's images (inputs, then what tools returned) stay in order with their placeholders,
  so the training forward pass sees the images the model saw.

`VLLMTokenPolicy` does the same with the tokens sampled by a vLLM server (TRL's server mode).
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from synth.runtime.policy import Generation
from synth.runtime.protocol import find_stop


class RolloutError(RuntimeError):
    """A rollout that cannot be trained on as it is (e.g. a chat template that rewrites history)."""


@dataclass
class EpisodeTokens:
    prompt_ids: list[int]
    images: list[Any]  # PIL images in order of their placeholders
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)  # 1: sampled by the model; 0: added by the environment
    # The sampler's log-probability of each completion token (0.0 for the environment's), where the
    # sampler reports them (vLLM): TRL's importance-sampling correction compares them with the policy's.
    logprobs: list[float] = field(default_factory=list)
    messages_seen: int = 0  # messages already in the ids (the assistant turn being generated excluded)
    vision: list[dict[str, Any]] = field(default_factory=list)  # the processor's pixel tensors, per encoded chunk

    def extend(self, ids: list[int], sampled: bool, logprobs: list[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([1 if sampled else 0] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


@functools.lru_cache(maxsize=512)
def _pil(data: bytes):
    # The rollouts of one prompt share its images: decode each once (bytes cache their hash).
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@dataclass
class _Request:
    messages: list[dict[str, Any]]
    images: list[bytes]
    stop: list[str]
    max_tokens: int
    temperature: float
    seed: int | None
    prefix: str
    tag: str
    future: asyncio.Future | None = None


class TokenPolicy:
    """A local vision-language model for rollouts, one token sequence per episode (`tag`).

    Episodes that ask for a turn at the same moment are generated together (left-padded, their
    images in order), as TRL batches its own generation; a batch uses its first request's seed, so
    batched rollouts are sampled, not bit-reproducible."""

    batch_window_s = 0.005
    max_batch = 64
    max_cached_prompts = 256

    def __init__(self, model, processor, name: str = "policy") -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.episodes: dict[str, EpisodeTokens] = {}
        self._prompts: dict[tuple[str, tuple[bytes, ...]], EpisodeTokens] = {}  # encoded prompts, by text and images
        self._lock = threading.Lock()  # one generate at a time on the shared model
        self._queue: list[_Request] = []
        self._drainer: asyncio.Future | None = None
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.end_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}
        # Placeholders stand for pixels the environment supplies: a sampled one would have no image
        # behind it in the training forward pass, so the model may not emit them.
        vision_tokens = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
        unknown = self.tokenizer.unk_token_id
        self.vision_ids = [i for i in self.tokenizer.convert_tokens_to_ids(list(vision_tokens)) if i is not None and i != unknown]

    def _render(self, messages: list[dict[str, Any]], **kwargs) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, **kwargs)

    def _encode(self, state: EpisodeTokens | None, text: str, images: list[Any]) -> list[int]:
        """Token ids of `text` with its image placeholders expanded; keeps the pixels for generation."""
        encoded = self.processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False)
        if images and state is not None:
            state.vision.append({k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")})
        return encoded["input_ids"][0].tolist()

    def _advance(self, messages: list[dict[str, Any]], images: list[bytes], tag: str) -> EpisodeTokens:
        """The episode's ids up to the generation prompt of the next assistant turn."""
        state = self.episodes.get(tag)
        if state is None:
            # A prompt's rollouts (GRPO's group) share its text and images: encode them once.
            text = self._render(messages, add_generation_prompt=True)
            key = (text, tuple(images))
            if key not in self._prompts:
                if len(self._prompts) >= self.max_cached_prompts:
                    self._prompts.pop(next(iter(self._prompts)))  # the oldest: a step's prompts come together
                pil = [_pil(b) for b in images]
                first = EpisodeTokens([], pil)
                first.prompt_ids = self._encode(first, text, pil)
                self._prompts[key] = first
            shared = self._prompts[key]
            state = EpisodeTokens(list(shared.prompt_ids), list(shared.images), vision=list(shared.vision), messages_seen=len(messages))
            self.episodes[tag] = state
            return state
        # Everything after the model's last turn: its end token, the observation turn, the next
        # generation prompt. The difference of two renderings, so any append-only template works.
        before = self._render(messages[: state.messages_seen + 1], continue_final_message=True)
        after = self._render(messages, add_generation_prompt=True)
        if not after.startswith(before):
            raise RolloutError("the chat template renders earlier turns differently once a turn is added; "
                               "token-in/token-out rollouts need an append-only template")
        new_images = [_pil(b) for b in images[len(state.images) :]]  # the tools' images since the last turn
        state.extend(self._encode(state, after[len(before):], new_images), sampled=False)
        state.images = state.images + new_images
        state.messages_seen = len(messages)
        return state

    def _prepare(self, request: _Request) -> EpisodeTokens:
        state = self._advance(request.messages, request.images, request.tag)
        if request.prefix:
            state.extend(self.tokenizer(request.prefix, add_special_tokens=False)["input_ids"], sampled=False)
        return state

    def _finish(self, state: EpisodeTokens, request: _Request, sampled: list[int], logprobs: list[float] | None = None) -> Generation:
        """Keep the model's tokens up to its end token (kept: the model chose it) or the padding after
        a stop string (dropped), within the request's own budget. The turn's `matched_stop` is the
        stop string its text reached, never set for a turn that ended on the end token."""
        ended = on_eos = False
        keep = len(sampled)
        for position, token in enumerate(sampled):
            if token == self.tokenizer.eos_token_id:
                keep, ended, on_eos = position + 1, True, True
                break
            if token in self.end_ids:
                keep = position
                break
        if keep > request.max_tokens:
            keep, ended, on_eos = request.max_tokens, False, False
        sampled = sampled[:keep]
        state.extend(sampled, sampled=True, logprobs=logprobs[:keep] if logprobs is not None else None)
        text = self.tokenizer.decode([t for t in sampled if t not in self.end_ids], skip_special_tokens=False)
        hit = None if on_eos else find_stop(text, request.stop)
        ended = ended or hit is not None
        return Generation(request.prefix + text, "stop" if ended else "length", len(sampled), matched_stop=hit[1] if hit else None)

    def _generate_batch(self, requests: list[_Request]) -> list[Generation]:
        """One left-padded `generate` for episodes waiting at the same time (same sampling settings)."""
        import torch

        with self._lock:
            states = [self._prepare(r) for r in requests]
            sequences = [s.prompt_ids + s.completion_ids for s in states]
            width = max(map(len, sequences))
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(q)) + q for q in sequences], device=self.model.device)
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in sequences], device=self.model.device)
            inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            chunks = [chunk for state in states for chunk in state.vision]
            if chunks:  # every episode's pixels, in sequence order, as the model matches them to placeholders
                for key in chunks[0]:
                    inputs[key] = torch.cat([chunk[key] for chunk in chunks]).to(self.model.device)
                inputs["mm_token_type_ids"] = (ids == self.image_pad_id).long() * mask
            first = requests[0]
            sampled = self.sample(inputs, stop=first.stop, max_tokens=max(r.max_tokens for r in requests),
                                  temperature=first.temperature, seed=first.seed, tags=[r.tag for r in requests])
            return [self._finish(state, request, tokens) for state, request, tokens in zip(states, requests, sampled, strict=True)]

    def sample(self, inputs: dict[str, Any], *, stop: list[str], max_tokens: int, temperature: float, seed: int | None,
               tags: list[str]) -> list[list[int]]:
        """The model's next tokens after each row of `inputs` (left-padded ids, mask, the pixels)."""
        import torch

        # Sampled from the policy's own distribution (no top-k / top-p from the model's generation
        # config), as TRL's GRPO samples: the loss assumes the rollouts came from the policy.
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id, "top_k": 0, "top_p": 1.0,
                                  "disable_compile": True}
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        if self.vision_ids:
            kwargs["suppress_tokens"] = self.vision_ids
        kwargs.update({"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False})
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            output = self.model.generate(**inputs, **kwargs)
        return output[:, inputs["input_ids"].shape[1] :].tolist()

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        """Queue the request; episodes that wait at the same moment are generated as one batch."""
        request = _Request(messages, images, list(stop), max_tokens, temperature, seed, prefix, tag,
                           asyncio.get_running_loop().create_future())
        self._queue.append(request)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        return await request.future

    async def _drain(self) -> None:
        while self._queue:
            await asyncio.sleep(self.batch_window_s)  # let the other episodes of this moment join
            pending, self._queue = self._queue, []
            groups: dict[tuple, list[_Request]] = {}
            for request in pending:
                groups.setdefault((request.temperature, tuple(request.stop)), []).append(request)
            for group in groups.values():
                for start in range(0, len(group), self.max_batch):
                    batch = group[start : start + self.max_batch]
                    try:
                        # In the loop's own thread, which is the trainer's: on a CPU, torch called from
                        # a second thread ran 1.7x slower (its OpenMP team competes with the first's
                        # spinning one). Tool calls go on in their executor threads meanwhile; episodes
                        # that ask for a turn during the batch join the next one.
                        results = self._generate_batch(batch)
                    except Exception as exc:  # every waiting episode learns why
                        for request in batch:
                            request.future.set_exception(exc)
                        continue
                    for request, result in zip(batch, results, strict=True):
                        request.future.set_result(result)

    def take(self, tag: str) -> EpisodeTokens:
        """The finished episode's tokens (and forget them)."""
        return self.episodes.pop(tag)

    async def aclose(self) -> None:
        return None


def place_image_features(features: dict[str, Any], token_ids: list[int], image_token_id: int) -> dict[str, Any]:
    """Point image features (rendered by the server in a throwaway conversation) at the runs of image
    tokens in `token_ids`, one run per image, in order."""
    runs, offset = [], 0
    for token, group in itertools.groupby(token_ids):
        length = sum(1 for _ in group)
        if token == image_token_id:
            runs.append({"offset": offset, "length": length})
        offset += length
    rendered = features["mm_placeholders"]["image"]
    if [r["length"] for r in runs] != [r["length"] for r in rendered]:
        raise RolloutError(f"the episode's image token runs {[r['length'] for r in runs]} do not match the server's images "
                           f"{[r['length'] for r in rendered]}: the trainer's processor and the server must use the same pixel budget")
    return {**features, "mm_placeholders": {**features["mm_placeholders"], "image": runs}}


class VLLMTokenPolicy(TokenPolicy):
    """Rollouts sampled by a vLLM server (TRL's server mode), token-in/token-out.

    Each turn sends the episode's ids as they stand (prompt, sampled ids, the environment's tokens)
    with the features of its images pointed at their placeholders, so the server tokenizes nothing;
    the sampled ids and their log-probabilities come back and are kept as they are. Requests go out
    concurrently (the server batches them) through TRL's `VLLMClient`, whose calls block, on
    `max_in_flight` threads. Image features are fetched once per set of images: a prompt's rollouts
    (GRPO's group) share its images' features, and an episode fetches again only when a tool added an
    image. Vision placeholders are banned by logit bias, as the local policy suppresses them."""

    def __init__(self, client, processor, name: str = "policy", max_in_flight: int = 64) -> None:
        super().__init__(None, processor, name)
        self.client = client
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="vllm-rollout")
        # The features of each set of images asked for by the episodes in flight, by the images' identities;
        # the images are held beside them, so no identity is reused while its entry lives.
        self._features: dict[tuple[int, ...], tuple[tuple[Any, ...], asyncio.Future]] = {}
        self._ban = {str(i): -100.0 for i in self.vision_ids}

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _image_features(self, state: EpisodeTokens) -> dict[str, Any] | None:
        if not state.images:
            return None
        images = tuple(state.images)
        key = tuple(map(id, images))
        if key not in self._features:  # the first asker fetches; the others, even while it is in flight, await its answer
            self._features[key] = (images, asyncio.ensure_future(self._call(self.client.image_features, [list(images)])))
        return (await self._features[key][1])[0]

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        request = _Request(messages, images, list(stop), max_tokens, temperature, seed, prefix, tag)
        state = self._prepare(request)
        ids = state.prompt_ids + state.completion_ids
        features = await self._image_features(state)
        extra: dict[str, Any] = {"stop": list(stop), "include_stop_str_in_output": True, "skip_special_tokens": False}
        if seed is not None:
            extra["seed"] = seed
        if self._ban:
            extra["logit_bias"] = self._ban
        output = await self._call(self.client.generate, [ids], features=None if features is None else [place_image_features(features, ids, self.image_pad_id)],
                                  n=1, temperature=temperature, top_p=1.0, top_k=0, min_p=0.0, max_tokens=max_tokens, logprobs=0,
                                  generation_kwargs=extra)
        logprobs = [position[0] for position in output["logprobs"][0]] if output.get("logprobs") else None
        return self._finish(state, request, output["completion_ids"][0], logprobs)

    def take(self, tag: str) -> EpisodeTokens:
        state = super().take(tag)
        if not self.episodes:  # the batch's rollouts are over: their images will not be asked for again
            self._features.clear()
        return state

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)


def image_token_count(processor, images: list[Any]) -> int:
    """Placeholder tokens the processor expands `images` into (what the forward pass must match)."""
    if not images:
        return 0
    grid = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    merge = getattr(processor.image_processor, "merge_size", 2) ** 2
    return int(sum(int(g.prod()) // merge for g in grid))


def encoded_image_tokens(processor, state: EpisodeTokens) -> tuple[int, int]:
    """(images, placeholder tokens) of the episode as it was encoded: from the grids the processor
    computed then, without a second pass over the pixels."""
    merge = getattr(processor.image_processor, "merge_size", 2) ** 2
    grids = [g for chunk in state.vision for g in chunk.get("image_grid_thw", [])]
    return len(grids), int(sum(int(g.prod()) // merge for g in grids))
