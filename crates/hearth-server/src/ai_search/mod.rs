//! AI Search v2 (`.../ai-search/instances`): instances over a local folder
//! (`type: "local"`, `source` = the folder), sync jobs that convert, chunk,
//! embed and upsert only new and changed files (and drop deleted ones), job
//! listings, logs and cancelling, stats, and `search` over the instance's
//! own Vectorize index and keyword index ([`retrieval`]); cited answers
//! ([`answer`]); the items API and built-in storage ([`items`]); the legacy
//! AutoRAG surface ([`legacy`]). Chunk ids are
//! derived from the file key and position, so a job run again after a
//! crash writes the same vectors, never duplicates.

pub mod answer;
pub mod items;
pub mod legacy;
pub mod retrieval;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hearth_search::chunk::{ChunkOptions, chunk};
use hearth_search::source::{Selection, folder_of, plan, scan};
use hearth_store::{SearchChunkRow, SearchFileRow, SearchInstanceRow, SearchJobRow};
use hearth_types::vectorize::{IndexConfigRequest, MetadataType};
use hearth_types::{ApiError, Envelope, ErrorCode};
use hearth_vector::Record;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::Failure;
use crate::gateway::{one_page, page_params, param};
use crate::{AppState, body};
use retrieval::{IndexMethod, Retrieval, query_of, retrieve, tokenizer_of};

/// The embedding model when an instance names none.
pub const DEFAULT_EMBEDDING_MODEL: &str = "@cf/baai/bge-m3";
/// Texts embedded per call during a sync.
const EMBED_BATCH: usize = 32;

fn bad(message: impl Into<String>) -> Failure {
    Failure(ApiError::invalid_input(message.into()))
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::internal("AI Search", e)
}

fn not_found(id: &str) -> Failure {
    Failure(ApiError::detail(
        ErrorCode::NoRoute,
        format!("no AI Search instance `{id}` in this account"),
    ))
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--")
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The Vectorize index holding an instance's chunks (index names allow
/// neither `_` nor every length, so it is named by a hash of the id).
fn index_name(id: &str) -> String {
    format!(
        "ai-search-{}",
        &hex::encode(Sha256::digest(id.as_bytes()))[..16]
    )
}

/// A file's id in results and the items API: stable per key.
fn file_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// A chunk's id: the same file position always gets the same id.
fn chunk_id(key: &str, index: usize) -> String {
    format!(
        "{}-{index}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..24]
    )
}

fn object(row: &SearchInstanceRow) -> Value {
    let mut obj = row.settings.as_object().cloned().unwrap_or_default();
    obj.insert("id".into(), json!(row.id));
    obj.insert("vectorize_name".into(), json!(index_name(&row.id)));
    obj.insert(
        "created_at".into(),
        json!(hearth_vector::iso8601(row.created_ms)),
    );
    obj.insert(
        "modified_at".into(),
        json!(hearth_vector::iso8601(row.modified_ms)),
    );
    Value::Object(obj)
}

fn number(
    obj: &Map<String, Value>,
    key: &str,
    default: f64,
    lo: f64,
    hi: f64,
) -> Result<f64, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().filter(|n| (lo..=hi).contains(n)).ok_or_else(|| {
            bad(format!(
                "`{key}` must be a number from {lo} to {hi}, got {v}"
            ))
        }),
    }
}

fn strings(obj: Option<&Value>, key: &str) -> Result<Vec<String>, Failure> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("`source_params.{key}` must hold strings")))
            })
            .collect(),
        Some(_) => Err(bad(format!(
            "`source_params.{key}` must be an array of globs"
        ))),
    }
}

/// What a sync needs from an instance's settings, checked.
struct Settings {
    folder: PathBuf,
    /// Files come from the items API into Hearth's own storage.
    builtin: bool,
    /// Files are the objects of this bucket of the `[search.r2]` store.
    bucket: Option<String>,
    selection: Selection,
    embedding_model: String,
    chunking: ChunkOptions,
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A bucket of the server's S3-compatible store (`[search.r2]`).
fn open_bucket(state: &AppState, name: &str) -> Result<hearth_search::bucket::Bucket, Failure> {
    let Some(r2) = &state.app.config().search.r2 else {
        return Err(bad(
            "`type`: \"r2\" needs an S3-compatible store in the server's config (`[search.r2]` endpoint and keys)",
        ));
    };
    hearth_search::bucket::Bucket::open(
        &hearth_search::bucket::BucketOptions {
            endpoint: r2.endpoint.clone(),
            region: r2.region.clone(),
            access_key_id: r2.access_key_id.clone(),
            secret_access_key: r2.secret_access_key.clone(),
        },
        name,
    )
    .map_err(|e| bad(e.to_string()))
}

/// An instance's source, opened once per sync or request: a bucket client
/// is built once, not for every file read.
struct Source {
    bucket: Option<hearth_search::bucket::Bucket>,
    folder: PathBuf,
    selection: Selection,
}

impl Source {
    fn open(state: &AppState, settings: &Settings) -> Result<Self, Failure> {
        Ok(Self {
            bucket: match &settings.bucket {
                Some(name) => Some(open_bucket(state, name)?),
                None => None,
            },
            folder: settings.folder.clone(),
            selection: settings.selection.clone(),
        })
    }

