"""The agent loop: the only one. Teacher synthesis, GRPO rollouts and evaluation all run it.

One episode: system prompt and question → assistant turn → parse (protocol) → run the tool →
observation as a user turn → ... until an answer, a turn without an action, a length cut or the
turn limit. The result is a `Trajectory` row (judged and scored).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from curation.schema import Sample
from curation.strict_config import StrictConfig
from synth.runtime.policy import ChatPolicy
from synth.runtime.preflight import StageRequest
from synth.runtime.profile import DEFAULT_PROFILE, Profile, ThinkPrefix, load_profile, to_parts
from synth.runtime.protocol import STOP_SEQUENCES, Action, close_stopped_turn, parse_turn
from synth.scoring.judge import Judge
from synth.scoring.reward import RewardConfig, score_response
from synth.tools.kernel import KernelConfig, PythonKernel
from synth.tools.sandbox import KernelPool
from synth.tools.search import ImageSearch, SearchConfig, SearchError, TextSearch, build_search


class AgentConfig(StrictConfig):
    max_turns: int = Field(9, ge=1)
    max_tokens_per_turn: int = Field(1024, ge=1)
    max_total_tokens: int = Field(16384, ge=1)  # all assistant turns together (the paper's 16k response)
    temperature: float = Field(0.0, ge=0.0)
    tools: bool = True  # False: the tool-free control (no tool prompt, tool calls refused)
    # What the model is shown: a protocol profile (`synth.runtime.profile`) by name or file: ours
    # (deepeyes-v2) or the released checkpoint's (deepeyesv2-reference).
    profile: str = DEFAULT_PROFILE
    # Pre-fill "<think>" at the start of assistant turns: never, after an observation (the
    # reference's RL environment), or on every turn, the first included; None: the profile's default.
    think_prefix: ThinkPrefix | None = None
    search_top_k: int = 5
    max_search_queries: int = Field(5, ge=1)  # queries run from one call's list-valued `query`
    prestart_kernel: bool = True  # start the episode's kernel while its first turn is generated
    kernel: KernelConfig = Field(default_factory=KernelConfig)

    @model_validator(mode="before")
    @classmethod
    def _force_think_prefix(cls, data: Any) -> Any:
        """`force_think_prefix: true`, the older spelling, is `think_prefix: every_turn`."""
        if isinstance(data, dict) and "force_think_prefix" in data:
            data = dict(data)
            forced = data.pop("force_think_prefix")
            data.setdefault("think_prefix", "every_turn" if forced else "none")
        return data

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        load_profile(value)  # a ProfileError (a ValueError) names the profiles there are
        return value

    @property
    def protocol(self) -> Profile:
        """The loaded protocol profile."""
        return load_profile(self.profile)

    def prefix_for(self, turn: int) -> str:
        """The text pre-filled at the start of assistant turn `turn` (0: the first)."""
        return self.protocol.prefix_for(turn, self.think_prefix)


@dataclass
class ToolBox:
    """The tools shared by all episodes of a run (a kernel is per episode, made by the loop)."""

    kernel_pool: KernelPool | None = None
    text_search: TextSearch | None = None
    image_search: ImageSearch | None = None
    search_executor: ThreadPoolExecutor | None = None  # None: the event loop's default executor

    async def run_search(self, search, query, k: int):
        return await asyncio.get_running_loop().run_in_executor(self.search_executor, search, query, k)


@contextmanager
def open_toolbox(agent: AgentConfig, search: SearchConfig) -> Iterator[ToolBox]:
    """The tools for a stage: the sandbox (which refuses here, before any model call, when it
    cannot isolate) and the search backends; closed when the stage ends."""
    pool = KernelPool(agent.kernel.sandbox).start() if agent.tools else None
    text_search = image_search = None
    executor = ThreadPoolExecutor(max_workers=search.threads, thread_name_prefix="search")
    try:
        text_search, image_search = build_search(search)
        yield ToolBox(kernel_pool=pool, text_search=text_search, image_search=image_search, search_executor=executor)
    finally:
        executor.shutdown(wait=True)
        for backend in (text_search, image_search):
            if backend is not None:
                backend.close()
        if pool is not None:
            pool.close()


def active_episodes(concurrency: int, active: int | None) -> int:
    """Episodes run at once for `concurrency` requests in flight. An episode holds no request slot
    while it is in a tool, so a quarter more episodes than slots keeps every slot busy."""
    return active if active is not None else concurrency + max(1, concurrency // 4)


def size_tool_threads(in_flight: int) -> None:
    """Tool calls (kernel cells, searches) run in the event loop's default executor: give it a thread
    for every episode in flight, so no episode waits for another's tool call."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=min(in_flight + 4, 512)))


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@dataclass
class Observation:
    parts: list[dict[str, Any]]  # the user turn's content: text and image placeholders
    images: list[bytes]
    tool: str
    outcome: str


def _error(message: str, tool: str, outcome: str) -> Observation:
    return Observation([_text(message)], [], tool, outcome)


