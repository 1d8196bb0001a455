"""The instruct stage: a base model like the paper's, made offline from the tiny random model.

DeepEyesV2 starts from Qwen2.5-VL-7B-Instruct, a model that answers directly and calls tools rarely
and clumsily; the paper's ablations (RL alone, cold start, both) all start from it. Offline there is
no such checkpoint, so this stage makes a stand-in for it: the learnable world's instruct samples
(`instruct.jsonl`, drawn apart from the pipeline's own samples, so the base has seen none of the
items it is later trained or evaluated on) are curated, answered by the replay server's
`demo-instruct` persona through the shared agent loop with live tools (direct answers, and on a small
share a tool attempt, some with a bug), mixed with the world's text-only direct rows, and the model
is trained on them with the SFT stage. The same curate, synthesize and SFT code as the pipeline's
stages; only the persona is the instruct model's.

Output under `out_dir`: `curate/` (the instruct samples, all in the `coldstart` pool, which here means
"SFT data"), `synthesize/` (the trajectories, failing code cells kept: they are the base's buggy
attempts; answers kept whatever the judge says, as the data records what the instruct model says:
`world.instruct_unsure: abstain` makes it say "unknown" on a tool item it tries no tool on),
`sft/checkpoint/` (the base model).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from curation.strict_config import StrictConfig
from synth.long_cot import LongCotConfig
from synth.runtime.agent import AgentConfig
from synth.scoring.judge import JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.stage import SynthConfig, run_synthesize
from synth.tools.search import SearchConfig
from train.sft import SFTStageConfig, run_sft


class BaseStageConfig(StrictConfig):
    """The instruct stage that makes the base model (the `base:` section of a pipeline config)."""

    instruct_model: str = "demo-instruct"  # the replay server's persona (or any endpoint's model) that answers the instruct samples
    concurrency: int = Field(8, ge=1)
    long_cot_ratio: float = Field(0.5, ge=0.0, lt=1.0)  # share of the world's text-only direct rows in the instruct set
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(max_turns=4, max_tokens_per_turn=512, search_top_k=2))
    sft: SFTStageConfig = Field(default_factory=lambda: SFTStageConfig(learning_rate=5e-3, epochs=2, warmup_ratio=0.05))


def run_base(
    cfg: BaseStageConfig, model_path: str | Path, instruct_path: str | Path, endpoint_url: str, out_dir: str | Path,
    search: SearchConfig | None = None, judge: JudgeConfig | None = None, long_cot_path: str | Path | None = None,
    reward: RewardConfig | None = None,
) -> dict[str, Any]:
    """Train `model_path` (the tiny random model) into the base model on the instruct samples of
    `instruct_path`, answered by `cfg.instruct_model` at `endpoint_url`. Returns the base checkpoint's
    path and the counts of each step. Raises `TrainingDataError` when no trajectory was kept."""
    started = time.time()
    out = Path(out_dir)
    curated = run_curate(CurateConfig(sources=[SourceSpec(path=Path(instruct_path), name="instruct")], split={"coldstart": 1.0}), out / "curate")
    long_cot = LongCotConfig(path=Path(long_cot_path), ratio=cfg.long_cot_ratio) if long_cot_path and cfg.long_cot_ratio > 0 else None
    synth_cfg = SynthConfig(teacher_url=endpoint_url, teacher_model=cfg.instruct_model, pools=["coldstart"], attempts=1,
                            concurrency=cfg.concurrency, allow_code_errors=True, verify_answers=False, long_cot=long_cot,
                            agent=cfg.agent)
    synthesized = run_synthesize(synth_cfg, out / "curate", out / "synthesize", search, judge, reward=reward)
    sft = run_sft(cfg.sft, model_path, [out / "synthesize"], out / "sft", setting="base.sft")
    return {
        "checkpoint": sft["checkpoint"],
        "curated": curated["counts"] if "counts" in curated else curated,
        "trajectories": synthesized["counts"],
        "reject_reasons": synthesized["reject_reasons"],
        "sft": {k: sft[k] for k in ("rows", "steps", "losses", "seconds")},
        "seconds": round(time.time() - started, 3),
    }
