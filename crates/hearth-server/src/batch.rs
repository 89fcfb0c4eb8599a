//! The async Batch API: `POST /ai/run/{model}?queueRequest=true` with
//! `{requests: [...]}` queues a job and answers `{status: "queued",
//! request_id, model}`; posting `{request_id}` polls it. Jobs live in the
//! SQLite store (committed before the client hears the id), one background
//! worker runs them item by item beside interactive traffic, and each item's
//! result is recorded once, so a job interrupted by a crash resumes where it
//! stopped without running an item twice into the result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use hearth_runtime::PromptInput;
use hearth_runtime::app::{Resolved, TEXT_EMBEDDINGS, TEXT_GENERATION};
use hearth_store::{BatchItem, BatchJob};
use hearth_types::embeddings::EmbeddingsInput;
use hearth_types::textgen::{TextGenerationInput, TextGenerationOutput};
use hearth_types::{ApiError, Envelope, ErrorCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::AppState;
use crate::error::Failure;
use crate::metering::Admission;

/// A batch body must stay under 10 MB.
pub const MAX_BATCH_BYTES: usize = 10_000_000;

/// Wakes the worker when a job is queued.
static QUEUED: Notify = Notify::const_new();

fn store_error(e: hearth_store::StoreError) -> Failure {
    Failure::internal("batch store", e)
}

/// A batch call: `?queueRequest=true`, or a body that is only `{request_id}`
/// (how the binding polls).
pub fn is_batch_call(query: &HashMap<String, String>, bytes: &[u8]) -> Result<bool, ApiError> {
    match query.get("queueRequest").map(String::as_str) {
        Some("true") | Some("1") => return Ok(true),
        None | Some("false") | Some("0") => {}
        Some(other) => {
            return Err(ApiError::invalid_input(format!(
                "`queueRequest` must be true or false, got `{other}`"
            )));
        }
    }
    // Cheap pre-check before parsing: only a small body can be a poll.
    if bytes.len() > 256 || !bytes.windows(10).any(|w| w == b"request_id") {
        return Ok(false);
    }
    Ok(matches!(
        serde_json::from_slice::<Value>(bytes),
        Ok(Value::Object(m)) if m.len() == 1 && m.get("request_id").is_some_and(Value::is_string)
    ))
}

pub async fn submit_or_poll(
    state: &AppState,
    account: &str,
    model: &str,
    resolved: &Resolved,
    bytes: &[u8],
) -> Result<Response, Failure> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_input(format!("body is not valid JSON: {e}")))?;
    if let Some(id) = body.get("request_id") {
        let id = id
            .as_str()
            .ok_or_else(|| ApiError::invalid_input("`request_id` must be a string"))?;
        return poll(state, account, model, id);
    }
    let entry = state.app.catalog().get(model);
    if !entry.is_some_and(|e| e.async_queue) {
        return Err(Failure(ApiError::invalid_input(format!(
            "{model} does not take async batch requests (`queueRequest`); models that do carry `async_queue` in the catalog"
        ))));
    }
    if !matches!(resolved.task.as_str(), TEXT_GENERATION | TEXT_EMBEDDINGS) {
        return Err(Failure(ApiError::new(
            ErrorCode::ModelNotInstalled,
            format!("{model}: Hearth runs batches of text generation and embeddings only"),
        )));
    }
    let requests = match body.get("requests") {
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        Some(Value::Array(_)) => {
            return Err(Failure(ApiError::invalid_input(
                "`requests` must not be empty",
            )));
        }
        Some(_) => {
            return Err(Failure(ApiError::invalid_input(
                "`requests` must be an array",
            )));
        }
        None => {
            return Err(Failure(ApiError::invalid_input(
                "a queued request needs `requests` (an array of inputs), or `request_id` to poll",
            )));
        }
    };
    if let Some(bad) = requests.iter().position(|r| !r.is_object()) {
        return Err(Failure(ApiError::invalid_input(format!(
            "`requests[{bad}]` must be an object"
        ))));
    }
    let job = BatchJob {
        request_id: uuid::Uuid::new_v4().to_string(),
        account: account.to_string(),
        model: model.to_string(),
        status: "queued".into(),
        created_ms: state.app.meter().now_ms(),
        requests: Value::Array(requests),
    };
    state
        .app
        .meter()
        .store()
        .batch_insert(&job)
        .map_err(store_error)?;
    QUEUED.notify_one();
    Ok(Json(Envelope::ok(json!({
        "status": "queued",
        "request_id": job.request_id,
        "model": model,
    })))
    .into_response())
}

