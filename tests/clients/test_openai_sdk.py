"""The official `openai` Python SDK against Hearth's OpenAI-compatible endpoint."""

import openai
import pytest

from conftest import LLAVA_CHAT, SMOLLM, VISION_CHAT


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


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}


def test_tool_calling_flow_runs_unchanged(oa):
    """The SDK's documented tool-calling loop: call, run the tool, answer."""
    import json

    messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    first = oa.chat.completions.create(model=SMOLLM, messages=messages, tools=[WEATHER], tool_choice="required",
                                       temperature=0, max_tokens=64)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args.get("unit") in (None, "celsius", "fahrenheit")

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "sky": "sunny"})})
    second = oa.chat.completions.create(model=SMOLLM, messages=messages, tools=[WEATHER], tool_choice="none",
                                        temperature=0, max_tokens=48)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content.strip()

    # Streaming: the SDK's chunks carry the call as tool_calls deltas.
    chunks = list(oa.chat.completions.create(model=SMOLLM, messages=messages[:1], tools=[WEATHER],
                                             tool_choice="required", temperature=0, max_tokens=64, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments) == args


def test_json_schema_response_format(oa):
    import json

    schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 30}},
              "required": ["capital"], "additionalProperties": False}
    out = oa.chat.completions.create(
        model=SMOLLM, messages=QUESTION, temperature=0, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema, "strict": True}})
    value = json.loads(out.choices[0].message.content)
    assert set(value) == {"capital"} and isinstance(value["capital"], str)


@pytest.mark.parametrize("model", [VISION_CHAT, LLAVA_CHAT])
def test_vision_chat_with_an_image_part(oa, hearth, model):
    """Vision models (tiny random Llama 3.2 Vision and LLaVA) answer a
    message with an image_url part given as a data: URI, whole or streamed."""
    import base64
    import os
    from pathlib import Path

    import httpx

    if model == VISION_CHAT:
        # Meta's terms are accepted once, on the native route.
        httpx.post(f"{hearth['base']}/client/v4/accounts/{hearth['account']}/ai/run/{model}",
                   json={"prompt": "agree"},
                   headers={"Authorization": f"Bearer {hearth['token']}"}).raise_for_status()
    models = Path(os.environ.get("HEARTH_MODELS_DIR", Path.home() / ".local/share/hearth/models"))
    photo = (models / "test-data/skimage-0.26.0/chelsea.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(photo).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this ?"},
                                             {"type": "image_url", "image_url": {"url": uri}}]}]
    out = oa.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
    assert out.object == "chat.completion"
    assert out.choices[0].message.content and len(out.choices[0].message.content.split()) <= 4
    assert out.usage.prompt_tokens > 4 and out.usage.completion_tokens <= 4
    # Streamed, the pieces join to the same answer.
    chunks = list(oa.chat.completions.create(model=model, messages=messages, max_tokens=4,
                                             temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == out.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model=SMOLLM, messages=messages, max_tokens=4)
