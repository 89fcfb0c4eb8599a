//! `hearth usage` reads the ledger a running server writes.

mod common;

use std::process::Command;

use common::{ACCOUNT, TOKEN, free_port, models_dir, spawn_server, wait_ready};
use serde_json::{Value, json};

#[tokio::test]
async fn usage_cli_reports_the_ledger() {
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("hearth.toml"),
        "[aliases]\n\"@cf/baai/bge-small-en-v1.5\" = \"@cf/sentence-transformers/all-minilm-l6-v2\"\n",
    )
    .expect("config");
    let models = models_dir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(data.path(), port, &[("HEARTH_MODELS_DIR", models.as_str())]);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    for _ in 0..2 {
        let resp = client
            .post(format!(
                "{base}/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-small-en-v1.5"
            ))
            .bearer_auth(TOKEN)
            .json(&json!({"text": ["hello world", "metering"]}))
            .send()
            .await
            .expect("embed");
        assert_eq!(resp.status(), 200);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["usage", "--json", "--account", ACCOUNT])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("hearth usage runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = &report["rows"][0];
    assert_eq!(row["model"], "@cf/baai/bge-small-en-v1.5");
    assert_eq!(row["requests"], 2);
    let tokens = row["input_tokens"].as_f64().unwrap();
    assert!((row["neurons"].as_f64().unwrap() - 1841.0 * tokens / 1e6).abs() < 1e-9);
    let table = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("usage")
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("hearth usage runs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("bge-small-en-v1.5") && text.contains("total: 2 requests"),
        "{text}"
    );
    server.kill().ok();
    server.wait().ok();
}
