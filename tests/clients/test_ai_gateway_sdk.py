"""AI Gateway admin API (gateways as resources) through the official `cloudflare` SDK."""

import cloudflare
import pytest
from cloudflare import Cloudflare


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def base_settings(**extra):
    return dict(cache_invalidate_on_update=True, cache_ttl=300, collect_logs=True,
                rate_limiting_interval=60, rate_limiting_limit=100, **extra)


def test_gateway_lifecycle(cf, hearth):
    acct = hearth["account"]
    created = cf.ai_gateway.create(account_id=acct, id="sdk-gw", **base_settings(rate_limiting_technique="sliding",
                                                                                 retry_max_attempts=3))
    assert created.id == "sdk-gw" and created.cache_ttl == 300 and created.collect_logs
    assert created.rate_limiting_technique == "sliding" and created.created_at is not None
    with pytest.raises(cloudflare.ConflictError):
        cf.ai_gateway.create(account_id=acct, id="sdk-gw", **base_settings())
    cf.ai_gateway.create(account_id=acct, id="sdk-gw-2", **base_settings())
    ids = [g.id for g in cf.ai_gateway.list(account_id=acct)]
    assert "sdk-gw" in ids and "sdk-gw-2" in ids
    assert [g.id for g in cf.ai_gateway.list(account_id=acct, search="gw-2")] == ["sdk-gw-2"]
    got = cf.ai_gateway.get("sdk-gw", account_id=acct)
    assert got.rate_limiting_limit == 100
    updated = cf.ai_gateway.update("sdk-gw", account_id=acct, cache_invalidate_on_update=False, cache_ttl=None,
                                   collect_logs=False, rate_limiting_interval=None, rate_limiting_limit=None)
    assert updated.cache_ttl is None and updated.collect_logs is False
    assert updated.modified_at >= updated.created_at
    deleted = cf.ai_gateway.delete("sdk-gw", account_id=acct)
    assert deleted.id == "sdk-gw"
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.get("sdk-gw", account_id=acct)


def test_gateway_settings_are_checked_by_name(cf, hearth):
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.ai_gateway.create(account_id=hearth["account"], id="sdk-bad", **base_settings(retry_max_attempts=9))
    assert "retry_max_attempts" in str(bad.value)
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.ai_gateway.create(account_id=hearth["account"], id="Not A Valid Id", **base_settings())
    assert "`id`" in str(bad.value)


def test_openai_sdk_through_the_compat_endpoint_and_logs(cf, hearth):
    import time

    from openai import OpenAI

    from conftest import SMOLLM

    acct = hearth["account"]
    cf.ai_gateway.create(account_id=acct, id="sdk-compat", **base_settings())
    client = OpenAI(api_key=hearth["token"], base_url=f"{hearth['base']}/v1/{acct}/sdk-compat/compat", max_retries=0)
    reply = client.chat.completions.create(model=f"workers-ai/{SMOLLM}", max_tokens=16, temperature=0,
                                           messages=[{"role": "user", "content": "Name the capital of France."}])
    assert "Paris" in reply.choices[0].message.content
    for _ in range(200):
        logs = list(cf.ai_gateway.logs.list("sdk-compat", account_id=acct))
        if logs:
            break
        time.sleep(0.01)
    assert logs and logs[0].model == SMOLLM and logs[0].provider == "workers-ai" and logs[0].success
    one = cf.ai_gateway.logs.get(logs[0].id, account_id=acct, gateway_id="sdk-compat")
    assert one.id == logs[0].id and one.tokens_in > 0
    cf.ai_gateway.logs.edit(logs[0].id, account_id=acct, gateway_id="sdk-compat", feedback=1, score=90,
                            metadata={"reviewed": True})
    edited = cf.ai_gateway.logs.get(logs[0].id, account_id=acct, gateway_id="sdk-compat")
    assert edited.metadata == '{"reviewed":true}'
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.ai_gateway.logs.edit(logs[0].id, account_id=acct, gateway_id="sdk-compat", feedback=3)
    assert "feedback" in str(bad.value)
    # Filters as the SDK serializes them, the stored bodies, and a bulk delete.
    hit = list(cf.ai_gateway.logs.list("sdk-compat", account_id=acct,
                                       filters=[{"key": "provider", "operator": "eq", "value": ["workers-ai"]},
                                                {"key": "tokens_in", "operator": "gt", "value": [0]}]))
    assert [l.id for l in hit] == [logs[0].id]
    none = list(cf.ai_gateway.logs.list("sdk-compat", account_id=acct,
                                        filters=[{"key": "success", "operator": "eq", "value": [False]}]))
    assert none == []
    sent = cf.ai_gateway.logs.request(logs[0].id, account_id=acct, gateway_id="sdk-compat")
    assert sent["messages"][0]["content"] == "Name the capital of France."
    answered = cf.ai_gateway.logs.response(logs[0].id, account_id=acct, gateway_id="sdk-compat")
    assert "Paris" in answered["choices"][0]["message"]["content"]
    assert cf.ai_gateway.logs.delete("sdk-compat", account_id=acct,
                                     filters=[{"key": "model", "operator": "eq", "value": [SMOLLM]}]).success
    assert list(cf.ai_gateway.logs.list("sdk-compat", account_id=acct)) == []


def test_custom_providers_lifecycle(cf, hearth):
    acct = hearth["account"]
    made = cf.ai_gateway.custom_providers.create(account_id=acct, name="Local vLLM", slug="vllm-local",
                                                 base_url="http://127.0.0.1:8000/v1", enable=True)
    assert made.slug == "vllm-local" and made.enable and made.created_at is not None
    with pytest.raises(cloudflare.ConflictError):
        cf.ai_gateway.custom_providers.create(account_id=acct, name="Again", slug="vllm-local",
                                              base_url="http://127.0.0.1:8001/v1")
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.ai_gateway.custom_providers.create(account_id=acct, name="Bad", slug="bad", base_url="ftp://x")
    assert "base_url" in str(bad.value)
    assert [p.slug for p in cf.ai_gateway.custom_providers.list(account_id=acct, search="vllm")] == ["vllm-local"]
    assert cf.ai_gateway.custom_providers.get(made.id, account_id=acct).base_url == "http://127.0.0.1:8000/v1"
    assert cf.ai_gateway.custom_providers.delete(made.id, account_id=acct).id == made.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.ai_gateway.custom_providers.get(made.id, account_id=acct)
