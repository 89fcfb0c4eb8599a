//! The items API (`.../instances/{id}/items`): an instance's files with
//! their indexing status, chunks, bytes and logs, and, for instances with
//! built-in storage, uploads and deletions. An upload is written to the
//! instance's folder in the data dir (fsynced, renamed into place) before
//! it is acknowledged, and a sync picks it up like any changed file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path as FsPath;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hearth_search::source::{SourceFile, folder_of};
use hearth_store::SearchFileRow;
use hearth_types::Envelope;
use serde_json::{Map, Value, json};

use super::{
    SearchInstanceRow, Settings, Source, bad, builtin_folder, file_id, find, internal, settings_of,
    start_job,
};
use crate::error::Failure;
use crate::gateway::{one_page, page_params, param};
use crate::{AppState, body};

/// The largest upload: the size limit of an indexed file.
pub const MAX_UPLOAD_BYTES: usize = hearth_search::source::MAX_FILE_BYTES as usize + (64 << 10);
/// Longest item key, as Cloudflare allows.
const MAX_KEY_CHARS: usize = 128;
/// How long `wait_for_completion` waits for the item to be indexed.
const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(40);

/// An instance's files on disk and in the index, joined.
struct Items {
    row: SearchInstanceRow,
    settings: Settings,
    source: Source,
    on_disk: BTreeMap<String, SourceFile>,
    indexed: BTreeMap<String, SearchFileRow>,
    metadata: BTreeMap<String, (Value, i64)>,
    job_running: bool,
}

async fn items(state: &AppState, account: &str, id: &str) -> Result<Items, Failure> {
    let row = find(state, account, id)?;
    let settings = settings_of(
        &row.settings.as_object().cloned().unwrap_or_default(),
        builtin_folder(state, account, id),
    )?;
    let source = Source::open(state, &settings)?;
    let files = source.list().await?;
    let store = state.app.meter().store();
    let mut all = Items {
        row,
        settings,
        source,
        on_disk: files.into_iter().map(|f| (f.key.clone(), f)).collect(),
        indexed: BTreeMap::new(),
        metadata: store.search_item_metadata(account, id).map_err(internal)?,
        job_running: false,
    };
    all.read_index(state, account, id)?;
    Ok(all)
}

impl Items {
    /// Reads again what the index holds and whether a sync runs; the
    /// source's listing is kept.
    fn read_index(&mut self, state: &AppState, account: &str, id: &str) -> Result<(), Failure> {
        let store = state.app.meter().store();
        self.indexed = store
            .search_files(account, id)
            .map_err(internal)?
            .into_iter()
            .map(|f| (f.key.clone(), f))
            .collect();
        self.job_running = store
            .search_jobs(account, id)
            .map_err(internal)?
            .iter()
            .any(|j| j.status == "running");
        Ok(())
    }

