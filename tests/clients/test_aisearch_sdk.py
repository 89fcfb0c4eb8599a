"""AI Search v2 through the official `cloudflare` SDK: an instance over a
local folder (`type: "local"`, Hearth's source kind), its sync jobs, stats,
job logs and search."""

import time
from pathlib import Path

import pytest
from cloudflare import Cloudflare

FIXTURES = Path(__file__).resolve().parents[2] / "crates/hearth-search/tests/fixtures"
MINILM_AS_BGE = "@cf/baai/bge-small-en-v1.5"  # served by MiniLM through the test server's alias


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def test_instance_sync_and_search(cf, hearth, tmp_path):
    acct = hearth["account"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "rivers.pdf").write_bytes((FIXTURES / "rivers.pdf").read_bytes())
    (tmp_path / "docs" / "paris.docx").write_bytes((FIXTURES / "paris.docx").read_bytes())
    (tmp_path / "llamas.md").write_text("# Llamas\n\nLlamas are South American camelids related to alpacas.\n")

    created = cf.aisearch.instances.create(account_id=acct, id="sdk-search", type="local", source=str(tmp_path),
                                           embedding_model=MINILM_AS_BGE, chunk_size=128, chunk_overlap=10)
    assert created.id == "sdk-search"
    for _ in range(600):
        jobs = list(cf.aisearch.instances.jobs.list("sdk-search", account_id=acct))
        if jobs and all(j.model_dump().get("status") != "running" for j in jobs):
            break
        time.sleep(0.05)
    job = cf.aisearch.instances.jobs.get(jobs[0].id, account_id=acct, id="sdk-search")
    assert job.id == jobs[0].id
    stats = cf.aisearch.instances.stats("sdk-search", account_id=acct)
    assert stats.completed == 3

    found = cf.aisearch.instances.search("sdk-search", account_id=acct,
                                         query="Which river flows through ten countries?")
    assert found.query_kind == "text"
    assert found.chunks[0].item.key == "docs/rivers.pdf"
    assert "Danube" in found.chunks[0].text and 0 <= found.chunks[0].score <= 1

    assert any(i.id == "sdk-search" for i in cf.aisearch.instances.list(account_id=acct))
    cf.aisearch.instances.delete("sdk-search", account_id=acct)
    assert not any(i.id == "sdk-search" for i in cf.aisearch.instances.list(account_id=acct))
