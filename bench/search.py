"""Search latency on a 100k-entry corpus: local BM25 text search and perceptual-hash image search.

    python -m bench.search --json

Prints `text_search_p50_ms` and `image_search_p50_ms` (one query, top 5, thumbnails off so the
hash search itself is timed), the index build times, and `cached_search_p50_ms` (a repeated query
answered by the persistent cache), measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from synth.tools.search import CachedSearch, LocalImageSearch, LocalTextSearch, phash64

WORDS = ("tower bridge gate library museum river harbor castle temple garden market station tunnel "
         "observatory lighthouse aqueduct palace square forest valley mountain island canal fortress").split()


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        names = [f"{rng.choice(WORDS).capitalize()}{i} {rng.choice(WORDS).capitalize()}" for i in range(args.docs)]
        with open(corpus, "w") as handle:
            for i, name in enumerate(names):
                text = " ".join(rng.choice(WORDS) for _ in range(30))
                handle.write(json.dumps({"title": name, "url": f"https://x/{i}", "text": f"{name} {text} built {1500 + i % 500}"}) + "\n")
        started = time.perf_counter()
        text_search = LocalTextSearch(corpus, Path(tmp) / "index")
        text_build = time.perf_counter() - started
        started = time.perf_counter()
        LocalTextSearch(corpus, Path(tmp) / "index")
        text_reload = time.perf_counter() - started
        text_times = []
        for _ in range(args.queries):
            query = f"{rng.choice(names)} built {rng.choice(WORDS)}"
            started = time.perf_counter()
            text_search.search(query, 5)
            text_times.append(time.perf_counter() - started)

        # 100k image hashes: hashing 100k images is the index build, not the latency under test.
        hashes = np.frombuffer(np.random.default_rng(0).bytes(8 * args.docs), dtype=np.uint64).copy()
        buffer = io.BytesIO()
        Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="PNG")
        query_image = buffer.getvalue()
        hashes[123] = phash64(query_image)
        entries = [{"title": n, "url": f"https://x/{i}"} for i, n in enumerate(names)]
        image_search = LocalImageSearch(entries, hashes, "bench")
        image_times = []
        for _ in range(args.queries):
            started = time.perf_counter()
            results = image_search.search(query_image, 5)
            image_times.append(time.perf_counter() - started)
        assert results[0]["title"] == names[123] and results[0]["distance"] == 0

        cached = CachedSearch(text_search, Path(tmp) / "cache")
        cached.search("tower bridge", 5)
        cached_times = []
        for _ in range(args.queries):
            started = time.perf_counter()
            cached.search("tower bridge", 5)
            cached_times.append(time.perf_counter() - started)
        cached.close()

    result = {
        "docs": args.docs,
        "text_search_p50_ms": _ms(text_times),
        "image_search_p50_ms": _ms(image_times),
        "cached_search_p50_ms": _ms(cached_times),
        "text_index_build_s": round(text_build, 2),
        "text_index_reload_s": round(text_reload, 2),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
