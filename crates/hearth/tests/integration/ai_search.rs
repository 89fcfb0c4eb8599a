//! AI Search end to end on a small real corpus (LibreOffice-made PDF, DOCX
//! and XLSX fixtures, markdown and HTML written here, and a damaged PDF),
//! embedded with the real MiniLM: each question's answer sits in one file
//! and `search` ranks that file first; folder filters narrow the results;
//! editing one file re-syncs only that file; deleting a file removes its
//! chunks; the damaged PDF is a file error and the job goes on.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

fn fixture(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hearth-search/tests/fixtures");
    std::fs::read(root.join(name)).expect("fixture")
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn corpus(root: &Path) {
    write(root, "europe/rivers.pdf", &fixture("rivers.pdf"));
    write(root, "europe/paris.docx", &fixture("paris.docx"));
    write(root, "data/cities.xlsx", &fixture("cities.xlsx"));
    write(
        root,
        "notes/llamas.md",
        b"# Llamas\n\nLlamas are domesticated South American camelids, related to alpacas, \
vicunas and guanacos. They have been used as pack animals by Andean cultures for centuries.\n",
    );
    write(
        root,
        "web/tea.html",
        b"<html><body><h1>Tea</h1><p>Green tea is made from the leaves of the Camellia sinensis \
plant, picked and dried without the oxidation that black tea goes through.</p></body></html>",
    );
    let mut damaged = fixture("rivers.pdf");
    damaged.truncate(300);
    write(root, "broken/damaged.pdf", &damaged);
}

async fn get(path: &str) -> Value {
    client()
        .get(account_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// Waits until `instance` (under `api`, a server's instances URL) has at
/// least `at_least` jobs, none running or queued; its jobs, newest first.
async fn settled_on(api: &str, instance: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..1200 {
        let jobs: Value = client()
            .get(format!("{api}/{instance}/jobs"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let list = jobs["result"].as_array().cloned().unwrap_or_default();
        if list.len() >= at_least.max(1)
            && list
                .iter()
                .all(|j| j["status"] != "running" && j["status"] != "queued")
        {
            return list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the sync of {instance} did not finish");
}

/// Waits for the instance's jobs to finish and returns the newest.
async fn settled(instance: &str) -> Value {
    settled_on(&account_url("/ai-search/instances"), instance, 1).await[0].clone()
}

async fn search(instance: &str, body: Value) -> Vec<Value> {
    let (status, _, v) = post_json(
        &account_url(&format!("/ai-search/instances/{instance}/search")),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["result"]["chunks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn first_key(instance: &str, query: &str) -> String {
    let chunks = search(
        instance,
        json!({"query": query, "ai_search_options": {"retrieval": {"match_threshold": 0}}}),
    )
    .await;
    chunks
        .first()
        .and_then(|c| c["item"]["key"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn logs_of(instance: &str, job: &Value) -> String {
    let id = job["id"].as_str().expect("job id");
    let logs = get(&format!("/ai-search/instances/{instance}/jobs/{id}/logs")).await;
    logs["result"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_folder_is_indexed_searched_and_kept_in_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    corpus(dir.path());
    let (status, _, v) = post_json(
        &account_url("/ai-search/instances"),
        &json!({"id": "handbook", "type": "local", "source": dir.path(),
                "embedding_model": BGE_ALIAS, "chunk_size": 128, "chunk_overlap": 10}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["id"], "handbook");
    let job = settled("handbook").await;
    assert_eq!(job["status"], "completed", "{job}");

    let stats = get("/ai-search/instances/handbook/stats").await;
    assert_eq!(stats["result"]["completed"], 5, "{stats}");
    assert_eq!(stats["result"]["error"], 1, "{stats}");
    let log = logs_of("handbook", &job).await;
    assert!(log.contains("broken/damaged.pdf"), "{log}");

    for (question, key) in [
        (
            "Which river flows through ten countries?",
            "europe/rivers.pdf",
        ),
        ("When was the Eiffel Tower completed?", "europe/paris.docx"),
        ("What animals are llamas related to?", "notes/llamas.md"),
        (
            "Which plant are green tea leaves picked from?",
            "web/tea.html",
        ),
        ("How many people live in Oslo, Norway?", "data/cities.xlsx"),
    ] {
        assert_eq!(first_key("handbook", question).await, key, "{question}");
    }

    // A folder filter keeps only that folder's chunks.
    let chunks = search(
        "handbook",
        json!({"query": "What animals are llamas related to?",
               "ai_search_options": {"retrieval": {"match_threshold": 0, "filters": {"folder": "europe/"}}}}),
    )
    .await;
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c["item"]["metadata"]["folder"] == "europe/"),
        "{chunks:?}"
    );
    // A threshold no chunk meets leaves nothing.
    let none = search(
        "handbook",
        json!({"query": "llamas", "ai_search_options": {"retrieval": {"match_threshold": 0.99}}}),
    )
    .await;
    assert!(none.is_empty());

    // Edit one file and delete another: only those are reprocessed.
    write(
        dir.path(),
        "notes/llamas.md",
        b"# Llamas\n\nLlamas can carry about a quarter of their body weight over long mountain trails.\n",
    );
    std::fs::remove_file(dir.path().join("web/tea.html")).expect("rm");
    let (status, _, v) = post_json(
        &account_url("/ai-search/instances/handbook/jobs"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let job = settled("handbook").await;
    assert_eq!(job["status"], "completed", "{job}");
    let log = logs_of("handbook", &job).await;
    assert!(log.contains("notes/llamas.md:"), "{log}");
    assert!(log.contains("web/tea.html: deleted"), "{log}");
    assert!(
        !log.contains("europe/rivers.pdf:"),
        "unchanged files are not reprocessed: {log}"
    );
    assert_eq!(
        first_key("handbook", "How much weight can a llama carry?").await,
        "notes/llamas.md"
    );
    let tea = search(
        "handbook",
        json!({"query": "Which plant are green tea leaves picked from?",
               "ai_search_options": {"retrieval": {"match_threshold": 0}}}),
    )
    .await;
    assert!(
        tea.iter().all(|c| c["item"]["key"] != "web/tea.html"),
        "{tea:?}"
    );
}

#[tokio::test]
async fn bad_instances_and_searches_get_errors_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (body, needle) in [
        (
            json!({"id": "Bad Id", "type": "local", "source": dir.path()}),
            "`id`",
        ),
        (
            json!({"id": "ok", "type": "r2", "source": "bucket"}),
            "`type`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": "/no/such/folder"}),
            "`source`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "chunk_size": 32}),
            "`chunk_size`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "chunk_overlap": 50}),
            "`chunk_overlap`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "source_params": {"include_items": ["a["]}}),
            "`include_items`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "index_method": {"vector": false, "keyword": false}}),
            "`index_method`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "index_method": {"keyword": "yes"}}),
            "`index_method.keyword`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "indexing_options": {"keyword_tokenizer": "snowball"}}),
            "`indexing_options.keyword_tokenizer`",
        ),
        (
            json!({"id": "ok", "type": "local", "source": dir.path(), "fusion_method": "sum"}),
            "`fusion_method`",
        ),
    ] {
        let (status, _, v) = post_json(&account_url("/ai-search/instances"), &body).await;
        assert_refused(status, &v, needle);
    }
    // Hearth's own data dir (every account's data) is not a source.
    let (status, _, v) = post_json(
        &account_url("/ai-search/instances"),
        &json!({"id": "snoop", "type": "local", "source": "/", "embedding_model": BGE_ALIAS}),
    )
    .await;
    assert_refused(status, &v, "data dir");
    let (status, _, _) = post_json(
        &account_url("/ai-search/instances/nowhere/search"),
        &json!({"query": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    // A vector-only instance has no keyword index to search.
    let (status, _, v) = post_json(
        &account_url("/ai-search/instances"),
        &json!({"id": "vectors-only", "type": "local", "source": dir.path(), "embedding_model": BGE_ALIAS}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for (retrieval, needle) in [
        (json!({"retrieval_type": "keyword"}), "retrieval_type"),
        (json!({"retrieval_type": "semantic"}), "retrieval_type"),
        (json!({"keyword_match_mode": "most"}), "keyword_match_mode"),
        (json!({"max_num_results": 0}), "max_num_results"),
        (json!({"filters": {"folder": {"$like": "a"}}}), "filters"),
    ] {
        let (status, _, v) = post_json(
            &account_url("/ai-search/instances/vectors-only/search"),
            &json!({"query": "x", "ai_search_options": {"retrieval": retrieval}}),
        )
        .await;
        assert_refused(status, &v, needle);
    }
}

async fn post(path: &str, body: Value) -> (u16, Value) {
    let (status, _, v) = post_json(&account_url(path), &body).await;
    (status, v)
}

async fn post_text(path: &str, body: Value) -> String {
    client()
        .post(account_url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

fn keys(chunks: &[Value]) -> Vec<&str> {
    chunks
        .iter()
        .filter_map(|c| c["item"]["key"].as_str())
        .collect()
}

#[tokio::test]
async fn keyword_and_hybrid_retrieval_cited_answers_and_the_legacy_surface() {
    let dir = tempfile::tempdir().expect("tempdir");
    corpus(dir.path());
    let (status, v) = post(
        "/ai-search/instances",
        json!({"id": "hybrid-kb", "type": "local", "source": dir.path(),
               "embedding_model": BGE_ALIAS, "chunk_size": 128,
               "index_method": {"vector": true, "keyword": true}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["result"]["index_method"],
        json!({"vector": true, "keyword": true})
    );
    assert_eq!(settled("hybrid-kb").await["status"], "completed");

    // Keyword only: BM25 finds the exact botanical name, stemmed.
    let chunks = search(
        "hybrid-kb",
        json!({"query": "Camellia sinensis plants", "ai_search_options": {"retrieval":
               {"retrieval_type": "keyword", "match_threshold": 0}}}),
    )
    .await;
    assert_eq!(keys(&chunks).first(), Some(&"web/tea.html"), "{chunks:?}");
    let details = &chunks[0]["scoring_details"];
    assert_eq!(details["keyword_rank"], 1, "{details}");
    assert!(details.get("vector_score").is_none(), "{details}");
    let score = chunks[0]["score"].as_f64().unwrap_or(0.0);
    assert!(score > 0.0 && score < 1.0, "{score}");
    // `and` needs every term; `or` any of them.
    let both = json!({"query": "Camellia llamas", "ai_search_options": {"retrieval":
        {"retrieval_type": "keyword", "match_threshold": 0}}});
    assert!(search("hybrid-kb", both.clone()).await.is_empty());
    let mut either = both;
    either["ai_search_options"]["retrieval"]["keyword_match_mode"] = json!("or");
    let found = search("hybrid-kb", either).await;
    assert!(keys(&found).contains(&"web/tea.html") && keys(&found).contains(&"notes/llamas.md"));
    // Filters hold for keyword matches too.
    let filtered = search(
        "hybrid-kb",
        json!({"query": "Camellia sinensis", "ai_search_options": {"retrieval":
               {"retrieval_type": "keyword", "match_threshold": 0, "filters": {"folder": "europe/"}}}}),
    )
    .await;
    assert!(filtered.is_empty(), "{filtered:?}");

    // Hybrid (the instance's default): fused by RRF, both arms reported.
    let chunks = search(
        "hybrid-kb",
        json!({"query": "What animals are llamas related to?",
               "ai_search_options": {"retrieval": {"match_threshold": 0}}}),
    )
    .await;
    assert_eq!(
        keys(&chunks).first(),
        Some(&"notes/llamas.md"),
        "{chunks:?}"
    );
    let details = &chunks[0]["scoring_details"];
    assert_eq!(details["fusion_method"], "rrf", "{details}");
    assert!(
        details["vector_rank"].is_number() && details["keyword_rank"].is_number(),
        "{details}"
    );

    // Reranking (the test server's reranker is a tiny random-weight model
    // of the real architecture: this checks the contract, not the order a
    // trained model gives).
    let reranked = search(
        "hybrid-kb",
        json!({"query": "What animals are llamas related to?", "ai_search_options": {
            "retrieval": {"match_threshold": 0},
            "reranking": {"enabled": true, "model": RERANKER, "match_threshold": 0}}}),
    )
    .await;
    assert!(!reranked.is_empty());
    let scores: Vec<f64> = reranked
        .iter()
        .map(|c| {
            c["scoring_details"]["reranking_score"]
                .as_f64()
                .expect("reranking_score")
        })
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert_eq!(reranked[0]["score"].as_f64(), Some(scores[0]));
    // Query rewriting with the generation model: the search runs on its query.
    let (status, v) = post(
        "/ai-search/instances/hybrid-kb/search",
        json!({"query": "What animals are llamas related to?",
               "ai_search_options": {"query_rewrite": {"enabled": true}, "retrieval": {"match_threshold": 0}}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        !v["result"]["search_query"]
            .as_str()
            .unwrap_or("")
            .trim()
            .is_empty(),
        "{v}"
    );

    // A cited answer from the real SmolLM2, with the chunks it was given.
    let ask = |question: &str, cache: Value| {
        json!({"messages": [{"role": "user", "content": question}],
               "max_tokens": 24, "temperature": 0, "seed": 1,
               "ai_search_options": {"cache": cache}})
    };
    let chat = "/ai-search/instances/hybrid-kb/chat/completions";
    let question = "What animals are llamas related to?";
    let (status, headers, v) = post_json(&account_url(chat), &ask(question, json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["cf-aig-cache-status"], "MISS");
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!answer.trim().is_empty(), "{v}");
    assert_eq!(v["chunks"][0]["item"]["key"], "notes/llamas.md", "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    // The similarity cache: the same question, or one differing only in
    // case and punctuation, is answered from the cache.
    for again in [question, "what animals are llamas related to"] {
        let (status, headers, hit) = post_json(&account_url(chat), &ask(again, json!({}))).await;
        assert_eq!(status, 200, "{hit}");
        assert_eq!(headers["cf-aig-cache-status"], "HIT", "{again}");
        assert_eq!(hit["choices"][0]["message"]["content"], answer.as_str());
        assert_eq!(hit["chunks"], v["chunks"]);
    }
    let (_, headers, _) = post_json(
        &account_url(chat),
        &ask(question, json!({"enabled": false})),
    )
    .await;
    assert_eq!(headers["cf-aig-cache-status"], "BYPASS");
    let (status, _, v) = post_json(
        &account_url(chat),
        &ask(question, json!({"cache_threshold": "exact"})),
    )
    .await;
    assert_refused(status, &v, "cache_threshold");
    // Streamed: the chunks first, then the tokens, then [DONE].
    let body = post_text(
        "/ai-search/instances/hybrid-kb/chat/completions",
        json!({"messages": [{"role": "user", "content": "What animals are llamas related to?"}],
               "stream": true, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert!(body.starts_with("event: chunks\n"), "{body}");
    let data = sse_data(&body);
    let first: Value = serde_json::from_str(&data[0]).expect("chunks event");
    assert_eq!(first[0]["item"]["key"], "notes/llamas.md", "{first}");
    assert!(data[1].contains("chat.completion.chunk"), "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    // Nothing passes the threshold: no model runs, the answer says so.
    let (status, v) = post(
        "/ai-search/instances/hybrid-kb/chat/completions",
        json!({"messages": [{"role": "user", "content": "quantum chromodynamics"}],
               "ai_search_options": {"retrieval": {"match_threshold": 1}}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["chunks"], json!([]));
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("no answer")
    );

    // The legacy AutoRAG surface over the same instance.
    let (status, v) = post(
        "/autorag/rags/hybrid-kb/search",
        json!({"query": "What animals are llamas related to?",
               "ranking_options": {"score_threshold": 0},
               "filters": {"type": "eq", "key": "folder", "value": "notes/"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let page = &v["result"];
    assert_eq!(page["object"], "vector_store.search_results.page");
    assert_eq!(page["data"][0]["filename"], "notes/llamas.md", "{page}");
    assert!(
        page["data"]
            .as_array()
            .is_some_and(|d| d.iter().all(|r| r["attributes"]["folder"] == "notes/"))
    );
    let ms = page["data"][0]["attributes"]["timestamp"]
        .as_i64()
        .unwrap_or(0);
    assert!(ms > 1_000_000_000_000, "milliseconds: {ms}");
    assert_eq!(page["data"][0]["content"][0]["type"], "text");
    // Timestamp filters in milliseconds, as strings: an hour before every
    // file keeps them, an hour after leaves none.
    let (status, v) = post(
        "/autorag/rags/hybrid-kb/search",
        json!({"query": "What animals are llamas related to?", "ranking_options": {"score_threshold": 0},
               "filters": {"type": "gte", "key": "timestamp", "value": (ms - 3_600_000).to_string()}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["data"][0]["filename"], "notes/llamas.md", "{v}");
    let (status, v) = post(
        "/autorag/rags/hybrid-kb/search",
        json!({"query": "llamas", "ranking_options": {"score_threshold": 0},
               "filters": {"type": "gt", "key": "timestamp", "value": (ms + 3_600_000).to_string()}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["data"], json!([]));
    let (status, v) = post(
        "/autorag/rags/hybrid-kb/ai-search",
        json!({"query": "What animals are llamas related to?", "max_tokens": 16, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        !v["result"]["response"]
            .as_str()
            .unwrap_or("")
            .trim()
            .is_empty(),
        "{v}"
    );
    assert_eq!(v["result"]["data"][0]["filename"], "notes/llamas.md", "{v}");
    let body = post_text(
        "/autorag/rags/hybrid-kb/ai-search",
        json!({"query": "What animals are llamas related to?", "stream": true, "max_tokens": 8}),
    )
    .await;
    let data = sse_data(&body);
    assert!(data[0].contains("\"response\""), "{body}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    for (body, needle) in [
        (
            json!({"query": "x", "filters": {"type": "like", "key": "folder", "value": "a"}}),
            "filters.type",
        ),
        (
            json!({"query": "x", "filters": {"type": "or", "filters": [
            {"type": "eq", "key": "folder", "value": "a/"}, {"type": "gt", "key": "folder", "value": "b/"}]}}),
            "only `eq`",
        ),
        (json!({"query": ""}), "`query`"),
        (
            json!({"query": "x", "max_num_results": 51}),
            "max_num_results",
        ),
    ] {
        let (status, v) = post("/autorag/rags/hybrid-kb/search", body.clone()).await;
        assert_refused(status, &v, needle);
    }
    let (status, v) = post("/autorag/rags/nowhere/search", json!({"query": "x"})).await;
    assert_eq!(status, 404, "{v}");

    // The legacy sync starts a job; cancelling a finished job changes nothing.
    let request = client()
        .patch(account_url("/autorag/rags/hybrid-kb/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sync");
    let v: Value = request.json().await.expect("json");
    let job = v["result"]["job_id"].as_str().expect("job_id").to_string();
    let done = settled("hybrid-kb").await;
    assert_eq!(done["id"], job.as_str());
    // A sync may change chunks: cached answers are gone.
    let (_, headers, _) = post_json(&account_url(chat), &ask(question, json!({}))).await;
    assert_eq!(headers["cf-aig-cache-status"], "MISS");
    let cancel = |action: &str| {
        client()
            .patch(account_url(&format!(
                "/ai-search/instances/hybrid-kb/jobs/{job}"
            )))
            .bearer_auth(TOKEN)
            .json(&json!({"action": action}))
            .send()
    };
    let v: Value = cancel("cancel")
        .await
        .expect("cancel")
        .json()
        .await
        .expect("json");
    assert_eq!(v["result"]["status"], "completed", "{v}");
    let resp = cancel("stop").await.expect("cancel");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`action`"),
        "{v}"
    );
}

#[tokio::test]
async fn a_running_sync_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..80 {
        write(
            dir.path(),
            &format!("notes/n{i:03}.md"),
            format!("# Note {i}\n\nThis note is number {i}; it records the weather of day {i}.\n")
                .as_bytes(),
        );
    }
    let (status, v) = post(
        "/ai-search/instances",
        json!({"id": "cancel-me", "type": "local", "source": dir.path(), "embedding_model": BGE_ALIAS}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let jobs = get("/ai-search/instances/cancel-me/jobs").await;
    let job = jobs["result"][0]["id"].as_str().expect("job").to_string();
    let v: Value = client()
        .patch(account_url(&format!(
            "/ai-search/instances/cancel-me/jobs/{job}"
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"action": "cancel"}))
        .send()
        .await
        .expect("cancel")
        .json()
        .await
        .expect("json");
    let final_job = settled("cancel-me").await;
    let stats = get("/ai-search/instances/cancel-me/stats").await;
    let completed = stats["result"]["completed"].as_u64().unwrap_or(0);
    if v["result"]["status"] == "cancelled" {
        // The job stops at a file boundary and stays cancelled; what it
        // indexed stays, the rest waits for the next sync.
        assert_eq!(final_job["status"], "cancelled", "{final_job}");
        assert_eq!(final_job["end_reason"], "cancelled");
        assert!(completed < 80, "{stats}");
        let (status, _) = post("/ai-search/instances/cancel-me/jobs", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(settled("cancel-me").await["status"], "completed");
        let stats = get("/ai-search/instances/cancel-me/stats").await;
        assert_eq!(stats["result"]["completed"], 80, "{stats}");
    } else {
        // The sync finished before the cancel arrived: nothing to stop.
        assert_eq!(v["result"]["status"], "completed", "{v}");
        assert_eq!(completed, 80, "{stats}");
    }
}

/// A multipart body of `parts`: `(name, filename, bytes)`.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "itemboundary7";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
        );
        body.extend(*data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> (u16, Value) {
    let (content_type, body) = multipart(parts);
    post_body(&account_url(path), &content_type, body).await
}

#[tokio::test]
async fn built_in_storage_takes_items_with_metadata() {
    let (status, v) = post(
        "/ai-search/instances",
        json!({"id": "uploads", "embedding_model": BGE_ALIAS, "chunk_size": 128,
               "index_method": {"vector": true, "keyword": true},
               "custom_metadata": [{"field_name": "team", "data_type": "text"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    settled("uploads").await;
    let items = "/ai-search/instances/uploads/items";
    let llamas =
        b"# Llamas\n\nLlamas are camelids from the Andes, related to alpacas and vicunas.\n";
    let tea = b"# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n";
    let (status, v) = upload(
        items,
        &[
            ("file", Some("animals/llamas.md"), llamas),
            ("metadata", None, br#"{"team": "zoo"}"#),
            ("wait_for_completion", None, b"true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let item = &v["result"];
    assert_eq!(item["key"], "animals/llamas.md");
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(item["source_id"], "builtin");
    assert_eq!(item["metadata"]["team"], "zoo");
    assert!(item["chunks_count"].as_u64().unwrap_or(0) >= 1, "{item}");
    let llama_id = item["id"].as_str().expect("id").to_string();
    // Uploaded through the SDK's nested field names too.
    let (status, v) = upload(
        items,
        &[
            ("file[file]", Some("drinks/tea.md"), tea),
            ("file[metadata]", None, br#"{"team": "kitchen"}"#),
            ("file[wait_for_completion]", None, b"true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["status"], "completed", "{v}");

    // Custom metadata filters both arms of a hybrid search.
    for retrieval_type in ["vector", "keyword", "hybrid"] {
        let chunks = search(
            "uploads",
            json!({"query": "llamas camelids", "ai_search_options": {"retrieval":
                   {"retrieval_type": retrieval_type, "match_threshold": 0, "keyword_match_mode": "or",
                    "filters": {"team": "kitchen"}}}}),
        )
        .await;
        assert!(
            keys(&chunks).iter().all(|k| *k == "drinks/tea.md"),
            "{retrieval_type}: {chunks:?}"
        );
        let zoo = search(
            "uploads",
            json!({"query": "llamas camelids", "ai_search_options": {"retrieval":
                   {"retrieval_type": retrieval_type, "match_threshold": 0, "filters": {"team": "zoo"}}}}),
        )
        .await;
        assert_eq!(
            keys(&zoo).first(),
            Some(&"animals/llamas.md"),
            "{retrieval_type}"
        );
        assert_eq!(zoo[0]["item"]["metadata"]["team"], "zoo");
    }

    // List, get, chunks, download, logs.
    let list = get(&format!("{items}?per_page=1")).await;
    assert_eq!(list["result"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["result_info"]["total_count"], 2, "{list}");
    let found = get(&format!("{items}?key=drinks/tea.md")).await;
    assert_eq!(found["result"][0]["key"], "drinks/tea.md");
    let one = get(&format!("{items}/{llama_id}")).await;
    assert_eq!(one["result"]["key"], "animals/llamas.md");
    let chunks = get(&format!("{items}/{llama_id}/chunks")).await;
    assert!(
        chunks["result"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("camelids"),
        "{chunks}"
    );
    let bytes = client()
        .get(account_url(&format!("{items}/{llama_id}/download")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("download");
    assert_eq!(bytes.headers()["content-type"], "text/markdown");
    assert_eq!(bytes.bytes().await.expect("bytes").as_ref(), llamas);
    let logs = get(&format!("{items}/{llama_id}/logs")).await;
    assert_eq!(logs["result"][0]["action"], "index", "{logs}");
    assert_eq!(logs["result"][0]["fileKey"], "animals/llamas.md");
    // The namespaced path serves the one namespace there is.
    let ns = get(&format!(
        "/ai-search/namespaces/default/instances/uploads/items/{llama_id}"
    ))
    .await;
    assert_eq!(ns["result"]["key"], "animals/llamas.md");
    let other = client()
        .get(account_url(&format!(
            "/ai-search/namespaces/other/instances/uploads/items/{llama_id}"
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);

    // Re-index on request; delete.
    let resp = client()
        .patch(account_url(&format!("{items}/{llama_id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"next_action": "INDEX", "wait_for_completion": true}))
        .send()
        .await
        .expect("sync");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["result"]["status"], "completed", "{v}");
    let resp = client()
        .delete(account_url(&format!("{items}/{llama_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["result"]["key"], "animals/llamas.md");
    settled("uploads").await;
    let left = get(items).await;
    assert_eq!(left["result"].as_array().map(Vec::len), Some(1), "{left}");
    let gone = search(
        "uploads",
        json!({"query": "llamas camelids", "ai_search_options": {"retrieval": {"match_threshold": 0}}}),
    )
    .await;
    assert!(
        keys(&gone).iter().all(|k| *k != "animals/llamas.md"),
        "{gone:?}"
    );

    // Bad uploads name what is wrong.
    for (parts, needle) in [
        (vec![("file", Some("../escape.md"), &b"x"[..])], "`file`"),
        (
            vec![("metadata", None, &br#"{"team": "zoo"}"#[..])],
            "`file` is required",
        ),
        (
            vec![
                ("file", Some("a.md"), &b"x"[..]),
                ("metadata", None, &b"[1]"[..]),
            ],
            "`metadata`",
        ),
        (
            vec![
                ("file", Some("a.md"), &b"x"[..]),
                ("wait_for_completion", None, &b"maybe"[..]),
            ],
            "wait_for_completion",
        ),
    ] {
        let (status, v) = upload(items, &parts).await;
        assert_refused(status, &v, needle);
    }
    // A folder instance takes no uploads.
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, _) = post(
        "/ai-search/instances",
        json!({"id": "folder-only", "type": "local", "source": dir.path(), "embedding_model": BGE_ALIAS}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = upload(
        "/ai-search/instances/folder-only/items",
        &[("file", Some("a.md"), b"x")],
    )
    .await;
    assert_refused(status, &v, "built-in storage");
}

#[tokio::test]
async fn instances_update_and_sync_on_their_interval() {
    let m = scheduling_server();
    let api = format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai-search/instances",
        m.server.base
    );
    let send = |method: reqwest::Method, url: String, body: Option<Value>| async move {
        let mut req = client().request(method, url).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("json"))
    };
    let jobs = |api: String| async move {
        let (_, v) = send(reqwest::Method::GET, format!("{api}/scheduled/jobs"), None).await;
        v["result"].as_array().cloned().unwrap_or_default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "llamas.md",
        b"# Llamas\n\nLlamas are camelids related to alpacas.\n",
    );
    let (status, v) = send(
        reqwest::Method::POST,
        api.clone(),
        Some(json!({"id": "scheduled", "type": "local", "source": dir.path(), "embedding_model": BGE_ALIAS,
                    "chunk_size": 128, "sync_interval": 900})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["sync_interval"], 900);
    assert_eq!(v["result"]["paused"], false);
    settled_on(&api, "scheduled", 1).await;

    // A file added to the folder is picked up by the scheduled sync, once
    // the interval has passed on the server's clock.
    write(
        dir.path(),
        "tea.md",
        b"# Tea\n\nGreen tea comes from Camellia sinensis.\n",
    );
    m.clock.advance(901_000);
    let list = settled_on(&api, "scheduled", 2).await;
    assert_eq!(list[0]["source"], "schedule", "{list:?}");
    let (_, stats) = send(reqwest::Method::GET, format!("{api}/scheduled/stats"), None).await;
    assert_eq!(stats["result"]["completed"], 2, "{stats}");

    // Paused: the interval passes and nothing runs.
    let (status, v) = send(
        reqwest::Method::PUT,
        format!("{api}/scheduled"),
        Some(json!({"paused": true})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    m.clock.advance(901_000);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(jobs(api.clone()).await.len(), 2);

    // Turning keywords on fills the keyword index from the stored chunks.
    let (status, v) = send(
        reqwest::Method::PUT,
        format!("{api}/scheduled"),
        Some(json!({"index_method": {"vector": true, "keyword": true}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(
        reqwest::Method::POST,
        format!("{api}/scheduled/search"),
        Some(json!({"query": "Camellia", "ai_search_options": {"retrieval": {"retrieval_type": "keyword", "match_threshold": 0}}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["chunks"][0]["item"]["key"], "tea.md", "{v}");
    // A new chunk size re-indexes every file.
    let (status, v) = send(
        reqwest::Method::PUT,
        format!("{api}/scheduled"),
        Some(json!({"chunk_size": 96})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["chunk_size"], 96);
    let list = settled_on(&api, "scheduled", 3).await;
    let id = list[0]["id"].as_str().expect("job id");
    let (_, logs) = send(
        reqwest::Method::GET,
        format!("{api}/scheduled/jobs/{id}/logs"),
        None,
    )
    .await;
    assert!(
        logs["result"][0]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("2 files to index"),
        "{logs}"
    );
    // Folders outside `[search] roots` are not indexed.
    let (status, v) = send(
        reqwest::Method::POST,
        api.clone(),
        Some(json!({"id": "outside", "type": "local", "source": "/usr/share", "embedding_model": BGE_ALIAS})),
    )
    .await;
    assert_refused(status, &v, "roots");
    // What cannot change says so.
    for (body, needle) in [
        (json!({"embedding_model": MINILM}), "`embedding_model`"),
        (json!({"sync_interval": 60}), "`sync_interval`"),
        (json!({"paused": "yes"}), "`paused`"),
        (json!({"chunk_size": 10}), "`chunk_size`"),
        (json!({"id": "renamed"}), "`id`"),
    ] {
        let (status, v) = send(
            reqwest::Method::PUT,
            format!("{api}/scheduled"),
            Some(body.clone()),
        )
        .await;
        assert_refused(status, &v, needle);
    }
}