    fn keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self.on_disk.keys().chain(self.indexed.keys()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn status(&self, key: &str) -> (&'static str, Option<&'static str>) {
        let pending = if self.job_running {
            "running"
        } else {
            "queued"
        };
        match (self.on_disk.get(key), self.indexed.get(key)) {
            (Some(f), Some(r))
                if r.hash == f.hash || (f.hash.is_empty() && r.status == "error") =>
            {
                (
                    if r.status == "error" {
                        "error"
                    } else {
                        "completed"
                    },
                    None,
                )
            }
            (Some(_), _) => (pending, Some("INDEX")),
            (None, _) => ("outdated", Some("DELETE")),
        }
    }

    fn object(&self, key: &str) -> Value {
        let (status, next_action) = self.status(key);
        let disk = self.on_disk.get(key);
        let row = self.indexed.get(key);
        let modified = disk
            .map(|f| f.modified_ms)
            .or(row.map(|r| r.modified_ms))
            .unwrap_or(0);
        let (metadata, created) = self
            .metadata
            .get(key)
            .cloned()
            .unwrap_or((Value::Null, modified));
        let mut meta = match metadata {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        meta.insert("folder".into(), json!(folder_of(key)));
        meta.insert("filename".into(), json!(key));
        meta.insert("timestamp".into(), json!(modified / 1000));
        json!({
            "id": file_id(key),
            "key": key,
            "checksum": disk.map(|f| f.hash.clone()).or(row.map(|r| r.hash.clone())).unwrap_or_default(),
            "chunks_count": row.map(|r| r.chunks),
            "file_size": disk.map(|f| f.size).or(row.map(|r| r.size)),
            "created_at": hearth_vector::iso8601(created),
            "last_seen_at": hearth_vector::iso8601(modified),
            "metadata": meta,
            "namespace": "default",
            "source_id": match (&self.settings.bucket, self.settings.builtin) {
                (Some(bucket), _) => format!("r2:{bucket}"),
                (None, true) => "builtin".to_string(),
                (None, false) => format!("local:{}", self.settings.folder.display()),
            },
            "status": status,
            "next_action": next_action,
            "error": row.and_then(|r| r.error.clone()),
        })
    }

    fn key_of(&self, item_id: &str) -> Result<String, Failure> {
        self.keys()
            .into_iter()
            .find(|k| file_id(k) == item_id)
            .cloned()
            .ok_or_else(|| {
                Failure(hearth_types::ApiError::detail(
                    hearth_types::ErrorCode::NoRoute,
                    format!("no item `{item_id}` in instance `{}`", self.row.id),
                ))
            })
    }
}

fn ids(p: &HashMap<String, String>) -> Result<(&str, &str), Failure> {
    // The namespaced paths serve the one namespace Hearth has.
    if let Some(ns) = p.get("namespace")
        && ns != "default"
    {
        return Err(Failure(hearth_types::ApiError::detail(
            hearth_types::ErrorCode::NoRoute,
            format!("no namespace `{ns}`: this server has only `default`"),
        )));
    }
    Ok((param(p, "account_id"), param(p, "instance_id")))
}

/// The instance's items and the key of the one the path names.
async fn named_item<'p>(
    state: &AppState,
    p: &'p HashMap<String, String>,
) -> Result<(&'p str, &'p str, Items, String), Failure> {
    let (account, id) = ids(p)?;
    let all = items(state, account, id).await?;
    let key = all.key_of(param(p, "item_id"))?;
    Ok((account, id, all, key))
}

pub async fn list(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id) = ids(&p)?;
    let (page, per_page) = page_params(&q, 100)?;
    let all = items(&state, account, id).await?;
    if let Some(s) = q.get("status")
        && ![
            "queued",
            "running",
            "completed",
            "error",
            "skipped",
            "outdated",
        ]
        .contains(&s.as_str())
    {
        return Err(bad(format!(
            "`status` must be queued, running, completed, error, skipped or outdated, got `{s}`"
        )));
    }
    let mut out: Vec<Value> = all
        .keys()
        .into_iter()
        .filter(|k| q.get("key").is_none_or(|want| want == *k))
        .filter(|k| q.get("item_id").is_none_or(|want| *want == file_id(k)))
        .filter(|k| q.get("search").is_none_or(|s| k.contains(s.as_str())))
        .filter(|k| q.get("status").is_none_or(|s| all.status(k).0 == s))
        .map(|k| all.object(k))
        .collect();
    if q.get("sort_by").map(String::as_str) == Some("modified_at") {
        out.sort_by(|a, b| b["last_seen_at"].as_str().cmp(&a["last_seen_at"].as_str()));
    }
    Ok(one_page(out, page, per_page))
}

pub async fn get(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (_, _, all, key) = named_item(&state, &p).await?;
    Ok(Json(Envelope::ok(all.object(&key))).into_response())
}

/// A key an upload may use: a relative path without empty, `.` or `..`
/// segments, at most 128 characters.
fn checked_key(key: &str) -> Result<String, Failure> {
    let ok = !key.is_empty()
        && key.chars().count() <= MAX_KEY_CHARS
        && !key.contains(['\\', '\0'])
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(key.to_string())
    } else {
        Err(bad(format!(
            "`file`: the file name `{key}` must be 1 to {MAX_KEY_CHARS} characters of path segments, without `.`, `..` or empty segments"
        )))
    }
}