class ToolSession:
    """One episode's tools: its own kernel (started on first use) and the shared search backends."""

    def __init__(self, tools: ToolBox, cfg: AgentConfig, input_images: list[bytes]) -> None:
        self.tools = tools
        self.cfg = cfg
        self.input_images = input_images
        self.profile = cfg.protocol
        self.kernel: PythonKernel | None = None
        self.image_search_used = False
        self._starting: asyncio.Future | None = None

    def prestart(self) -> None:
        """Start the kernel in the background, hiding its start behind the model's first turn.
        A failed start is left for the first cell, which reports it as an observation."""
        if self.cfg.tools and self.cfg.prestart_kernel and self.tools.kernel_pool is not None:
            self.kernel = PythonKernel(self.input_images, self.tools.kernel_pool, self.cfg.kernel)
            self._starting = asyncio.ensure_future(asyncio.to_thread(self.kernel.start))

    async def _started(self) -> None:
        if self._starting is not None:
            starting, self._starting = self._starting, None
            try:
                await starting
            except Exception:  # the first cell retries the start and reports why it failed
                pass

    def available(self) -> str:
        """The tools this run really has, for the model: a tool call's error names these, not every
        tool the protocol knows."""
        tools = []
        if self.tools.kernel_pool is not None:
            tools.append("python (code in a <code> block, not a <tool_call>)")
        if self.tools.text_search is not None:
            tools.append("search")
        if self.tools.image_search is not None and self.input_images:
            tools.append("image_search")
        return f"available in this run: {', '.join(tools)}" if tools else "no tools are available in this run"

    async def call(self, action: Action) -> Observation:
        tool = "python" if action.kind == "code" else action.kind
        if not self.cfg.tools:  # the tool-free control: the call is refused, and counted as tried
            return _error("Error: tools are disabled in this run.", tool, "disabled")
        if action.kind == "tool_error":
            if action.unknown_tool is not None:
                return _error(f"Error: unknown tool {action.unknown_tool!r}; {self.available()}", "invalid", "error")
            return _error(action.error, "invalid", "error")
        if action.kind == "code" and self.tools.kernel_pool is not None:
            await self._started()
            if self.kernel is None:
                self.kernel = PythonKernel(self.input_images, self.tools.kernel_pool, self.cfg.kernel)
            result = await asyncio.to_thread(self.kernel.execute, action.code)
            shown = result.images[: self.profile.max_images_per_observation]
            text = self.profile.render_code(result.stdout, result.stderr, len(shown))
            return Observation(to_parts(text), shown, tool, result.status)
        try:
            if action.kind == "search" and self.tools.text_search is not None:
                # A list-valued query runs its first `max_search_queries` queries, answered together.
                queries = action.queries[: self.cfg.max_search_queries]
                results = await asyncio.gather(*(
                    self.tools.run_search(self.tools.text_search.search, query, self.cfg.search_top_k) for query in queries))
                text = self.profile.render_search(list(zip(queries, results, strict=True)), len(action.queries) - len(queries))
                return Observation(to_parts(text), [], tool, "ok")
            if action.kind == "image_search" and self.tools.image_search is not None and self.input_images:
                if self.image_search_used:
                    return _error("Error: image_search may be used once per question.", tool, "error")
                self.image_search_used = True
                results = await self.tools.run_search(
                    self.tools.image_search.search, self.input_images[0], self.cfg.search_top_k
                )
                text, shown = self.profile.render_image_search(results)
                thumbnails = [base64.b64decode(results[i]["thumbnail"]) for i in shown]
                return Observation(to_parts(text), thumbnails, tool, "ok")
        except SearchError as exc:
            return _error(f"Error: {tool} failed: {exc}", tool, "error")
        return _error(f"Error: the {tool} tool is not available in this run.", tool, "unavailable")

    async def aclose(self) -> None:
        await self._started()
        if self.kernel is not None:
            # The kill waits on the sandbox: off the event loop.
            await asyncio.to_thread(self.kernel.close)


def text_search_configured(search: SearchConfig) -> bool:
    """Whether `search` gives the agent a text search tool (`synth.tools.search.build_search`)."""
    return (search.text_backend == "local" and search.corpus_path is not None) or search.text_backend == "http"


def require_search(samples: list[Sample], agent: AgentConfig, search: SearchConfig, where: str, option: str = "--corpus") -> None:
    """Raise `SearchError` (one line, starting with `where`) when some of `samples` are search
    questions (category `search`), the agent has tools, and no text search is configured: every
    search call would answer "not available", and trajectories would cite results they never got."""
    needing = sum(1 for sample in samples if sample.category == "search")
    if agent.tools and needing and not text_search_configured(search):
        raise SearchError(f"{where}: {needing} of the {len(samples)} samples are search questions (category: search) and no text "
                          f"search is configured: give {option} FILE (search.corpus_path), or search.text_backend: http with "
                          "search.http_url")


def opening(sample: Sample, cfg: AgentConfig) -> tuple[list[dict[str, Any]], list[bytes]]:
    """An episode's first messages (the protocol profile's system prompt; the user turn with an
    image placeholder per input image and the question) and its input images, in TRL's
    conversational format."""
    images = [image.bytes for image in sample.images]
    return cfg.protocol.messages(sample.question, len(images), cfg.tools), images


