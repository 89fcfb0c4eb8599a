//! Vectorize v2 over HTTP: index lifecycle, writes and their mutation ids,
//! queries under every metric, filters, namespaces, metadata indexes, and
//! the errors of bad input (after which nothing stored is lost).

use serde_json::{Value, json};

use crate::support::*;

fn index_url(path: &str) -> String {
    account_url(&format!("/vectorize/v2/indexes{path}"))
}

async fn get(url: &str) -> (u16, Value) {
    let resp = client()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

async fn create(name: &str, dims: u32, metric: &str) {
    let (status, _, v) = post_json(
        &index_url(""),
        &json!({"name": name, "config": {"dimensions": dims, "metric": metric}}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

fn ndjson(vectors: &[Value]) -> String {
    vectors.iter().map(|v| format!("{v}\n")).collect()
}

/// Writes and waits until the mutation is applied (Vectorize applies
/// asynchronously; clients poll `info` the same way).
async fn write(index: &str, op: &str, vectors: &[Value]) -> String {
    let (status, v) = post_body(
        &index_url(&format!("/{index}/{op}")),
        "application/x-ndjson",
        ndjson(vectors),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["result"]["mutationId"]
        .as_str()
        .expect("mutation id")
        .to_string();
    wait_for(index, &id).await;
    id
}

async fn wait_for(index: &str, mutation: &str) {
    for _ in 0..2000 {
        let (_, info) = get(&index_url(&format!("/{index}/info"))).await;
        if info["result"]["processedUpToMutation"] == mutation {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("mutation {mutation} was not applied");
}

async fn query(index: &str, body: Value) -> Value {
    let (status, _, v) = post_json(&index_url(&format!("/{index}/query")), &body).await;
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}

fn ids(result: &Value) -> Vec<String> {
    result["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn index_lifecycle_and_name_rules() {
    create("life", 3, "cosine").await;
    let (status, _, dup) = post_json(
        &index_url(""),
        &json!({"name": "life", "config": {"dimensions": 3, "metric": "cosine"}}),
    )
    .await;
    assert_eq!(
        (status, dup["errors"][0]["code"].as_u64()),
        (409, Some(40002)),
        "{dup}"
    );
    let (status, one) = get(&index_url("/life")).await;
    assert_eq!(status, 200);
    assert_eq!(
        one["result"]["config"],
        json!({"dimensions": 3, "metric": "cosine"})
    );
    assert!(one["result"]["created_on"].as_str().unwrap().ends_with('Z'));
    let (_, list) = get(&index_url("")).await;
    assert!(
        list["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "life")
    );

    let (status, _, preset) = post_json(
        &index_url(""),
        &json!({"name": "preset-idx", "description": "d", "config": {"preset": "@cf/baai/bge-base-en-v1.5"}}),
    )
    .await;
    assert_eq!(status, 201, "{preset}");
    assert_eq!(
        preset["result"]["config"],
        json!({"dimensions": 768, "metric": "cosine"})
    );

    for (body, needle) in [
        (
            json!({"name": "Bad_Name", "config": {"dimensions": 3, "metric": "cosine"}}),
            "`name`",
        ),
        (
            json!({"name": "x", "config": {"dimensions": 0, "metric": "cosine"}}),
            "`config.dimensions`",
        ),
        (
            json!({"name": "x", "config": {"dimensions": 1537, "metric": "cosine"}}),
            "between 1 and 1536",
        ),
        (
            json!({"name": "x", "config": {"dimensions": 3, "metric": "manhattan"}}),
            "`config.metric`",
        ),
        (
            json!({"name": "x", "config": {"preset": "@cf/nope"}}),
            "`config.preset`",
        ),
        (json!({"name": "x"}), "config"),
    ] {
        let (status, _, v) = post_json(&index_url(""), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["errors"][0]["code"], 40005, "{v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }

    let resp = client()
        .delete(index_url("/life"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, missing) = get(&index_url("/life")).await;
    assert_eq!(
        (status, missing["errors"][0]["code"].as_u64()),
        (404, Some(40004)),
        "{missing}"
    );
    create("life", 5, "euclidean").await;
    let (_, info) = get(&index_url("/life/info")).await;
    assert_eq!(info["result"]["dimensions"], 5);
    assert_eq!(info["result"]["vectorCount"], 0);

    // Another account sees none of this account's indexes.
    let resp = client()
        .get(format!(
            "{}/client/v4/accounts/{OTHER_ACCOUNT}/vectorize/v2/indexes",
            server().base
        ))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    let other: Value = resp.json().await.unwrap();
    assert_eq!(other["result"], json!([]));
    let resp = client()
        .get(format!(
            "{}/client/v4/accounts/{OTHER_ACCOUNT}/vectorize/v2/indexes/preset-idx",
            server().base
        ))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn writes_queries_and_score_conventions() {
    create("shapes", 3, "cosine").await;
    write(
        "shapes",
        "insert",
        &[
            json!({"id": "x", "values": [1, 0, 0], "metadata": {"axis": "x"}}),
            json!({"id": "y", "values": [0, 2, 0], "namespace": "ns1"}),
            json!({"id": "xy", "values": [1, 1, 0]}),
        ],
    )
    .await;
    let r = query("shapes", json!({"vector": [1, 0, 0], "topK": 3})).await;
    assert_eq!(r["count"], 3);
    assert_eq!(ids(&r), ["x", "xy", "y"]);
    let scores: Vec<f64> = r["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["score"].as_f64().unwrap())
        .collect();
    assert!(
        (scores[0] - 1.0).abs() < 1e-6
            && (scores[1] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-5
            && scores[2].abs() < 1e-6,
        "{scores:?}"
    );
    assert!(r["matches"][0].get("values").is_none() && r["matches"][0].get("metadata").is_none());

    // Insert keeps the first write; upsert replaces the whole vector.
    write(
        "shapes",
        "insert",
        &[json!({"id": "x", "values": [0, 0, 1]})],
    )
    .await;
    let got = post_json(
        &index_url("/shapes/get_by_ids"),
        &json!({"ids": ["x", "nope"]}),
    )
    .await
    .2;
    assert_eq!(
        got["result"],
        json!([{"id": "x", "values": [1.0, 0.0, 0.0], "metadata": {"axis": "x"}}])
    );
    write(
        "shapes",
        "upsert",
        &[json!({"id": "x", "values": [0, 0, 1]})],
    )
    .await;
    let got = post_json(&index_url("/shapes/get_by_ids"), &json!({"ids": ["x"]}))
        .await
        .2;
    assert_eq!(
        got["result"],
        json!([{"id": "x", "values": [0.0, 0.0, 1.0]}])
    );

    // Namespaces partition; values and metadata come back on request.
    let r = query("shapes", json!({"vector": [1, 0, 0], "namespace": "ns1", "returnValues": true, "returnMetadata": "all"})).await;
    assert_eq!(ids(&r), ["y"]);
    assert_eq!(r["matches"][0]["values"], json!([0.0, 2.0, 0.0]));
    assert_eq!(r["matches"][0]["namespace"], "ns1");

    // Query by id (the binding's queryById).
    let r = query("shapes", json!({"id": "xy", "topK": 1})).await;
    assert_eq!(ids(&r), ["xy"]);

    // Deletes, then info counts.
    let (status, _, d) =
        post_json(&index_url("/shapes/delete_by_ids"), &json!({"ids": ["xy"]})).await;
    assert_eq!(status, 200, "{d}");
    wait_for("shapes", d["result"]["mutationId"].as_str().unwrap()).await;
    let (_, info) = get(&index_url("/shapes/info")).await;
    assert_eq!(info["result"]["vectorCount"], 2);
    assert!(
        info["result"]["processedUpToDatetime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Euclidean answers distances (closest first), dot-product the negated product.
    create("euclid", 2, "euclidean").await;
    write(
        "euclid",
        "insert",
        &[
            json!({"id": "a", "values": [0, 0]}),
            json!({"id": "b", "values": [3, 4]}),
        ],
    )
    .await;
    let r = query("euclid", json!({"vector": [0, 0]})).await;
    assert_eq!(ids(&r), ["a", "b"]);
    assert_eq!(r["matches"][1]["score"], 5.0);
    create("dotp", 2, "dot-product").await;
    write(
        "dotp",
        "insert",
        &[
            json!({"id": "small", "values": [1, 1]}),
            json!({"id": "big", "values": [10, 10]}),
        ],
    )
    .await;
    let r = query("dotp", json!({"vector": [1, 1]})).await;
    assert_eq!(ids(&r), ["big", "small"]);
    assert_eq!(r["matches"][0]["score"], -20.0);
    assert_eq!(r["matches"][1]["score"], -2.0);
}

#[tokio::test]
async fn metadata_indexes_and_filters() {
    create("films", 2, "cosine").await;
    // Written before any metadata index: stored, but not filterable.
    write(
        "films",
        "insert",
        &[json!({"id": "early", "values": [1, 0], "metadata": {"genre": "drama", "year": 1999}})],
    )
    .await;
    for (property, kind) in [
        ("genre", "string"),
        ("year", "number"),
        ("meta.good", "boolean"),
    ] {
        let (status, _, v) = post_json(
            &index_url("/films/metadata_index/create"),
            &json!({"propertyName": property, "indexType": kind}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        wait_for("films", v["result"]["mutationId"].as_str().unwrap()).await;
    }
    let (_, list) = get(&index_url("/films/metadata_index/list")).await;
    assert_eq!(
        list["result"]["metadataIndexes"].as_array().unwrap().len(),
        3
    );
    let films = [
        ("a", "drama", 2001, true),
        ("b", "drama", 2005, false),
        ("c", "comedy", 2005, true),
        ("d", "horror", 2012, false),
        ("e", "netflix-doc", 2020, true),
    ];
    let vectors: Vec<Value> = films
        .iter()
        .enumerate()
        .map(|(i, (id, genre, year, good))| {
            json!({"id": id, "values": [1, i as f64 * 0.01], "metadata": {"genre": genre, "year": year, "meta": {"good": good}}})
        })
        .collect();
    write("films", "insert", &vectors).await;
    let mut cases = vec![
        (json!({"genre": "drama"}), vec!["a", "b"]),
        (json!({"genre": {"$eq": "drama"}}), vec!["a", "b"]),
        (
            json!({"genre": {"$ne": "drama"}}),
            vec!["c", "d", "e", "early"],
        ),
        (
            json!({"genre": {"$in": ["comedy", "horror"]}}),
            vec!["c", "d"],
        ),
        (
            json!({"genre": {"$nin": ["comedy", "horror", "drama"]}}),
            vec!["e", "early"],
        ),
        (
            json!({"year": {"$gte": 2005, "$lt": 2020}}),
            vec!["b", "c", "d"],
        ),
        (json!({"year": {"$gt": 2005}}), vec!["d", "e"]),
        (json!({"year": {"$lte": 2001}}), vec!["a"]),
        (json!({"genre": "drama", "year": 2005}), vec!["b"]),
        (json!({"meta.good": true}), vec!["a", "c", "e"]),
        (json!({"genre": {"$gte": "net", "$lt": "neu"}}), vec!["e"]),
        (json!({"unindexed": "x"}), vec![]),
    ];
    for (filter, expected) in cases.drain(..) {
        let r = query(
            "films",
            json!({"vector": [1, 0], "topK": 10, "filter": filter}),
        )
        .await;
        let mut got = ids(&r);
        got.sort();
        assert_eq!(got, expected, "filter {filter}");
    }
    let r = query("films", json!({"vector": [1, 0], "topK": 1, "filter": {"genre": "comedy"}, "returnMetadata": "indexed"})).await;
    assert_eq!(
        r["matches"][0]["metadata"],
        json!({"genre": "comedy", "year": 2005.0, "meta.good": true})
    );

    let (status, _, v) = post_json(
        &index_url("/films/metadata_index/delete"),
        &json!({"propertyName": "year"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_for("films", v["result"]["mutationId"].as_str().unwrap()).await;
    let r = query(
        "films",
        json!({"vector": [1, 0], "topK": 10, "filter": {"year": 2005}}),
    )
    .await;
    assert_eq!(r["count"], 0);
}

#[tokio::test]
async fn list_pages_through_every_id() {
    create("many", 2, "cosine").await;
    let vectors: Vec<Value> = (0..25)
        .map(|i| json!({"id": format!("id{i:02}"), "values": [1, i]}))
        .collect();
    write("many", "upsert", &vectors).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => index_url(&format!("/many/list?count=10&cursor={c}")),
            None => index_url("/many/list?count=10"),
        };
        let (status, v) = get(&url).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["totalCount"], 25);
        seen.extend(
            v["result"]["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_string()),
        );
        if v["result"]["isTruncated"] == false {
            break;
        }
        cursor = v["result"]["nextCursor"].as_str().map(str::to_string);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("id{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn bad_input_is_refused_by_name_and_loses_nothing() {
    create("strict", 3, "cosine").await;
    write(
        "strict",
        "insert",
        &[json!({"id": "keep", "values": [1, 2, 3], "metadata": {"k": 1}})],
    )
    .await;
    let big = "x".repeat(11 * 1024);
    let ndjson_cases = [
        ("{\"id\":\"a\",\"values\":[1,2]}\n", 40006, "line 1"),
        (
            "{\"id\":\"a\",\"values\":[1,2,3]}\n{\"id\":\"b\",\"values\":[1,2,3\n",
            40005,
            "line 2",
        ),
        ("{\"id\":\"a\",\"values\":[1e39,2,3]}\n", 40005, "values[0]"),
        ("{\"values\":[1,2,3]}\n", 40005, "missing field `id`"),
        (
            &*format!("{{\"id\":\"a\",\"values\":[1,2,3],\"metadata\":{{\"t\":\"{big}\"}}}}\n"),
            40005,
            "`metadata`",
        ),
        (
            &*format!("{{\"id\":\"{}\",\"values\":[1,2,3]}}\n", "i".repeat(65)),
            40005,
            "`id`",
        ),
        (
            "{\"id\":\"a\",\"values\":[1,2,3],\"namespace\":\"\"}\n",
            40005,
            "`namespace`",
        ),
        ("\n\n", 3003, "body"),
        ("{\"note\": 1}\n", 40005, "missing field `id`"),
    ];
    for (body, code, needle) in ndjson_cases {
        let (status, v) = post_body(
            &index_url("/strict/insert"),
            "application/x-ndjson",
            body.to_string(),
        )
        .await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["errors"][0]["code"], code, "{v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    // `discard` skips what does not parse and keeps the rest.
    let (status, v) = post_body(
        &index_url("/strict/upsert?unparsable-behavior=discard"),
        "application/x-ndjson",
        "{\"id\":\"ok\",\"values\":[3,2,1]}\nnot json\n",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_for("strict", v["result"]["mutationId"].as_str().unwrap()).await;

    let query_cases = [
        (json!({"vector": [1, 2]}), 40006, "expected 3 dimensions"),
        (json!({"vector": [1, 2, 3], "topK": 101}), 40005, "`topK`"),
        (
            json!({"vector": [1, 2, 3], "topK": 21, "returnValues": true}),
            40005,
            "from 1 to 20",
        ),
        (
            json!({"vector": [1, 2, 3], "topK": 21, "returnMetadata": "all"}),
            40005,
            "from 1 to 20",
        ),
        (json!({"vector": [1, 2, 3], "topK": 0}), 40005, "`topK`"),
        (
            json!({"vector": [1, 2, 3], "filter": {"k": {"$regex": "a"}}}),
            40005,
            "unknown operator `$regex`",
        ),
        (
            json!({"vector": [1, 2, 3], "filter": {"k": {"$eq": 1, "$gt": 0}}}),
            40005,
            "cannot be combined",
        ),
        (
            json!({"vector": [1, 2, 3], "returnMetadata": "some"}),
            40005,
            "returnMetadata",
        ),
        (json!({"topK": 3}), 40005, "`vector` is required"),
        (json!({"vector": "abc"}), 40005, "vector"),
    ];
    for (body, code, needle) in query_cases {
        let (status, _, v) = post_json(&index_url("/strict/query"), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["errors"][0]["code"], code, "{body}: {v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let (status, _, v) =
        post_json(&index_url("/strict/delete_by_ids"), &json!({"ids": many})).await;
    assert_eq!(status, 400, "{v}");
    let (status, _, v) = post_json(&index_url("/nope/query"), &json!({"vector": [1, 2, 3]})).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (404, Some(40004)),
        "{v}"
    );
    let (status, _, v) = post_json(
        &index_url("/strict/metadata_index/create"),
        &json!({"propertyName": "k", "indexType": "date"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");

    let (_, info) = get(&index_url("/strict/info")).await;
    assert_eq!(info["result"]["vectorCount"], 2, "{info}");
    let got = post_json(&index_url("/strict/get_by_ids"), &json!({"ids": ["keep"]}))
        .await
        .2;
    assert_eq!(got["result"][0]["values"], json!([1.0, 2.0, 3.0]));
}
