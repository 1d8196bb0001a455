"""A peer model server for tests: `transformers serve` (in the stack's own transformers, no extra
install) serving a tiny Qwen3-VL that was taught, in a few seconds of training, to write two turns
of the protocol: a search call, then, after the observation, an answer. Such a server differs from
vLLM where users meet it: it answers HTTP 500 to any request with `stop` for a vision-language
model, refuses vLLM's `continue_final_message` (HTTP 422), moves `<think>...</think>` into
`reasoning_content` and `<tool_call>` into `tool_calls`."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

from synth.runtime.endpoint import ManagedServer, free_port

SEARCH_QUERY = "landmark city"
SEARCH_TURN = '<think>I should search.</think><tool_call>{"name": "search", "arguments": {"query": "landmark city"}}</tool_call>'
ANSWER_TURN = "<think>Found it.</think><answer>42</answer>"


def teach_tiny_model(out_dir: str | Path, samples: list, observation: str, max_steps: int = 800, seed: int = 0) -> Path:
    """Build a tiny Qwen3-VL (`train.tiny`) and train it until greedy decoding writes `SEARCH_TURN`
    after the opening of an episode of each of `samples` (`curation.schema.Sample`), `ANSWER_TURN`
    after that turn and `observation` (what the search tool answers), and `ANSWER_TURN` at once
    after the tool-free control's opening. The conversations are the agent loop's own
    (`synth.runtime.agent.opening`), so the server sees what was taught. Writes `teaching.json` (steps,
    last losses, seconds) beside the model."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from synth.runtime.agent import AgentConfig, opening
    from train.tiny import TinyModelConfig, build_tiny_model

    started = time.time()
    tools, control = AgentConfig(), AgentConfig(tools=False)
    conversations = []
    for sample in samples:
        first, images = opening(sample, tools)
        second = [*first, {"role": "assistant", "content": [{"type": "text", "text": SEARCH_TURN}]},
                  {"role": "user", "content": [{"type": "text", "text": observation}]}]
        conversations += [(first, images, SEARCH_TURN), (second, images, ANSWER_TURN), (opening(sample, control)[0], images, ANSWER_TURN)]
    texts = [part["text"] for conversation, _, _ in conversations for message in conversation for part in message["content"]
             if part["type"] == "text"]
    model_dir = build_tiny_model(out_dir, [*dict.fromkeys(texts), SEARCH_TURN, ANSWER_TURN] * 4, TinyModelConfig(vocab_size=2048, seed=seed))
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    examples = []
    for conversation, images, target in conversations:
        pil = [Image.open(io.BytesIO(data)).convert("RGB") for data in images] or None
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        encoded = processor(text=[prompt + target + "<|im_end|>"], images=pil, return_tensors="pt")
        prompt_len = processor(text=[prompt], images=pil, return_tensors="pt")["input_ids"].shape[1]
        labels = encoded["input_ids"].clone()
        labels[:, :prompt_len] = -100  # the loss on the assistant turn only
        examples.append((encoded, labels))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = [float("inf")] * len(examples)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small: one thread is 15 times faster than two on shared, loaded cores
    try:
        for step in range(max_steps):
            encoded, labels = examples[step % len(examples)]
            loss = model(**encoded, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[step % len(examples)] = loss.item()
            if max(losses) < 0.02:
                break
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (Path(model_dir) / "teaching.json").write_text(json.dumps({"steps": step + 1, "examples": len(examples), "losses": losses,
                                                              "seconds": round(time.time() - started, 1)}))
    return Path(model_dir)


def search_observation(corpus_path: str, top_k: int = 5) -> str:
    """What the agent's text search answers `SEARCH_QUERY` with on a local corpus, as the default
    protocol profile renders it."""
    from synth.runtime.agent import AgentConfig
    from synth.tools.search import SearchConfig, build_search

    text_search, _ = build_search(SearchConfig(corpus_path=corpus_path))
    try:
        return AgentConfig().protocol.render_search([(SEARCH_QUERY, text_search.search(SEARCH_QUERY, top_k))])
    finally:
        text_search.close()


def start_transformers_serve(model_dir: str | Path, log_dir: Path) -> tuple[ManagedServer, str]:
    """`transformers serve MODEL_DIR` on a free port, on the CPU; (the server, its base URL). The
    model's name at the endpoint is `str(model_dir)`."""
    port = free_port()
    # One thread: the model is tiny, and threads spinning on shared cores only slow it down.
    command = ["env", "OMP_NUM_THREADS=1", os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    url = f"http://127.0.0.1:{port}/v1"
    return ManagedServer(command, url, log_dir / "transformers-serve.log", ready_timeout_s=180).start(), url


