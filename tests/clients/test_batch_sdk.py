"""The async Batch API and the usage report through the official `cloudflare` SDK."""

import time

import cloudflare
import pytest
from cloudflare import Cloudflare

from conftest import BATCH_LLM


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def test_batch_submit_and_poll(cf, hearth):
    acct = hearth["account"]
    queued = cf.ai.run(BATCH_LLM, account_id=acct, extra_query={"queueRequest": "true"},
                       extra_body={"requests": [
                           {"prompt": "The capital of France is", "raw": True, "max_tokens": 4,
                            "temperature": 0, "external_reference": "paris"},
                           {"messages": [{"role": "user", "content": "Name the capital of France."}],
                            "max_tokens": 20, "temperature": 0, "external_reference": "chat"},
                       ]})
    assert queued["status"] == "queued" and queued["model"] == BATCH_LLM
    for _ in range(600):
        polled = cf.ai.run(BATCH_LLM, account_id=acct, extra_query={"queueRequest": "true"},
                           extra_body={"request_id": queued["request_id"]})
        if "responses" in polled:
            break
        assert polled["status"] in ("queued", "running")
        time.sleep(0.1)
    else:
        raise AssertionError("batch did not finish")
    responses = polled["responses"]
    assert [r["external_reference"] for r in responses] == ["paris", "chat"]
    assert all(r["success"] for r in responses)
    assert "Paris" in responses[0]["result"]["response"]
    assert polled["usage"]["total_tokens"] > 0


def test_batch_refuses_models_without_async_support(cf, hearth):
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.ai.run("@cf/huggingfacetb/smollm2-135m-instruct", account_id=hearth["account"],
                  extra_query={"queueRequest": "true"}, extra_body={"requests": [{"prompt": "x"}]})
    assert "async" in str(bad.value)


def test_usage_report_counts_what_ran(cf, hearth):
    acct = hearth["account"]
    cf.ai.run("@cf/baai/bge-small-en-v1.5", account_id=acct, text=["metered text"])
    report = cf.get(f"/accounts/{acct}/ai/usage", cast_to=object)["result"]
    row = next(r for r in report["rows"] if r["model"] == "@cf/baai/bge-small-en-v1.5")
    assert row["requests"] >= 1 and row["input_tokens"] >= 1
    assert abs(row["neurons"] - 1841 * row["input_tokens"] / 1e6) < 1e-6
    assert report["plan"] == "unlimited" and report["free_neurons_per_day"] == 10000
