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
        if jobs and all(j.model_dump().get("status") not in ("running", "queued") for j in jobs):
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


def wait_for_jobs(cf, acct, instance):
    for _ in range(600):
        jobs = list(cf.aisearch.instances.jobs.list(instance, account_id=acct))
        if jobs and all(j.model_dump().get("status") not in ("running", "queued") for j in jobs):
            return jobs
        time.sleep(0.05)
    raise AssertionError(f"the sync of {instance} did not finish")


def test_hybrid_search_and_cited_chat_completions(cf, hearth, tmp_path):
    acct = hearth["account"]
    (tmp_path / "llamas.md").write_text("# Llamas\n\nLlamas are South American camelids related to alpacas.\n")
    (tmp_path / "tea.md").write_text("# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n")
    cf.aisearch.instances.create(account_id=acct, id="sdk-hybrid", type="local", source=str(tmp_path),
                                 embedding_model=MINILM_AS_BGE, chunk_size=128,
                                 index_method={"vector": True, "keyword": True}, fusion_method="rrf")
    wait_for_jobs(cf, acct, "sdk-hybrid")

    found = cf.aisearch.instances.search(
        "sdk-hybrid", account_id=acct, query="Camellia sinensis",
        aisearch_options={"retrieval": {"retrieval_type": "keyword", "match_threshold": 0}})
    assert found.chunks[0].item.key == "tea.md"
    assert found.chunks[0].scoring_details.keyword_rank == 1

    found = cf.aisearch.instances.search(
        "sdk-hybrid", account_id=acct, query="What are llamas related to?",
        aisearch_options={"retrieval": {"match_threshold": 0}})
    assert found.chunks[0].item.key == "llamas.md"
    assert found.chunks[0].scoring_details.fusion_method == "rrf"

    answer = cf.aisearch.instances.chat_completions(
        "sdk-hybrid", account_id=acct,
        messages=[{"role": "user", "content": "What are llamas related to?"}],
        aisearch_options={"retrieval": {"match_threshold": 0}})
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str) and answer.choices[0].message.content.strip()
    assert answer.chunks[0].item.key == "llamas.md"
    cf.aisearch.instances.delete("sdk-hybrid", account_id=acct)


def test_items_in_built_in_storage(cf, hearth):
    acct = hearth["account"]
    cf.aisearch.instances.create(account_id=acct, id="sdk-items", embedding_model=MINILM_AS_BGE, chunk_size=128)
    wait_for_jobs(cf, acct, "sdk-items")
    items = cf.aisearch.namespaces.instances.items
    uploaded = items.upload("sdk-items", account_id=acct, name="default",
                            file={"file": ("llamas.md", b"# Llamas\n\nLlamas are camelids.\n"),
                                  "metadata": '{"team": "zoo"}', "wait_for_completion": True})
    assert uploaded.key == "llamas.md" and uploaded.status == "completed"
    assert uploaded.metadata["team"] == "zoo" and uploaded.source_id == "builtin"

    listed = list(items.list("sdk-items", account_id=acct, name="default"))
    assert [i.key for i in listed] == ["llamas.md"]
    got = items.get(uploaded.id, account_id=acct, name="default", id="sdk-items")
    assert got.chunks_count >= 1
    chunks = items.chunks(uploaded.id, account_id=acct, name="default", id="sdk-items")
    assert "camelids" in chunks[0].text
    assert items.download(uploaded.id, account_id=acct, name="default", id="sdk-items").read() \
        == b"# Llamas\n\nLlamas are camelids.\n"
    synced = items.sync(uploaded.id, account_id=acct, name="default", id="sdk-items",
                        next_action="INDEX", wait_for_completion=True)
    assert synced.status == "completed"
    assert items.delete(uploaded.id, account_id=acct, name="default", id="sdk-items").key == "llamas.md"
    wait_for_jobs(cf, acct, "sdk-items")
    assert list(items.list("sdk-items", account_id=acct, name="default")) == []
    cf.aisearch.instances.delete("sdk-items", account_id=acct)
