"""Local text search: BM25 (bm25s) over a JSONL or Parquet corpus of `title`, `url`, `text`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bm25s


class SearchError(Exception):
    """A corpus that cannot be loaded; names the file and the problem."""


def load_corpus(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"search corpus not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        docs = pq.read_table(path).to_pylist()
    else:
        docs = []
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        docs.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise SearchError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
    for i, doc in enumerate(docs):
        missing = {"title", "url", "text"} - set(doc)
        if missing:
            raise SearchError(f"{path}: document {i} lacks field(s) {sorted(missing)}")
    return docs


class LocalTextSearch:
    """BM25 over title and text, built once per corpus and shared by all trajectories."""

    def __init__(self, corpus_path: str | Path, snippet_chars: int = 300) -> None:
        self.docs = load_corpus(corpus_path)
        self.snippet_chars = snippet_chars
        self._index = bm25s.BM25()
        if self.docs:
            tokens = bm25s.tokenize([f"{d['title']} {d['text']}" for d in self.docs], show_progress=False)
            self._index.index(tokens, show_progress=False)

    def search(self, query: str, k: int = 5) -> list[dict[str, Any]]:
        if not self.docs:
            return []
        tokens = bm25s.tokenize([query], show_progress=False)
        if not tokens.vocab:
            return []
        ids, scores = self._index.retrieve(tokens, k=min(k, len(self.docs)), show_progress=False)
        return [
            {"title": self.docs[i]["title"], "url": self.docs[i]["url"], "snippet": self.docs[i]["text"][: self.snippet_chars], "score": float(s)}
            for i, s in zip(ids[0], scores[0], strict=True)
            if s > 0
        ]
