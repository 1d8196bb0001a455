"""A stand-in for a vLLM server's token-in/token-out routes, for tests that cannot run vLLM (no GPU).

It serves the routes TRL's `VLLMClient` calls for generation (`/health`, `/v1/models`,
`/server_info`, `/v1/chat/completions/render`, `/inference/v1/generate`, `/reset_prefix_cache`), the
development routes the disk weight sync calls (`/collective_rpc` with `reload_weights`,
`/reset_encoder_cache`) and a recording `/v1/chat/completions` over real HTTP, so the client code
under test is the code that talks to vLLM. The next tokens come from a
`sampler(token_ids, images, sampling_params) -> (ids, logprobs)`: a scripted one, or a local model;
`reload(weights_path)` loads a saved checkpoint into that model (tests/test_vllm_server.py runs the
same paths against vLLM itself).

Like vLLM, it trusts nothing about the prompt: image features carry the placeholder positions of the
throwaway conversation they were rendered in (deliberately not the prompt's), and a generate request
is refused unless its features were re-pointed at the prompt's runs of image tokens, one run per
image, each as long as the processor expands that image. Every generate request is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

from synth.runtime.endpoint import free_port

Sampler = Callable[[list[int], list[Any], dict[str, Any]], tuple[list[int], list[float]]]


def _image(data: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def image_runs(token_ids: list[int], image_token_id: int) -> list[dict[str, int]]:
    runs, offset = [], 0
    while offset < len(token_ids):
        if token_ids[offset] != image_token_id:
            offset += 1
            continue
        length = 0
        while offset + length < len(token_ids) and token_ids[offset + length] == image_token_id:
            length += 1
        runs.append({"offset": offset, "length": length})
        offset += length
    return runs


class VLLMDouble:
    def __init__(self, sampler: Sampler, processor, model_name: str = "policy", reload: Callable[[str], None] | None = None,
                 device: str = "cuda", owned_by: str | None = "vllm") -> None:
        self.sampler = sampler
        self.processor = processor
        self.model_name = model_name
        self.reload = reload  # what `/collective_rpc reload_weights` does with its weights_path; None: the route is absent
        self.device = device  # what `/server_info` says the server runs on
        self.owned_by = owned_by  # what `/v1/models` says (vLLM says "vllm"); None: no such route
        self.reloads: list[str] = []  # every weights_path reloaded
        self.encoder_cache_resets = 0
        self.chats: list[dict[str, Any]] = []  # every chat completion request, as received
        self.image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.requests: list[dict[str, Any]] = []  # every generate request, as received
        self.renders: list[int] = []  # every render request: how many images it held
        self.prefix_cache_resets = 0
        self._server: uvicorn.Server | None = None
        self.url = ""

    def _tokens_per_image(self, images) -> list[int]:
        grids = self.processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
        merge = getattr(self.processor.image_processor, "merge_size", 2) ** 2
        return [int(g.prod()) // merge for g in grids]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        def health():
            return {}

        @app.get("/v1/models")
        def models():
            if self.owned_by is None:
                raise HTTPException(404, "Not Found")
            return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": self.owned_by}]}

        @app.get("/server_info")
        def server_info(config_format: str = "json"):
            return {"vllm_config": {"model_config": {"logprobs_mode": "processed_logprobs"}, "device_config": {"device": self.device},
                                    "weight_transfer_config": {"backend": "nccl"}}}

        @app.post("/reset_prefix_cache")
        def reset_prefix_cache():
            self.prefix_cache_resets += 1
            return {"success": True}

        @app.post("/reset_encoder_cache")
        def reset_encoder_cache():
            self.encoder_cache_resets += 1
            return {}

        @app.post("/collective_rpc")
        def collective_rpc(body: dict):
            if self.reload is None or body.get("method") != "reload_weights":
                raise HTTPException(404, "Not Found")
            path = body["kwargs"]["weights_path"]
            self.reload(path)
            self.reloads.append(path)
            return {"results": [None]}

        @app.post("/v1/chat/completions")
        def chat(body: dict):
            self.chats.append(body)
            return {"id": "chat", "object": "chat.completion", "created": 0, "model": self.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<answer>7</answer>"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}

        @app.post("/v1/chat/completions/render")
        def render(body: dict):
            images = [part["image_url"]["url"].split(",", 1)[1] for message in body["messages"] for part in message["content"]
                      if isinstance(part, dict) and part.get("type") == "image_url"]
            if not images:
                raise HTTPException(400, "no image to render")
            self.renders.append(len(images))
            lengths = self._tokens_per_image([_image(i) for i in images])
            # Positions in this throwaway conversation, which are not the trained prompt's.
            placeholders = [{"offset": 3 + 100 * k, "length": n} for k, n in enumerate(lengths)]
            return {"features": {"images": images, "mm_hashes": {"image": [hashlib.sha256(i.encode()).hexdigest() for i in images]},
                                 "mm_placeholders": {"image": placeholders}}}

        @app.post("/inference/v1/generate")
        def generate(body: dict):
            token_ids = body["token_ids"]
            features = body.get("features")
            images = [_image(i) for i in features["images"]] if features else []
            runs = image_runs(token_ids, self.image_token_id)
            expected = [{"offset": r["offset"], "length": n} for r, n in zip(runs, self._tokens_per_image(images), strict=False)] if images else []
            if len(runs) != len(images) or (features and features["mm_placeholders"]["image"] != expected):
                raise HTTPException(400, f"placeholders {features and features['mm_placeholders']} do not match the prompt's image runs {runs}")
            params = body["sampling_params"]
            self.requests.append({"token_ids": list(token_ids), "images": len(images), "sampling_params": params})
            ids, logprobs = self.sampler(token_ids, images, params)
            content = [{"token": f"token_id:{t}", "logprob": lp, "top_logprobs": []} for t, lp in zip(ids, logprobs, strict=True)]
            return {"request_id": body["request_id"], "choices": [{"index": 0, "token_ids": ids, "logprobs": {"content": content}}]}

        return app

    def start(self) -> VLLMDouble:
        port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=self._server.run, daemon=True).start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the vLLM double did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


def model_reloader(model, lock: threading.Lock):
    """`reload` for a stand-in serving `model`: the saved checkpoint's tensors copied into it, as vLLM's
    `reload_weights` loads a folder into its running model."""
    import safetensors.torch
    import torch

    def reload(weights_path: str) -> None:
        from pathlib import Path

        params = dict(model.named_parameters())
        with lock, torch.no_grad():
            for file in sorted(Path(weights_path).glob("*.safetensors")):
                for name, tensor in safetensors.torch.load_file(file).items():
                    params[name].copy_(tensor)

    return reload


def model_sampler(model, processor, lock: threading.Lock | None = None) -> Sampler:
    """Next tokens from a local model, with vLLM's semantics for the parameters the rollouts use:
    temperature (0: greedy), max_tokens, stop strings (kept in the output), seed, and logit_bias
    (a bias of -100 or less bans the token); logprobs of the sampled tokens after temperature."""
    import torch

    lock = lock or threading.Lock()

    def sample(token_ids: list[int], images: list[Any], params: dict[str, Any]) -> tuple[list[int], list[float]]:
        inputs: dict[str, Any] = {"input_ids": torch.tensor([token_ids]), "attention_mask": torch.ones(1, len(token_ids), dtype=torch.long)}
        if images:
            inputs.update(processor.image_processor(images=images, return_tensors="pt"))
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).long()
        temperature = params.get("temperature", 1.0)
        kwargs: dict[str, Any] = {"max_new_tokens": params["max_tokens"], "pad_token_id": processor.tokenizer.pad_token_id, "top_k": 0,
                                  "top_p": 1.0, "disable_compile": True, "output_scores": True, "return_dict_in_generate": True}
        kwargs.update({"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False})
        if params.get("stop"):
            kwargs.update(stop_strings=list(params["stop"]), tokenizer=processor.tokenizer)
        banned = [int(t) for t, bias in (params.get("logit_bias") or {}).items() if bias <= -100]
        if banned:
            kwargs["suppress_tokens"] = banned
        with lock, torch.no_grad():
            if params.get("seed") is not None:
                torch.manual_seed(params["seed"])
            output = model.generate(**inputs, **kwargs)
        new = output.sequences[0, len(token_ids):].tolist()
        scores = torch.stack(output.scores)[:, 0].float()  # after temperature and the ban, as vLLM's processed logprobs
        logprobs = torch.log_softmax(scores, dim=-1)[torch.arange(len(new)), torch.tensor(new)].tolist()
        return new, logprobs

    return sample