    /// The files as a sync sees them.
    async fn list(&self) -> Result<Vec<hearth_search::source::SourceFile>, Failure> {
        if let Some(bucket) = &self.bucket {
            return bucket
                .scan(&self.selection)
                .await
                .map_err(|e| bad(format!("`source`: {e}")));
        }
        let (folder, selection) = (self.folder.clone(), self.selection.clone());
        tokio::task::spawn_blocking(move || scan(&folder, &selection))
            .await
            .map_err(internal)?
            .map_err(|e| bad(e.to_string()))
    }

    /// One file's bytes and, for bucket objects, their user metadata.
    async fn read(&self, key: &str) -> Result<(Vec<u8>, Map<String, Value>), String> {
        if let Some(bucket) = &self.bucket {
            let object = bucket.read(key).await.map_err(|e| e.to_string())?;
            let metadata = object
                .metadata
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            return Ok((object.bytes, metadata));
        }
        let bytes = tokio::fs::read(self.folder.join(key))
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        Ok((bytes, Map::new()))
    }
}

/// Where an instance with built-in storage keeps its items.
fn builtin_folder(state: &AppState, account: &str, id: &str) -> PathBuf {
    state
        .app
        .config()
        .data_dir
        .join("ai-search")
        .join(&hex::encode(Sha256::digest(account.as_bytes()))[..16])
        .join(id)
}

fn settings_of(s: &Map<String, Value>, builtin_folder: PathBuf) -> Result<Settings, Failure> {
    let source = s.get("source").filter(|v| !v.is_null());
    let blank = source.is_none_or(|v| v.as_str().is_some_and(|p| p.trim().is_empty()));
    let mut bucket = None;
    let (folder, builtin) = match (s.get("type").and_then(Value::as_str), source) {
        (Some("local"), Some(Value::String(path))) if !path.is_empty() => {
            (PathBuf::from(path), false)
        }
        (Some("r2"), Some(Value::String(name))) if valid_bucket(name) => {
            bucket = Some(name.clone());
            (PathBuf::new(), false)
        }
        (Some("r2"), other) => {
            return Err(bad(format!(
                "`source` must be a bucket name (3 to 63 of a-z, 0-9, `-`), got {}",
                other.map_or("nothing".into(), Value::to_string)
            )));
        }
        (Some("local"), _) => return Err(bad("`source` must be the path of a folder")),
        (None, _) if blank => (builtin_folder, true),
        (other, _) => {
            return Err(bad(format!(
                "`type` must be \"local\" (a folder on this machine), \"r2\" (a bucket of the server's S3-compatible store), or omitted with no `source` for built-in storage (the items API); {} sources are not built yet",
                other.unwrap_or("inferred")
            )));
        }
    };
    let params = s.get("source_params");
    let selection = Selection::new(
        params
            .and_then(|p| p.get("prefix"))
            .and_then(Value::as_str)
            .unwrap_or(""),
        &strings(params, "include_items")?,
        &strings(params, "exclude_items")?,
    )
    .map_err(|e| bad(e.to_string()))?;
    let chunking = ChunkOptions::new(
        number(s, "chunk_size", 256.0, 0.0, 1e9)? as usize,
        number(s, "chunk_overlap", 10.0, 0.0, 1e9)? as usize,
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(Settings {
        folder,
        builtin,
        bucket,
        selection,
        embedding_model: s
            .get("embedding_model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_EMBEDDING_MODEL)
            .to_string(),
        chunking,
    })
}

/// How often an instance syncs by itself, in seconds, as Cloudflare allows.
const SYNC_INTERVALS: [u64; 8] = [900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
const DEFAULT_SYNC_INTERVAL: u64 = 21600;

/// Checks and stores the settings any update may change: result limits,
/// the sync interval and pausing.
fn settle_editable(settings: &mut Map<String, Value>) -> Result<(), Failure> {
    for (key, default, lo, hi) in [
        ("max_num_results", 10.0, 1.0, 50.0),
        ("score_threshold", 0.4, 0.0, 1.0),
    ] {
        let v = number(settings, key, default, lo, hi)?;
        settings.insert(key.into(), json!(v));
    }
    let interval = match settings.get("sync_interval") {
        None | Some(Value::Null) => DEFAULT_SYNC_INTERVAL,
        Some(v) => v
            .as_u64()
            .filter(|n| SYNC_INTERVALS.contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "`sync_interval` must be one of {SYNC_INTERVALS:?} seconds, got {v}"
                ))
            })?,
    };
    settings.insert("sync_interval".into(), json!(interval));
    match settings.get("paused") {
        None | Some(Value::Null) => {
            settings.insert("paused".into(), json!(false));
        }
        Some(Value::Bool(_)) => {}
        Some(_) => return Err(bad("`paused` must be a boolean")),
    }
    for key in ["cache", "reranking", "rewrite_query"] {
        if !matches!(settings.get(key), None | Some(Value::Null | Value::Bool(_))) {
            return Err(bad(format!("`{key}` must be a boolean")));
        }
    }
    Ok(())
}

/// Settles `index_method` (and the older `hybrid_search_enabled`), the
/// keyword tokenizer and the fusion method, so the stored settings say
/// what the instance does and a bad value is refused at creation.
fn index_method(settings: &mut Map<String, Value>) -> Result<IndexMethod, Failure> {
    match settings.get("index_method") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for key in ["vector", "keyword"] {
                if !matches!(m.get(key), Some(Value::Bool(_)) | None) {
                    return Err(bad(format!("`index_method.{key}` must be a boolean")));
                }
            }
        }
        Some(_) => return Err(bad("`index_method` must be an object `{vector, keyword}`")),
    }
    let mut method = IndexMethod::of(settings);
    match settings.get("hybrid_search_enabled") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(hybrid)) => method.keyword |= *hybrid,
        Some(_) => return Err(bad("`hybrid_search_enabled` must be a boolean")),
    }
    if !method.vector && !method.keyword {
        return Err(bad(
            "`index_method`: at least one of `vector` and `keyword` must be true",
        ));
    }
    settings.insert(
        "index_method".into(),
        json!({"vector": method.vector, "keyword": method.keyword}),
    );
    if let Some(t) = settings
        .get("indexing_options")
        .and_then(|o| o.get("keyword_tokenizer"))
        .filter(|t| !t.is_null())
        && t.as_str()
            .is_none_or(|t| hearth_search::retrieve::KeywordTokenizer::parse(t).is_none())
    {
        return Err(bad(format!(
            "`indexing_options.keyword_tokenizer` must be porter or trigram, got {t}"
        )));
    }
    Retrieval::from_request(settings, &Map::new(), "ai_search_options.retrieval.")?;
    Ok(method)
}

