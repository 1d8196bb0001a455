"""Search tools: text and image search, local or over HTTP, behind one persistent cache.

- text `local`: BM25 (bm25s) over a JSONL or Parquet corpus of `title`, `url`, `text`; the index
  is built once per corpus content and reused from disk.
- text `http`: a SerpAPI- or Serper-shaped JSON API, the key read from an environment variable.
- image `local`: nearest neighbours by 64-bit perceptual hash (imagehash) over an image corpus
  (JSONL of `image` path, `title`, `url`); Hamming distances over a packed array.
- image `http`: a JSON API that takes the image as base64 and returns `results`.

Every backend sits behind `CachedSearch`: a persistent cache keyed by backend, query or image
hash, and result count, so regenerating a cold-start set does not pay for the same search twice.
HTTP calls retry with exponential backoff and jitter (honouring Retry-After) under a rate limit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from curation.ast_lock import AST_LOCK
from curation.setting_path import SettingPath
from curation.sources import TableFileError, read_table_file
from curation.strict_config import StrictConfig

SearchBackend = Literal["local", "http", "none"]


class SearchError(Exception):
    """A corpus or search service that cannot be used; names the file or URL and the problem."""


class SearchConfig(StrictConfig):
    text_backend: SearchBackend = "local"
    corpus_path: SettingPath | None = None  # local text: JSONL or Parquet of title, url, text
    image_backend: SearchBackend = "local"
    image_corpus_path: SettingPath | None = None  # local image: JSONL of image (path), title, url
    snippet_chars: int = 300
    thumbnail_px: int = 128
    # HTTP backends
    http_url: str | None = None  # e.g. https://google.serper.dev/search
    http_style: Literal["serper", "serpapi"] = "serper"
    image_http_url: str | None = None
    api_key_env: str | None = "SEARCH_API_KEY"
    timeout_s: float = 20.0
    retries: int = 4
    rate_limit_per_s: float = 5.0
    cache_dir: SettingPath | None = None  # persistent result cache; None: no cache
    # Threads that run searches for all episodes of a stage. Few on purpose: local search is CPU
    # work under the GIL, and the cache opens a SQLite connection per thread.
    threads: int = Field(8, ge=1)


class TextSearch(Protocol):
    backend_id: str

    def search(self, query: str, k: int) -> list[dict[str, Any]]: ...


class ImageSearch(Protocol):
    backend_id: str

    def search(self, image: bytes, k: int) -> list[dict[str, Any]]: ...


def file_fingerprint(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_corpus_files(corpus_path: str | Path) -> list[Path]:
    """The image files an image corpus names (paths relative to the corpus file's folder)."""
    corpus_path = Path(corpus_path)
    files = []
    for entry in _read_jsonl(corpus_path, {"image"}):
        image = Path(str(entry["image"]))
        files.append(image if image.is_absolute() else corpus_path.parent / image)
    return files


def search_input_files(cfg: SearchConfig) -> list[Path]:
    """Every local file the configured search reads: the text corpus, the image corpus and the
    images it names (what a stage's cache key must cover when its episodes search)."""
    files = []
    if cfg.text_backend == "local" and cfg.corpus_path is not None:
        files.append(cfg.corpus_path)
    if cfg.image_backend == "local" and cfg.image_corpus_path is not None and cfg.image_corpus_path.is_file():
        files += [cfg.image_corpus_path, *image_corpus_files(cfg.image_corpus_path)]
    return files


def _images_stamp(paths: list[str]) -> str:
    """Size and modification time of each image: a replaced image is a new index."""
    digest = hashlib.blake2b(digest_size=12)
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}:missing\n".encode())
    return digest.hexdigest()


def _read_jsonl(path: Path, required: set[str]) -> list[dict[str, Any]]:
    try:
        return read_table_file(path, required, "search corpus")
    except TableFileError as exc:
        raise SearchError(str(exc)) from None


def load_corpus(path: str | Path) -> list[dict[str, str]]:
    return _read_jsonl(Path(path), {"title", "url", "text"})


