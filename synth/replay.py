"""The replay server: an OpenAI-compatible HTTP server that answers from scripted turns.

It stands in for the model, never for the pipeline: clients reach it with the `openai` client
exactly as they reach vLLM. It recognises the sample by the pixels of the conversation's first
image (robust to lossless re-encoding), falling back to the question text, and returns the
scripted turn for the number of assistant turns so far.

Personas (chosen by the request's `model`): the teacher uses tools; the student is right with the
sample's scripted pass rate: without tools (the tool-free prompt) it answers directly, with tools
a right attempt follows the teacher's tool calls and a wrong one answers directly; the instruct
persona says the sample's scripted `instruct` turns (the learnable world's data for the base model's
instruct stage: mostly direct answers, a few tool attempts, some buggy), or else the student's
direct answer. Error injection turns a teacher episode wrong, makes its code raise, or malforms its
tags, decided by a hash of the server seed, the request's `seed` and the sample, so every attempt
is reproducible.

Stop strings behave as vLLM's: the text is cut at the first one, which `stop_reason` names (null for
the end of the turn) and `include_stop_str_in_output` keeps; a request whose last message is a partial
assistant turn with `continue_final_message` (and `add_generation_prompt: false`) gets the scripted
turn continued after that prefix. The judge persona answers the judge prompt with yes or no.
`/v1/models` lists the personas as vLLM lists a served model (`root`: the scripts file).

Protocol profiles (`synth.runtime.profile`): a conversation whose system prompt is a shipped profile's is
held to that profile: every observation (a user turn after the first) must read as one of its
observations, or the request is refused (400) as a model trained on another layout would be
confused by it; `/stats` counts requests per profile version (`profile:<version>`) and the turns
that came pre-filled with `<think>` after an observation (`prefill:<version>`). A system prompt no
profile has is served as before.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from curation.images import pixel_digest
from curation.sources import SourceError, wide_encoding
from curation.validation_errors import json_type_name
from synth.runtime.endpoint import EndpointError
from synth.runtime.profile import IMAGE_SLOT, Profile, profile_of_system_prompt
from synth.runtime.protocol import find_stop
from synth.scoring.judge import normalize_text


@dataclass(frozen=True)
class ReplaySettings:
    scripts_path: Path
    teacher_model: str = "demo-teacher"
    student_model: str = "demo-student"
    judge_model: str = "demo-judge"
    instruct_model: str = "demo-instruct"
    wrong_rate: float = 0.0
    code_error_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0
    # Transport faults, drawn at random per request (a retry may succeed): the failures a real
    # endpoint has, so clients can be tested against them.
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ("429", "500", "hang", "drop", "malformed", "empty")
    hang_s: float = 30.0
    retry_after_s: float = 0.05
    faults_after: int = 0  # requests answered without faults first (a server that fails mid-run)
    # Request fields refused as `transformers serve` refuses them: `stop` with HTTP 500 and a plain
    # "Internal Server Error", any other with 422 naming it (servers that differ from vLLM).
    refuse_fields: tuple[str, ...] = ()

    def personas(self) -> dict[str, str]:
        """The served model names, in the order `/v1/models` lists them (and `serve-replay` announces
        them), each with the persona it answers as: teacher, student, judge, instruct."""
        return {self.teacher_model: "teacher", self.student_model: "student", self.judge_model: "judge",
                self.instruct_model: "instruct"}


def _draw(*parts: Any) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


_DATA_URL = re.compile(r"^data:[^;]+;base64,(.*)$", re.S)


@functools.lru_cache(maxsize=4096)
def _digest_of_encoded(encoded: str) -> str:
    # Every turn resends the same images: decode and hash each one once.
    return pixel_digest(base64.b64decode(encoded))


def _conversation_keys(messages: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(digest of the first image, text of the first user turn)."""
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return None, content
        digest, texts = None, []
        for part in content:
            if part.get("type") == "image_url" and digest is None:
                match = _DATA_URL.match(part["image_url"]["url"])
                if match:
                    digest = _digest_of_encoded(match.group(1))
            elif part.get("type") == "text":
                texts.append(part["text"])
        return digest, "\n".join(texts)
    return None, ""


class ReplayScriptsError(SourceError):
    """A replay scripts file that is not the demo world's `replay_scripts.jsonl`; one line naming
    the file, the line and what is wrong."""


SCRIPTS_NAME = "replay_scripts.jsonl"  # beside a world's samples.jsonl