/// Custom metadata fields an instance filters on (`custom_metadata`:
/// `[{field_name, data_type}]`); each gets a metadata index beside the
/// built-in folder, filename and timestamp.
fn custom_metadata(settings: &Map<String, Value>) -> Result<Vec<(String, MetadataType)>, Failure> {
    let list = match settings.get("custom_metadata") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                "`custom_metadata` must be an array of {field_name, data_type}",
            ));
        }
    };
    // Vectorize allows ten metadata indexes; three are built in.
    if list.len() > 7 {
        return Err(bad(format!(
            "`custom_metadata` holds at most 7 fields, got {}",
            list.len()
        )));
    }
    let mut out: Vec<(String, MetadataType)> = Vec::new();
    for (i, field) in list.iter().enumerate() {
        let name = field
            .get("field_name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .ok_or_else(|| {
                bad(format!(
                    "`custom_metadata[{i}].field_name` must be a name of 1 to 64 characters"
                ))
            })?;
        if ["folder", "filename", "timestamp"].contains(&name) || out.iter().any(|(n, _)| n == name)
        {
            return Err(bad(format!(
                "`custom_metadata[{i}].field_name`: `{name}` is taken"
            )));
        }
        let kind = match field.get("data_type").and_then(Value::as_str) {
            Some("text") => MetadataType::String,
            Some("number" | "datetime") => MetadataType::Number,
            Some("boolean") => MetadataType::Boolean,
            _ => {
                return Err(bad(format!(
                    "`custom_metadata[{i}].data_type` must be text, number, boolean or datetime"
                )));
            }
        };
        out.push((name.to_string(), kind));
    }
    Ok(out)
}

/// The instance's Vectorize index, with the metadata indexes its filters use.
fn create_vector_index(
    state: &AppState,
    account: &str,
    id: &str,
    dimensions: usize,
    custom: &[(String, MetadataType)],
) -> Result<(), Failure> {
    let vectorize = state.app.vectorize().map_err(ApiError::from)?;
    let name = index_name(id);
    vectorize
        .create(
            account,
            hearth_types::vectorize::CreateIndexRequest {
                name: name.clone(),
                description: Some(format!("AI Search instance {id}")),
                config: IndexConfigRequest {
                    dimensions: Some(dimensions as i64),
                    metric: Some("cosine".into()),
                    preset: None,
                },
            },
        )
        .map_err(ApiError::from)?;
    let index = vectorize.get(account, &name).map_err(ApiError::from)?;
    let builtin = [
        ("folder".to_string(), MetadataType::String),
        ("filename".to_string(), MetadataType::String),
        ("timestamp".to_string(), MetadataType::Number),
    ];
    for (property, kind) in builtin.iter().chain(custom) {
        index
            .create_metadata_index(property.clone(), *kind)
            .map_err(ApiError::from)?;
    }
    Ok(())
}

fn find(state: &AppState, account: &str, id: &str) -> Result<SearchInstanceRow, Failure> {
    state
        .app
        .meter()
        .store()
        .search_instance_get(account, id)
        .map_err(internal)?
        .ok_or_else(|| not_found(id))
}

