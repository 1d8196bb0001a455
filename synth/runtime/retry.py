"""The retry wait every HTTP caller shares (model endpoints, search APIs)."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, wait_random_exponential


def wait_retry_after(max_s: float = 30.0, multiplier: float = 0.25) -> Callable[[RetryCallState], float]:
    """A tenacity wait: the failed response's `Retry-After` when it sent one, else exponential
    backoff with jitter; never longer than `max_s`. Works for httpx and openai errors alike."""
    backoff = wait_random_exponential(multiplier=multiplier, max=max_s)

    def wait(state: RetryCallState) -> float:
        response = getattr(state.outcome.exception(), "response", None)
        header = response.headers.get("retry-after", "") if response is not None else ""
        try:
            return min(float(header), max_s)
        except ValueError:
            return backoff(state)

    return wait
