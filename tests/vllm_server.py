"""A real vLLM server for the tests marked `vllm` (`make test-vllm`), and the tiny model it serves.

The server is `vllm serve` from the separate environment `make vllm-env` installs (`.venv-vllm`, or
the folder in `DEEPEYES_VLLM_ENV`), started with exactly the flags the README gives, on a tiny
Qwen3-VL whose head size vLLM's CPU attention supports (32).

The served model is a *scripted student*: the tiny model fine-tuned by the project's SFT stage on
trajectories that the shared agent loop recorded from a scripted policy. Whatever it is asked, it
writes one protocol episode: a code cell that shows the input image, then an image search, then an
answer, "7" in two of its training episodes out of three and "8" in the third (so greedy decoding
answers 7 with a clear margin, and sampled rollouts differ in reward). The no-tools prompt gets the
answer turn alone. Every tag it writes (`<think>`, `</think>`, `<tool_call>`, `</tool_call>`) is a
special token of the tiny vocabulary, as in Qwen's, so an episode goes through only if the server
keeps them. Its behaviour is known, so tests through vLLM can assert what each stage must record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from synth.runtime.endpoint import ManagedServer, free_port
from synth.runtime.policy import Generation
from train.weight_sync import http_vllm_client, reload_weights

ROOT = Path(__file__).resolve().parent.parent
SERVED_NAME = "policy"
ANSWERS = ("7", "7", "8")  # the answers of the recorded episodes, per sample and mode
CODE_TURN = "<think>Look.</think>\n<code>\n```python\nimage_1.show()\n```\n</code>"
SEARCH_TURN = '<think>Search.</think>\n<tool_call>{"name": "image_search"}</tool_call>'
ANSWER_TURN = "<think>Done.</think>\n<answer>{answer}</answer>"


def vllm_env() -> Path:
    return Path(os.environ.get("DEEPEYES_VLLM_ENV", ROOT / ".venv-vllm"))


def serve_command(checkpoint: str | Path, port: int, env: Path | None = None) -> list[str]:
    """The README's CPU server command (README: "vLLM in the test suite"), as an argument list."""
    env = env or vllm_env()
    return [
        "env", "VLLM_CPU_KVCACHE_SPACE=1", "VLLM_SERVER_DEV_MODE=1",
        str(env / "bin" / "vllm"), "serve", str(checkpoint), "--port", str(port), "--served-model-name", SERVED_NAME,
        "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
        "--limit-mm-per-prompt", json.dumps({"image": 4, "video": 0}),
        "--enable-scale-out", "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1",
    ]


def start_vllm(checkpoint: str | Path, log_path: Path, ready_timeout_s: float = 600.0) -> ManagedServer:
    """Start the server on `checkpoint`; returns it once `/v1/models` answers (its `base_url` ends in /v1)."""
    env = vllm_env()
    if not (env / "bin" / "vllm").exists():
        raise RuntimeError(f"no vLLM environment at {env}: run `make vllm-env` (or `make test-vllm`, which installs it)")
    port = free_port()
    return ManagedServer(serve_command(checkpoint, port, env), f"http://127.0.0.1:{port}/v1", log_path, ready_timeout_s=ready_timeout_s).start()


