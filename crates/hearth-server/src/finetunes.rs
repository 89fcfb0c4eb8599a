//! Fine-tunes (LoRA): `POST/GET .../ai/finetunes`, `GET .../ai/finetunes/public`
//! and `POST .../ai/finetunes/{id}/finetune-assets` (multipart `file_name` +
//! `file`, once per file, never replaced), with Cloudflare's limits; once both
//! files are in, the PEFT adapter is checked against its base model and
//! converted to llama.cpp's adapter GGUF. `lora: "<name or id>"` on a run then
//! applies it to that request only.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hearth_engine::textgen::lora;
use hearth_store::FinetuneRow;
use hearth_types::{ApiError, Envelope, ErrorCode};
use serde_json::{Value, json};

use crate::error::Failure;
use crate::gateway::param;
use crate::{AppState, body};

/// Cloudflare's limit on fine-tunes per account.
pub const MAX_FINETUNES: usize = 30;
const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const CONVERTED_FILE: &str = "adapter.gguf";
/// `adapter_config.json` is a few hundred bytes; this is generous.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest asset upload body: the weights plus the form around them.
pub const MAX_UPLOAD_BYTES: usize = lora::MAX_ADAPTER_BYTES as usize + (1 << 20);

fn object(row: &FinetuneRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "model": row.model,
        "description": row.description,
        "public": row.public,
        "created_at": hearth_vector::iso8601(row.created_ms),
        "modified_at": hearth_vector::iso8601(row.modified_ms),
    })
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::internal("fine-tunes", e)
}

fn dir_of(state: &AppState, account: &str, id: &str) -> PathBuf {
    state
        .app
        .config()
        .data_dir
        .join("finetunes")
        .join(account)
        .join(id)
}

/// The GGUF weights of a text-generation model, or 5005 when it takes no
/// adapters here.
fn base_weights(state: &AppState, model: &str) -> Result<PathBuf, Failure> {
    let resolved = state.app.resolve(model)?;
    let gguf = resolved
        .weights_file
        .extension()
        .is_some_and(|e| e == "gguf");
    if resolved.task != hearth_runtime::app::TEXT_GENERATION || !gguf {
        return Err(Failure(ApiError::detail(
            ErrorCode::LoraUnsupported,
            format!("{model} is not a GGUF text-generation model"),
        )));
    }
    Ok(resolved.weights_file)
}

fn find(state: &AppState, account: &str, key: &str) -> Result<FinetuneRow, Failure> {
    state
        .app
        .meter()
        .store()
        .finetune_get(account, key)
        .map_err(internal)?
        .ok_or_else(|| {
            Failure(ApiError::detail(
                ErrorCode::FinetuneNotFound,
                format!("no fine-tune `{key}` in this account"),
            ))
        })
}

pub async fn create(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id");
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let body: Value = body::parse_json(&bytes)?;
    let text = |key: &str, required: bool| -> Result<Option<String>, Failure> {
        match body.get(key) {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            _ => Err(Failure(ApiError::invalid_input(format!(
                "`{key}` must be a non-empty string"
            )))),
        }
    };
    let model = text("model", true)?.unwrap_or_default();
    let name = text("name", true)?.unwrap_or_default();
    let description = text("description", false)?;
    let public = match body.get("public") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Failure(ApiError::invalid_input(
                "`public` must be a boolean",
            )));
        }
    };
    if name.len() > 128 {
        return Err(Failure(ApiError::invalid_input(
            "`name` is at most 128 characters",
        )));
    }
    base_weights(&state, &model)?;
    let store = state.app.meter().store();
    if store.finetune_list(account).map_err(internal)?.len() >= MAX_FINETUNES {
        return Err(Failure(ApiError::invalid_input(format!(
            "an account holds at most {MAX_FINETUNES} fine-tunes"
        ))));
    }
    let now = state.app.meter().now_ms();
    let row = FinetuneRow {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        model,
        description,
        public,
        created_ms: now,
        modified_ms: now,
    };
    if !store.finetune_insert(account, &row).map_err(internal)? {
        return Err(Failure(ApiError::invalid_input(format!(
            "a fine-tune named `{}` already exists",
            row.name
        ))));
    }
    Ok(Json(Envelope::ok(object(&row))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let rows = state
        .app
        .meter()
        .store()
        .finetune_list(param(&p, "account_id"))
        .map_err(internal)?;
    Ok(Json(Envelope::ok(rows.iter().map(object).collect::<Vec<_>>())).into_response())
}

pub async fn list_public(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let number = |key: &str, default: usize| -> Result<usize, Failure> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| *n >= 0.0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    Failure(ApiError::invalid_input(format!(
                        "`{key}` must be a non-negative number, got `{v}`"
                    )))
                }),
        }
    };
    let (limit, offset) = (number("limit", 100)?, number("offset", 0)?);
    let mut rows = state
        .app
        .meter()
        .store()
        .finetune_list_public()
        .map_err(internal)?;
    match q.get("orderBy").map(String::as_str) {
        None | Some("created_at") => {}
        Some("name") => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        Some("model") => rows.sort_by(|a, b| a.model.cmp(&b.model)),
        Some(other) => {
            return Err(Failure(ApiError::invalid_input(format!(
                "`orderBy` must be created_at, name or model, got `{other}`"
            ))));
        }
    }
    let page: Vec<Value> = rows.iter().skip(offset).take(limit).map(object).collect();
    Ok(Json(Envelope::ok(page)).into_response())
}

