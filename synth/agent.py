"""The agent loop: the only one. Teacher synthesis, GRPO rollouts and evaluation all run it.

One episode: system prompt and question → assistant turn → parse (protocol) → run the tool →
observation as a user turn → ... until an answer, a turn without an action, a length cut or the
turn limit. The result is a `Trajectory` row (judged and scored).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curation.schema import Sample
from synth.judge import judge_answer
from synth.kernel import KernelConfig, PythonKernel
from synth.sandbox import KernelPool
from synth.policy import ChatPolicy
from synth.protocol import (
    PROTOCOL_VERSION,
    STOP_SEQUENCES,
    THINK_PREFIX,
    check_format,
    close_stopped_turn,
    load_prompts,
    parse_turn,
    render_code_observation,
    render_text_results,
)
from synth.reward import compute_reward
from synth.search import LocalTextSearch


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(9, ge=1)
    max_tokens_per_turn: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    tools: bool = True  # False: the tool-free control (no tool prompt, tool calls refused)
    force_think_prefix: bool = False  # start turns after an observation with "<think>" (local models)
    search_top_k: int = 5
    kernel: KernelConfig = Field(default_factory=KernelConfig)


@dataclass
class ToolBox:
    """The tools shared by all episodes of a run (a kernel is per episode, made by the loop)."""

    kernel_pool: KernelPool | None = None
    text_search: LocalTextSearch | None = None


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def trajectory_id(sample_id: str, policy: str, attempt: int) -> str:
    return hashlib.blake2b(f"{sample_id}|{policy}|{attempt}|{PROTOCOL_VERSION}".encode(), digest_size=12).hexdigest()


async def run_episode(
    sample: Sample,
    policy: ChatPolicy,
    tools: ToolBox,
    cfg: AgentConfig,
    *,
    attempt: int = 0,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run one episode of `sample` with `policy`; return a `TRAJECTORY_SCHEMA` row."""
    started = time.perf_counter()
    prompts = load_prompts(cfg.tools)
    images = [image.bytes for image in sample.images]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [_text(prompts.system)]},
        {"role": "user", "content": [{"type": "image"} for _ in images] + [_text(prompts.user_text(sample.question))]},
    ]
    tool_calls: list[dict[str, Any]] = []
    assistant_turns: list[str] = []
    kernel: PythonKernel | None = None
    final_answer: str | None = None
    stop_reason = "max_turns"
    try:
        for turn in range(cfg.max_turns):
            prefix = THINK_PREFIX if cfg.force_think_prefix else ""
            generation = await policy.generate(
                messages,
                images,
                stop=list(STOP_SEQUENCES),
                max_tokens=cfg.max_tokens_per_turn,
                temperature=cfg.temperature,
                seed=seed if seed is not None else attempt,
                prefix=prefix,
            )
            text = close_stopped_turn(generation.text, generation.finish_reason)
            assistant_turns.append(text)
            messages.append({"role": "assistant", "content": [_text(text)]})
            if generation.finish_reason == "length":
                stop_reason = "length"
                break
            action = parse_turn(text)
            if action.kind == "answer":
                final_answer, stop_reason = action.answer, "answer"
                break
            if action.kind == "none":
                stop_reason = "no_action"
                break

            call_started = time.perf_counter()
            new_images: list[bytes] = []
            if not cfg.tools:  # the tool-free control: the call is refused, and counted as tried
                observation = "Error: tools are disabled in this run."
                call = {"tool": "python" if action.kind == "code" else action.kind, "outcome": "disabled"}
            elif action.kind == "tool_error":
                observation = action.error
                call = {"tool": "invalid", "outcome": "error"}
            elif action.kind == "code" and tools.kernel_pool is not None:
                if kernel is None:
                    kernel = PythonKernel(images, tools.kernel_pool, cfg.kernel)
                result = await asyncio.to_thread(kernel.execute, action.code)
                new_images = result.images
                observation = render_code_observation(result.stdout, result.stderr, len(new_images))
                call = {"tool": "python", "outcome": result.status}
            elif action.kind == "search" and tools.text_search is not None:
                results = await asyncio.to_thread(tools.text_search.search, action.query, cfg.search_top_k)
                observation = render_text_results(results)
                call = {"tool": "search", "outcome": "ok"}
            else:  # a tool this run has no backend for
                observation = f"Error: the {action.kind} tool is not available in this run."
                call = {"tool": "python" if action.kind == "code" else action.kind, "outcome": "unavailable"}
            tool_calls.append(
                {**call, "turn": turn, "latency_ms": (time.perf_counter() - call_started) * 1000, "images": len(new_images)}
            )
            images.extend(new_images)
            messages.append({"role": "user", "content": [_text(observation)] + [{"type": "image"} for _ in new_images]})
    finally:
        if kernel is not None:
            kernel.close()

    verdict = judge_answer(final_answer, sample.answer, sample.answer_type, sample.choices)
    fmt = check_format(assistant_turns, sample.category)
    used_search = any(c["tool"] in ("search", "image_search") for c in tool_calls)
    reward = compute_reward(verdict.correct, fmt.ok, final_answer, sample.category, used_search)
    return {
        "id": trajectory_id(sample.id, policy.name, attempt),
        "sample_id": sample.id,
        "category": sample.category,
        "policy": policy.name,
        "attempt": attempt,
        "protocol_version": PROTOCOL_VERSION,
        "messages": messages,
        "images": [{"bytes": data, "path": None} for data in images],
        "tool_calls": tool_calls,
        "turns": len(assistant_turns),
        "stop_reason": stop_reason,
        "final_answer": final_answer,
        "answer": sample.answer,
        "correct": verdict.correct,
        "judge_method": verdict.method,
        "judge_failed": verdict.judge_failed,
        "format_ok": fmt.ok,
        "reward": reward.total,
        "reject_reason": None,
        "latency_ms": (time.perf_counter() - started) * 1000,
    }
