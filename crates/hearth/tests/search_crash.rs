//! An AI Search sync interrupted by `kill -9` resumes after the restart and
//! completes, and the instance's index holds each chunk exactly once.

mod common;

use std::time::{Duration, Instant};

use common::{
    ACCOUNT, TOKEN, free_port, models_dir, search_jobs_settled, spawn_server, wait_ready,
};
use serde_json::{Value, json};

const FILES: usize = 60;

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("json")
}

#[tokio::test]
async fn a_sync_survives_sigkill_and_indexes_each_chunk_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let corpus = tempfile::tempdir().expect("corpus");
    for i in 0..FILES {
        let body: String = (0..12)
            .map(|p| {
                format!(
                    "Paragraph {p} of note {i} talks about topic {} in some detail.\n\n",
                    i * 31 % 17
                )
            })
            .collect();
        std::fs::write(
            corpus.path().join(format!("note-{i:03}.md")),
            format!("# Note {i}\n\n{body}"),
        )
        .expect("write");
    }
    let models = models_dir();
    let env = [("HEARTH_MODELS_DIR", models.as_str())];
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = format!("{base}/client/v4/accounts/{ACCOUNT}");
    let client = reqwest::Client::new();
    let mut server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;

    let created = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/ai-search/instances"),
        Some(
            json!({"id": "notes", "type": "local", "source": corpus.path(),
                    "embedding_model": "@cf/sentence-transformers/all-minilm-l6-v2",
                    "chunk_size": 64, "chunk_overlap": 0}),
        ),
    )
    .await;
    let index = created["result"]["vectorize_name"]
        .as_str()
        .expect("index")
        .to_string();

    // Kill once some files are in and the job is still running.
    let start = Instant::now();
    loop {
        let stats = call(
            &client,
            reqwest::Method::GET,
            &format!("{api}/ai-search/instances/notes/stats"),
            None,
        )
        .await;
        let done = stats["result"]["completed"].as_u64().unwrap_or(0);
        if done >= 3 {
            assert_eq!(
                stats["result"]["running"], 1,
                "the kill must land mid-job: {stats}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sync did not start: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;
    let job = search_jobs_settled(&client, &format!("{api}/ai-search/instances"), "notes", 1).await
        [0]
    .clone();
    assert_eq!(job["status"], "completed", "{job}");
    let stats = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/ai-search/instances/notes/stats"),
        None,
    )
    .await;
    assert_eq!(stats["result"]["completed"], FILES, "{stats}");

    // Every file logged its chunk count once it was stored; the index holds
    // exactly that many vectors: nothing doubled by the rerun, nothing lost.
    let id = job["id"].as_str().expect("job id");
    let logs = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/ai-search/instances/notes/jobs/{id}/logs"),
        None,
    )
    .await;
    let chunks: u64 = logs["result"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter_map(|m| m.strip_suffix(" chunks"))
        .filter_map(|m| m.rsplit(": ").next()?.parse::<u64>().ok())
        .sum();
    let info = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/vectorize/v2/indexes/{index}/info"),
        None,
    )
    .await;
    server.kill().ok();
    server.wait().ok();
    assert!(chunks >= FILES as u64, "{logs}");
    assert_eq!(info["result"]["vectorCount"], chunks, "{info}");
}

/// Uploads acknowledged just before a `kill -9` are on disk after the
/// restart, whole, and a sync (resumed or queued) indexes every one.
#[tokio::test]
async fn acknowledged_uploads_survive_sigkill_and_are_indexed() {
    const UPLOADS: usize = 25;
    let data = tempfile::tempdir().expect("tempdir");
    let models = models_dir();
    let env = [("HEARTH_MODELS_DIR", models.as_str())];
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = format!("{base}/client/v4/accounts/{ACCOUNT}/ai-search/instances");
    let client = reqwest::Client::new();
    let mut server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;
    call(
        &client,
        reqwest::Method::POST,
        &api,
        Some(json!({"id": "uploads", "embedding_model": "@cf/sentence-transformers/all-minilm-l6-v2", "chunk_size": 64})),
    )
    .await;
    let text = |i: usize| {
        format!(
            "# Upload {i}\n\nThis upload is number {i} and talks about topic {}.\n",
            i % 7
        )
    };
    for i in 0..UPLOADS {
        let boundary = "crashboundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u{i:02}.md\"\r\n\r\n{}\r\n--{boundary}--\r\n",
            text(i)
        );
        let resp = client
            .post(format!("{api}/uploads/items"))
            .bearer_auth(TOKEN)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload");
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;
    search_jobs_settled(&client, &api, "uploads", 1).await;
    let items = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/uploads/items?per_page=100"),
        None,
    )
    .await;
    let list = items["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), UPLOADS, "{items}");
    for item in &list {
        assert_eq!(item["status"], "completed", "{item}");
        let key = item["key"].as_str().expect("key");
        let i: usize = key[1..3].parse().expect("number");
        let id = item["id"].as_str().expect("id");
        let bytes = client
            .get(format!("{api}/uploads/items/{id}/download"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("download")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(bytes.as_ref(), text(i).as_bytes(), "{key}");
    }
    server.kill().ok();
    server.wait().ok();
}