/// Streams one multipart field into `to`, refusing it past `limit` bytes.
async fn save_field(
    field: &mut axum::extract::multipart::Field<'_>,
    to: &FsPath,
    limit: u64,
) -> Result<(), Failure> {
    let mut file = std::fs::File::create(to).map_err(internal)?;
    let mut written = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        Failure(ApiError::invalid_input(format!(
            "multipart field `file`: {e}"
        )))
    })? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(Failure(ApiError::detail(
                ErrorCode::RequestTooLarge,
                format!("the file is over the {limit}-byte limit"),
            )));
        }
        file.write_all(&chunk).map_err(internal)?;
    }
    file.sync_all().map_err(internal)?;
    Ok(())
}

pub async fn upload_asset(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id").to_string();
    let row = find(&state, &account, param(&p, "finetune_id"))?;
    let dir = dir_of(&state, &account, &row.id);
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let upload = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
    let outcome = receive(&state, &row, &dir, &upload, request).await;
    let _ = std::fs::remove_file(&upload);
    outcome?;
    Ok(Json(Envelope::ok(json!({"success": true}))).into_response())
}

async fn receive(
    state: &AppState,
    row: &FinetuneRow,
    dir: &FsPath,
    upload: &FsPath,
    request: Request,
) -> Result<(), Failure> {
    let bad = |m: String| Failure(ApiError::invalid_input(m));
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("the body must be a multipart form: {e}")))?;
    let mut file_name: Option<String> = None;
    let mut got_file = false;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("multipart body: {e}")))?
    {
        match field.name() {
            Some("file_name") => {
                file_name = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad(format!("multipart field `file_name`: {e}")))?,
                );
            }
            Some("file") => {
                save_field(&mut field, upload, lora::MAX_ADAPTER_BYTES).await?;
                got_file = true;
            }
            _ => {}
        }
    }
    let file_name = file_name.ok_or_else(|| bad("the form needs a `file_name` field".into()))?;
    if file_name != CONFIG_FILE && file_name != WEIGHTS_FILE {
        return Err(bad(format!(
            "`file_name` must be `{CONFIG_FILE}` or `{WEIGHTS_FILE}`, got `{file_name}`"
        )));
    }
    if !got_file {
        return Err(bad("the form needs a `file` field".into()));
    }
    let target = dir.join(&file_name);
    if file_name == CONFIG_FILE {
        let size = std::fs::metadata(upload).map_err(internal)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "`{CONFIG_FILE}` is over {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(upload).map_err(internal)?;
        lora::read_config(&bytes).map_err(|e| bad(e.to_string()))?;
    }
    // A hard link never replaces: of two uploads of one file, one wins.
    match std::fs::hard_link(upload, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(bad(format!(
                "`{file_name}` was already uploaded; assets cannot be replaced, create a new fine-tune"
            )));
        }
        Err(e) => return Err(internal(e)),
    }
    let config = dir.join(CONFIG_FILE);
    let weights = dir.join(WEIGHTS_FILE);
    if config.exists() && weights.exists() {
        let base = base_weights(state, &row.model)?;
        let out = dir.join(CONVERTED_FILE);
        let converted = tokio::task::spawn_blocking(move || {
            let cfg = std::fs::read(&config)
                .map_err(|e| lora::LoraError::Config(e.to_string()))
                .and_then(|b| lora::read_config(&b))?;
            lora::convert(&cfg, &weights, &base, &out)
        })
        .await
        .map_err(internal)?;
        if let Err(e) = converted {
            // The asset that completed a bad pair is refused, so that the
            // other half is not stuck with it.
            let _ = std::fs::remove_file(&target);
            return Err(bad(e.to_string()));
        }
    }
    Ok(())
}

/// The converted adapter named by a run's `lora`, checked against the model
/// the run asked for.
pub(crate) fn adapter_for(
    state: &AppState,
    account: &str,
    model: &str,
    key: &str,
) -> Result<PathBuf, Failure> {
    let row = find(state, account, key)?;
    let asked = base_weights(state, model)?;
    let made_for = base_weights(state, &row.model)?;
    if asked != made_for {
        return Err(Failure(ApiError::invalid_input(format!(
            "fine-tune `{key}` was made for {}, not {model}",
            row.model
        ))));
    }
    let path = dir_of(state, account, &row.id).join(CONVERTED_FILE);
    if !path.exists() {
        return Err(Failure(ApiError::detail(
            ErrorCode::FinetuneInvalid,
            format!("fine-tune `{key}` needs both `{CONFIG_FILE}` and `{WEIGHTS_FILE}`"),
        )));
    }
    Ok(path)
}
