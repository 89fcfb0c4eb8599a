"""The official `openai` Python SDK against Hearth's OpenAI-compatible endpoint."""

import openai
import pytest

from conftest import SMOLLM


@pytest.fixture(scope="module")
def oa(hearth):
    return openai.OpenAI(api_key=hearth["token"],
                         base_url=f"{hearth['base']}/client/v4/accounts/{hearth['account']}/ai/v1",
                         max_retries=0)


QUESTION = [{"role": "user", "content": "Name the capital of France."}]


def test_chat_completion(oa):
    out = oa.chat.completions.create(model=SMOLLM, messages=QUESTION, temperature=0, max_tokens=20)
    assert out.object == "chat.completion"
    assert "Paris" in out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens <= 20


def test_chat_completion_stream_matches_non_stream(oa):
    whole = oa.chat.completions.create(model=SMOLLM, messages=QUESTION, temperature=0, max_tokens=20)
    chunks = list(oa.chat.completions.create(model=SMOLLM, messages=QUESTION, temperature=0, max_tokens=20,
                                             stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_unknown_model_is_a_bad_request(oa):
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="@cf/nobody/nothing", messages=QUESTION)


def test_embeddings_create(oa):
    out = oa.embeddings.create(model="@cf/sentence-transformers/all-minilm-l6-v2",
                               input=["A man is eating food.", "A man is eating a piece of bread."])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 384
    cos = sum(x * y for x, y in zip(out.data[0].embedding, out.data[1].embedding))
    assert abs(cos - 0.755) < 0.005
    assert out.usage.prompt_tokens > 10
