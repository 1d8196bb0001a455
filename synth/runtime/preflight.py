"""Endpoint preflight: one check of a model endpoint before a stage sends it any sample, and the
stage-level report when samples fail anyway. Probes, synthesis, the LLM judge and evaluation all
call `preflight`; nothing else decides whether an endpoint can serve a stage.

The check, in order, each failure one line (`EndpointError`) that names the URL, the model and the
cause, quoting the server where it answered:

1. the URL has `http://` or `https://`;
2. `GET <url>/models` answers within seconds (a refused connection, a host that does not resolve,
   a time-out and an HTTP error are told apart) and lists the model; when it does not, the error
   names the models the server offers (a server without that route, HTTP 404, goes on to step 3);
3. one real chat request, under the stage's retry policy, with the stage's exact fields and values (its system prompt, its first
   sample's images and question, `stop`, the `<think>` pre-fill, `max_tokens`, `seed`,
   `extra_body`) answers: the first turn of the first sample, its answer not used. (`max_tokens`
   is not made small: a server that parses tool calls out of the text fails on a call cut short.)
   When it fails, the same request without each optional field in turn finds the one the server
   refuses (`transformers serve` answers HTTP 500 to any request with `stop` for a vision-language
   model, and 422 to vLLM's `continue_final_message`), and the error says which setting turns it
   off.

The model's entry in `/v1/models` also gives the request cache the served model's identity
(`model_identity`): a new checkpoint served under the same name is asked again, not replayed.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from synth.runtime.endpoint import EndpointError
from synth.runtime.policy import EmptyResponse, EndpointPolicy, MalformedReply, describe_error, server_message

MODELS_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Fields of a `/v1/models` entry that say which weights answer (vLLM: `root` is the served path or
# hub id, `max_model_len`; OpenAI: `created` is the model's creation time, `owned_by`).
IDENTITY_FIELDS = ("id", "root", "parent", "owned_by", "max_model_len")
# vLLM, SGLang and LMDeploy fill `created` with the time of the request: a value this close to our
# clock says nothing about the model.
CLOCK_LIKE_S = 600


@dataclass(frozen=True)
class StageRequest:
    """The stage's first request: what the preflight sends, field for field, and the settings the
    error names when the server refuses a field (`request_setting`: e.g. `synth.request`;
    `prefix_setting`: e.g. `synth.agent.think_prefix`)."""

    messages: list[dict[str, Any]]
    images: list[bytes]
    stop: list[str]
    max_tokens: int
    temperature: float
    seed: int | None = None
    prefix: str = ""
    request_setting: str = "request"
    prefix_setting: str = "agent.think_prefix"
    flags: bool = True  # the stage's command has --no-stop and --no-seed (the judge's settings live in the config only)


# Routes under an OpenAI-compatible base URL: a URL pasted with one of them is a route, not the base.
ROUTES = ("/chat/completions", "/completions", "/models", "/embeddings", "/responses")


def check_url(url: str, setting: str) -> None:
    """Raise `EndpointError` for a URL that no HTTP client can use (no scheme, no host), or one that
    names a route (`.../v1/chat/completions`) where the base URL (`.../v1`) belongs."""
    url = url.strip()
    try:
        parsed = httpx.URL(url) if "://" in url else None
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise EndpointError(f"{setting}: {url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)")
    path = parsed.path.rstrip("/")
    route = next((r for r in ROUTES if path.endswith(r)), None)
    if route is not None:
        base = url.rstrip("/")[: -len(route)]
        raise EndpointError(f"{setting}: {url!r} is the {route} route, not the API's base URL: give {base} (requests add {route} themselves)")


def _key_hint(api_key_env: str | None) -> str:
    """Where the endpoint's API key comes from, and whether it is there: for a 401/403."""
    import os

    if not api_key_env:
        return "no API key is sent (api_key_env is empty): name the environment variable that holds it in api_key_env (--api-key-env)"
    if not os.environ.get(api_key_env):
        return f"the key is read from the environment variable {api_key_env} (api_key_env), which is unset: export {api_key_env}=<key>"
    return f"the key is read from the environment variable {api_key_env} (api_key_env), which is set: the server refused its value"


