"""What `EndpointPolicy` asks of a vLLM server beyond the OpenAI API, recorded by the stand-in
(tests/vllm_double.py); tests/test_vllm_server.py shows against vLLM itself why each field is there."""

import pytest

from synth.runtime import aio
from synth.runtime.policy import VLLM_PROTOCOL_FIELDS, EndpointPolicy
from synth.runtime.protocol import STOP_SEQUENCES
from tests.vllm_double import VLLMDouble


@pytest.mark.parametrize("owned_by, sent", [("vllm", VLLM_PROTOCOL_FIELDS), ("openai", {}), (None, {})])
def test_protocol_turns_ask_vllm_to_keep_special_tokens(tiny_model, owned_by, sent):
    """vLLM (its models listed as owned by "vllm") keeps the protocol's special-token tags only when told;
    other servers (and one that lists no models) get no field they may refuse. A request without stop strings (the LLM judge) is no
    protocol turn and goes as it is."""
    from transformers import AutoProcessor

    double = VLLMDouble(lambda *a: ([], []), AutoProcessor.from_pretrained(tiny_model), owned_by=owned_by).start()
    messages = [{"role": "user", "content": [{"type": "text", "text": "2 + 5?"}]}]

    async def ask():
        policy = EndpointPolicy(f"{double.url}/v1", "policy")
        try:
            turns = [await policy.generate(messages, [], stop=list(STOP_SEQUENCES), max_tokens=8, temperature=0) for _ in range(2)]
            judged = await policy.generate(messages, [], stop=[], max_tokens=8, temperature=0)
            return turns, judged
        finally:
            await policy.aclose()

    try:
        turns, judged = aio.run(ask())
    finally:
        double.stop()
    assert [t.text for t in turns] == ["<answer>7</answer>"] * 2 and judged.text == "<answer>7</answer>"
    protocol, judge = double.chats[:2], double.chats[2]
    for body in protocol:
        assert {k: body[k] for k in VLLM_PROTOCOL_FIELDS if k in body} == sent
        assert body["stop"] == list(STOP_SEQUENCES)
    assert not set(VLLM_PROTOCOL_FIELDS) & set(judge)
