"""Fine-tunes (LoRA) through the official `cloudflare` SDK: create, upload
both assets, list, public list, and a run with `lora`."""

import json
import random
import struct

import cloudflare
import pytest
from cloudflare import Cloudflare

from conftest import SMOLLM

LAYERS, HIDDEN, KV_OUT, RANK = 30, 576, 192, 8  # SmolLM2-135M


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def safetensors(tensors):
    header, offset, data = {}, 0, b""
    for name, shape, values in tensors:
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def adapter():
    rng = random.Random(11)
    tensors = []
    for layer in range(LAYERS):
        for module, out in (("q_proj", HIDDEN), ("v_proj", KV_OUT)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors.append((f"{prefix}.lora_A.weight", [RANK, HIDDEN],
                            [rng.uniform(-0.5, 0.5) for _ in range(RANK * HIDDEN)]))
            tensors.append((f"{prefix}.lora_B.weight", [out, RANK],
                            [rng.uniform(-0.5, 0.5) for _ in range(out * RANK)]))
    return safetensors(tensors)


def test_finetune_lifecycle_and_inference(cf, hearth):
    acct = hearth["account"]
    ft = cf.ai.finetunes.create(account_id=acct, model=SMOLLM, name="sdk-lora", description="made by the SDK test",
                                public=True)
    assert ft.model == SMOLLM and ft.name == "sdk-lora" and ft.public
    config = json.dumps({"peft_type": "LORA", "r": RANK, "lora_alpha": 16, "model_type": "llama"}).encode()
    done = cf.ai.finetunes.assets.create(ft.id, account_id=acct, file=config, file_name="adapter_config.json")
    assert done.success
    done = cf.ai.finetunes.assets.create(ft.id, account_id=acct, file=adapter(),
                                         file_name="adapter_model.safetensors")
    assert done.success
    listed = cf.ai.finetunes.list(account_id=acct)
    assert any(f.id == ft.id and f.name == "sdk-lora" for f in listed)
    public = cf.ai.finetunes.public.list(account_id=acct)
    assert any(f.id == ft.id for f in public)

    plain = cf.ai.run(SMOLLM, account_id=acct, prompt="The capital of France is", raw=True, temperature=0,
                      max_tokens=10)
    adapted = cf.ai.run(SMOLLM, account_id=acct, prompt="The capital of France is", raw=True, temperature=0,
                        max_tokens=10, lora="sdk-lora")
    assert adapted["response"] != plain["response"]

    with pytest.raises(cloudflare.BadRequestError):
        cf.ai.finetunes.assets.create(ft.id, account_id=acct, file=config, file_name="adapter_config.json")