class LocalTextSearch:
    """BM25 over title and text; the index is saved under `index_root` and reused while the corpus is unchanged."""

    def __init__(self, corpus_path: str | Path, index_root: str | Path | None = None, snippet_chars: int = 300) -> None:
        import bm25s

        # bm25s sets its own logger to DEBUG on import; its per-index chatter is not ours to print.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        corpus_path = Path(corpus_path)
        self.docs = load_corpus(corpus_path)
        self.snippet_chars = snippet_chars
        fingerprint = file_fingerprint(corpus_path)
        self.backend_id = f"local-text:{fingerprint}"
        index_dir = Path(index_root) / f"bm25-{fingerprint}" if index_root else None
        if index_dir is not None and (index_dir / "params.index.json").exists():
            with AST_LOCK:  # numpy.load parses each .npy header with ast; parallel shard tasks read it at once
                self._index = bm25s.BM25.load(str(index_dir))
            return
        self._index = bm25s.BM25()
        if self.docs:
            tokens = bm25s.tokenize([f"{d['title']} {d['text']}" for d in self.docs], show_progress=False)
            self._index.index(tokens, show_progress=False)
            if index_dir is not None:
                # A name of its own per call: parallel shard tasks build the same index in one process.
                tmp = index_dir.with_name(f".{index_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                self._index.save(str(tmp))
                try:
                    os.replace(tmp, index_dir)
                except OSError:  # another task saved it first
                    shutil.rmtree(tmp, ignore_errors=True)

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        import bm25s

        if not self.docs:
            return []
        tokens = bm25s.tokenize([query], show_progress=False)
        if not tokens.vocab:
            return []
        ids, scores = self._index.retrieve(tokens, k=min(k, len(self.docs)), show_progress=False, n_threads=1)
        return [
            {"title": self.docs[i]["title"], "url": self.docs[i]["url"], "snippet": self.docs[i]["text"][: self.snippet_chars]}
            for i, score in zip(ids[0], scores[0], strict=True)
            if score > 0
        ]


def phash64(image: bytes) -> int:
    import imagehash
    from PIL import Image

    with Image.open(io.BytesIO(image)) as opened:
        bits = imagehash.phash(opened.convert("RGB")).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def thumbnail(path: Path, max_side: int) -> bytes:
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class LocalImageSearch:
    """Nearest neighbours by perceptual hash; hashes are computed once per corpus and cached."""

    def __init__(self, entries: list[dict[str, Any]], hashes: np.ndarray, backend_id: str, thumbnail_px: int = 128) -> None:
        self.entries = entries
        self.hashes = hashes.astype(np.uint64)
        self.backend_id = backend_id
        self.thumbnail_px = thumbnail_px

    @classmethod
    def from_corpus(cls, corpus_path: str | Path, index_root: str | Path | None = None, thumbnail_px: int = 128) -> LocalImageSearch:
        corpus_path = Path(corpus_path)
        entries = _read_jsonl(corpus_path, {"image", "title", "url"})
        for entry in entries:
            image = Path(entry["image"])
            entry["image"] = str(image if image.is_absolute() else corpus_path.parent / image)
        fingerprint = hashlib.blake2b(f"{file_fingerprint(corpus_path)}:{_images_stamp([e['image'] for e in entries])}".encode(),
                                      digest_size=12).hexdigest()
        cached = Path(index_root) / f"phash-{fingerprint}.npy" if index_root else None
        if cached is not None and cached.exists():
            with AST_LOCK:  # as above
                hashes = np.load(cached)
        else:
            try:
                hashes = np.array([phash64(Path(e["image"]).read_bytes()) for e in entries], dtype=np.uint64)
            except OSError as exc:
                raise SearchError(f"{corpus_path}: cannot read image: {exc}") from exc
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy")
                np.save(tmp, hashes)
                os.replace(tmp, cached)
        return cls(entries, hashes, f"local-image:{fingerprint}", thumbnail_px)

    def nearest(self, query_hash: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        distances = np.bitwise_count(self.hashes ^ np.uint64(query_hash))
        k = min(k, len(distances))
        top = np.argpartition(distances, k - 1)[:k] if k < len(distances) else np.arange(len(distances))
        order = top[np.argsort(distances[top], kind="stable")]
        return order, distances[order]

    def search(self, image: bytes, k: int) -> list[dict[str, Any]]:
        if len(self.entries) == 0:
            return []
        try:
            query_hash = phash64(image)
        except OSError as exc:
            raise SearchError(f"cannot read the query image: {exc}") from exc
        order, distances = self.nearest(query_hash, k)
        results = []
        for i, distance in zip(order, distances, strict=True):
            entry = self.entries[int(i)]
            result = {"title": entry["title"], "url": entry["url"], "distance": int(distance)}
            if "image" in entry:
                result["thumbnail"] = base64.b64encode(thumbnail(Path(entry["image"]), self.thumbnail_px)).decode()
            results.append(result)
        return results


class RateLimiter:
    """At most `rate` calls per second across threads (evenly spaced)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class _HttpClient:
    """POST/GET JSON with retries (exponential backoff, jitter, Retry-After) under a rate limit."""

    def __init__(self, cfg: SearchConfig) -> None:
        import httpx

        self.cfg = cfg
        self._client = httpx.Client(timeout=cfg.timeout_s)
        self._limiter = RateLimiter(cfg.rate_limit_per_s)
        self.api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""

    def request(self, method: str, url: str, **kwargs) -> dict[str, Any]:
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        from synth.runtime.retry import wait_retry_after

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.HTTPStatusError):
                return exc.response.status_code == 429 or exc.response.status_code >= 500
            return isinstance(exc, httpx.TransportError)

        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.cfg.retries + 1), wait=wait_retry_after(30.0, 0.5), retry=retry_if_exception(retryable), reraise=True
            ):
                with attempt:
                    self._limiter.wait()
                    response = self._client.request(method, url, **kwargs)
                    response.raise_for_status()
                    return response.json()
        except httpx.HTTPError as exc:
            raise SearchError(f"search request to {url} failed: {exc}") from exc
        raise AssertionError("unreachable")


class HttpTextSearch:
    def __init__(self, cfg: SearchConfig) -> None:
        if not cfg.http_url:
            raise SearchError("search.http_url: required for the http text backend")
        self.cfg = cfg
        self._http = _HttpClient(cfg)
        self.backend_id = f"http-text:{cfg.http_style}:{cfg.http_url}"

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        if self.cfg.http_style == "serper":
            payload = self._http.request("POST", self.cfg.http_url, json={"q": query, "num": k}, headers={"X-API-KEY": self._http.api_key})
        else:
            payload = self._http.request("GET", self.cfg.http_url, params={"q": query, "num": k, "api_key": self._http.api_key})
        items = payload.get("organic") or payload.get("organic_results") or []
        return [
            {"title": item.get("title", ""), "url": item.get("link", ""), "snippet": (item.get("snippet") or "")[: self.cfg.snippet_chars]}
            for item in items[:k]
        ]


class HttpImageSearch:
    def __init__(self, cfg: SearchConfig) -> None:
        if not cfg.image_http_url:
            raise SearchError("search.image_http_url: required for the http image backend")
        self.cfg = cfg
        self._http = _HttpClient(cfg)
        self.backend_id = f"http-image:{cfg.image_http_url}"

    def search(self, image: bytes, k: int) -> list[dict[str, Any]]:
        payload = self._http.request(
            "POST", self.cfg.image_http_url, json={"image": base64.b64encode(image).decode(), "num": k},
            headers={"X-API-KEY": self._http.api_key},
        )
        return [
            {"title": r.get("title", ""), "url": r.get("link", r.get("url", "")), **({"thumbnail": r["thumbnail"]} if r.get("thumbnail") else {})}
            for r in (payload.get("results") or [])[:k]
        ]


class CachedSearch:
    """A search backend behind a persistent cache (diskcache: SQLite, safe across processes)."""

    def __init__(self, backend, cache_dir: str | Path | None) -> None:
        self.backend = backend
        self.backend_id = backend.backend_id
        self.hits = 0
        self.misses = 0
        self._cache = None
        if cache_dir is not None:
            import diskcache

            self._cache = diskcache.Cache(str(cache_dir), size_limit=2**33)

    def search(self, query, k: int) -> list[dict[str, Any]]:
        key_part = hashlib.blake2b(query, digest_size=16).hexdigest() if isinstance(query, bytes) else query
        key = json.dumps([self.backend_id, key_part, k])
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self.hits += 1
                return cached
        self.misses += 1
        results = self.backend.search(query, k)
        if self._cache is not None:
            self._cache.set(key, results)
        return results

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def build_search(cfg: SearchConfig) -> tuple[CachedSearch | None, CachedSearch | None]:
    """The text and image search tools a config asks for (None where the backend is `none`)."""
    index_root = cfg.cache_dir / "indexes" if cfg.cache_dir else None
    results_dir = cfg.cache_dir / "results" if cfg.cache_dir else None
    text = image = None
    if cfg.text_backend == "local" and cfg.corpus_path is not None:
        text = LocalTextSearch(cfg.corpus_path, index_root, cfg.snippet_chars)
    elif cfg.text_backend == "http":
        text = HttpTextSearch(cfg)
    if cfg.image_backend == "local" and cfg.image_corpus_path is not None:
        image = LocalImageSearch.from_corpus(cfg.image_corpus_path, index_root, cfg.thumbnail_px)
    elif cfg.image_backend == "http":
        image = HttpImageSearch(cfg)
    return (
        CachedSearch(text, results_dir) if text is not None else None,
        CachedSearch(image, results_dir) if image is not None else None,
    )