pub async fn create(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id").to_string();
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let Value::Object(mut settings) = body::parse_json::<Value>(&bytes)? else {
        return Err(bad("the body must be a JSON object"));
    };
    let id = match settings.remove("id") {
        Some(Value::String(id)) if valid_id(&id) => id,
        Some(other) => {
            return Err(bad(format!(
                "`id` must be 1 to 32 of a-z, 0-9, `_`, with single `-` between, got {other}"
            )));
        }
        None => return Err(bad("`id` is required")),
    };
    let checked = settings_of(&settings, builtin_folder(&state, &account, &id))?;
    if checked.bucket.is_some() {
        // The bucket must be there and readable now, not at the first sync.
        Source::open(&state, &checked)?.list().await?;
    } else if checked.builtin {
        std::fs::create_dir_all(&checked.folder).map_err(internal)?;
    } else if !checked.folder.is_dir() {
        return Err(bad(format!(
            "`source`: {} is not a folder",
            checked.folder.display()
        )));
    }
    // The data dir holds every account's data (and the store): no account
    // may index it.
    let local = !checked.builtin && checked.bucket.is_none();
    let data_dir = std::fs::canonicalize(&state.app.config().data_dir).map_err(internal)?;
    let folder = if local {
        std::fs::canonicalize(&checked.folder).map_err(internal)?
    } else {
        PathBuf::new()
    };
    let roots = &state.app.config().search.roots;
    if local
        && !roots.is_empty()
        && !roots
            .iter()
            .any(|r| std::fs::canonicalize(r).is_ok_and(|root| folder.starts_with(root)))
    {
        return Err(bad(format!(
            "`source`: {} is outside the folders this server indexes (`[search] roots`)",
            checked.folder.display()
        )));
    }
    if local && (folder.starts_with(&data_dir) || data_dir.starts_with(&folder)) {
        return Err(bad(format!(
            "`source`: {} holds Hearth's own data dir; index a folder outside it",
            checked.folder.display()
        )));
    }
    let method = index_method(&mut settings)?;
    let custom = custom_metadata(&settings)?;
    settings.insert("embedding_model".into(), json!(checked.embedding_model));
    settings.insert("chunk_size".into(), json!(checked.chunking.size));
    settings.insert(
        "chunk_overlap".into(),
        json!(checked.chunking.overlap_percent),
    );
    settle_editable(&mut settings)?;
    let (embedder, _) = state.app.embedder(&checked.embedding_model).await?;
    if checked.chunking.size > embedder.info().max_tokens {
        return Err(bad(format!(
            "`chunk_size` is {} but {} reads at most {} tokens",
            checked.chunking.size,
            checked.embedding_model,
            embedder.info().max_tokens
        )));
    }
    let store = state.app.meter().store();
    if store
        .search_instance_get(&account, &id)
        .map_err(internal)?
        .is_some()
    {
        return Err(bad(format!("an AI Search instance `{id}` already exists")));
    }
    if method.keyword {
        store
            .search_keyword_create(&account, &id, tokenizer_of(&settings).fts5())
            .map_err(internal)?;
    }
    if method.vector {
        create_vector_index(&state, &account, &id, embedder.info().dimensions, &custom)?;
    }
    let now = state.app.meter().now_ms();
    let row = SearchInstanceRow {
        id: id.clone(),
        settings: Value::Object(settings),
        created_ms: now,
        modified_ms: now,
    };
    if !state
        .app
        .meter()
        .store()
        .search_instance_insert(&account, &row)
        .map_err(internal)?
    {
        return Err(bad(format!("an AI Search instance `{id}` already exists")));
    }
    start_job(&state, &account, &id, "user")?;
    Ok(Json(Envelope::ok(object(&row))).into_response())
}

/// Lists page (`page`, `per_page`) with `result_info`, which the SDK's
/// paginator reads to know where to stop.
pub async fn list(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (page, per_page) = page_params(&q, 100)?;
    let rows = state
        .app
        .meter()
        .store()
        .search_instance_list(param(&p, "account_id"))
        .map_err(internal)?;
    Ok(one_page(rows.iter().map(object).collect(), page, per_page))
}

pub async fn get(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let row = find(&state, param(&p, "account_id"), param(&p, "instance_id"))?;
    Ok(Json(Envelope::ok(object(&row))).into_response())
}

/// Settings fixed when an instance is created.
const FIXED: [&str; 5] = [
    "type",
    "source",
    "embedding_model",
    "custom_metadata",
    "source_params",
];