fn poll(state: &AppState, account: &str, model: &str, id: &str) -> Result<Response, Failure> {
    let store = state.app.meter().store();
    let Some(job) = store.batch_get(account, id).map_err(store_error)? else {
        return Err(Failure(ApiError::invalid_input(format!(
            "no queued request `{id}` for this account (finished batches are kept for a limited time)"
        ))));
    };
    if job.model != model {
        return Err(Failure(ApiError::invalid_input(format!(
            "request `{id}` was queued for {}, not {model}",
            job.model
        ))));
    }
    if job.status != "done" {
        return Ok(Json(Envelope::ok(json!({
            "status": job.status,
            "request_id": job.request_id,
            "model": job.model,
        })))
        .into_response());
    }
    let items = store.batch_items(id).map_err(store_error)?;
    let refs = job.requests.as_array().cloned().unwrap_or_default();
    let (mut prompt, mut completion) = (0u64, 0u64);
    let responses: Vec<Value> = items
        .iter()
        .map(|item| {
            prompt += item.input_tokens;
            completion += item.output_tokens;
            let external = refs
                .get(item.index as usize)
                .and_then(|r| r.get("external_reference"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({
                "id": item.index,
                "result": item.result,
                "success": item.success,
                "external_reference": external,
            })
        })
        .collect();
    Ok(Json(Envelope::ok(json!({
        "responses": responses,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })))
    .into_response())
}

/// Runs one item as the run endpoint would, without streaming.
async fn run_item(state: &AppState, job: &BatchJob, mut item: Value) -> BatchItem {
    if let Value::Object(m) = &mut item {
        m.remove("external_reference");
        m.remove("stream");
    }
    let outcome: Result<(Value, u64, u64), ApiError> = async {
        let resolved = state.app.resolve(&job.model).map_err(ApiError::from)?;
        let admission = Admission::admit(state, &job.account, &job.model, &resolved.task)?;
        let parse_error = |e: serde_json::Error| ApiError::invalid_input(e.to_string());
        match resolved.task.as_str() {
            TEXT_GENERATION => {
                let input: TextGenerationInput =
                    serde_json::from_value(item).map_err(parse_error)?;
                let valid = input.validate()?;
                let mut params = valid.params;
                if let Some(key) = &valid.lora {
                    params.adapter = Some(
                        crate::finetunes::adapter_for(state, &job.account, &job.model, key)
                            .map_err(|f| f.0)?,
                    );
                }
                let prompt = PromptInput::from_source(valid.source, valid.raw);
                let shape = valid.shape;
                let mut generation = state
                    .app
                    .generate_with(
                        &job.model,
                        prompt,
                        &shape,
                        params,
                        false,
                        hearth_engine::textgen::Priority::Background,
                    )
                    .await
                    .map_err(ApiError::from)?;
                let out = crate::workers_ai::collect(&mut generation, state.timeout()).await?;
                let (i, o) = (
                    u64::from(out.usage.prompt_tokens),
                    u64::from(out.usage.completion_tokens),
                );
                admission.charge(i, o);
                let shaped = crate::shaping::shape(out.text, &shape, out.finish)?;
                let value = serde_json::to_value(TextGenerationOutput {
                    response: shaped.json.unwrap_or(Value::String(shaped.text)),
                    tool_calls: shaped.calls.iter().map(|c| c.as_native()).collect(),
                    usage: out.usage,
                })
                .unwrap_or(Value::Null);
                Ok((value, i, o))
            }
            TEXT_EMBEDDINGS => {
                let input: EmbeddingsInput = serde_json::from_value(item).map_err(parse_error)?;
                let valid = input.validate()?;
                let (value, tokens, _) =
                    crate::embeddings::answer(state, &job.model, valid).await?;
                admission.charge(tokens, 0);
                Ok((value, tokens, 0))
            }
            other => Err(ApiError::new(
                ErrorCode::ModelNotInstalled,
                format!("Hearth runs batches of text generation and embeddings only, not {other}"),
            )),
        }
    }
    .await;
    match outcome {
        Ok((result, input_tokens, output_tokens)) => BatchItem {
            index: 0,
            success: true,
            result,
            input_tokens,
            output_tokens,
        },
        Err(e) => BatchItem {
            index: 0,
            success: false,
            result: json!({"errors": [{"code": e.code.code(), "message": e.message}]}),
            input_tokens: 0,
            output_tokens: 0,
        },
    }
}

/// Runs queued jobs, oldest first, one item at a time, and deletes finished
/// jobs past the retention. Call once per process.
pub fn spawn_worker(state: AppState) {
    tokio::spawn(async move {
        loop {
            let store = state.app.meter().store();
            let retention_ms = state.app.config().batch.retention_hours as i64 * 3_600_000;
            if let Err(e) = store.batch_expire(state.app.meter().now_ms() - retention_ms) {
                tracing::warn!(error = %e, "could not expire old batches");
            }
            let job = match store.batch_next() {
                Ok(Some(job)) => job,
                Ok(None) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), QUEUED.notified()).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "batch queue unreadable");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if let Err(e) = run_job(&state, &job).await {
                tracing::error!(error = %e, request_id = job.request_id, "batch job failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

/// Runs `work` on the store off the async workers (SQLite blocks).
async fn on_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&hearth_store::Store) -> Result<T, hearth_store::StoreError> + Send + 'static,
) -> Result<T, hearth_store::StoreError> {
    let app = Arc::clone(&state.app);
    tokio::task::spawn_blocking(move || work(app.meter().store()))
        .await
        .unwrap_or_else(|e| Err(hearth_store::StoreError::Task(e.to_string())))
}

async fn run_job(state: &AppState, job: &BatchJob) -> Result<(), hearth_store::StoreError> {
    let now = state.app.meter().now_ms();
    let id = job.request_id.clone();
    on_store(state, move |s| s.batch_set_status(&id, "running", now)).await?;
    let id = job.request_id.clone();
    let done: std::collections::HashSet<u32> = on_store(state, move |s| s.batch_items(&id))
        .await?
        .into_iter()
        .map(|i| i.index)
        .collect();
    let items = job.requests.as_array().cloned().unwrap_or_default();
    for (index, item) in items.into_iter().enumerate() {
        if done.contains(&(index as u32)) {
            continue;
        }
        let mut result = run_item(state, job, item).await;
        result.index = index as u32;
        let id = job.request_id.clone();
        on_store(state, move |s| s.batch_item_done(&id, &result)).await?;
    }
    let now = state.app.meter().now_ms();
    let id = job.request_id.clone();
    on_store(state, move |s| s.batch_set_status(&id, "done", now)).await?;
    Ok(())
}

/// Background work of a serving process.
pub fn spawn_background(app: Arc<hearth_runtime::App>) {
    let gateway = crate::gateway_data::GatewayRuntime::start(Arc::clone(&app));
    spawn_worker(AppState {
        app,
        gateway,
        search_cache: Arc::default(),
    });
}