def model_identity(url: str, model: str, entry: dict[str, Any] | None, now: float | None = None) -> str:
    """What the request cache keys answers by: the endpoint's URL (or the label a managed server
    gets), the model name, and what the server tells about the model in `/v1/models`
    (`IDENTITY_FIELDS`, and `created` unless it is the server's clock). A server that tells nothing
    more than the name leaves URL and name: serve a new checkpoint under a new name (vLLM's
    `--served-model-name`) or give the stage a new output directory."""
    now = time.time() if now is None else now
    facts = {key: entry[key] for key in IDENTITY_FIELDS if entry and entry.get(key) is not None}
    created = (entry or {}).get("created")
    if isinstance(created, (int, float)) and created > 0 and abs(now - created) > CLOCK_LIKE_S:
        facts["created"] = created
    return json.dumps({"url": url, "model": model, **facts}, sort_keys=True)


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _connection_cause(exc: httpx.HTTPError, timeout: httpx.Timeout) -> tuple[str, bool]:
    """(the cause in words, whether trying again later may work) for a request that got no answer."""
    chain = _causes(exc)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "the URL has no http:// or https://", False
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout.connect:g} s (the host does not answer: down, or a firewall drops the packets)", True
    if isinstance(exc, httpx.TimeoutException):
        return f"connected, but no answer within {timeout.read:g} s", True
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused (no server listens there: is it running, on this port?)", True
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "the host name does not resolve", False
    return f"no connection ({' '.join(str(chain[-1]).split()) or type(chain[-1]).__name__})", True


async def served_models(base_url: str, api_key: str | None, where: str, api_key_env: str | None = None) -> dict[str, dict[str, Any]] | None:
    """The models `GET <base_url>/models` lists, by id (None when the server has no such route);
    raises `EndpointError` (one line, starting with `where`) when the server cannot be reached or
    answers with an error."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with httpx.AsyncClient(timeout=MODELS_TIMEOUT) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        cause, transient = _connection_cause(exc, MODELS_TIMEOUT)
        raise EndpointError(f"{where}: {cause}", transient=transient) from None
    if response.status_code in (401, 403):
        raise EndpointError(f"{where}: the server refused the API key (HTTP {response.status_code}: {_text(response)}); "
                            f"{_key_hint(api_key_env)}")
    if response.status_code == 404:
        return None  # no model list here: a chat request tells whether this is an OpenAI-compatible API at all
    if response.status_code != 200:
        raise EndpointError(f"{where}: GET {url} answered HTTP {response.status_code}: {_text(response)}",
                            transient=response.status_code >= 500 or response.status_code in (408, 429))
    try:
        return {str(entry["id"]): entry for entry in response.json()["data"]}
    except (ValueError, KeyError, TypeError):
        raise EndpointError(f"{where}: GET {url} did not answer a model list ({_text(response)[:120]})") from None


async def listed_model(endpoint: EndpointPolicy, where: str) -> dict[str, Any] | None:
    """The model's entry in `GET <url>/models` (None when the server has no such route); raises
    `EndpointError` when the server cannot be reached, answers with an error, or does not serve the
    model (naming those it does)."""
    served = await served_models(endpoint.base_url, endpoint.api_key, where, endpoint.api_key_env)
    if served is None:
        return None
    if not served:
        raise EndpointError(f"{where}: model {endpoint.model!r} is not served there; GET /models lists no models (is a model loaded?)")
    if endpoint.model not in served:
        offered = ", ".join(repr(name) for name in list(served)[:20])
        raise EndpointError(f"{where}: model {endpoint.model!r} is not served there; it serves: {offered}")
    return served[endpoint.model]


def _text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            error = body.get("error", body)
            body = (error.get("message") or error.get("detail") or body) if isinstance(error, dict) else error
        text = body if isinstance(body, str) else json.dumps(body)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:400] or "(no error text)"


def _variants(body: dict[str, Any], request: StageRequest, endpoint: EndpointPolicy) -> list[tuple[str, str, dict[str, Any]]]:
    """The stage's request without each optional field in turn: (what, how to turn it off, body)."""
    variants = []
    if "stop" in body:
        flag = " (--no-stop)" if request.flags else ""
        variants.append(("`stop`", f"set {request.request_setting}.send_stop: false{flag}: stop strings are then applied on the client",
                         {k: v for k, v in body.items() if k != "stop"}))
    if "seed" in body:
        flag = " (--no-seed)" if request.flags else ""
        variants.append(("`seed`", f"set {request.request_setting}.send_seed: false{flag}: sampled turns are then not reproducible",
                         {k: v for k, v in body.items() if k != "seed"}))
    if body.get("continue_final_message"):
        without = {k: v for k, v in body.items() if k not in ("continue_final_message", "add_generation_prompt")}
        without["messages"] = body["messages"][:-1]
        variants.append(("the `<think>` pre-fill (a partial assistant message with `continue_final_message`)",
                         f"set {request.prefix_setting}: none for this server", without))
    for key in endpoint.options.extra_body:
        variants.append((f"the extra field `{key}`", f"remove {request.request_setting}.extra_body.{key}",
                         {k: v for k, v in body.items() if k != key}))
    return variants


