//! AI Search over an S3-compatible bucket: a real S3 server (moto's, from
//! the test venv that `scripts/test` installs) holds the objects; Hearth
//! lists them under a prefix, indexes them with their user metadata
//! (`context` reaches the legacy results), re-indexes only a changed
//! object and drops a deleted one.

mod common;

use std::process::{Child, Command, Stdio};

use common::{
    ACCOUNT, TOKEN, free_port, models_dir, search_jobs_settled, spawn_server, wait_ready,
};
use serde_json::{Value, json};

const MINILM: &str = "@cf/sentence-transformers/all-minilm-l6-v2";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_server(port: u16) -> Killed {
    let venv = std::env::var("HEARTH_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hearth/venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let bin = format!("{venv}/bin/moto_server");
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: scripts/test installs it (tests/clients/requirements.txt)"
    );
    Killed(
        Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts"),
    )
}

async fn s3_put(client: &reqwest::Client, s3: &str, key: &str, body: &str, context: Option<&str>) {
    // The test's own writes are unsigned: moto lets an unsigned request
    // replace or delete only a public object (Hearth's reads are signed).
    let mut req = client
        .put(format!("{s3}/docs/{key}"))
        .header("x-amz-acl", "public-read")
        .body(body.to_string());
    if let Some(c) = context {
        req = req.header("x-amz-meta-context", c);
    }
    let resp = req.send().await.expect("put object");
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap_or_default()
    );
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

async fn settled(client: &reqwest::Client, api: &str, count: usize) -> Value {
    let instances = format!("{api}/ai-search/instances");
    search_jobs_settled(client, &instances, "bucket-docs", count).await[0].clone()
}

#[tokio::test]
async fn a_bucket_is_indexed_with_its_metadata_and_kept_in_sync() {
    let client = reqwest::Client::new();
    let s3_port = free_port();
    let _moto = moto_server(s3_port);
    let s3 = format!("http://127.0.0.1:{s3_port}");
    for _ in 0..200 {
        if client.get(&s3).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        client
            .put(format!("{s3}/docs"))
            .send()
            .await
            .expect("create bucket")
            .status()
            .is_success()
    );
    s3_put(
        &client,
        &s3,
        "guides/llamas.md",
        "# Llamas\n\nLlamas are South American camelids related to alpacas.\n",
        Some("animal facts"),
    )
    .await;
    s3_put(
        &client,
        &s3,
        "guides/tea.md",
        "# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n",
        None,
    )
    .await;
    s3_put(
        &client,
        &s3,
        "private/secret.md",
        "# Secret\n\nNot under the prefix.\n",
        None,
    )
    .await;

    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let models = models_dir();
    let mut server = spawn_server(
        data.path(),
        port,
        &[
            ("HEARTH_MODELS_DIR", models.as_str()),
            ("HEARTH_R2_ENDPOINT", s3.as_str()),
            ("HEARTH_R2_ACCESS_KEY_ID", "test-key"),
            ("HEARTH_R2_SECRET_ACCESS_KEY", "test-secret"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base).await;
    let api = format!("{base}/client/v4/accounts/{ACCOUNT}");

    let (status, v) = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/ai-search/instances"),
        Some(
            json!({"id": "bucket-docs", "type": "r2", "source": "docs", "embedding_model": MINILM,
                    "chunk_size": 128, "source_params": {"prefix": "guides/"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(settled(&client, &api, 1).await["status"], "completed");
    let (_, stats) = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/ai-search/instances/bucket-docs/stats"),
        None,
    )
    .await;
    assert_eq!(stats["result"]["completed"], 2, "only the prefix: {stats}");

    let (status, v) = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/autorag/rags/bucket-docs/search"),
        Some(json!({"query": "What are llamas related to?", "ranking_options": {"score_threshold": 0}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let first = &v["result"]["data"][0];
    assert_eq!(first["filename"], "guides/llamas.md", "{v}");
    assert_eq!(
        first["attributes"]["file"]["context"], "animal facts",
        "{first}"
    );
    assert_eq!(first["attributes"]["folder"], "guides/");

    // Change one object, delete another: only they are reprocessed.
    s3_put(
        &client,
        &s3,
        "guides/tea.md",
        "# Tea\n\nBlack tea is oxidised before it is dried.\n",
        None,
    )
    .await;
    let resp = client
        .delete(format!("{s3}/docs/guides/llamas.md"))
        .send()
        .await
        .expect("delete");
    assert!(resp.status().is_success());
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/ai-search/instances/bucket-docs/jobs"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let job = settled(&client, &api, 2).await;
    let id = job["id"].as_str().expect("job id");
    let (_, logs) = call(
        &client,
        reqwest::Method::GET,
        &format!("{api}/ai-search/instances/bucket-docs/jobs/{id}/logs"),
        None,
    )
    .await;
    let log: Vec<&str> = logs["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(
        log[0], "1 files to index, 1 to delete, 0 unchanged, 0 too large",
        "{log:?}"
    );
    assert!(log.contains(&"guides/llamas.md: deleted"), "{log:?}");
    let (_, v) = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/ai-search/instances/bucket-docs/search"),
        Some(json!({"query": "How is black tea made?", "ai_search_options": {"retrieval": {"match_threshold": 0}}})),
    )
    .await;
    let chunks = v["result"]["chunks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(chunks.len(), 1, "{v}");
    assert!(
        chunks[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("oxidised")
    );

    // A bucket that is not there is refused at creation, naming `source`.
    let (status, v) = call(
        &client,
        reqwest::Method::POST,
        &format!("{api}/ai-search/instances"),
        Some(json!({"id": "no-bucket", "type": "r2", "source": "missing-bucket", "embedding_model": MINILM})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("missing-bucket"),
        "{v}"
    );
    server.kill().expect("kill");
    let _ = server.wait();
}
