//! `hearth models pull` against a local server that speaks the Hugging Face
//! hub's URL layout (`/{repo}/resolve/{revision}/{file}`), with range requests
//! and `X-Linked-Etag` checksums, as the real hub does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hearth_catalog::{WeightFile, Weights};
use hearth_engine::ModelStore;
use hearth_engine::store::NoProgress;
use sha2::{Digest, Sha256};

#[derive(Clone)]
struct Hub {
    content: Arc<Vec<u8>>,
    range_requests: Arc<AtomicUsize>,
}

async fn resolve(
    State(hub): State<Hub>,
    Path((org, repo, revision, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    let known = file == "tiny.gguf" || file == "unet/tiny.gguf";
    if org != "acme" || repo != "tiny-GGUF" || revision != "main" || !known {
        return StatusCode::NOT_FOUND.into_response();
    }
    let sha = hex::encode(Sha256::digest(hub.content.as_slice()));
    let etag = [("x-linked-etag", format!("\"{sha}\""))];
    if let Some(range) = headers.get("range").and_then(|v| v.to_str().ok()) {
        hub.range_requests.fetch_add(1, Ordering::SeqCst);
        let start: usize = range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap_or(0);
        return (
            StatusCode::PARTIAL_CONTENT,
            etag,
            hub.content[start..].to_vec(),
        )
            .into_response();
    }
    (StatusCode::OK, etag, hub.content.to_vec()).into_response()
}

async fn start_hub(content: Vec<u8>) -> (String, Hub) {
    let hub = Hub {
        content: Arc::new(content),
        range_requests: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .route(
            "/{org}/{repo}/resolve/{revision}/{*file}",
            axum::routing::get(resolve),
        )
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hub)
}

fn weights(sha256: Option<String>) -> Weights {
    Weights {
        format: "gguf".into(),
        dir: "huggingface/acme/tiny-GGUF".into(),
        hub_repo: Some("acme/tiny-GGUF".into()),
        revision: Some("main".into()),
        origin: None,
        files: vec![WeightFile {
            name: "tiny.gguf".into(),
            sha256,
            from: None,
            content: None,
        }],
    }
}

fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn pull_downloads_verifies_and_resumes() {
    let (endpoint, hub) = start_hub(content()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let w = weights(None);

    // A half-finished earlier download is resumed with a range request.
    let target_dir = store.dir_of(&w);
    std::fs::create_dir_all(&target_dir).unwrap();
    std::fs::write(target_dir.join("tiny.gguf.partial"), &content()[..100_000]).unwrap();
    store.pull(&w, &endpoint, None, &NoProgress).await.unwrap();
    assert_eq!(hub.range_requests.load(Ordering::SeqCst), 1);
    assert!(store.is_installed(&w));
    assert_eq!(
        std::fs::read(target_dir.join("tiny.gguf")).unwrap(),
        content()
    );
    assert!(!target_dir.join("tiny.gguf.partial").exists());

    // Pulling again downloads nothing; removing deletes the files.
    store.pull(&w, &endpoint, None, &NoProgress).await.unwrap();
    assert!(store.remove(&w).unwrap());
    assert!(!store.is_installed(&w));
}

#[tokio::test]
async fn pull_refuses_a_file_whose_checksum_does_not_match() {
    let (endpoint, _hub) = start_hub(content()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let w = weights(Some("0".repeat(64)));
    let err = store
        .pull(&w, &endpoint, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!store.is_installed(&w));
    assert!(!store.dir_of(&w).join("tiny.gguf.partial").exists());
}

#[tokio::test]
async fn pull_reports_a_missing_file() {
    let (endpoint, _hub) = start_hub(content()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let mut w = weights(None);
    w.files[0].name = "absent.gguf".into();
    let err = store
        .pull(&w, &endpoint, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

/// diffusers repositories keep each part in a subfolder (`unet/...`): the
/// pull makes the folder and the store sees the file installed.
#[tokio::test]
async fn pull_places_files_in_their_subfolders() {
    let (endpoint, _hub) = start_hub(content()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let mut w = weights(None);
    w.files.push(WeightFile {
        name: "unet/tiny.gguf".into(),
        sha256: None,
        from: None,
        content: None,
    });
    store.pull(&w, &endpoint, None, &NoProgress).await.unwrap();
    assert!(store.is_installed(&w));
    assert_eq!(
        std::fs::read(store.dir_of(&w).join("unet/tiny.gguf")).unwrap(),
        content()
    );
}

/// SDXL-Lightning's layout: one file from another repository under this
/// model's name for it, and a settings file written from the catalog.
#[tokio::test]
async fn pull_takes_files_from_other_repositories_and_writes_given_settings() {
    let (endpoint, _hub) = start_hub(content()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let mut w = weights(None);
    w.hub_repo = Some("base/model".into());
    w.files = vec![
        WeightFile {
            name: "unet/weights.gguf".into(),
            sha256: Some(hex::encode(Sha256::digest(content()))),
            from: Some("acme/tiny-GGUF/tiny.gguf".into()),
            content: None,
        },
        WeightFile {
            name: "scheduler/scheduler_config.json".into(),
            sha256: None,
            from: None,
            content: Some(serde_json::json!({"timestep_spacing": "trailing"})),
        },
    ];
    store.pull(&w, &endpoint, None, &NoProgress).await.unwrap();
    assert!(store.is_installed(&w));
    let folder = store.dir_of(&w);
    assert_eq!(
        std::fs::read(folder.join("unet/weights.gguf")).unwrap(),
        content()
    );
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(folder.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["timestep_spacing"], "trailing");
    // A malformed source is an error naming the field, not a request.
    w.files[0].from = Some("acme".into());
    std::fs::remove_file(folder.join("unet/weights.gguf")).unwrap();
    let err = store
        .pull(&w, &endpoint, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`from`"), "{err}");
}
