"""Answer judges, one module for every caller (synthesis, rewards, evaluation).

Rules first (choice letters, numbers with tolerance, normalized text); math answers through
`math-verify` in a subprocess pool with a wall-clock time-out (math-verify times out with
`signal.alarm`, which fails off the main thread, and Prefect runs tasks in threads); then, where
rules cannot decide, an LLM judge behind an OpenAI-compatible endpoint with a yes/no verdict. A
verdict that no judge could give sets `judge_failed`: never a silent 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import os
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    method: str  # choice | number | text | math | llm | none
    judge_failed: bool = False
    decided: bool = True  # False: rules could not tell; an LLM judge may


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    math_timeout_s: float = Field(5.0, gt=0)
    math_workers: int = Field(1, ge=1)
    llm_url: str | None = None  # an OpenAI-compatible endpoint; None: rules and math-verify only
    llm_model: str | None = None  # the paper used Qwen2.5-72B-Instruct
    api_key_env: str | None = "OPENAI_API_KEY"
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 4


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def parse_number(text: str) -> float | None:
    cleaned = text.strip().rstrip(".").replace("$", "").replace("%", "").strip()
    match = _NUMBER.fullmatch(cleaned) or _NUMBER.search(cleaned)
    if not match:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def _is_plain_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text.strip().rstrip(".").replace("$", "").replace("%", "").strip()))


def _choice_letter(text: str, choices: list[str] | None) -> str | None:
    text = text.strip()
    match = re.fullmatch(r"\(?([A-Za-z])[).:]?(?:\s.*)?", text, re.S)
    if match:
        return match.group(1).upper()
    if choices:  # the answer may be the option's text rather than its letter
        for i, choice in enumerate(choices):
            if normalize_text(choice) == normalize_text(text):
                return string.ascii_uppercase[i]
    return None


def rule_verdict(prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    """What rules alone can say; `decided=False` where only math-verify or an LLM could tell."""
    if prediction is None or not prediction.strip():
        return Verdict(False, "none")
    if answer_type == "choice":
        pred, ref = _choice_letter(prediction, choices), _choice_letter(gold, choices)
        if pred is not None and ref is not None:
            return Verdict(pred == ref, "choice")
        same = normalize_text(prediction) == normalize_text(gold)
        return Verdict(same, "text", decided=same)
    if answer_type == "math" and not (_is_plain_number(prediction) and _is_plain_number(gold)):
        return Verdict(False, "math", decided=False)
    if answer_type in ("number", "math"):
        if not _is_plain_number(gold):
            return Verdict(False, "number", judge_failed=True, decided=False)
        pred, ref = parse_number(prediction), parse_number(gold)
        return Verdict(pred is not None and math.isclose(pred, ref, rel_tol=1e-4, abs_tol=1e-6), "number")
    same = normalize_text(prediction) == normalize_text(gold)
    return Verdict(same, "text", decided=same)  # a paraphrase may still be right


def verify_math(gold: str, prediction: str, timeout_s: int) -> bool | None:
    """math-verify on one pair (run in a worker process, on its main thread); None: unparsable."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=timeout_s)
    pred_parsed = parse(f"${prediction}$", parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return None
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


class MathVerifier:
    """math-verify in a process pool; a pair that runs past the wall-clock limit is abandoned and
    the pool recycled, so one pathological expression cannot stall a stage."""

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, fn: Callable[[str, str, int], bool | None] = verify_math) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.fn = fn
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def check(self, gold: str, prediction: str) -> bool | None:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded process
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        future = self._pool.submit(self.fn, gold, prediction, max(1, int(self.timeout_s)))
        try:
            return future.result(timeout=self.timeout_s + 30)  # worker start-up (spawn + sympy) included
        except Exception:  # time-out, a crashed worker, an error inside math-verify
            self._recycle()
            return None

    def _recycle(self) -> None:
        if self._pool is not None:
            # The executor cannot cancel a running call: stop its workers outright.
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _judge_prompt() -> str:
    return (resources.files("synth") / "prompts" / "judge.txt").read_text()


class Judge:
    """Rules, then math-verify, then the LLM judge where configured. Share one per stage; close it."""

    def __init__(self, cfg: JudgeConfig | None = None) -> None:
        self.cfg = cfg or JudgeConfig()
        self.math = MathVerifier(self.cfg.math_workers, self.cfg.math_timeout_s)
        self._llm = None
        if self.cfg.llm_url:
            from synth.policy import EndpointPolicy

            if not self.cfg.llm_model:
                raise ValueError("judge.llm_model: required with judge.llm_url")
            api_key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
            self._llm = EndpointPolicy(self.cfg.llm_url, self.cfg.llm_model, api_key=api_key,
                                       timeout_s=self.cfg.llm_timeout_s, max_retries=self.cfg.llm_max_retries, max_in_flight=64)

    async def judge(self, question: str, prediction: str | None, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
        verdict = rule_verdict(prediction, gold, answer_type, choices)
        if verdict.decided:
            return verdict
        if verdict.method == "math":
            equal = await asyncio.to_thread(self.math.check, gold, prediction)
            if equal is not None:
                return Verdict(equal, "math")
        if self._llm is None:
            # Rules said "not equal" for text; for math or an unreadable gold nobody could tell.
            failed = verdict.method != "text"
            return Verdict(False, verdict.method, judge_failed=failed or verdict.judge_failed)
        return await self._ask_llm(question, prediction or "", gold)

    async def _ask_llm(self, question: str, prediction: str, gold: str) -> Verdict:
        prompt = _judge_prompt().format(question=question, gold=gold, prediction=prediction)
        try:
            generation = await self._llm.generate(
                [{"role": "user", "content": [{"type": "text", "text": prompt}]}], [], stop=[], max_tokens=8, temperature=0.0
            )
        except Exception:
            return Verdict(False, "llm", judge_failed=True)
        words = normalize_text(generation.text).split()
        if not words or words[0] not in ("yes", "no"):
            return Verdict(False, "llm", judge_failed=True)
        return Verdict(words[0] == "yes", "llm")

    async def aclose(self) -> None:
        self.math.close()
        if self._llm is not None:
            await self._llm.aclose()