/// Writes `bytes` as `key` under `folder`: to a temporary file beside the
/// folder, fsynced, then renamed into place and the folder fsynced, so a
/// crash leaves the old file or the new one, never part of one.
fn write_durably(folder: &FsPath, key: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = folder.join(key);
    let parent = path.parent().unwrap_or(folder).to_path_buf();
    std::fs::create_dir_all(&parent)?;
    let staging = folder.with_extension("uploads");
    std::fs::create_dir_all(&staging)?;
    let tmp = staging.join(uuid::Uuid::new_v4().simple().to_string());
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&parent)?.sync_all()?;
    Ok(())
}

async fn wait_for(state: &AppState, account: &str, id: &str, key: &str) -> Result<Value, Failure> {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    // The file does not change while the sync indexes it: the source is
    // listed (and hashed) once, only the index is read again.
    let mut all = items(state, account, id).await?;
    loop {
        let (status, _) = all.status(key);
        if !["queued", "running"].contains(&status) || tokio::time::Instant::now() >= deadline {
            return Ok(all.object(key));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        all.read_index(state, account, id)?;
    }
}

fn flag(text: &str, field: &str) -> Result<bool, Failure> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(bad(format!(
            "`{field}` must be true or false, got `{other}`"
        ))),
    }
}

/// `POST .../items` (multipart: `file`, optional `metadata` as a JSON
/// object string and `wait_for_completion`; the SDK's nested `file[...]`
/// names are read too).
pub async fn upload(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (account, id) = ids(&p)?;
    let all = items(&state, account, id).await?;
    if !all.settings.builtin {
        return Err(bad(
            "uploads need an instance with built-in storage (created with no `type` and no `source`); this one reads a folder",
        ));
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("the body must be multipart/form-data: {e}")))?;
    let (mut file, mut metadata, mut wait) = (None, Value::Null, false);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("the multipart body is malformed: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" | "file[file]" => {
                let key = field.file_name().unwrap_or_default().to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| bad(format!("`file` could not be read: {e}")))?;
                file = Some((checked_key(&key)?, bytes));
            }
            "metadata" | "file[metadata]" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad(format!("`metadata`: {e}")))?;
                metadata = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(m))
                        if m.values()
                            .all(|v| v.is_string() || v.is_number() || v.is_boolean()) =>
                    {
                        Value::Object(m)
                    }
                    _ => {
                        return Err(bad(
                            "`metadata` must be a JSON object of string, number or boolean values",
                        ));
                    }
                };
            }
            "wait_for_completion" | "file[wait_for_completion]" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad(format!("`wait_for_completion`: {e}")))?;
                wait = flag(&text, "wait_for_completion")?;
            }
            _ => {}
        }
    }
    let Some((key, bytes)) = file else {
        return Err(bad("`file` is required: a file part with a file name"));
    };
    if bytes.len() as u64 > hearth_search::source::MAX_FILE_BYTES {
        return Err(bad(format!(
            "`file` is {} bytes; items may be at most {} bytes",
            bytes.len(),
            hearth_search::source::MAX_FILE_BYTES
        )));
    }
    let folder = all.settings.folder.clone();
    let written = key.clone();
    tokio::task::spawn_blocking(move || write_durably(&folder, &written, &bytes))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let store = state.app.meter().store();
    if metadata.is_null() {
        store
            .search_item_metadata_delete(account, id, &key)
            .map_err(internal)?;
    } else {
        store
            .search_item_metadata_put(account, id, &key, &metadata, state.app.meter().now_ms())
            .map_err(internal)?;
    }
    index_item(&state, account, id, &key, wait).await
}

