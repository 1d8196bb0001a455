"""Chat policies: what the agent loop asks for the next assistant turn.

- `EndpointPolicy`: any OpenAI-compatible server (vLLM, OpenAI, `transformers serve`, the replay
  server) through the `openai` client; images go as base64 data URLs in the OpenAI vision format.
- `TransformersPolicy`: a local Hugging Face vision-language model (evaluation of a checkpoint
  without a server).

Both take the loop's messages in TRL's conversational format plus the images in order.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import httpx
import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, Field, StringConstraints, field_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from curation.strict_config import StrictConfig
from synth.runtime.protocol import find_stop, fold_turn, infer_matched_stop
from synth.runtime.retry import wait_retry_after

T = TypeVar("T")
# An endpoint's base URL in a stage's config: a URL pasted with a space or newline around it is that URL.
EndpointUrl = Annotated[str, StringConstraints(strip_whitespace=True)]
# Seconds one request may take: one rule for every stage's config and command line (`--request-timeout`).
MIN_REQUEST_TIMEOUT_S = 0.1


@dataclass
class Generation:
    """One assistant turn as a policy produced it.

    `text` starts with the request's `prefix` (a pre-filled `<think>`), so it is the whole turn.
    `finish_reason` is `stop` (a stop string or the end of sequence) or `length`; `matched_stop` is
    the stop string that ended the turn, or None when it ended on end-of-sequence or the length
    limit: `synth.runtime.protocol.close_stopped_turn` closes a tag only when a stop string really fired."""

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
    """The endpoint answered 200 with no content (and not because the length limit cut it): retried
    like a transient failure."""


class MalformedReply(ValueError):
    """The endpoint answered 200 with something that is not a chat completion: a body that is not
    JSON (an HTML page from a proxy, plain text), JSON of another shape, or a choice with no
    `message`. Retried like a transient failure; its message (one line: the content type and the
    first bytes) is the quarantine reason and the preflight's error."""


def _excerpt(text: str, limit: int = 80) -> str:
    return repr(" ".join(text.split())[:limit])


def parse_completion(response: httpx.Response) -> ChatCompletion:
    """A 200 reply's body as a `ChatCompletion` (fields not validated, as the `openai` client
    does); raises `MalformedReply` naming the content type and first bytes when it is not JSON or
    not a JSON object with a `choices` list."""
    content_type = response.headers.get("content-type", "none")
    try:
        data = response.json()
    except ValueError:
        raise MalformedReply(f"non-JSON reply (content-type {content_type}, first bytes {_excerpt(response.text)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices", []), list):
        raise MalformedReply(f"the reply is not a chat completion (content-type {content_type}, first bytes {_excerpt(response.text)})")
    return ChatCompletion.construct(**data)


class RequestOptions(StrictConfig):
    """How a stage's requests go to its OpenAI-compatible endpoint, for servers that differ from
    vLLM (`synth.request`, `probe.request`, `eval.request`, `judge.llm_request`).

    Stop strings are always applied on the client as well (the turn is cut just after the first one,
    which is kept), so `send_stop: false` changes only what the server is asked: servers that answer
    a request with `stop` with an error (`transformers serve` for vision-language models) work
    without it; `send_seed: false` leaves out `seed` for servers that refuse it (sampled turns are
    then not reproducible). `extra_body` fields are merged into every request as they are (e.g.
    `chat_template_kwargs`, `top_k`, `repetition_penalty`)."""

    send_stop: bool = True
    # `seed` makes sampled turns reproducible (vLLM, OpenAI); some servers refuse the field.
    send_seed: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Retries of an HTTP 5xx within `max_retries`: a server that fails a request deterministically
    # (a field it cannot handle) is not asked the same thing max_retries times.
    server_error_retries: int = Field(2, ge=0)

    @field_validator("extra_body")
    @classmethod
    def _no_core_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        core = sorted(set(value) & {"model", "messages"})
        if core:
            raise ValueError(f"{', '.join(core)} cannot be set here: the stage sets them")
        return value


def _is_server_error(exc: BaseException | None) -> bool:
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError, EmptyResponse)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(exc, openai.APIResponseValidationError):
        return True  # a malformed body
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, ValueError)  # JSON that does not decode


