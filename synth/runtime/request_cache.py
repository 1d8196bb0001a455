"""Request-level resume: every model response, keyed by what was asked, in a crash-safe cache.

A re-run after a crash (even `kill -9`) replays answered requests from the cache and sends only
those that were in flight, so it writes exactly the rows an uninterrupted run would have written.
SQLite in WAL mode: each response is its own committed transaction, readers never block writers.
Empty responses are never cached (a retry may well get a real one), unless the length limit cut
them (the same request gets the same cut).

A key names who answered: for an endpoint, its URL and what the server tells about the served model
(`synth.runtime.preflight.model_identity`: vLLM's `root`, the path or hub id it serves, and so on), so a
new checkpoint served under the same name, or another server, is asked again rather than replayed;
for a local model, its checkpoint's fingerprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from synth.runtime.policy import ChatPolicy, EndpointPolicy, Generation, RequestOptions
from synth.runtime.protocol import PROTOCOL_VERSION

REQUESTS_DB = "requests.sqlite"  # a stage's request cache, in its output directory


def request_key(model: str, params: dict[str, Any], messages: list[dict[str, Any]], images: list[bytes], tag: str = "") -> str:
    """A digest of everything that determines a response: who answers (`model`: the policy's
    identity), sampling parameters, the conversation (images by content digest), the caller's tag
    (sample id and attempt), and the protocol version."""
    canonical = {
        "tag": tag,
        "model": model,
        "params": params,
        "messages": messages,
        "images": [hashlib.blake2b(image, digest_size=16).hexdigest() for image in images],
        "protocol": PROTOCOL_VERSION,
    }
    return hashlib.blake2b(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode(), digest_size=20).hexdigest()


class RequestCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses "
            "(key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT NOT NULL, tokens INTEGER, created REAL, matched_stop TEXT)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "matched_stop" not in columns:  # a cache written before turns recorded which stop string fired
            self._db.execute("ALTER TABLE responses ADD COLUMN matched_stop TEXT")
        self._lock = threading.Lock()

    def get(self, key: str) -> Generation | None:
        with self._lock:
            row = self._db.execute("SELECT text, finish_reason, tokens, matched_stop FROM responses WHERE key = ?", (key,)).fetchone()
        return Generation(row[0], row[1], row[2] or 0, matched_stop=row[3]) if row else None

    def put(self, key: str, generation: Generation) -> bool:
        if not generation.text.strip() and generation.finish_reason != "length":
            return False
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, text, finish_reason, tokens, created, matched_stop) VALUES (?, ?, ?, ?, ?, ?)",
                (key, generation.text, generation.finish_reason, generation.tokens, time.time(), generation.matched_stop),
            )
        return True

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedPolicy:
    """A policy whose answers are replayed from a `RequestCache` when the same request was answered before."""

    def __init__(self, policy: ChatPolicy, cache: RequestCache) -> None:
        self.policy = policy
        self.cache = cache
        self.name = policy.name
        self.replayed = 0
        # SQLite releases the GIL while it writes and must win it back afterwards: on the event loop
        # that wait stalls every request in flight, so the cache has a thread of its own.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-cache")

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        params = {"stop": list(stop), "max_tokens": max_tokens, "temperature": temperature, "seed": seed, "prefix": prefix}
        key = request_key(getattr(self.policy, "identity", self.policy.name), params, messages, images, tag)
        loop = asyncio.get_running_loop()
        cached = await loop.run_in_executor(self._io, self.cache.get, key)
        if cached is not None:
            self.replayed += 1
            return cached
        generation = await self.policy.generate(
            messages, images, stop=stop, max_tokens=max_tokens, temperature=temperature, seed=seed, prefix=prefix, tag=tag
        )
        await loop.run_in_executor(self._io, self.cache.put, key, generation)  # committed before it is used
        return generation

    async def aclose(self) -> None:
        self._io.shutdown(wait=True)
        await self.policy.aclose()
        self.cache.close()


def open_endpoint(
    url: str, model: str, *, api_key_env: str | None, timeout_s: float, max_retries: int, max_in_flight: int,
    cache_path: Path | None, options: RequestOptions | None = None,
) -> tuple[ChatPolicy, EndpointPolicy]:
    """A stage's model: the endpoint client, behind the request cache when `cache_path` is given.
    Returns (the policy to use, the endpoint itself for its preflight and request counters)."""
    api_key = os.environ.get(api_key_env) if api_key_env else None
    endpoint = EndpointPolicy(url, model, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries, max_in_flight=max_in_flight,
                              options=options, api_key_env=api_key_env)
    if cache_path is None:
        return endpoint, endpoint
    return CachedPolicy(endpoint, RequestCache(cache_path)), endpoint