def first_request(sample: Sample, cfg: AgentConfig, section: str, seed: int | None = 0) -> StageRequest:
    """The first request an episode of `sample` sends, for the endpoint preflight; `section` is the
    stage's config section (`synth`, `probe`, `eval`), which the preflight's advice names."""
    messages, images = opening(sample, cfg)
    return StageRequest(messages, images, list(STOP_SEQUENCES), cfg.max_tokens_per_turn, cfg.temperature, seed, cfg.prefix_for(0),
                        request_setting=f"{section}.request", prefix_setting=f"{section}.agent.think_prefix")


def trajectory_id(sample_id: str, policy: str, attempt: int, protocol_version: str) -> str:
    """A trajectory's id: a 24-hex-digit digest of its sample, policy, attempt and protocol profile version."""
    return hashlib.blake2b(f"{sample_id}|{policy}|{attempt}|{protocol_version}".encode(), digest_size=12).hexdigest()


async def run_episode(
    sample: Sample,
    policy: ChatPolicy,
    tools: ToolBox,
    cfg: AgentConfig,
    *,
    attempt: int = 0,
    seed: int | None = None,
    judge: Judge | None = None,
    reward: RewardConfig | None = None,
) -> dict[str, Any]:
    """Run one episode of `sample` with `policy`; return a `TRAJECTORY_SCHEMA` row, scored by
    `synth.scoring.reward.score_response` with `judge` (a stage shares one; without it, a rules and
    math-verify judge for this episode) and the `reward` settings (the reference's by default)."""
    started = time.perf_counter()
    profile = cfg.protocol
    messages, images = opening(sample, cfg)
    tool_calls: list[dict[str, Any]] = []
    assistant_turns: list[str] = []
    session = ToolSession(tools, cfg, list(images))  # the sample's inputs, before any tool image
    session.prestart()
    stop_reason = "max_turns"
    turn_latency_ms: list[float] = []
    tokens_used = 0
    try:
        for turn in range(cfg.max_turns):
            budget = min(cfg.max_tokens_per_turn, cfg.max_total_tokens - tokens_used)
            if budget <= 0:
                stop_reason = "length"
                break
            prefix = profile.prefix_for(turn, cfg.think_prefix)
            turn_started = time.perf_counter()
            generation = await policy.generate(
                messages,
                images,
                stop=list(STOP_SEQUENCES),
                max_tokens=budget,
                temperature=cfg.temperature,
                seed=seed if seed is not None else attempt,
                prefix=prefix,
                tag=f"{sample.id}/{attempt}",
            )
            turn_latency_ms.append((time.perf_counter() - turn_started) * 1000)
            # Servers that report no usage: about four characters a token.
            tokens_used += generation.tokens or max(1, len(generation.text) // 4)
            text = close_stopped_turn(generation.text, generation.matched_stop)
            assistant_turns.append(text)
            messages.append({"role": "assistant", "content": [_text(text)]})
            action = parse_turn(text)
            if action.kind == "answer":  # a turn cut by the length limit still counts when its answer closed
                stop_reason = "answer"
                break
            if generation.finish_reason == "length":
                stop_reason = "length"
                break
            if action.kind == "none":
                stop_reason = "no_action"
                break

            call_started = time.perf_counter()
            observation = await session.call(action)
            tool_calls.append(
                {"tool": observation.tool, "outcome": observation.outcome, "turn": turn,
                 "latency_ms": (time.perf_counter() - call_started) * 1000, "images": len(observation.images)}
            )
            images.extend(observation.images)
            messages.append({"role": "user", "content": observation.parts})
    finally:
        await session.aclose()

    own_judge = judge is None
    judge = judge or Judge()
    try:
        score = await score_response(
            judge, assistant_turns, question=sample.question, gold=sample.answer, answer_type=sample.answer_type,
            choices=sample.choices, category=sample.category, tool_calls=tool_calls, cfg=reward,
        )
    finally:
        if own_judge:
            await judge.aclose()
    return {
        "id": trajectory_id(sample.id, policy.name, attempt, profile.version),
        "sample_id": sample.id,
        "category": sample.category,
        "policy": policy.name,
        "attempt": attempt,
        "protocol_version": profile.version,
        "messages": messages,
        "images": [{"bytes": data, "path": None} for data in images],
        "tool_calls": tool_calls,
        "turns": len(assistant_turns),
        "turn_latency_ms": turn_latency_ms,
        "completion_tokens": tokens_used,
        "stop_reason": stop_reason,
        "final_answer": score.check.answer,
        "answer": sample.answer,
        "correct": score.verdict.correct,
        "judge_method": score.verdict.method,
        "judge_failed": score.verdict.judge_failed,
        "format_ok": score.reward.format == 1.0,
        "reward": score.reward.total,
        "accuracy_reward": score.reward.accuracy_term,
        "format_reward": score.reward.format,
        "search_penalty": score.reward.search_penalty,
        "reject_reason": None,
        "latency_ms": (time.perf_counter() - started) * 1000,
    }
