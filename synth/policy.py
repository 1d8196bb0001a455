"""Chat policies: what the agent loop asks for the next assistant turn.

- `EndpointPolicy`: any OpenAI-compatible server (vLLM, OpenAI, the replay server) through the
  `openai` client; images go as base64 data URLs in the OpenAI vision format.
- `TransformersPolicy`: a local Hugging Face vision-language model (evaluation of a checkpoint
  without a server).

Both take the loop's messages in TRL's conversational format plus the images in order.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import openai
from openai.types.chat import ChatCompletion
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from synth.protocol import find_stop, infer_matched_stop
from synth.retry import wait_retry_after


@dataclass
class Generation:
    """One assistant turn as a policy produced it.

    `text` starts with the request's `prefix` (a pre-filled `<think>`), so it is the whole turn.
    `finish_reason` is `stop` (a stop string or the end of sequence) or `length`; `matched_stop` is
    the stop string that ended the turn, or None when it ended on end-of-sequence or the length
    limit: `synth.protocol.close_stopped_turn` closes a tag only when a stop string really fired."""

    text: str
    finish_reason: str  # stop | length
    tokens: int = 0  # completion tokens (the endpoint's count, or the local model's)
    matched_stop: str | None = None


class ChatPolicy(Protocol):
    name: str

    async def generate(
        self,
        messages: list[dict[str, Any]],
        images: list[bytes],
        *,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        seed: int | None = None,
        prefix: str = "",
        tag: str = "",
    ) -> Generation: ...


def image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


@functools.lru_cache(maxsize=4096)
def data_url(data: bytes) -> str:
    # Every turn resends the conversation's images: encode each once (bytes cache their hash).
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"


def to_openai_messages(messages: list[dict[str, Any]], images: list[bytes]) -> list[dict[str, Any]]:
    """TRL conversational messages + ordered images → OpenAI chat messages with data URLs."""
    pending = iter(images)
    converted = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": data_url(next(pending))}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        if message["role"] != "user" or all(p["type"] == "text" for p in parts):
            converted.append({"role": message["role"], "content": "".join(p.get("text", "") for p in parts)})
        else:
            converted.append({"role": message["role"], "content": parts})
    return converted


class EmptyResponse(Exception):
    """The endpoint answered 200 with no content: retried like a transient failure."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError, EmptyResponse)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(exc, openai.APIResponseValidationError):
        return True  # a malformed body
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, ValueError)  # JSON that does not decode


def _matched_stop(choice: Any, text: str, finish_reason: str, stop: list[str]) -> str | None:
    """Which stop string ended an endpoint's turn. vLLM names it in the choice's `stop_reason` (the
    stop string, a stop token id, or null for end-of-sequence); a server without that field leaves
    it to `synth.protocol.infer_matched_stop`."""
    if finish_reason != "stop":
        return None
    extra = choice.model_extra or {}
    if "stop_reason" in extra:
        reason = extra["stop_reason"]
        return reason if isinstance(reason, str) and reason in stop else None
    return infer_matched_stop(text, stop)


# vLLM drops special tokens from the text it returns unless told not to, and the protocol's tags are
# special tokens in Qwen's vocabularies: `<think>` vanishes and a stop on `</tool_call>` never fires.
# Not `include_stop_str_in_output`: with special tokens kept, it also appends the end-of-turn token's
# text (`<|im_end|>`) to every turn that ends on it; vLLM strips the stop string and names it in the
# choice's `stop_reason` instead. Sent to vLLM alone: other servers (OpenAI's) refuse fields they do not know.
VLLM_PROTOCOL_FIELDS = {"skip_special_tokens": False}


