//! `hearth search ...` against a running server: create (following the
//! first sync to its end), query (chunks and a cited answer), sync after a
//! change, list, delete, and a clear error for a bad instance.

mod common;

use common::{free_port, models_dir, spawn_server, wait_ready};

const MINILM: &str = "@cf/sentence-transformers/all-minilm-l6-v2";

fn cli(port: u16, args: &[&str]) -> (bool, String, String) {
    common::cli("search", port, args)
}

#[tokio::test]
async fn cli_creates_syncs_and_queries() {
    let data = tempfile::tempdir().expect("tempdir");
    let corpus = tempfile::tempdir().expect("corpus");
    let write = |name: &str, text: &str| {
        std::fs::write(corpus.path().join(name), text).expect("write");
    };
    write(
        "llamas.md",
        "# Llamas\n\nLlamas are South American camelids related to alpacas.\n",
    );
    write(
        "tea.md",
        "# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n",
    );
    let models = models_dir();
    let port = free_port();
    let mut server = spawn_server(data.path(), port, &[("HEARTH_MODELS_DIR", models.as_str())]);
    wait_ready(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}")).await;
    let source = corpus.path().display().to_string();

    let (ok, out, err) = cli(
        port,
        &[
            "create",
            "notes",
            "--source",
            &source,
            "--embedding-model",
            MINILM,
            "--chunk-size",
            "128",
            "--hybrid",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(err.contains("2 files indexed, 0 with errors"), "{err}");

    let (ok, out, err) = cli(port, &["query", "notes", "What are llamas related to?"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("[1] llamas.md (score "), "{out}");
    // Two files: BM25 gives a term found in one of them little weight.
    let (ok, out, err) = cli(
        port,
        &[
            "query",
            "notes",
            "Camellia",
            "--mode",
            "keyword",
            "--threshold",
            "0",
            "--json",
        ],
    );
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["chunks"][0]["item"]["key"], "tea.md");
    let (ok, out, err) = cli(
        port,
        &[
            "query",
            "notes",
            "What are llamas related to?",
            "--answer",
            "--threshold",
            "0",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("] llamas.md (score "),
        "the sources follow the answer: {out}"
    );

    write(
        "rivers.md",
        "# Rivers\n\nThe Danube flows through ten countries.\n",
    );
    let (ok, out, err) = cli(port, &["sync", "notes"]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("3 files indexed"), "{err}");
    let (ok, out, _) = cli(
        port,
        &["query", "notes", "Which river flows through ten countries?"],
    );
    assert!(ok && out.starts_with("[1] rivers.md"), "{out}");

    let (ok, out, _) = cli(port, &["list"]);
    assert!(ok && out.contains("\"notes\""), "{out}");
    let (ok, _, err) = cli(port, &["query", "nowhere", "x"]);
    assert!(
        !ok && err.contains("no AI Search instance `nowhere`"),
        "{err}"
    );
    let (ok, _, err) = cli(port, &["delete", "notes"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(port, &["list"]);
    assert!(ok && !out.contains("\"notes\""), "{out}");
    server.kill().expect("kill");
    let _ = server.wait();
}
