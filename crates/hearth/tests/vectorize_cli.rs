//! `hearth vectorize ...` against a running server: create, batched insert
//! of an NDJSON file, info, query, list, delete.

mod common;

use common::{free_port, spawn_server, wait_ready};
use serde_json::{Value, json};

fn cli(port: u16, args: &[&str]) -> (bool, String, String) {
    common::cli("vectorize", port, args)
}

#[tokio::test]
async fn cli_creates_inserts_and_queries() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = spawn_server(data.path(), port, &[]);
    wait_ready(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}")).await;

    let (ok, out, err) = cli(
        port,
        &[
            "create",
            "docs",
            "--dimensions",
            "8",
            "--metric",
            "euclidean",
        ],
    );
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        created["config"],
        json!({"dimensions": 8, "metric": "euclidean"})
    );

    let file = data.path().join("vectors.ndjson");
    let lines: String = (0..2500)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("v{i}"), "values": vec![i as f32; 8], "metadata": {"i": i}})
            )
        })
        .collect();
    std::fs::write(&file, lines).expect("write ndjson");
    let (ok, out, err) = cli(
        port,
        &[
            "insert",
            "docs",
            file.to_str().unwrap(),
            "--batch",
            "1000",
            "--wait",
        ],
    );
    assert!(ok, "{out}{err}");
    let inserted: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(inserted["vectors"], 2500);

    let (ok, out, _) = cli(port, &["info", "docs"]);
    assert!(ok);
    let info: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["vectorCount"], 2500);
    assert_eq!(info["processedUpToMutation"], inserted["mutationId"]);

    let (ok, out, err) = cli(
        port,
        &[
            "query",
            "docs",
            "--vector",
            "[10,10,10,10,10,10,10,10]",
            "--top-k",
            "3",
            "--return-metadata",
            "all",
        ],
    );
    assert!(ok, "{out}{err}");
    let r: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["matches"][0]["id"], "v10");
    assert_eq!(r["matches"][0]["metadata"], json!({"i": 10}));

    let (ok, out, _) = cli(port, &["list"]);
    assert!(ok && out.contains("\"docs\""), "{out}");
    let (ok, _, err) = cli(port, &["query", "docs", "--vector", "[1,2]"]);
    assert!(!ok && err.contains("expected 8 dimensions"), "{err}");
    let (ok, _, err) = cli(port, &["delete", "docs"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(port, &["info", "docs"]);
    assert!(!ok && err.contains("40004"), "{err}");
    server.kill().ok();
    server.wait().ok();
}