async def _answers(endpoint: EndpointPolicy, body: dict[str, Any], request: StageRequest) -> bool:
    for _ in range(2):  # a server that failed the last request may have closed its connection: once more on a new one
        try:
            endpoint.read_reply(await endpoint.post(body), request.stop, request.prefix, "stop" in body)
        except EmptyResponse:
            return True  # an empty turn is the model's answer; the stage retries such replies
        except openai.APIConnectionError:
            continue
        except (openai.APIError, ValueError):
            return False
        return True
    return False


async def _one_request(endpoint: EndpointPolicy, request: StageRequest, where: str, unlisted: bool = False) -> None:
    fields = await endpoint.protocol_fields() if request.stop else {}
    body = endpoint.request_body(request.messages, request.images, stop=request.stop, temperature=request.temperature,
                                 max_tokens=request.max_tokens, seed=request.seed, prefix=request.prefix, server_fields=fields)
    async def ask() -> None:
        endpoint.read_reply(await endpoint.post(body), request.stop, request.prefix, "stop" in body)

    try:  # under the stage's own retry policy: a busy server's 429, a dropped connection, a 5xx or two are not its verdict
        await endpoint.with_retries(ask)
        return
    except EmptyResponse:
        return
    except openai.APIStatusError as exc:
        failure = exc
    except MalformedReply as exc:  # a 200 that is not a chat completion: retried, then told as it is
        raise EndpointError(f"{where}: the first request failed: {exc}", transient=True) from None
    except openai.APIError as exc:  # connection, time-out, a body that is not a chat completion
        raise EndpointError(f"{where}: the first request failed: {describe_error(exc)}",
                            transient=isinstance(exc, openai.APIConnectionError)) from None
    if failure.status_code in (401, 403):
        raise EndpointError(f"{where}: the server refused the API key (HTTP {failure.status_code}: {server_message(failure)}); "
                            f"{_key_hint(endpoint.api_key_env)}")
    if failure.status_code == 404 and unlisted:
        hint = f" (most servers answer under /v1: {endpoint.base_url}/v1)" if not endpoint.base_url.endswith("/v1") else ""
        raise EndpointError(f"{where}: GET /models and POST /chat/completions both answered HTTP 404: not the base URL of an "
                            f"OpenAI-compatible API{hint}")
    quoted = f"HTTP {failure.status_code}: {server_message(failure)}"
    for what, hint, variant in _variants(body, request, endpoint):
        if await _answers(endpoint, variant, request):
            raise EndpointError(f"{where}: the server refuses {what} ({quoted}); {hint}")
    transient = failure.status_code >= 500 or failure.status_code in (408, 429)
    raise EndpointError(f"{where}: the first request failed ({quoted})", transient=transient)


async def preflight(
    endpoint: EndpointPolicy, role: str, request: StageRequest | None, identity_url: str | None = None, setting: str = "url",
) -> None:
    """Check `endpoint` for a stage (the module docstring) and set its `identity` for the request
    cache; raise `EndpointError` with one line when it cannot serve the stage. `role` names the
    model in messages (teacher, student, judge, evaluated model); `request` is the stage's first
    request (None: the listing only); `identity_url` replaces the URL in the identity (a managed
    server's port changes every run); `setting` names the URL's config field."""
    where = f"{role} endpoint {endpoint.base_url} (model {endpoint.model!r})"
    check_url(endpoint.base_url, setting)
    entry = await listed_model(endpoint, where)
    endpoint.identity = model_identity(identity_url or endpoint.base_url, endpoint.model, entry)
    endpoint.know_server(entry)
    if request is not None:
        await _one_request(endpoint, request, where, unlisted=entry is None)


@dataclass
class Failures:
    """Samples (or attempts) a stage could not get answered, by cause, for the stage's report: a
    stage where every one failed raises `EndpointError` naming the top cause and its count."""

    causes: Counter = field(default_factory=Counter)

    def add(self, exc: BaseException) -> str:
        """Count the failure; returns its one-line cause (for the quarantine reason)."""
        cause = describe_error(exc.last_attempt.exception() if hasattr(exc, "last_attempt") else exc)  # type: ignore[union-attr]
        self.causes[cause] += 1
        return cause

    def __len__(self) -> int:
        return sum(self.causes.values())

    def top(self) -> str:
        cause, count = self.causes.most_common(1)[0]
        return f"{cause} ({count} of {len(self)})"

    def raise_if_all(self, total: int, what: str, where: str, quarantine: str | None = None) -> None:
        """Raise when all `total` items of the stage failed."""
        if total and len(self) >= total:
            seen = f"; quarantine: {quarantine}" if quarantine else ""
            transient = not any(cause.startswith("HTTP 4") for cause in self.causes)
            raise EndpointError(f"{where}: all {total} {what} failed; top cause: {self.top()}{seen}", transient=transient)