# What a replay script is, in every message that says a line is not one.
SCRIPT_WORDS = "a replay script (an object with sample_id, question, teacher and student turns)"


def not_a_script(path: Path, number: int, row: Any) -> str:
    """Why line `number` of `path`, a JSON value, is not a replay script (`SCRIPT_WORDS`): a sample
    row (`id`, `images`) is named as one, else what it is or lacks; with the world's scripts file
    beside it where there is one."""
    beside = path.parent / SCRIPTS_NAME
    where = f" ({beside})" if beside.is_file() else " (deepeyes generate-world writes it)"
    if isinstance(row, dict) and "id" in row and ("images" in row or "answer" in row):
        return (f"--scripts {path}: line {number} is a sample (id, question, answer, images), not {SCRIPT_WORDS}: this looks like a "
                f"world's samples file; the scripts file is the world's {SCRIPTS_NAME}{where}")
    if not isinstance(row, dict):
        return f"--scripts {path}: line {number} is {json_type_name(row)}, not {SCRIPT_WORDS}: give the world's {SCRIPTS_NAME}{where}"
    missing = ", ".join(key for key, kind in (("sample_id", object), ("question", str), ("teacher", list))
                        if not isinstance(row.get(key), kind) or key not in row)
    return f"--scripts {path}: line {number} is not {SCRIPT_WORDS}: it has no {missing}; give the world's {SCRIPTS_NAME}{where}"


