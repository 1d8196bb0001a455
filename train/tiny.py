"""Tiny Qwen-VL models built offline: random weights from a config, a tokenizer trained on the spot.

Qwen3-VL (the default) or Qwen2.5-VL (the paper's base family), with the same model class,
processor and chat template as the real checkpoints, so every code path that trains or serves a
real checkpoint runs here on a laptop CPU in seconds. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from curation.strict_config import StrictConfig

# Qwen's special tokens plus the protocol's tags, so a tag is one token as in the real vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]


class TinyModelConfig(StrictConfig):
    family: Literal["qwen3_vl", "qwen2_5_vl"] = "qwen3_vl"  # qwen2_5_vl: the paper's base family
    vocab_size: int = Field(2048, ge=1)  # the special tokens and the 256 byte tokens are always in: the vocabulary may come out larger
    hidden_size: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)  # grouped-query attention: heads is a multiple of kv_heads
    # Attention head size. vLLM's CPU attention takes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 or 512
    # only (16 starts, then fails on the first request): a tiny model served by vLLM uses 32.
    head_dim: int = Field(16, ge=8, multiple_of=8)
    # The LM head shares the embedding matrix, as in the small Qwen checkpoints. A CPU vLLM server does
    # not reload a tied head in place (train.weight_sync): the tiny model its tests train untie it.
    tie_word_embeddings: bool = True
    vision_hidden: int = Field(32, ge=8, multiple_of=8)  # the tower's two heads each need an even rotary size
    min_pixels: int = Field(32 * 32, ge=1)  # one vision token per image at least...
    max_pixels: int = Field(64 * 64, ge=1)  # ...and at most four: images stay cheap on a CPU
    seed: int = 0

    @model_validator(mode="after")
    def _shapes_that_fit(self) -> TinyModelConfig:
        # Grouped-query attention shares each key/value head among heads / kv_heads query heads.
        if self.heads % self.kv_heads:
            raise ValueError(f"heads: {self.heads} query heads cannot be shared among kv_heads {self.kv_heads} key/value heads "
                             "(grouped-query attention): heads must be a multiple of kv_heads")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels: {self.min_pixels} is above max_pixels ({self.max_pixels}); the processor resizes every image "
                             "to between the two")
        return self

    @model_validator(mode="after")
    def _qwen2_5_head_size(self) -> TinyModelConfig:
        # Qwen2.5-VL has no head size of its own: it is hidden_size / heads.
        if self.family == "qwen2_5_vl" and self.head_dim * self.heads != self.hidden_size:
            raise ValueError(f"head_dim: Qwen2.5-VL's head size is hidden_size / heads ({self.hidden_size} / {self.heads}), "
                             f"not {self.head_dim}")
        return self


def mrope_section(head_dim: int) -> list[int]:
    """Multimodal rotary sections (time, height, width) for a head size: they sum to head_dim / 2, in the
    real checkpoints' proportions ([16, 24, 24] for 128, the Qwen2.5-VL 7B's; [2, 3, 3] for 16)."""
    half = head_dim // 2
    spatial = half * 3 // 8
    return [half - 2 * spatial, spatial, spatial]


def _chat_template(family: str) -> str:
    # TRL recognises its bundled Qwen templates by their exact text, and then swaps in the
    # training variant with generation markers for assistant-only loss.
    from trl import chat_template_utils

    return getattr(chat_template_utils, f"{family}_chat_template")


def train_tokenizer(texts: Iterable[str], vocab_size: int, family: str = "qwen3_vl"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    # Digits one per token, as Qwen's tokenizer splits them: copying a number is then copying its
    # digits token by token, and no merge can glue a digit to what precedes or follows it.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = _chat_template(family)
    return tokenizer


def _shared_config(cfg: TinyModelConfig, tokenizer, token_id, patch_size: int) -> dict:
    """What the two families' configs have in common: the text model, the vision tower's size, the
    special tokens."""
    return {
        "text_config": {
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.hidden_size * 2,
            "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads,
            "max_position_embeddings": 8192,
            "pad_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
        },
        "vision_config": {
            "depth": 1,
            "hidden_size": cfg.vision_hidden,
            "intermediate_size": cfg.vision_hidden * 2,
            "num_heads": 2,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": cfg.hidden_size,
        },
        "image_token_id": token_id("<|image_pad|>"),
        "video_token_id": token_id("<|video_pad|>"),
        "vision_start_token_id": token_id("<|vision_start|>"),
        "vision_end_token_id": token_id("<|vision_end|>"),
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }


def _processor_parts(cfg: TinyModelConfig, patch_size: int, video_processor_class) -> dict:
    from transformers import Qwen2VLImageProcessor

    size = {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    return {
        "image_processor": Qwen2VLImageProcessor(size=size, patch_size=patch_size, merge_size=2, temporal_patch_size=2),
        "video_processor": video_processor_class(size=size, patch_size=patch_size, merge_size=2, temporal_patch_size=2),
        "chat_template": _chat_template(cfg.family),
    }


def _qwen3_vl(cfg: TinyModelConfig, tokenizer, token_id):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    shared = _shared_config(cfg, tokenizer, token_id, patch_size=16)
    shared["text_config"].update(
        head_dim=cfg.head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(cfg.head_dim), "mrope_interleaved": True},
    )
    shared["vision_config"].update(num_position_embeddings=256, deepstack_visual_indexes=[0])
    processor = Qwen3VLProcessor(tokenizer=tokenizer, **_processor_parts(cfg, 16, Qwen3VLVideoProcessor))
    return Qwen3VLForConditionalGeneration(Qwen3VLConfig(**shared)), processor


def _qwen2_5_vl(cfg: TinyModelConfig, tokenizer, token_id):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    shared = _shared_config(cfg, tokenizer, token_id, patch_size=14)
    shared["text_config"].update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(cfg.head_dim)})
    shared["vision_config"].update(window_size=56, fullatt_block_indexes=[0])
    processor = Qwen2_5_VLProcessor(tokenizer=tokenizer, **_processor_parts(cfg, 14, Qwen2VLVideoProcessor))
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**shared)), processor


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], cfg: TinyModelConfig | None = None) -> Path:
    """Write a tiny Qwen-VL of `cfg.family` (model, tokenizer, processor) to `out_dir`; return the path."""
    import torch

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.family)
    token_id = tokenizer.convert_tokens_to_ids
    model, processor = (_qwen2_5_vl if cfg.family == "qwen2_5_vl" else _qwen3_vl)(cfg, tokenizer, token_id)
    model.generation_config.eos_token_id = [token_id("<|im_end|>"), token_id("<|endoftext|>")]
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
