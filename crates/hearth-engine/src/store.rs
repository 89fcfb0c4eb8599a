//! The model store: weights on disk under one models dir, and pulls from a
//! Hugging Face-compatible hub.
//!
//! Layout: each catalog entry's weights live in `<models_dir>/<weights.dir>/`,
//! one file per `weights.files` entry. A pull writes `<file>.partial` and
//! resumes it with an HTTP range request; the file gets its final name only
//! after its sha256 matched (the catalog's, or the hub's `X-Linked-Etag` for
//! LFS files), so a present file is a complete file.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use hearth_catalog::Weights;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} has no hub repository to pull from")]
    NotPullable(String),
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("{file}: sha256 is {actual}, expected {expected}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Receives progress of a pull (the CLI draws a bar with it).
pub trait PullProgress: Send + Sync {
    fn start(&self, file: &str, total: Option<u64>, already: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self, file: &str);
}

/// Progress sink that reports nothing.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: &str) {}
}

#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir_of(&self, weights: &Weights) -> PathBuf {
        self.root.join(&weights.dir)
    }

    /// The file an engine loads (the first one listed).
    pub fn primary_file(&self, weights: &Weights) -> Option<PathBuf> {
        weights
            .files
            .first()
            .map(|f| self.dir_of(weights).join(&f.name))
    }

    pub fn is_installed(&self, weights: &Weights) -> bool {
        let dir = self.dir_of(weights);
        !weights.files.is_empty() && weights.files.iter().all(|f| dir.join(&f.name).is_file())
    }

    /// Bytes on disk for these weights.
    pub fn size_on_disk(&self, weights: &Weights) -> u64 {
        let dir = self.dir_of(weights);
        weights
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(&f.name)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Delete the files of these weights (and the folder, once empty).
    pub fn remove(&self, weights: &Weights) -> Result<bool, StoreError> {
        let dir = self.dir_of(weights);
        let mut removed = false;
        for f in &weights.files {
            for name in [f.name.clone(), format!("{}.partial", f.name)] {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(removed)
    }

    /// Download every missing file of `weights` from `endpoint` (a Hugging
    /// Face-compatible hub: `{endpoint}/{repo}/resolve/{revision}/{file}`).
    pub async fn pull(
        &self,
        weights: &Weights,
        endpoint: &str,
        token: Option<&str>,
        progress: &dyn PullProgress,
    ) -> Result<(), StoreError> {
        let repo = weights
            .hub_repo
            .as_deref()
            .ok_or_else(|| StoreError::NotPullable(weights.dir.clone()))?;
        let revision = weights.revision.as_deref().unwrap_or("main");
        let dir = self.dir_of(weights);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| StoreError::Download {
                url: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        for file in &weights.files {
            let target = dir.join(&file.name);
            if target.is_file() {
                continue;
            }
            // diffusers folders keep each part in a subfolder (`unet/...`).
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(io_err(parent))?;
            }
            if let Some(content) = &file.content {
                let partial = target.with_extension("partial");
                tokio::fs::write(&partial, content.to_string())
                    .await
                    .map_err(io_err(&partial))?;
                tokio::fs::rename(&partial, &target)
                    .await
                    .map_err(io_err(&target))?;
                continue;
            }
            // A file of another repository: `owner/repo/path`, at its main
            // revision (this repository's revision names this one's commits).
            let (repo, revision, path) = match file.from.as_deref().map(|f| f.splitn(3, '/')) {
                Some(mut parts) => match (parts.next(), parts.next(), parts.next()) {
                    (Some(owner), Some(name), Some(path)) if !path.is_empty() => {
                        (format!("{owner}/{name}"), "main", path)
                    }
                    _ => {
                        return Err(StoreError::Download {
                            url: file.from.clone().unwrap_or_default(),
                            reason: "`from` must be owner/repo/path".into(),
                        });
                    }
                },
                None => (repo.to_string(), revision, file.name.as_str()),
            };
            let url = format!(
                "{}/{repo}/resolve/{revision}/{path}",
                endpoint.trim_end_matches('/'),
            );
            download(
                &client,
                &url,
                token,
                &target,
                file.sha256.as_deref(),
                progress,
            )
            .await?;
        }
        Ok(())
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    target: &Path,
    sha256: Option<&str>,
    progress: &dyn PullProgress,
) -> Result<(), StoreError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = target.with_file_name(format!("{name}.partial"));
    let already = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let fail = |reason: String| StoreError::Download {
        url: url.to_string(),
        reason,
    };
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if already > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={already}-"));
    }
    let response = request.send().await.map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        // The partial file is already whole; fall through to verification.
    } else if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    let hub_sha = response
        .headers()
        .get("x-linked-etag")
        .or_else(|| response.headers().get(reqwest::header::ETAG))
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim_matches('"')
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_lowercase()
        })
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    if status != reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        let start = if resumed { already } else { 0 };
        let total = response.content_length().map(|l| l + start);
        progress.start(&name, total, start);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .await
            .map_err(io_err(&partial))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            file.write_all(&chunk).await.map_err(io_err(&partial))?;
            progress.advance(chunk.len() as u64);
        }
        file.flush().await.map_err(io_err(&partial))?;
        file.sync_all().await.map_err(io_err(&partial))?;
    }
    let expected = sha256.map(str::to_lowercase).or(hub_sha);
    if let Some(expected) = expected {
        let actual = sha256_file(&partial).await?;
        if actual != expected {
            // A corrupt partial must not be resumed again.
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(StoreError::Checksum {
                file: name,
                expected,
                actual,
            });
        }
    }
    tokio::fs::rename(&partial, target)
        .await
        .map_err(io_err(target))?;
    progress.finish(&name);
    Ok(())
}

/// Hex sha256 of a file.
pub async fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| StoreError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}