/// `PUT .../instances/{id}`: changes the editable settings. Turning the
/// keyword index on fills it from the stored chunks; turning vectors on,
/// or changing the chunking, re-indexes every file.
pub async fn update(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    let row = find(&state, account, id)?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let Value::Object(changes) = body::parse_json::<Value>(&bytes)? else {
        return Err(bad("the body must be a JSON object"));
    };
    let old = row.settings.as_object().cloned().unwrap_or_default();
    let mut settings = old.clone();
    for (key, value) in changes {
        if key == "id" {
            if value != json!(id) {
                return Err(bad("`id` cannot be changed"));
            }
            continue;
        }
        if FIXED.contains(&key.as_str())
            && old.get(&key).unwrap_or(&Value::Null) != &value
            && !value.is_null()
        {
            return Err(bad(format!(
                "`{key}` is fixed when the instance is created"
            )));
        }
        settings.insert(key, value);
    }
    let checked = settings_of(&settings, builtin_folder(&state, account, id))?;
    let method = index_method(&mut settings)?;
    settle_editable(&mut settings)?;
    settings.insert("chunk_size".into(), json!(checked.chunking.size));
    settings.insert(
        "chunk_overlap".into(),
        json!(checked.chunking.overlap_percent),
    );
    let (embedder, _) = state.app.embedder(&checked.embedding_model).await?;
    if checked.chunking.size > embedder.info().max_tokens {
        return Err(bad(format!(
            "`chunk_size` is {} but {} reads at most {} tokens",
            checked.chunking.size,
            checked.embedding_model,
            embedder.info().max_tokens
        )));
    }
    let was = IndexMethod::of(&old);
    let store = state.app.meter().store();
    let tokenizer_changed = tokenizer_of(&old) != tokenizer_of(&settings);
    if method.keyword && (!was.keyword || tokenizer_changed) {
        store
            .search_keyword_create(account, id, tokenizer_of(&settings).fts5())
            .map_err(internal)?;
    } else if !method.keyword && was.keyword {
        store.search_keyword_drop(account, id).map_err(internal)?;
    }
    let mut reindex = old.get("chunk_size") != settings.get("chunk_size")
        || old.get("chunk_overlap") != settings.get("chunk_overlap");
    if method.vector && !was.vector {
        let custom = custom_metadata(&settings)?;
        create_vector_index(&state, account, id, embedder.info().dimensions, &custom)?;
        reindex = true;
    } else if !method.vector && was.vector {
        let vectorize = state.app.vectorize().map_err(ApiError::from)?;
        match vectorize.delete(account, &index_name(id)) {
            Ok(()) | Err(hearth_vector::VectorError::NotFound(_)) => {}
            Err(e) => return Err(Failure(ApiError::from(e))),
        }
    }
    let updated = SearchInstanceRow {
        id: id.to_string(),
        settings: Value::Object(settings),
        created_ms: row.created_ms,
        modified_ms: state.app.meter().now_ms(),
    };
    store
        .search_instance_update(account, &updated)
        .map_err(internal)?;
    state
        .search_cache
        .invalidate(&answer::cache_scope(account, id));
    if reindex {
        store
            .search_files_mark_all_outdated(account, id)
            .map_err(internal)?;
        start_job(&state, account, id, "user")?;
    }
    Ok(Json(Envelope::ok(object(&updated))).into_response())
}

/// How often the scheduler looks for instances due a sync.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the task that syncs each instance every `sync_interval` seconds
/// after its last job began, unless it is `paused` or already syncing.
pub fn spawn_scheduler(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCHEDULE_TICK);
        loop {
            tick.tick().await;
            if let Err(e) = schedule_due(&state) {
                tracing::error!(error = %e.0.message, "AI Search scheduler");
            }
        }
    });
}

fn schedule_due(state: &AppState) -> Result<(), Failure> {
    let store = state.app.meter().store();
    let now = state.app.meter().now_ms();
    for hearth_store::ScheduledInstance {
        account,
        id,
        settings,
        last_job_started_ms: last,
    } in store.search_instances_due().map_err(internal)?
    {
        if settings.get("paused").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let interval = settings
            .get("sync_interval")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_SYNC_INTERVAL) as i64
            * 1000;
        let due = last.is_none_or(|started| now - started >= interval);
        let running = store
            .search_jobs(&account, &id)
            .map_err(internal)?
            .iter()
            .any(|j| j.status == "running" || j.status == "queued");
        if due && !running {
            tracing::info!(%account, instance = %id, "scheduled AI Search sync");
            start_job(state, &account, &id, "schedule")?;
        }
    }
    Ok(())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    let row = find(&state, account, id)?;
    let vectorize = state.app.vectorize().map_err(ApiError::from)?;
    match vectorize.delete(account, &index_name(id)) {
        Ok(()) | Err(hearth_vector::VectorError::NotFound(_)) => {}
        Err(e) => return Err(Failure(ApiError::from(e))),
    }
    state
        .app
        .meter()
        .store()
        .search_instance_delete(account, id)
        .map_err(internal)?;
    state
        .search_cache
        .invalidate(&answer::cache_scope(account, id));
    Ok(Json(Envelope::ok(object(&row))).into_response())
}

fn job_object(job: &SearchJobRow) -> Value {
    json!({
        "id": job.id,
        "source": job.source,
        "status": job.status,
        "started_at": hearth_vector::iso8601(job.started_ms),
        "ended_at": job.ended_ms.map(hearth_vector::iso8601),
        "end_reason": job.end_reason,
    })
}

/// Asks for a sync: it starts now, or, when one is running (it may have
/// listed the files before the change that asks), it is queued to run
/// after it. Both are stored before the caller answers, so a crash loses
/// neither.
fn start_job(
    state: &AppState,
    account: &str,
    instance: &str,
    source: &str,
) -> Result<SearchJobRow, Failure> {
    let job = SearchJobRow {
        id: uuid::Uuid::new_v4().to_string(),
        source: source.to_string(),
        status: "running".into(),
        started_ms: state.app.meter().now_ms(),
        ended_ms: None,
        end_reason: None,
    };
    let (job, started) = state
        .app
        .meter()
        .store()
        .search_job_request(account, instance, &job)
        .map_err(internal)?;
    if started {
        spawn_job(
            state.clone(),
            account.to_string(),
            instance.to_string(),
            job.id.clone(),
        );
    }
    Ok(job)
}

