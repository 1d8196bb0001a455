"""Search tools: local BM25 and perceptual-hash search, HTTP backends, the persistent cache."""

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bm25s
import pytest

from tests.conftest import in_threads
from synth.tools.search import (
    CachedSearch,
    HttpImageSearch,
    HttpTextSearch,
    LocalImageSearch,
    LocalTextSearch,
    SearchConfig,
    SearchError,
    build_search,
)


def test_local_text_search_finds_the_entity_and_reuses_its_index(world, tmp_path, monkeypatch):
    docs = [json.loads(line) for line in Path(world["corpus_path"]).read_text().splitlines()]
    entity = next(d for d in docs if "completed in" in d["text"])
    first = LocalTextSearch(world["corpus_path"], tmp_path)
    results = first.search(f"{entity['title']} completed year", 3)
    assert results[0]["title"] == entity["title"] and results[0]["url"] == entity["url"]
    assert list(tmp_path.glob("bm25-*"))  # saved

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of loaded")

    monkeypatch.setattr(bm25s.BM25, "index", no_rebuild)
    again = LocalTextSearch(world["corpus_path"], tmp_path)
    assert again.search(f"{entity['title']} completed year", 3) == results


def test_parallel_tasks_in_one_process_build_the_same_indexes_without_clashing(world, tmp_path):
    # Shard tasks on the thread runner open the same search at the same moment.
    cfg = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=tmp_path)
    errors: list[BaseException] = []
    for _ in range(3):  # a clash is a race: give it a few chances
        for index in list((tmp_path / "indexes").glob("*")) if (tmp_path / "indexes").exists() else []:
            shutil.rmtree(index) if index.is_dir() else index.unlink()
        errors += in_threads(lambda: build_search(cfg))
    assert errors == []
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "indexes").iterdir()) == ["bm25", "phash"]  # no temporary left


def test_saved_indexes_are_read_one_thread_at_a_time(world, tmp_path, request):
    # numpy.load parses .npy headers with ast; on CPython before 3.11.8 two threads parsing at once
    # can raise SystemError (cpython gh-106905; see curation/ast_lock.py), which once failed the
    # parallel test above in CI.
    cfg = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=tmp_path)
    build_search(cfg)  # saves both indexes; the threads below only read them
    overlap = request.getfixturevalue("ast_overlap")
    assert in_threads(lambda: build_search(cfg)) == []
    assert overlap.most_at_once == 1


def test_local_image_search_matches_another_photo_of_the_landmark(world, tmp_path):
    root = Path(world["samples_path"]).parent
    samples = [json.loads(line) for line in Path(world["samples_path"]).read_text().splitlines()]
    search = LocalImageSearch.from_corpus(world["image_corpus_path"], tmp_path)
    for sample in (s for s in samples if s["category"] == "search" and not s["meta"]["plaque"]):
        results = search.search((root / sample["images"][0]).read_bytes(), 3)
        assert results[0]["title"] == sample["meta"]["entity"]
        assert results[0]["distance"] < results[1]["distance"]
        assert results[0]["thumbnail"]
    assert list(tmp_path.glob("phash-*.npy"))
    with pytest.raises(SearchError, match="query image"):
        search.search(b"not an image", 3)


class FakeSearchAPI:
    """A SerpAPI/Serper-shaped search service on loopback that rate-limits its first request."""

    def __init__(self, throttle_first: int = 1) -> None:
        self.requests: list[tuple[str, str, float]] = []
        self.throttle_first = throttle_first
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                api.requests.append((self.command, self.path, time.monotonic()))
                if len(api.requests) <= api.throttle_first:
                    return self._reply(429, {"error": "slow down"}, [("Retry-After", "0.2")])
                if self.path.startswith("/lens"):
                    return self._reply(200, {"results": [{"title": "Lens hit", "link": "http://x/lens"}]})
                if self.path.startswith("/serpapi"):
                    return self._reply(200, {"organic_results": [{"title": "S", "link": "http://x/s", "snippet": "from serpapi"}]})
                query = json.loads(body)["q"]
                return self._reply(200, {"organic": [{"title": f"About {query}", "link": "http://x/1", "snippet": "a fact"}]})

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def fake_api():
    api = FakeSearchAPI()
    yield api
    api.close()


def test_http_search_retries_after_429_honouring_retry_after(fake_api):
    search = HttpTextSearch(SearchConfig(text_backend="http", http_url=f"{fake_api.url}/search", rate_limit_per_s=100))
    results = search.search("velmora tower", 3)
    assert results == [{"title": "About velmora tower", "url": "http://x/1", "snippet": "a fact"}]
    (_, _, first), (_, _, second) = fake_api.requests
    assert second - first >= 0.19  # waited as the server asked


def test_http_styles_and_image_search(fake_api):
    fake_api.throttle_first = 0
    serpapi = HttpTextSearch(SearchConfig(text_backend="http", http_url=f"{fake_api.url}/serpapi", http_style="serpapi"))
    assert serpapi.search("q", 3)[0]["snippet"] == "from serpapi"
    assert fake_api.requests[-1][0] == "GET"
    lens = HttpImageSearch(SearchConfig(image_backend="http", image_http_url=f"{fake_api.url}/lens"))
    assert lens.search(b"\x89PNG...", 3) == [{"title": "Lens hit", "url": "http://x/lens"}]


def test_http_failure_after_retries_is_a_search_error(fake_api):
    fake_api.throttle_first = 100
    search = HttpTextSearch(SearchConfig(text_backend="http", http_url=f"{fake_api.url}/search", retries=2))
    with pytest.raises(SearchError, match="429"):
        search.search("q", 3)
    assert len(fake_api.requests) == 3


def test_rate_limit_spaces_requests(fake_api):
    fake_api.throttle_first = 0
    search = HttpTextSearch(SearchConfig(text_backend="http", http_url=f"{fake_api.url}/search", rate_limit_per_s=10))
    for query in ("a", "b", "c", "d"):
        search.search(query, 1)
    times = [t for _, _, t in fake_api.requests]
    assert times[-1] - times[0] >= 0.28


def test_persistent_cache_never_pays_twice(fake_api, tmp_path):
    fake_api.throttle_first = 0
    cfg = SearchConfig(text_backend="http", http_url=f"{fake_api.url}/search", cache_dir=tmp_path)
    text, _ = build_search(cfg)
    first = text.search("same query", 5)
    assert text.search("same query", 5) == first
    assert len(fake_api.requests) == 1
    text.search("same query", 3)  # the result count is part of the key
    assert len(fake_api.requests) == 2
    text.close()
    reopened, _ = build_search(cfg)  # a later run, a new process: still cached
    assert reopened.search("same query", 5) == first and len(fake_api.requests) == 2
    assert reopened.hits == 1 and reopened.misses == 0


def test_cache_keys_separate_backends_and_images(world, tmp_path):
    image_search = CachedSearch(LocalImageSearch.from_corpus(world["image_corpus_path"]), tmp_path)
    photo = Path(world["image_corpus_path"]).parent / json.loads(Path(world["image_corpus_path"]).read_text().splitlines()[0])["image"]
    first = image_search.search(photo.read_bytes(), 2)
    assert image_search.search(photo.read_bytes(), 2) == first and image_search.hits == 1
    other = json.loads(Path(world["image_corpus_path"]).read_text().splitlines()[1])["image"]
    image_search.search((photo.parent.parent / other).read_bytes(), 2)
    assert image_search.misses == 2