class ReplayScripts:
    """The demo world's scripts (`replay_scripts.jsonl`: one JSON object per line with its
    `question`), found by image digest or question. Raises `ReplayScriptsError`."""

    def __init__(self, scripts_path: Path) -> None:
        self.by_digest: dict[str, dict[str, Any]] = {}
        self.by_question: dict[str, list[dict[str, Any]]] = {}
        if encoding := wide_encoding(Path(scripts_path)):  # the config loader's words for a file saved by a Windows tool
            raise ReplayScriptsError(f"--scripts {scripts_path} is {encoding} text: save it as UTF-8")
        try:
            text = Path(scripts_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayScriptsError(f"--scripts {scripts_path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                script = json.loads(line)
            except ValueError as exc:
                hint = " (a JSON array? give JSON Lines: the demo world's replay_scripts.jsonl)" if number == 1 and line.lstrip().startswith("[") else ""
                raise ReplayScriptsError(f"--scripts {scripts_path}: line {number} is not JSON ({exc}){hint}") from None
            if (not isinstance(script, dict) or not isinstance(script.get("question"), str) or not isinstance(script.get("teacher"), list)
                    or "sample_id" not in script):
                raise ReplayScriptsError(not_a_script(Path(scripts_path), number, script))
            self.by_question.setdefault(script["question"], []).append(script)
            if script.get("image_digest"):
                self.by_digest[script["image_digest"]] = script
        if not self.by_question:
            raise ReplayScriptsError(f"--scripts {scripts_path}: no scripts in it (an empty file)")

    def find(self, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        digest, text = _conversation_keys(messages)
        if digest and digest in self.by_digest:
            return self.by_digest[digest]
        candidates = [s for q, group in self.by_question.items() if q in text for s in group]
        return candidates[0] if len(candidates) == 1 else None


def judge_reply(messages: list[dict[str, Any]]) -> str:
    """The demo judge: "yes" when the candidate contains every word of the reference answer."""
    content = messages[-1].get("content")
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    reference = re.search(r"Reference answer: (.*)", text)
    candidate = re.search(r"Candidate answer: (.*)", text)
    if not reference or not candidate:
        return "I cannot tell."
    wanted, given = set(normalize_text(reference.group(1)).split()), set(normalize_text(candidate.group(1)).split())
    return "yes" if wanted and wanted <= given else "no"


def _inject_code_error(turn: str) -> str:
    return turn.replace("```python\n", "```python\nimage_1 = enhance_contrast(image_1)\n", 1)


def _malform(turn: str) -> str:
    return turn.replace("</answer>", "", 1)


def _message_text(message: dict[str, Any]) -> str:
    """An OpenAI message's content as text, each image part as an image slot."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(IMAGE_SLOT if p.get("type") == "image_url" else p.get("text", "") for p in content or [] if isinstance(p, dict))


def _system_text(messages: list[dict[str, Any]]) -> str:
    system = next((m for m in messages if m.get("role") == "system"), None)
    return _message_text(system) if system else ""


def _has_tools(messages: list[dict[str, Any]]) -> bool:
    """Whether the conversation's system prompt offers tools: as its profile says, or for a
    prompt no profile has, whether it names `<code>` (the tool-free prompts name none)."""
    known = profile_of_system_prompt(_system_text(messages))
    return known[1] if known is not None else "<code>" in _system_text(messages)


def misplaced_observation(messages: list[dict[str, Any]], profile: Profile) -> str | None:
    """Why the conversation's observations do not follow `profile`'s layout (the first that does
    not read as one of its observations), or None when they all do."""
    users = [m for m in messages if m.get("role") == "user"]
    for number, message in enumerate(users[1:], start=1):
        if profile.parse_observation(_message_text(message)) is None:
            shown = _message_text(message).replace(IMAGE_SLOT, "<image>")[:80]
            return f"observation {number} does not follow the layout of protocol profile {profile.version}: {shown!r}"
    return None


def scripted_turn(
    script: dict[str, Any], persona: str, turn_index: int, seed: int, settings: ReplaySettings, tools: bool = True
) -> str:
    sample_id = script["sample_id"]
    if persona == "instruct":
        turns = script.get("instruct") or script["student"]
        return turns[min(turn_index, len(turns) - 1)]
    if persona == "student":
        rate = script.get("student_tool_pass_rate", script["student_pass_rate"]) if tools else script["student_pass_rate"]
        right = _draw(settings.seed, seed, sample_id, "student_tools" if tools else "student") < rate
        if right and tools:
            return script["teacher"][min(turn_index, len(script["teacher"]) - 1)]
        return (script["student"] if right else script["student_wrong"])[0]
    turns = script["teacher"]
    turn = turns[min(turn_index, len(turns) - 1)]
    is_last = turn_index >= len(turns) - 1
    if "<code>" in turn and _draw(settings.seed, seed, sample_id, "code_error") < settings.code_error_rate:
        turn = _inject_code_error(turn)
    if is_last and _draw(settings.seed, seed, sample_id, "wrong") < settings.wrong_rate:
        turn = turn.replace(f"<answer>{script['answer']}</answer>", f"<answer>{script['wrong_answer']}</answer>")
    if is_last and _draw(settings.seed, seed, sample_id, "malformed") < settings.malformed_rate:
        turn = _malform(turn)
    return turn


def _apply_stop(text: str, stop: list[str] | None, include_stop: bool = False) -> tuple[str, str, str | None]:
    """vLLM's semantics: cut at the first stop string, dropped from the text unless
    `include_stop_str_in_output`; `finish_reason` is "stop" both for a stop string and for the end
    of the turn, and `stop_reason` names the stop string (None: end of sequence)."""
    hit = find_stop(text, stop or [])
    if hit is None:
        return text, "stop", None
    end, matched = hit
    return (text[:end] if include_stop else text[: end - len(matched)]), "stop", matched


def _partial_turn(body: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, JSONResponse | None]:
    """The partial assistant message a request asks the model to continue (vLLM's
    `continue_final_message`), or "", with vLLM's refusals for inconsistent requests."""
    if not body.get("continue_final_message"):
        return "", None
    if body.get("add_generation_prompt", True):
        return "", _error(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.", "invalid_request_error")
    last = messages[-1]
    if last.get("role") != "assistant":
        return "", _error(400, "continue_final_message needs a final assistant message", "invalid_request_error")
    content = last.get("content")
    return (content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])), None


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


FAULTS = ("429", "500", "hang", "drop", "malformed", "empty")


class _DroppedConnection(Response):
    """Promises a body, sends part of it, then breaks: the client sees the connection drop."""

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4096"), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise ConnectionAbortedError("replay server: injected dropped connection")


def create_app(settings: ReplaySettings) -> FastAPI:
    scripts = ReplayScripts(settings.scripts_path)
    personas = settings.personas()
    app = FastAPI(title="open-deepeyes replay server")
    unknown = set(settings.faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    fault_rng = random.Random(settings.seed)
    # `in_flight` / `max_in_flight`: requests being answered now, and the most at once (what a
    # concurrency limit on the clients' side must bound).
    stats: dict[str, int] = {"requests": 0, "answered": 0, "in_flight": 0, "max_in_flight": 0, "model_listings": 0,
                             **{f"fault_{kind}": 0 for kind in FAULTS}}

    @app.get("/stats")
    async def get_stats() -> dict[str, int]:
        return stats

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        # As vLLM: `root` names what is served (here the scripts), `created` is the time of the request.
        stats["model_listings"] += 1
        root = str(settings.scripts_path.resolve())
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": int(time.time()), "owned_by": "open-deepeyes-replay", "root": root,
                      "parent": None} for name in personas],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: dict[str, Any]) -> Any:
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            return await answer(body)
        finally:
            stats["in_flight"] -= 1

    async def answer(body: dict[str, Any]) -> Any:
        stats["requests"] += 1
        faulty = stats["requests"] > settings.faults_after
        if faulty and settings.fault_rate and settings.faults and fault_rng.random() < settings.fault_rate:
            kind = fault_rng.choice(settings.faults)
            stats[f"fault_{kind}"] += 1
            if kind == "429":
                response = _error(429, "rate limited (injected)", "rate_limit_error")
                response.headers["Retry-After"] = str(settings.retry_after_s)
                return response
            if kind == "500":
                return _error(500, "internal error (injected)", "server_error")
            if kind == "hang":
                await asyncio.sleep(settings.hang_s)
            elif kind == "drop":
                return _DroppedConnection()
            elif kind == "malformed":
                return Response('{"id": "chatcmpl-x", "choices": [', media_type="application/json")
            elif kind == "empty":
                return _completion(body.get("model", ""), "", "stop")
        refused = sorted(set(settings.refuse_fields) & set(body))
        if "stop" in refused:
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        if refused:
            return JSONResponse(status_code=422, content={"detail": f"Unexpected fields in the request: {set(refused)}"})
        persona = personas.get(body.get("model", ""))
        if persona is None:
            return _error(404, f"model {body.get('model')!r} not served; available: {sorted(personas)}", "not_found_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list", "invalid_request_error")
        if persona == "judge":
            return _completion(body["model"], judge_reply(messages), "stop")
        known = profile_of_system_prompt(_system_text(messages))
        if known is not None:
            profile = known[0]
            problem = misplaced_observation(messages, profile)
            if problem is not None:
                return _error(400, problem, "invalid_request_error")
            stats[f"profile:{profile.version}"] = stats.get(f"profile:{profile.version}", 0) + 1
        script = scripts.find(messages)
        if script is None:
            return _error(400, "no scripted sample matches this conversation", "invalid_request_error")
        partial, refusal = _partial_turn(body, messages)
        if refusal is not None:
            return refusal
        done_turns = messages[:-1] if partial or body.get("continue_final_message") else messages
        turn_index = sum(1 for m in done_turns if m.get("role") == "assistant")
        text = scripted_turn(script, persona, turn_index, int(body.get("seed") or 0), settings, _has_tools(messages))
        if partial and text.startswith(partial):  # the client pre-filled the start of the turn: continue after it
            text = text[len(partial):]
        if known is not None and partial.startswith("<think>") and messages[-2 if body.get("continue_final_message") else -1].get("role") == "user" \
                and sum(1 for m in messages if m.get("role") == "user") > 1:
            key = f"prefill:{known[0].version}"  # a turn after an observation came pre-filled, as the profile says
            stats[key] = stats.get(key, 0) + 1
        stop = body.get("stop")
        text, finish, matched = _apply_stop(text, [stop] if isinstance(stop, str) else stop, bool(body.get("include_stop_str_in_output")))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        words = text.split(" ")
        if max_tokens and len(words) > max_tokens:  # a whitespace word stands in for a token
            text, finish, matched = " ".join(words[:max_tokens]), "length", None
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        stats["answered"] += 1
        return _completion(body["model"], text, finish, matched)

    return app


def _completion(model: str, text: str, finish: str, stop_reason: str | None = None) -> dict[str, Any]:
    words = len(text.split(" "))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                     "stop_reason": stop_reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words},
    }


def check_port_free(host: str, port: int) -> None:
    """Raise `EndpointError` naming `--port` when `host:port` cannot be bound (another server
    listens there), before anything says the server is up."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise EndpointError(f"--host {host}: not an address of this machine ({exc})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket does not block it
        try:
            probe.bind(address)
        except OSError as exc:
            raise EndpointError(f"--port {port}: {host}:{port} cannot be bound ({exc.strerror or exc}; another server?): "
                                "choose another --port") from None


def serve(settings: ReplaySettings, host: str = "127.0.0.1", port: int = 8008) -> None:
    import uvicorn

    # A backlog for hundreds of concurrent clients; access logs off (they cost more than the reply).
    uvicorn.run(create_app(settings), host=host, port=port, log_level="error", access_log=False, backlog=4096)