/// Runs the instance's queued job, if one waits and none runs.
fn start_queued(state: &AppState, account: &str, instance: &str) {
    let now = state.app.meter().now_ms();
    match state
        .app
        .meter()
        .store()
        .search_job_promote(account, instance, now)
    {
        Ok(Some(job)) => spawn_job(
            state.clone(),
            account.to_string(),
            instance.to_string(),
            job.id,
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "AI Search queued sync not started"),
    }
}

fn spawn_job(state: AppState, account: String, instance: String, job: String) {
    tokio::spawn(async move {
        let outcome = sync(&state, &account, &instance, &job).await;
        // Answers cached before may rest on chunks this job changed.
        state
            .search_cache
            .invalidate(&answer::cache_scope(&account, &instance));
        let store = state.app.meter().store();
        let now = state.app.meter().now_ms();
        let ended = match &outcome {
            Ok(Outcome::Completed) => Some(("completed", "completed".to_string())),
            // Cancelling already ended the job.
            Ok(Outcome::Cancelled) => None,
            Err(e) => Some(("error", e.clone())),
        };
        if let Err(e) = &outcome {
            let _ = store.search_job_log(&account, &instance, &job, now, e, "error");
        }
        if let Some((status, reason)) = ended
            && let Err(e) = store.search_job_end(&account, &instance, &job, status, now, &reason)
        {
            tracing::error!(error = %e, "AI Search job state not stored");
        }
        start_queued(&state, &account, &instance);
    });
}

/// Jobs a crash or a stop interrupted run again from the start; chunk ids
/// are deterministic, so what they had written is overwritten, not doubled.
pub fn resume_jobs(state: &AppState) {
    let store = state.app.meter().store();
    match store.search_jobs_running() {
        Ok(jobs) => {
            for (account, instance, job) in jobs {
                tracing::info!(%account, %instance, job = %job.id, "resuming AI Search sync");
                spawn_job(state.clone(), account, instance, job.id);
            }
        }
        Err(e) => tracing::error!(error = %e, "AI Search jobs not resumed"),
    }
    // Queued behind a job that ended just before the crash.
    match store.search_jobs_queued() {
        Ok(instances) => {
            for (account, instance) in instances {
                start_queued(state, &account, &instance);
            }
        }
        Err(e) => tracing::error!(error = %e, "AI Search queued jobs not started"),
    }
}

