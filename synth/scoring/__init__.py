"""Scoring, one path for synthesis, GRPO and evaluation: the answer judges (`judge`, with the LLM
judge's prompt in `prompts/`) and the paper's reward (`reward`)."""
