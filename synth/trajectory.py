"""The `Trajectory` contract: one agent episode in TRL's conversational format.

`messages` holds `{"type": "image"}` placeholders and `images` the images in order of
appearance (the sample's inputs first, then what tools produced), so a shard loads with
`datasets.load_dataset("parquet", ...)` and trains with a stock TRL `SFTTrainer`.
"""

from __future__ import annotations

import pyarrow as pa

from curation.schema import HF_IMAGE_LIST, IMAGE_TYPE, hf_value, with_hf_features

TRAJECTORY_SCHEMA_VERSION = "trajectory/3"  # 2: per-turn latency and completion tokens; 3: the reward's parts

CONTENT_PART = pa.struct([pa.field("type", pa.string()), pa.field("text", pa.string())])
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.list_(CONTENT_PART))])
TOOL_CALL = pa.struct(
    [
        pa.field("turn", pa.int32()),
        pa.field("tool", pa.string()),  # python | search | image_search | invalid
        pa.field("outcome", pa.string()),  # ok | code_error | timeout | memory_exceeded | kernel_died | error
        pa.field("latency_ms", pa.float64()),
        pa.field("images", pa.int32()),
    ]
)

_HF_MESSAGES = {
    "_type": "List",
    "feature": {
        "role": hf_value("string"),
        "content": {"_type": "List", "feature": {"type": hf_value("string"), "text": hf_value("string")}},
    },
}

TRAJECTORY_SCHEMA = with_hf_features(
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("category", pa.string()),
            pa.field("policy", pa.string()),
            pa.field("attempt", pa.int32()),
            pa.field("protocol_version", pa.string()),
            pa.field("messages", pa.list_(MESSAGE)),
            pa.field("images", pa.list_(IMAGE_TYPE)),
            pa.field("tool_calls", pa.list_(TOOL_CALL)),
            pa.field("turns", pa.int32()),
            pa.field("turn_latency_ms", pa.list_(pa.float64())),  # the model's time per turn
            pa.field("completion_tokens", pa.int32()),
            pa.field("stop_reason", pa.string()),  # answer | no_action | max_turns | length | error
            pa.field("final_answer", pa.string()),
            pa.field("answer", pa.string()),  # the gold answer, for inspection
            pa.field("correct", pa.bool_()),
            pa.field("judge_method", pa.string()),
            pa.field("judge_failed", pa.bool_()),
            pa.field("format_ok", pa.bool_()),
            pa.field("reward", pa.float64()),
            pa.field("accuracy_reward", pa.float64()),  # accuracy after the length cap, times (1 - search_penalty)
            pa.field("format_reward", pa.float64()),  # the format reward after the length cap
            pa.field("search_penalty", pa.float64()),  # the fraction taken off accuracy for searching
            pa.field("reject_reason", pa.string()),  # null when kept
            pa.field("latency_ms", pa.float64()),
        ]
    ),
    {
        "id": hf_value("string"),
        "sample_id": hf_value("string"),
        "category": hf_value("string"),
        "policy": hf_value("string"),
        "attempt": hf_value("int32"),
        "protocol_version": hf_value("string"),
        "messages": _HF_MESSAGES,
        "images": HF_IMAGE_LIST,
        "tool_calls": {
            "_type": "List",
            "feature": {
                "turn": hf_value("int32"),
                "tool": hf_value("string"),
                "outcome": hf_value("string"),
                "latency_ms": hf_value("float64"),
                "images": hf_value("int32"),
            },
        },
        "turns": hf_value("int32"),
        "turn_latency_ms": {"_type": "List", "feature": hf_value("float64")},
        "completion_tokens": hf_value("int32"),
        "stop_reason": hf_value("string"),
        "final_answer": hf_value("string"),
        "answer": hf_value("string"),
        "correct": hf_value("bool"),
        "judge_method": hf_value("string"),
        "judge_failed": hf_value("bool"),
        "format_ok": hf_value("bool"),
        "reward": hf_value("float64"),
        "accuracy_reward": hf_value("float64"),
        "format_reward": hf_value("float64"),
        "search_penalty": hf_value("float64"),
        "reject_reason": hf_value("string"),
        "latency_ms": hf_value("float64"),
    },
    TRAJECTORY_SCHEMA_VERSION,
)