/// One sync: only new and changed files are converted, chunked, embedded
/// and upserted; deleted files lose their chunks.
async fn sync(
    state: &AppState,
    account: &str,
    instance: &str,
    job: &str,
) -> Result<Outcome, String> {
    let store = state.app.meter().store();
    let log = |message: &str, kind: &str| {
        let _ = store.search_job_log(
            account,
            instance,
            job,
            state.app.meter().now_ms(),
            message,
            kind,
        );
    };
    let row = store
        .search_instance_get(account, instance)
        .map_err(|e| e.to_string())?
        .ok_or("the instance was deleted")?;
    let settings = settings_of(
        row.settings
            .as_object()
            .ok_or("settings are not an object")?,
        builtin_folder(state, account, instance),
    )
    .map_err(|f| f.0.message)?;
    let item_metadata = store
        .search_item_metadata(account, instance)
        .map_err(|e| e.to_string())?;
    let source = Source::open(state, &settings).map_err(|f| f.0.message)?;
    let files = source.list().await.map_err(|f| f.0.message)?;
    let indexed = store
        .search_indexed(account, instance)
        .map_err(|e| e.to_string())?;
    let work = plan(&indexed, &files);
    log(
        &format!(
            "{} files to index, {} to delete, {} unchanged, {} too large",
            work.index.len(),
            work.delete.len(),
            work.unchanged.len(),
            work.too_large.len()
        ),
        "info",
    );
    let (embedder, _) = state
        .app
        .embedder(&settings.embedding_model)
        .await
        .map_err(|e| ApiError::from(e).message)?;
    let method = IndexMethod::of(
        row.settings
            .as_object()
            .ok_or("settings are not an object")?,
    );
    let index = if method.vector {
        Some(
            state
                .app
                .vectorize()
                .and_then(|v| v.get(account, &index_name(instance)))
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let failed = |file: &hearth_search::source::SourceFile, error: String| SearchFileRow {
        key: file.key.clone(),
        hash: file.hash.clone(),
        size: file.size,
        modified_ms: file.modified_ms,
        chunks: 0,
        status: "error".into(),
        error: Some(error),
    };
    for file in &work.too_large {
        let message = format!(
            "{}: over the {} byte limit",
            file.key,
            hearth_search::source::MAX_FILE_BYTES
        );
        log(&message, "error");
        store
            .search_file_indexed(account, instance, &failed(file, message), &[])
            .map_err(|e| e.to_string())?;
    }
    for file in &work.index {
        if cancelled(store, account, instance, job)? {
            return Ok(Outcome::Cancelled);
        }
        let key = file.key.clone();
        let read = source.read(&key).await;
        let object_metadata = read.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
        let converted = match read {
            Ok((bytes, _)) => tokio::task::spawn_blocking(move || {
                hearth_search::markdown::convert(&key, &bytes).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?,
            Err(e) => Err(e),
        };
        // A bucket object's user metadata (`context` and the like) is its
        // item metadata.
        if !object_metadata.is_empty() {
            store
                .search_item_metadata_put(
                    account,
                    instance,
                    &file.key,
                    &Value::Object(object_metadata.clone()),
                    state.app.meter().now_ms(),
                )
                .map_err(|e| e.to_string())?;
        }
        let markdown = match converted {
            Ok(c) => c.markdown,
            Err(e) => {
                let message = format!("{}: {e}", file.key);
                log(&message, "error");
                store
                    .search_file_indexed(account, instance, &failed(file, message), &[])
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        let counter = Arc::clone(&embedder);
        let pieces = chunk(&markdown, settings.chunking, &move |t: &str| {
            counter.count_tokens(t)
        });
        let texts: Vec<String> = pieces
            .iter()
            .map(|c| markdown[c.range.clone()].to_string())
            .collect();
        let mut records = Vec::with_capacity(texts.len());
        let batches = if index.is_some() { texts.len() } else { 0 };
        for (batch_no, batch) in texts[..batches].chunks(EMBED_BATCH).enumerate() {
            let out = embedder
                .embed(batch.to_vec(), embedder.info().native_pooling)
                .await
                .map_err(|e| e.to_string())?;
            for (i, values) in out.vectors.into_iter().enumerate() {
                let n = batch_no * EMBED_BATCH + i;
                let mut metadata = Map::new();
                metadata.insert("filename".into(), json!(file.key));
                metadata.insert("folder".into(), json!(folder_of(&file.key)));
                metadata.insert("timestamp".into(), json!(file.modified_ms / 1000));
                // An item's custom metadata travels with its chunks (the
                // built-in fields win a clash).
                let stored = match item_metadata.get(&file.key) {
                    Some((Value::Object(custom), _)) => Some(custom),
                    _ => None,
                };
                for (k, v) in object_metadata.iter().chain(stored.into_iter().flatten()) {
                    metadata.entry(k.clone()).or_insert_with(|| v.clone());
                }
                records.push(Record {
                    id: chunk_id(&file.key, n),
                    values,
                    namespace: None,
                    metadata: Some(metadata),
                });
            }
        }
        if let Some(index) = &index {
            let stale: Vec<String> = store
                .search_chunk_ids(account, instance, &file.key)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|id| !records.iter().any(|r| &r.id == id))
                .collect();
            if !records.is_empty() {
                index.upsert(records).map_err(|e| e.to_string())?;
            }
            if !stale.is_empty() {
                index.delete_by_ids(stale).map_err(|e| e.to_string())?;
            }
        }
        let chunk_rows: Vec<SearchChunkRow> = texts
            .into_iter()
            .enumerate()
            .map(|(n, text)| SearchChunkRow {
                id: chunk_id(&file.key, n),
                key: file.key.clone(),
                index: n as u64,
                text,
            })
            .collect();
        let row = SearchFileRow {
            key: file.key.clone(),
            hash: file.hash.clone(),
            size: file.size,
            modified_ms: file.modified_ms,
            chunks: chunk_rows.len() as u64,
            status: "completed".into(),
            error: None,
        };
        store
            .search_file_indexed(account, instance, &row, &chunk_rows)
            .map_err(|e| e.to_string())?;
        log(&format!("{}: {} chunks", file.key, row.chunks), "info");
    }
    for key in &work.delete {
        let ids = store
            .search_chunk_ids(account, instance, key)
            .map_err(|e| e.to_string())?;
        if let Some(index) = &index
            && !ids.is_empty()
        {
            index.delete_by_ids(ids).map_err(|e| e.to_string())?;
        }
        store
            .search_file_delete(account, instance, key)
            .map_err(|e| e.to_string())?;
        log(&format!("{key}: deleted"), "info");
    }
    // The job is complete when its vectors can be found.
    let Some(index) = index else {
        return Ok(Outcome::Completed);
    };
    for _ in 0..6000 {
        if index.is_caught_up() {
            return Ok(Outcome::Completed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err("the index did not apply the job's vectors within a minute".into())
}

/// How a sync that did not fail ended.
enum Outcome {
    Completed,
    Cancelled,
}

/// Whether the job was cancelled (checked between files: a file is
/// indexed whole or not at all).
fn cancelled(
    store: &hearth_store::Store,
    account: &str,
    instance: &str,
    job: &str,
) -> Result<bool, String> {
    Ok(store
        .search_jobs(account, instance)
        .map_err(|e| e.to_string())?
        .iter()
        .any(|j| j.id == job && j.status == "cancelled"))
}

pub async fn create_job(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    find(&state, account, id)?;
    let job = start_job(&state, account, id, "user")?;
    Ok(Json(Envelope::ok(job_object(&job))).into_response())
}

pub async fn list_jobs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (page, per_page) = page_params(&q, 100)?;
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    find(&state, account, id)?;
    let jobs = state
        .app
        .meter()
        .store()
        .search_jobs(account, id)
        .map_err(internal)?;
    Ok(one_page(
        jobs.iter().map(job_object).collect(),
        page,
        per_page,
    ))
}

fn find_job(state: &AppState, p: &HashMap<String, String>) -> Result<SearchJobRow, Failure> {
    let (account, id, job) = (
        param(p, "account_id"),
        param(p, "instance_id"),
        param(p, "job_id"),
    );
    find(state, account, id)?;
    state
        .app
        .meter()
        .store()
        .search_jobs(account, id)
        .map_err(internal)?
        .into_iter()
        .find(|j| j.id == job)
        .ok_or_else(|| {
            Failure(ApiError::detail(
                ErrorCode::NoRoute,
                format!("no job `{job}` in instance `{id}`"),
            ))
        })
}

pub async fn get_job(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let job = find_job(&state, &p)?;
    Ok(Json(Envelope::ok(job_object(&job))).into_response())
}

pub async fn job_logs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let job = find_job(&state, &p)?;
    let logs = state
        .app
        .meter()
        .store()
        .search_job_logs(
            param(&p, "account_id"),
            param(&p, "instance_id"),
            Some(&job.id),
        )
        .map_err(internal)?;
    let out: Vec<Value> = logs
        .into_iter()
        .enumerate()
        .map(|(i, (at, message, kind))| {
            json!({"id": i, "created_at": hearth_vector::iso8601(at), "message": message, "message_type": kind})
        })
        .collect();
    Ok(Json(Envelope::ok(out)).into_response())
}

pub async fn stats(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    find(&state, account, id)?;
    let store = state.app.meter().store();
    let files = store.search_files(account, id).map_err(internal)?;
    let running = store
        .search_jobs(account, id)
        .map_err(internal)?
        .iter()
        .any(|j| j.status == "running");
    let count = |status: &str| files.iter().filter(|f| f.status == status).count();
    Ok(Json(Envelope::ok(json!({
        "queued": 0,
        "running": usize::from(running),
        "completed": count("completed"),
        "error": count("error"),
        "skipped": 0,
        "outdated": count("outdated"),
        "file_embed_errors": files.iter().filter(|f| f.status == "error").map(|f| json!({"key": f.key, "error": f.error})).collect::<Vec<_>>(),
    })))
    .into_response())
}

pub async fn search(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    let row = find(&state, account, id)?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req: Value = body::parse_json(&bytes)?;
    let query = query_of(&req)?;
    let settings = row.settings.as_object().cloned().unwrap_or_default();
    let retrieval = retrieval_of(&settings, &req)?;
    let query = match answer::Rewrite::from_request(
        &settings,
        req.get("ai_search_options")
            .and_then(|o| o.get("query_rewrite")),
        None,
    )? {
        Some(how) => answer::rewrite(&state, account, &settings, &query, &how).await?,
        None => query,
    };
    let found = retrieve(&state, account, id, &settings, &query, &retrieval).await?;
    Ok(Json(Envelope::ok(json!({
        "search_query": query,
        "query_kind": "text",
        "chunks": found.iter().map(retrieval::Found::v2).collect::<Vec<_>>(),
    })))
    .into_response())
}

/// The retrieval a v2 request asks for: `ai_search_options.retrieval` and
/// `.reranking` over the instance's settings.
fn retrieval_of(settings: &Map<String, Value>, req: &Value) -> Result<Retrieval, Failure> {
    let options = match req.get("ai_search_options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad("`ai_search_options` must be an object")),
    };
    let retrieval = match options.get("retrieval") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(r)) => r.clone(),
        Some(_) => return Err(bad("`ai_search_options.retrieval` must be an object")),
    };
    let mut out = Retrieval::from_request(settings, &retrieval, "ai_search_options.retrieval.")?;
    out.rerank =
        retrieval::Rerank::from_request(settings, options.get("reranking"), "ai_search_options.")?;
    Ok(out)
}

/// `PATCH .../jobs/{job_id}` with `{"action": "cancel"}`: the job stops
/// before its next file; what it indexed stays.
pub async fn update_job(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let job = find_job(&state, &p)?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req: Value = body::parse_json(&bytes)?;
    match req.get("action") {
        Some(Value::String(a)) if a == "cancel" => {}
        other => {
            return Err(bad(format!(
                "`action` must be \"cancel\", got {}",
                other.map_or("nothing".to_string(), Value::to_string)
            )));
        }
    }
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    let store = state.app.meter().store();
    if job.status == "running" || job.status == "queued" {
        store
            .search_job_end(
                account,
                id,
                &job.id,
                "cancelled",
                state.app.meter().now_ms(),
                "cancelled",
            )
            .map_err(internal)?;
        store
            .search_job_log(
                account,
                id,
                &job.id,
                state.app.meter().now_ms(),
                "cancelled by the user",
                "info",
            )
            .map_err(internal)?;
    }
    let job = find_job(&state, &p)?;
    Ok(Json(Envelope::ok(job_object(&job))).into_response())
}