class EndpointPolicy:
    """A model behind an OpenAI-compatible endpoint.

    Requests retry on 429 (honouring Retry-After), 5xx, connection errors, time-outs, malformed and
    empty responses, with exponential backoff and jitter; `max_in_flight` bounds concurrent requests.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        max_in_flight: int = 256,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.name = model
        self.model = model
        self.max_retries = max_retries
        self.backoff_max_s = backoff_max_s
        self.sent = 0  # requests asked for (retries counted apart)
        self.retries = 0
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._server_fields: dict[str, Any] | None = None  # VLLM_PROTOCOL_FIELDS for a vLLM server, once known
        self._server_known = asyncio.Lock()
        # Retries live in one place, below, so every cause is counted; the client itself does none.
        # aiohttp underneath: httpx's own pool spends most of its time matching requests to
        # connections once there are hundreds of them in flight.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0,
            http_client=openai.DefaultAioHttpClient(timeout=timeout_s),
        )

    async def _complete(self, request: dict[str, Any], prefix: str = "") -> Generation:
        # `post` is the client's documented route for a plain JSON body; `chat.completions.create`
        # would first walk the whole request against its TypedDicts, which costs more CPU than the
        # rest of the request together once a conversation carries several images.
        async with self._in_flight:
            response = await self._client.post("/chat/completions", body=request, cast_to=ChatCompletion)
        if not response.choices:
            raise EmptyResponse("no choices in the response")
        choice = response.choices[0]
        if not (choice.message.content or "").strip():
            raise EmptyResponse("empty content")
        tokens = response.usage.completion_tokens if response.usage else 0
        finish = choice.finish_reason or "stop"
        text = choice.message.content
        return Generation(prefix + text, finish, tokens or 0, matched_stop=_matched_stop(choice, text, finish, request.get("stop") or []))

    async def _protocol_fields(self) -> dict[str, Any]:
        """What a turn of the protocol adds to the request for this server: asked once (vLLM lists its
        models as `owned_by: vllm`)."""
        if self._server_fields is not None:
            return self._server_fields
        async with self._server_known:
            if self._server_fields is None:
                try:
                    models = (await self._client.models.list()).data
                except openai.APIStatusError as exc:
                    if _retryable(exc):
                        raise
                    models = []  # a server that lists no models is no vLLM
                self._server_fields = VLLM_PROTOCOL_FIELDS if any(m.owned_by == "vllm" for m in models) else {}
        return self._server_fields

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        """The next assistant turn. A `prefix` (a pre-filled `<think>`) goes as a partial assistant
        message that the server continues (vLLM's `continue_final_message`); the returned text
        starts with it."""
        converted = to_openai_messages(messages, images)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": converted,
            "stop": list(stop) or None,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if prefix:
            request["messages"] = [*converted, {"role": "assistant", "content": prefix}]
            request.update(continue_final_message=True, add_generation_prompt=False)
        self.sent += 1
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1), wait=wait_retry_after(self.backoff_max_s), retry=retry_if_exception(_retryable), reraise=True
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                if stop:  # a protocol turn: its tags must survive
                    request.update(await self._protocol_fields())
                return await self._complete(request, prefix)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.close()


def local_turn(tokenizer, new_tokens: list[int], stop: list[str], prefix: str = "") -> Generation:
    """A locally generated turn from its new token ids: cut at the end token (or padding), or just
    after the stop string that ended it, which is then `matched_stop` (never for an end token)."""
    ends = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
    eos_at = next((i for i, t in enumerate(new_tokens) if t in ends), None)
    text = tokenizer.decode(new_tokens[:eos_at], skip_special_tokens=False)
    hit = find_stop(text, stop) if eos_at is None else None
    if hit is not None:  # generation stops at the token that completes a stop string: keep up to it
        text = text[: hit[0]]
    ended = eos_at is not None or hit is not None
    return Generation(prefix + text, "stop" if ended else "length", len(new_tokens), matched_stop=hit[1] if hit else None)


class TransformersPolicy:
    """A local vision-language model: `AutoModelForImageTextToText` and `AutoProcessor`."""

    def __init__(self, model_dir: str | Path, name: str | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = name or str(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir).to(self.device).eval()
        self._lock = threading.Lock()  # one generate at a time on a shared model

    def _generate_sync(self, messages, images, stop, max_tokens, temperature, seed, prefix) -> Generation:
        import torch
        from PIL import Image

        pil_images = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
        inputs = self.processor(text=[prompt], images=pil_images or None, return_tensors="pt").to(self.device)
        tokenizer = self.processor.tokenizer
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "stop_strings": list(stop), "tokenizer": tokenizer}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False)
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(**inputs, **kwargs)
        return local_turn(tokenizer, output[0, inputs["input_ids"].shape[1] :].tolist(), stop, prefix)

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        return await asyncio.to_thread(self._generate_sync, messages, images, stop, max_tokens, temperature, seed, prefix)

    async def aclose(self) -> None:
        return None
