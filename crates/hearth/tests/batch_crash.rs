//! A batch job interrupted by `kill -9` resumes after the restart and
//! completes, every item answered exactly once, references intact.

mod common;

use std::time::{Duration, Instant};

use common::{ACCOUNT, TOKEN, free_port, models_dir, spawn_server, wait_ready};
use serde_json::{Value, json};

const MODEL: &str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
const ITEMS: usize = 24;

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.expect("json")
}

#[tokio::test]
async fn batch_survives_sigkill_mid_job() {
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("hearth.toml"),
        format!("[aliases]\n\"{MODEL}\" = \"@cf/huggingfacetb/smollm2-135m-instruct\"\n"),
    )
    .expect("config");
    let models = models_dir();
    let env = [
        ("HEARTH_MODELS_DIR", models.as_str()),
        ("HEARTH_THREADS", "2"),
    ];
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/client/v4/accounts/{ACCOUNT}/ai/run/{MODEL}?queueRequest=true");
    let client = reqwest::Client::new();
    let mut server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;

    let requests: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"prompt": "Count from one to twenty: one, two,", "raw": true, "max_tokens": 24, "temperature": 0, "external_reference": format!("item-{i}")}))
        .collect();
    let queued = post(&client, &url, &json!({"requests": requests})).await;
    let id = queued["result"]["request_id"]
        .as_str()
        .expect("id")
        .to_string();

    // Let the job start and finish some items, then kill the server.
    let start = Instant::now();
    loop {
        let polled = post(&client, &url, &json!({"request_id": id})).await;
        if polled["result"]["status"] == "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job never started: {polled}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let polled = post(&client, &url, &json!({"request_id": id})).await;
    assert_eq!(
        polled["result"]["status"], "running",
        "the kill must land mid-job"
    );
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    server = spawn_server(data.path(), port, &env);
    wait_ready(&client, &base).await;
    let start = Instant::now();
    let done = loop {
        let polled = post(&client, &url, &json!({"request_id": id})).await;
        if polled["result"].get("responses").is_some() {
            break polled["result"].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "job did not resume: {polled}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    server.kill().ok();
    server.wait().ok();

    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), ITEMS);
    let first = responses[0]["result"]["response"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(!first.is_empty());
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r["id"], i, "each item exactly once, in order");
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["external_reference"], format!("item-{i}"));
        // Greedy: the same prompt gives the same text before and after the crash.
        assert_eq!(r["result"]["response"], first.as_str());
    }
}
