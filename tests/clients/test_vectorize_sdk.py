"""Vectorize v2 through the official `cloudflare` Python SDK (5.9.0)."""

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Passing raw bytes:DeprecationWarning")

import json
import time

import cloudflare
import pytest
from cloudflare import Cloudflare


@pytest.fixture(scope="module")
def cf(hearth):
    return Cloudflare(api_token=hearth["token"], base_url=f"{hearth['base']}/client/v4", max_retries=0)


def ndjson(vectors):
    return "".join(json.dumps(v) + "\n" for v in vectors).encode()


def wait_applied(cf, account, index, mutation_id):
    for _ in range(2000):
        info = cf.vectorize.indexes.info(index, account_id=account)
        if info.processed_up_to_mutation == mutation_id:
            return info
        time.sleep(0.005)
    raise AssertionError(f"mutation {mutation_id} not applied")


def test_index_lifecycle(cf, hearth):
    acct = hearth["account"]
    created = cf.vectorize.indexes.create(account_id=acct, name="sdk-life", description="docs",
                                          config={"dimensions": 4, "metric": "euclidean"})
    assert created.name == "sdk-life" and created.config.dimensions == 4 and created.config.metric == "euclidean"
    assert created.created_on is not None
    assert "sdk-life" in [i.name for i in cf.vectorize.indexes.list(account_id=acct)]
    assert cf.vectorize.indexes.get("sdk-life", account_id=acct).description == "docs"
    with pytest.raises(cloudflare.ConflictError):
        cf.vectorize.indexes.create(account_id=acct, name="sdk-life", config={"dimensions": 4, "metric": "cosine"})
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.vectorize.indexes.create(account_id=acct, name="sdk-bad", config={"dimensions": 4000, "metric": "cosine"})
    assert "dimensions" in str(bad.value)
    preset = cf.vectorize.indexes.create(account_id=acct, name="sdk-preset",
                                         config={"preset": "@cf/baai/bge-small-en-v1.5"})
    assert preset.config.dimensions == 384 and preset.config.metric == "cosine"
    cf.vectorize.indexes.delete("sdk-life", account_id=acct)
    with pytest.raises(cloudflare.NotFoundError):
        cf.vectorize.indexes.get("sdk-life", account_id=acct)


def test_writes_reads_and_metadata_indexes(cf, hearth):
    acct = hearth["account"]
    cf.vectorize.indexes.create(account_id=acct, name="sdk-data", config={"dimensions": 3, "metric": "cosine"})
    m = cf.vectorize.indexes.metadata_index.create("sdk-data", account_id=acct, property_name="color",
                                                   index_type="string")
    wait_applied(cf, acct, "sdk-data", m.mutation_id)
    listed = cf.vectorize.indexes.metadata_index.list("sdk-data", account_id=acct)
    assert [(i.property_name, i.index_type) for i in listed.metadata_indexes] == [("color", "string")]

    inserted = cf.vectorize.indexes.insert("sdk-data", account_id=acct, body=ndjson([
        {"id": "red", "values": [1, 0, 0], "metadata": {"color": "red", "n": 1}},
        {"id": "green", "values": [0, 1, 0], "metadata": {"color": "green"}},
        {"id": "blue", "values": [0, 0, 1], "metadata": {"color": "blue"}, "namespace": "cool"},
    ]))
    info = wait_applied(cf, acct, "sdk-data", inserted.mutation_id)
    assert info.vector_count == 3 and info.dimensions == 3

    result = cf.vectorize.indexes.query("sdk-data", account_id=acct, vector=[0.9, 0.1, 0], top_k=2,
                                        return_values=True, return_metadata="all")
    assert result.count == 2
    assert [m.id for m in result.matches] == ["red", "green"]
    assert result.matches[0].values == [1.0, 0.0, 0.0]
    assert result.matches[0].metadata == {"color": "red", "n": 1}
    assert result.matches[0].score > result.matches[1].score

    filtered = cf.vectorize.indexes.query("sdk-data", account_id=acct, vector=[1, 0, 0], top_k=3,
                                          filter={"color": {"$in": ["green", "blue"]}})
    assert sorted(m.id for m in filtered.matches) == ["blue", "green"]

    upserted = cf.vectorize.indexes.upsert("sdk-data", account_id=acct,
                                           body=ndjson([{"id": "red", "values": [0, 0, 1]}]))
    wait_applied(cf, acct, "sdk-data", upserted.mutation_id)
    got = cf.vectorize.indexes.get_by_ids("sdk-data", account_id=acct, ids=["red", "missing"])
    assert got == [{"id": "red", "values": [0.0, 0.0, 1.0]}]

    page = cf.vectorize.indexes.list_vectors("sdk-data", account_id=acct, count=2)
    assert page.count == 2 and page.total_count == 3 and page.is_truncated and page.next_cursor
    rest = cf.vectorize.indexes.list_vectors("sdk-data", account_id=acct, count=2, cursor=page.next_cursor)
    assert [v.id for v in page.vectors + rest.vectors] == ["blue", "green", "red"] and not rest.is_truncated

    deleted = cf.vectorize.indexes.delete_by_ids("sdk-data", account_id=acct, ids=["green"])
    assert wait_applied(cf, acct, "sdk-data", deleted.mutation_id).vector_count == 2
    d = cf.vectorize.indexes.metadata_index.delete("sdk-data", account_id=acct, property_name="color")
    wait_applied(cf, acct, "sdk-data", d.mutation_id)
    assert cf.vectorize.indexes.metadata_index.list("sdk-data", account_id=acct).metadata_indexes == []

    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.vectorize.indexes.query("sdk-data", account_id=acct, vector=[1, 0], top_k=1)
    assert "expected 3 dimensions" in str(bad.value)
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.vectorize.indexes.insert("sdk-data", account_id=acct, body=b'{"id": "x", "values": [1, 2, 3]}\n{oops\n')
    assert "line 2" in str(bad.value)


def test_embeddings_into_a_preset_index_find_the_related_text(cf, hearth):
    """The RAG path: Workers AI embeddings (MiniLM behind the bge-small id) into a bge-small preset index."""
    acct = hearth["account"]
    cf.vectorize.indexes.create(account_id=acct, name="sdk-rag", config={"preset": "@cf/baai/bge-small-en-v1.5"})
    docs = ["The cat sleeps on the warm windowsill.", "Stock markets fell sharply on Monday.",
            "A recipe for fresh tomato soup.", "The rocket launched into orbit at dawn."]
    embedded = cf.ai.run("@cf/baai/bge-small-en-v1.5", account_id=acct, text=docs)
    assert embedded["shape"] == [4, 384]
    write = cf.vectorize.indexes.upsert("sdk-rag", account_id=acct, body=ndjson(
        [{"id": f"doc{i}", "values": v, "metadata": {"text": docs[i]}} for i, v in enumerate(embedded["data"])]))
    wait_applied(cf, acct, "sdk-rag", write.mutation_id)
    for question, expected in [("Which pet is napping in the sun?", "doc0"),
                               ("How did the stock exchange do?", "doc1"),
                               ("How do I cook soup?", "doc2"),
                               ("space travel", "doc3")]:
        q = cf.ai.run("@cf/baai/bge-small-en-v1.5", account_id=acct, text=question)["data"][0]
        top = cf.vectorize.indexes.query("sdk-rag", account_id=acct, vector=q, top_k=1, return_metadata="all")
        assert top.matches[0].id == expected, (question, top.matches[0])