/// Syncs the instance and answers with the item, once indexed if `wait`.
async fn index_item(
    state: &AppState,
    account: &str,
    id: &str,
    key: &str,
    wait: bool,
) -> Result<Response, Failure> {
    start_job(state, account, id, "user")?;
    let item = if wait {
        wait_for(state, account, id, key).await?
    } else {
        items(state, account, id).await?.object(key)
    };
    Ok(Json(Envelope::ok(item)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id, all, key) = named_item(&state, &p).await?;
    if !all.settings.builtin {
        return Err(bad(
            "items of a folder source are deleted from the folder; this instance has no built-in storage",
        ));
    }
    match std::fs::remove_file(all.settings.folder.join(&key)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal(e)),
    }
    state
        .app
        .meter()
        .store()
        .search_item_metadata_delete(account, id, &key)
        .map_err(internal)?;
    start_job(&state, account, id, "user")?;
    Ok(Json(Envelope::ok(json!({"key": key}))).into_response())
}

/// `PATCH .../items/{item_id}` with `{"next_action": "INDEX"}`: index the
/// item again, changed or not.
pub async fn sync(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (account, id, _, key) = named_item(&state, &p).await?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req: Value = body::parse_json(&bytes)?;
    if req.get("next_action").and_then(Value::as_str) != Some("INDEX") {
        return Err(bad("`next_action` must be \"INDEX\""));
    }
    state
        .app
        .meter()
        .store()
        .search_file_mark_outdated(account, id, &key)
        .map_err(internal)?;
    let wait = req.get("wait_for_completion") == Some(&Value::Bool(true));
    index_item(&state, account, id, &key, wait).await
}

pub async fn chunks(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id, all, key) = named_item(&state, &p).await?;
    let number = |name: &str, default: usize| -> Result<usize, Failure> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| bad(format!("`{name}` must be a non-negative integer")))
        })
    };
    let (limit, offset) = (number("limit", 100)?, number("offset", 0)?);
    let store = state.app.meter().store();
    let ids = store
        .search_chunk_ids(account, id, &key)
        .map_err(internal)?;
    let mut rows = store.search_chunks(account, id, &ids).map_err(internal)?;
    rows.sort_by_key(|c| c.index);
    let item = all.object(&key);
    let out: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|c| {
            json!({"id": c.id, "text": c.text,
                   "item": {"key": key, "metadata": item["metadata"], "timestamp": item["metadata"]["timestamp"]}})
        })
        .collect();
    Ok(Json(Envelope::ok(out)).into_response())
}

fn content_type(key: &str) -> &'static str {
    match key
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("md" | "markdown" | "mdx") => "text/markdown",
        Some("txt" | "log" | "rst") => "text/plain",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("pdf") => "application/pdf",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

pub async fn download(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (_, _, all, key) = named_item(&state, &p).await?;
    let (bytes, _) = all.source.read(&key).await.map_err(|e| {
        Failure(hearth_types::ApiError::detail(
            hearth_types::ErrorCode::NoRoute,
            format!("item `{key}` cannot be read from the source: {e}"),
        ))
    })?;
    Response::builder()
        .header("content-type", content_type(&key))
        .body(Body::from(bytes))
        .map_err(internal)
}

/// The job log lines about one item, as item logs.
pub async fn logs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id, _, key) = named_item(&state, &p).await?;
    let lines = state
        .app
        .meter()
        .store()
        .search_job_logs(account, id, None)
        .map_err(internal)?;
    let prefix = format!("{key}: ");
    let out: Vec<Value> = lines
        .into_iter()
        .filter_map(|(at, message, kind)| {
            let rest = message.strip_prefix(&prefix)?;
            let chunks = rest.strip_suffix(" chunks").and_then(|n| n.parse::<u64>().ok());
            let action = match (kind.as_str(), chunks, rest) {
                ("error", _, _) => "error",
                (_, Some(_), _) => "index",
                (_, _, "deleted") => "delete",
                _ => "info",
            };
            Some(json!({"action": action, "fileKey": key, "message": message,
                        "chunkCount": chunks, "errorType": (kind == "error").then_some("conversion"),
                        "timestamp": hearth_vector::iso8601(at)}))
        })
        .collect();
    Ok(Json(Envelope::ok(out)).into_response())
}