def server_message(exc: openai.APIStatusError) -> str:
    """What the server said about a failed request, on one line: the `message` (OpenAI, vLLM) or
    `detail` (FastAPI servers, `transformers serve`) of its error body, else the body's text."""
    body: Any = exc.body
    for _ in range(3):  # {"error": {"message": ...}}, {"detail": ...}, or a plain string
        if isinstance(body, dict):
            body = body.get("error") or body.get("message") or body.get("detail") or json.dumps(body)
    text = body if isinstance(body, str) and body.strip() else ""
    if not text:
        try:
            text = exc.response.text
        except Exception:  # a streamed or closed response
            text = exc.message
    return " ".join(str(text).split())[:400] or "(no error text)"


def describe_error(exc: BaseException) -> str:
    """One line for a failed request: the HTTP status and the server's own words, or what happened
    on the connection (refused, unknown host, time-out). Quarantine reasons and stage errors use it.
    The aiohttp transport reports a refused connection as a connect time-out: its cause tells."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {server_message(exc)}"
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError too
        cause = exc.__cause__ or exc.__context__
        detail = " ".join(str(cause).split()) if cause is not None else ""
        lowered = detail.lower()
        if "connect call failed" in lowered or "refused" in lowered:
            return "connection refused (no server listens there)"
        if "name or service not known" in lowered or "nodename nor servname" in lowered or "name resolution" in lowered:
            return "the host name does not resolve"
        if "unsupportedprotocol" in type(cause).__name__.lower():
            return "the URL has no http:// or https://"
        if isinstance(exc, openai.APITimeoutError):
            return "no connection within the time-out" if "connect" in type(cause).__name__.lower() else "no answer within the request time-out"
        return f"connection failed ({detail})" if detail else "connection failed"
    if isinstance(exc, openai.APIResponseValidationError):
        return "the response was not a chat completion"
    if isinstance(exc, EmptyResponse):
        return f"empty response ({exc})"
    if isinstance(exc, MalformedReply):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def _matched_stop(choice: Any, text: str, finish_reason: str, stop: list[str]) -> str | None:
    """Which stop string ended an endpoint's turn. vLLM names it in the choice's `stop_reason` (the
    stop string, a stop token id, or null for end-of-sequence); a server without that field leaves
    it to `synth.runtime.protocol.infer_matched_stop`."""
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
    """A model behind an OpenAI-compatible endpoint (vLLM, OpenAI, `transformers serve`, the replay
    server).

    Requests retry on 429 (honouring Retry-After), connection errors, time-outs, malformed and
    empty responses (up to `max_retries`) and HTTP 5xx (up to `options.server_error_retries` of
    those), with exponential backoff and jitter; `max_in_flight` bounds concurrent requests.

    A reply is read back into the protocol's text whatever the server did with it: reasoning it
    moved into `reasoning_content` / `reasoning` goes back inside `<think>...</think>`, tool calls
    it parsed into `tool_calls` back into `<tool_call>` text, and the turn is cut just after the
    first stop string (which is kept) when the server did not stop there itself. `identity` names
    the endpoint and the served model in request-cache keys (`synth.runtime.preflight` sets it from what the
    server tells about the model).
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
        options: RequestOptions | None = None,
        api_key_env: str | None = None,
    ) -> None:
        base_url = base_url.strip()  # a URL pasted with a space or a newline around it
        self.name = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_key_env = api_key_env  # where `api_key` came from: named when the server refuses the key
        self.timeout_s = timeout_s
        self.options = options or RequestOptions()
        self.identity = f"{self.base_url}|{model}"
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

    def request_body(
        self, messages: list[dict[str, Any]], images: list[bytes], *, stop: Sequence[str], max_tokens: int, temperature: float,
        seed: int | None = None, prefix: str = "", server_fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of one chat request: the only place one is made (the preflight sends the
        same). A `prefix` (a pre-filled `<think>`) goes as a partial assistant message that the
        server continues (vLLM's `continue_final_message`); `server_fields` are what a protocol turn
        needs from this kind of server (`protocol_fields`); `options.extra_body` comes last and wins."""
        converted = to_openai_messages(messages, images)
        body: dict[str, Any] = {"model": self.model, "messages": converted, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None and self.options.send_seed:
            body["seed"] = seed
        if stop and self.options.send_stop:
            body["stop"] = list(stop)
        if prefix:
            body["messages"] = [*converted, {"role": "assistant", "content": prefix}]
            body.update(continue_final_message=True, add_generation_prompt=False)
        body.update(server_fields or {})
        body.update(self.options.extra_body)
        return body

    async def post(self, body: dict[str, Any]) -> ChatCompletion:
        """One request, no retries."""
        # `post` is the client's documented route for a plain JSON body; `chat.completions.create`
        # would first walk the whole request against its TypedDicts, which costs more CPU than the
        # rest of the request together once a conversation carries several images.
        async with self._in_flight:
            # The raw reply, read here: a 200 that is not a chat completion is a `MalformedReply`
            # with its content type and first bytes, not a string the client hands back.
            raw = await self._client.post("/chat/completions", body=body, cast_to=httpx.Response)
        return parse_completion(raw)

    def read_reply(self, response: ChatCompletion, stop: Sequence[str], prefix: str = "", stop_sent: bool = True) -> Generation:
        """The turn in a response, as the model wrote it (the class docstring); raises
        `EmptyResponse` for a reply with no text that the length limit did not cut."""
        if not response.choices:
            raise EmptyResponse("no choices in the response")
        choice = response.choices[0]
        message = getattr(choice, "message", None)
        if not isinstance(message, BaseModel):
            raise MalformedReply(f"the reply's first choice has no message (message: {json.dumps(message, default=str)[:80]})")
        extra = message.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        calls = [(call.function.name, call.function.arguments) for call in message.tool_calls or [] if getattr(call, "function", None)]
        body = fold_turn(message.content or "", reasoning if isinstance(reasoning, str) else None, calls)
        # Reasoning folded back starts with `<think>`: a pre-filled `<think>` is already in it.
        text = body if reasoning and prefix and body.startswith(prefix) else prefix + body
        tokens = (response.usage.completion_tokens if response.usage else 0) or 0
        finish = choice.finish_reason or "stop"
        if not text[len(prefix):].strip():
            if finish == "length":  # the budget went on tokens the server does not return (special tokens)
                return Generation(text, "length", tokens)
            raise EmptyResponse("empty content")
        hit = find_stop(text[len(prefix):], stop)
        if hit is not None:  # the server did not stop there (not asked, ignored it, or kept the string)
            return Generation(text[: len(prefix) + hit[0]], "stop", tokens, matched_stop=hit[1])
        finish = "length" if finish == "length" else "stop"  # tool_calls, content_filter, ...: the turn ended
        matched = _matched_stop(choice, body, finish, list(stop)) if stop_sent else None
        return Generation(text, finish, tokens, matched_stop=matched)

    def know_server(self, entry: dict[str, Any] | None) -> None:
        """Take what kind of server this is from its `/v1/models` entry for the model (the preflight
        read it), so `protocol_fields` need not ask again."""
        self._server_fields = VLLM_PROTOCOL_FIELDS if (entry or {}).get("owned_by") == "vllm" else {}

    async def protocol_fields(self) -> dict[str, Any]:
        """What a turn of the protocol adds to the request for this server: asked once (vLLM lists its
        models as `owned_by: vllm`), unless the preflight told (`know_server`)."""
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

    async def with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` under the retry policy (the class docstring): the one retry layer of every request."""
        server_errors = 0

        def give_up(state: RetryCallState) -> bool:
            nonlocal server_errors
            server_errors += _is_server_error(state.outcome.exception())
            return state.attempt_number > self.max_retries or server_errors > self.options.server_error_retries

        async for attempt in AsyncRetrying(stop=give_up, wait=wait_retry_after(self.backoff_max_s), retry=retry_if_exception(_retryable), reraise=True):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                return await call()
        raise AssertionError("unreachable")

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        """The next assistant turn; its text starts with `prefix`."""
        self.sent += 1

        async def turn() -> Generation:
            fields = await self.protocol_fields() if stop else {}  # a protocol turn: its tags must survive
            body = self.request_body(messages, images, stop=stop, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                     prefix=prefix, server_fields=fields)
            return self.read_reply(await self.post(body), stop, prefix, "stop" in body)

        return await self.with_retries(turn)

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
