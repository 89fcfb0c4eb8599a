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

/// Waits for the instance's jobs to finish and returns the newest.
async fn settled(instance: &str) -> Value {
    for _ in 0..1200 {
        let jobs = get(&format!("/ai-search/instances/{instance}/jobs")).await;
        let list = jobs["result"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() && list.iter().all(|j| j["status"] != "running") {
            return list[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the sync of {instance} did not finish");
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
    ] {
        let (status, _, v) = post_json(&account_url("/ai-search/instances"), &body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        let message = v["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{needle} not in {message}");
    }
    // Hearth's own data dir (every account's data) is not a source.
    let (status, _, v) = post_json(
        &account_url("/ai-search/instances"),
        &json!({"id": "snoop", "type": "local", "source": "/", "embedding_model": BGE_ALIAS}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("data dir"),
        "{v}"
    );
    let (status, _, _) = post_json(
        &account_url("/ai-search/instances/nowhere/search"),
        &json!({"query": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}
