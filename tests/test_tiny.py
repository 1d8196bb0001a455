"""The tiny-model builder's options that serving on vLLM needs: the head size, an untied LM head."""

import pytest
from pydantic import ValidationError

from train.tiny import TinyModelConfig, build_tiny_model, mrope_section


def test_rotary_sections_follow_the_head_size():
    # The real checkpoints' proportions; the sections always sum to half the head.
    assert mrope_section(16) == [2, 3, 3] and mrope_section(32) == [4, 6, 6] and mrope_section(128) == [16, 24, 24]
    assert all(sum(mrope_section(h)) == h // 2 for h in (8, 16, 24, 32, 64, 80, 96, 112, 128, 256))


def test_a_tiny_model_for_vllm_runs_with_an_image(world, tmp_path):
    """Head size 32 (vLLM's CPU attention takes no smaller) and a head of its own: built, reloaded, run."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    texts = [line for line in open(world["corpus_path"]).read().splitlines()]
    path = build_tiny_model(tmp_path, texts, TinyModelConfig(vocab_size=512, head_dim=32, tie_word_embeddings=False))
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    text_config = model.config.get_text_config()
    assert text_config.head_dim == 32 and text_config.rope_parameters["mrope_section"] == [4, 6, 6]
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    image = Image.new("RGB", (96, 64), "red")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    inputs = processor(text=[processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)], images=[image],
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_qwen2_5_head_size_is_hidden_over_heads():
    with pytest.raises(ValidationError, match="head_dim: Qwen2.5-VL's head size is hidden_size / heads"):
        TinyModelConfig(family="qwen2_5_vl", head_dim=32)
    assert TinyModelConfig(family="qwen2_5_vl", hidden_size=128, heads=4, head_dim=32).head_dim == 32
