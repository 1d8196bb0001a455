"""A misbehaving OpenAI-compatible server for tests of how endpoint faults reach the user: one
thread in the test's process, one behaviour (`mode`) per server. Modes: `ok`, `nonjson` (a 200
text/plain body), `nullmessage` (a choice whose message is null), `refuse_seed` (HTTP 400 to a
request with `seed`), `refuse_stop` (HTTP 422 to one with `stop`), `auth` (HTTP 401 unless the
bearer token is `secret`), `models_empty` (lists no models)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from synth.runtime.endpoint import free_port

ANSWER = "<think>ok</think><answer>1</answer>"


def completion(message) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeServer:
    """`with FakeServer("nonjson") as url:` serves `mode` at `url` (ending in /v1); `posts` holds
    the JSON bodies it was sent."""

    def __init__(self, mode: str, model: str = "fake") -> None:
        self.mode, self.model, self.posts = mode, model, []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, code: int, body, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self) -> bool:
                return server.mode != "auth" or self.headers.get("Authorization") == "Bearer secret"

            def do_GET(self) -> None:
                if not self.authorized():
                    return self.send(401, {"error": {"message": "Incorrect API key provided"}})
                if self.path.rstrip("/").endswith("/v1/models"):
                    data = [] if server.mode == "models_empty" else [{"id": server.model, "object": "model", "owned_by": "me"}]
                    return self.send(200, {"object": "list", "data": data})
                self.send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.posts.append(body)
                if not self.authorized():
                    return self.send(401, {"error": {"message": "Incorrect API key provided"}})
                if not self.path.endswith("/v1/chat/completions"):
                    return self.send(404, {"error": "not found"})
                mode = server.mode
                if mode == "nonjson":
                    return self.send(200, b"not json at all", "text/plain")
                if mode == "nullmessage":
                    return self.send(200, completion(None))
                if mode == "refuse_seed" and "seed" in body:
                    return self.send(400, {"error": {"message": "unknown field seed"}})
                if mode == "refuse_stop" and "stop" in body:
                    return self.send(422, {"error": {"message": "stop not supported"}})
                self.send(200, completion({"role": "assistant", "content": ANSWER}))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