class ScriptedStudent:
    """A `ChatPolicy` that plays the episode the served model learns (see the module docstring)."""

    name = "scripted-student"

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def generate(self, messages, images, *, stop, max_tokens, temperature, seed=None, prefix="", tag="") -> Generation:
        turns = sum(1 for m in messages if m["role"] == "assistant")
        tools = "python" in "".join(p.get("text") or "" for p in messages[0]["content"])
        script = [CODE_TURN, SEARCH_TURN] if tools else []
        text = script[turns] if turns < len(script) else ANSWER_TURN.format(answer=self.answer)
        return Generation(text, "stop", len(text) // 4)

    async def aclose(self) -> None:
        return None


def student_agent(tools: bool = True, **settings):
    """The agent settings the student is trained and tested with (one search result keeps its episodes short)."""
    from synth.runtime.agent import AgentConfig

    return AgentConfig(**{"max_turns": 4, "max_tokens_per_turn": 96, "search_top_k": 1, "tools": tools, **settings})


def scripted_trajectories(samples, search, out_dir: Path) -> Path:
    """Record the scripted episodes of `samples` (both answers, with and without tools) through the
    agent loop with its live tools, as trajectory shards for the SFT stage."""
    from curation.shards import ShardWriter
    from synth.runtime import aio
    from synth.runtime.agent import open_toolbox, run_episode
    from synth.trajectory import TRAJECTORY_SCHEMA

    async def record(tools_box, agent):
        rows = []
        for sample in samples:
            for attempt, answer in enumerate(ANSWERS):
                rows.append(await run_episode(sample, ScriptedStudent(answer), tools_box, agent, attempt=attempt))
        return rows

    rows: list[dict[str, Any]] = []
    for use_tools in (True, False):
        agent = student_agent(use_tools)
        with open_toolbox(agent, search) as tools_box:
            rows += aio.run(record(tools_box, agent))
    with_tools = [r for r in rows if r["tool_calls"]]
    calls = {(c["tool"], c["outcome"], c["images"]) for r in with_tools for c in r["tool_calls"]}
    if calls != {("python", "ok", 1), ("image_search", "ok", 1)} or len(with_tools) != len(samples) * len(ANSWERS):
        raise RuntimeError(f"the scripted episodes did not run their tools as scripted: {sorted(calls)}")
    with ShardWriter(out_dir, TRAJECTORY_SCHEMA) as writer:
        writer.write_many(rows)
    return out_dir


def build_scripted_student(world: dict, samples, out_dir: Path) -> Path:
    """The tiny model, fine-tuned by `train.sft.run_sft` until it plays the script; returns its checkpoint.

    Head size 32 (vLLM's CPU attention takes no smaller), and an LM head of its own: a CPU server does
    not reload a head tied to the embeddings (train.grpo.check_disk_sync_server)."""
    from synth.tools.search import SearchConfig
    from train.sft import SFTStageConfig, run_sft
    from train.tiny import TinyModelConfig, build_tiny_model

    texts = Path(world["scripts_path"]).read_text().splitlines() + Path(world["corpus_path"]).read_text().splitlines()
    base = build_tiny_model(out_dir / "base", texts, TinyModelConfig(vocab_size=1024, head_dim=32, tie_word_embeddings=False))
    search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"], cache_dir=str(out_dir / "search-cache"))
    trajectories = scripted_trajectories(samples, search, out_dir / "trajectories")
    cfg = SFTStageConfig(learning_rate=STUDENT_SFT_LR, max_steps=STUDENT_SFT_STEPS, lr_scheduler="constant", warmup_ratio=0.0,
                         logging_steps=10)
    return Path(run_sft(cfg, base, [trajectories], out_dir / "sft")["checkpoint"])


STUDENT_SFT_STEPS = 200
STUDENT_SFT_LR = 3e-3


class VLLMServer:
    """The session's server: its base URL (ending in /v1), the checkpoint it serves, its log."""

    def __init__(self, managed: ManagedServer, checkpoint: Path) -> None:
        self.managed = managed
        self.checkpoint = checkpoint
        self.url = managed.base_url
        self.log_path = managed.log_path

    @classmethod
    def start(cls, world: dict, samples, out_dir: Path) -> VLLMServer:
        from synth.runtime.endpoint import EndpointError

        checkpoint = build_scripted_student(world, samples, out_dir)
        try:
            return cls(start_vllm(checkpoint, out_dir / "vllm.log"), checkpoint)
        except EndpointError as exc:  # say why here: CI keeps no temporary folders
            tail = (out_dir / "vllm.log").read_text(errors="replace").splitlines()[-40:] if (out_dir / "vllm.log").exists() else []
            raise EndpointError("\n".join([str(exc), *tail])) from None

    def reload(self, checkpoint: str | Path | None = None) -> None:
        """Put `checkpoint` (default: the served one) back into the running server, as the disk sync does
        (with the function imported here, which a test that skips the trainer's reloads leaves alone)."""
        reload_weights(http_vllm_client(self.url.removesuffix("/v1")), checkpoint or self.checkpoint)

    def stop(self) -> None:
        self.managed.stop()


def probe_token_ids(checkpoint: str | Path) -> list[int]:
    """A fixed text-only sequence to read log-probs on: the student's two tool turns."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = f"<|im_start|>assistant\n{CODE_TURN}<|im_end|>\n<|im_start|>assistant\n{SEARCH_TURN}<|im_end|>"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def served_logprobs(url: str, token_ids: list[int]) -> list[float]:
    """The served model's log-prob of each token after the first, given those before it (vLLM's prompt log-probs)."""
    import httpx

    body = {"model": SERVED_NAME, "prompt": token_ids, "max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
    positions = httpx.post(f"{url}/completions", json=body, timeout=120).json()["choices"][0]["prompt_logprobs"]
    return [entry[str(token)]["logprob"] for entry, token in zip(positions[1:], token_ids[1:], strict=True)]


def local_logprobs(checkpoint: str | Path, token_ids: list[int]) -> list[float]:
    """The same log-probs from the checkpoint loaded with transformers."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([token_ids])).logits[0, :-1].float(), dim=-1)
    return logprobs[torch.arange(len(token_ids) - 1), torch.tensor(token_ids[1:])].tolist()


def max_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
