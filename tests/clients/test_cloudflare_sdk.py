"""The official `cloudflare` Python SDK (5.9.0) against a running Hearth."""

import cloudflare
import pytest
from cloudflare import Cloudflare

from conftest import SMOLLM


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def test_run_prompt_returns_text_and_usage(cf, hearth):
    result = cf.ai.run(SMOLLM, account_id=hearth["account"], prompt="The capital of France is", raw=True,
                       temperature=0, max_tokens=8)
    assert "Paris" in result["response"]
    assert result["usage"]["completion_tokens"] <= 8


def test_run_messages(cf, hearth):
    result = cf.ai.run(SMOLLM, account_id=hearth["account"],
                       messages=[{"role": "user", "content": "Name the capital of France."}],
                       temperature=0, max_tokens=20)
    assert "Paris" in result["response"]


def test_models_list_pages_through_the_catalog(cf, hearth):
    models = list(cf.ai.models.list(account_id=hearth["account"], per_page=20))
    names = {m["name"] for m in models}
    assert len(models) >= 100
    assert SMOLLM in names and "@cf/meta/llama-3.1-8b-instruct" in names
    embeddings = list(cf.ai.models.list(account_id=hearth["account"], task="Text Embeddings"))
    assert embeddings and all(m["task"]["name"] == "Text Embeddings" for m in embeddings)


def test_model_schema(cf, hearth):
    schema = cf.ai.models.schema.get(account_id=hearth["account"], model=SMOLLM)
    assert schema.input.type == "object"
    assert schema.output is not None


def test_unknown_model_raises_with_code_5007(cf, hearth):
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.ai.run("@cf/nobody/nothing", account_id=hearth["account"], prompt="hi")
    assert err.value.status_code == 400
    assert err.value.body["errors"][0]["code"] == 5007


def test_wrong_token_is_refused(hearth):
    bad = Cloudflare(api_token="wrong-token-123456", base_url=f"{hearth['base']}/client/v4", max_retries=0)
    with pytest.raises(cloudflare.AuthenticationError) as err:
        bad.ai.run(SMOLLM, account_id=hearth["account"], prompt="hi")
    assert err.value.body["errors"][0]["code"] == 10000


def test_embeddings_through_a_bge_alias(cf, hearth):
    result = cf.ai.run("@cf/baai/bge-small-en-v1.5", account_id=hearth["account"],
                       text=["A man is eating food.", "A man is eating a piece of bread."])
    assert result["shape"] == [2, 384]
    a, b = result["data"]
    cos = sum(x * y for x, y in zip(a, b))
    assert abs(cos - 0.755) < 0.005


def test_embeddinggemma_through_the_sdk(cf, hearth):
    import json

    from conftest import ROOT

    reference = json.loads((ROOT / "tests/fixtures/tiny-embeddinggemma/reference.json").read_text())
    result = cf.ai.run("@cf/google/embeddinggemma-300m", account_id=hearth["account"],
                       text=reference["sentences"])
    assert sorted(result) == ["data", "shape"]
    assert result["shape"] == [len(reference["sentences"]), 12]
    for got, want in zip(result["data"], reference["vectors"]):
        assert max(abs(g - w) for g, w in zip(got, want)) < 1e-4


def test_speech_recognition_with_the_genuine_whisper_tiny_en(cf, hearth, tmp_path):
    import subprocess

    sentence = "Open the window and let the fresh air into the room."
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), sentence], check=True)
    result = cf.ai.run("@cf/openai/whisper-tiny-en", account_id=hearth["account"],
                       audio=list(wav.read_bytes()))
    heard = result["text"].lower()
    for word in ("window", "fresh", "air", "room"):
        assert word in heard, result
    assert result["word_count"] == len(result["text"].split())
    starts = [w["start"] for w in result["words"]]
    assert starts == sorted(starts) and result["vtt"].startswith("WEBVTT")


def test_translation_with_the_genuine_bergamot_model(cf, hearth):
    result = cf.ai.run("@cf/meta/m2m100-1.2b", account_id=hearth["account"],
                       text="The children played in the garden after lunch.",
                       source_lang="en", target_lang="pt")
    assert "jardim" in result["translated_text"], result
    back = cf.ai.run("@cf/mozilla/translate-pt-en", account_id=hearth["account"],
                     text=result["translated_text"], target_lang="en", source_lang="pt")
    assert "garden" in back["translated_text"].lower(), back
    with pytest.raises(cloudflare.APIStatusError) as refused:
        cf.ai.run("@cf/meta/m2m100-1.2b", account_id=hearth["account"], text="Hello.", target_lang="de")
    assert "en -> de" in str(refused.value)


def photo(name):
    import os
    from pathlib import Path

    models = Path(os.environ.get("HEARTH_MODELS_DIR", Path.home() / ".local/share/hearth/models"))
    return (models / f"test-data/skimage-0.26.0/{name}.png").read_bytes()


def png_size(data):
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_object_detection_summaries_and_descriptions_on_tiny_models(cf, hearth):
    """Tiny random-weight models of the real architectures (`hearth models
    tiny`): the SDK parses each task's answer shape."""
    image = photo("coffee")
    width, height = png_size(image)
    found = cf.ai.run("@cf/facebook/detr-resnet-50", account_id=hearth["account"], image=list(image))
    # The SDK parses the list into its own ObjectDetection models.
    assert isinstance(found, list) and found, found
    for obj in found:
        box = obj.box
        assert 0 <= box.xmin <= box.xmax <= width and 0 <= box.ymin <= box.ymax <= height
        assert 0.5 < obj.score <= 1 and isinstance(obj.label, str)
    summary = cf.ai.run("@cf/facebook/bart-large-cnn", account_id=hearth["account"],
                        input_text="the river flows through ten countries and four capitals",
                        max_length=5)
    assert isinstance(summary["summary"], str) and len(summary["summary"].split()) <= 5
    described = cf.ai.run("@cf/llava-hf/llava-1.5-7b-hf", account_id=hearth["account"],
                          image=list(image), prompt="what is this ?", max_tokens=4)
    assert described["description"] and len(described["description"].split()) <= 4


def test_text_to_image_on_tiny_models(cf, hearth):
    import base64

    # SDK 5.9.0 types FLUX's `steps` nowhere: it travels as an extra field.
    flux = cf.ai.run("@cf/black-forest-labs/flux-1-schnell", account_id=hearth["account"],
                     prompt="a red cat", extra_body={"steps": 2})
    assert base64.b64decode(flux["image"])[:2] == b"\xff\xd8"
    with pytest.raises(cloudflare.BadRequestError) as refused:
        cf.ai.run("@cf/black-forest-labs/flux-1-schnell", account_id=hearth["account"],
                  prompt="a red cat", extra_body={"steps": 9})
    assert "`steps`" in str(refused.value)
    # Stable Diffusion answers the PNG itself, as Workers AI does.
    png = cf.ai.with_raw_response.run("@cf/runwayml/stable-diffusion-v1-5-img2img",
                                      account_id=hearth["account"], prompt="a red cat",
                                      num_steps=2, seed=4, width=320, height=256)
    assert png.headers["content-type"] == "image/png"
    assert png_size(png.read()) == (320, 256)
