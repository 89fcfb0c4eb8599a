//! The Workers AI REST surface: `/ai/run/{model}` (JSON or SSE) and the model
//! catalog endpoints, answering in Cloudflare's envelope and shapes.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use hearth_catalog::SearchQuery;
use hearth_engine::GenEvent;
use hearth_runtime::{Generation, PromptInput};
use hearth_types::textgen::{
    TextGenerationChunk, TextGenerationInput, TextGenerationOutput, Usage,
};
use hearth_types::tools::ToolCall;
use hearth_types::{ApiError, Envelope, ErrorCode, ResultInfo};
use serde_json::{Value, json};

use crate::error::Failure;
use crate::shaping::{self, ToolStream};
use crate::{AppState, body, tag_response};

/// The collected result of a non-streamed generation.
pub(crate) struct Collected {
    pub text: String,
    pub usage: Usage,
    pub finish: &'static str,
}

/// Drain a generation into text, under the request's time limit.
pub(crate) async fn collect(
    generation: &mut Generation,
    timeout: std::time::Duration,
) -> Result<Collected, ApiError> {
    let work = async {
        let done = generation
            .stream
            .collect()
            .await
            .map_err(|e| ApiError::from(hearth_runtime::AppError::Engine(e)))?;
        Ok(Collected {
            text: done.text,
            usage: Usage::new(done.prompt_tokens, done.completion_tokens),
            finish: done.reason.as_openai(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(ApiError::plain(ErrorCode::Timeout)))
}

/// What a streamed generation yields, in order: text pieces, then the end.
pub(crate) enum StreamItem {
    Text(String),
    End { usage: Usage, finish: &'static str },
    Failed,
}

/// A generation as a stream of [`StreamItem`]s that stops at the deadline.
pub(crate) fn stream_items(
    generation: Generation,
    timeout: std::time::Duration,
) -> impl Stream<Item = StreamItem> + Send + 'static {
    let deadline = tokio::time::Instant::now() + timeout;
    futures::stream::unfold(Some(generation), move |state| async move {
        let mut generation = state?;
        match tokio::time::timeout_at(deadline, generation.stream.next()).await {
            Ok(Some(GenEvent::Text(t))) => Some((StreamItem::Text(t), Some(generation))),
            Ok(Some(GenEvent::Done {
                reason,
                prompt_tokens,
                completion_tokens,
            })) => Some((
                StreamItem::End {
                    usage: Usage::new(prompt_tokens, completion_tokens),
                    finish: reason.as_openai(),
                },
                None,
            )),
            Ok(Some(GenEvent::Failed(e))) => {
                tracing::error!(error = %e, "generation failed mid-stream");
                Some((StreamItem::Failed, None))
            }
            Ok(None) => Some((StreamItem::Failed, None)),
            Err(_) => {
                tracing::warn!("stream reached the request time limit");
                Some((StreamItem::Failed, None))
            }
        }
    })
}

fn sse_event(value: &impl serde::Serialize) -> Result<Event, Infallible> {
    Ok(Event::default().data(serde_json::to_string(value).unwrap_or_default()))
}

pub async fn run(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let model = params.get("model").cloned().unwrap_or_default();
    let account = params.get("account_id").cloned().unwrap_or_default();
    // No BART or translation engine yet: these tasks are written by the
    // default instruct model (translation only when the config allows it)
    // whether or not weights are on disk.
    let task = state.app.catalog().get(&model).map(|e| e.task.clone());
    if task.as_deref() == Some(crate::summarize::SUMMARIZATION) {
        let bytes = body::read(request.into_body(), state.body_limit()).await?;
        return crate::summarize::run(&state, &account, &model, &bytes).await;
    }
    if task.as_deref() == Some(crate::translate::TRANSLATION) {
        let bytes = body::read(request.into_body(), state.body_limit()).await?;
        return crate::translate::run(&state, &account, &model, &bytes).await;
    }
    // Resolving first picks the task (and so the input schema) and answers
    // unknown or absent models before the body is read.
    let resolved = state.app.resolve(&model)?;
    let bytes = body::read(request.into_body(), crate::batch::MAX_BATCH_BYTES).await?;
    if crate::batch::is_batch_call(&query, &bytes)? {
        return crate::batch::submit_or_poll(&state, &account, &model, &resolved, &bytes).await;
    }
    if bytes.len() > state.body_limit() {
        return Err(Failure(ApiError::detail(
            ErrorCode::RequestTooLarge,
            format!("the body is over the {}-byte limit", state.body_limit()),
        )));
    }
    // `gateway: {id, ...}` routes the call through that AI Gateway (cache,
    // logs, limits), as the binding's third argument does.
    if bytes.windows(9).any(|w| w == b"\"gateway\"")
        && let Ok(Value::Object(mut input)) = serde_json::from_slice::<Value>(&bytes)
        && let Some(options) = input.remove("gateway")
    {
        let inner = bytes::Bytes::from(Value::Object(input).to_string());
        return crate::gateway_data::run_through(&state, &account, &model, &options, inner).await;
    }
    run_model(&state, &account, &model, resolved, bytes).await
}

/// A Workers AI call once the body is read: admission, the task's handler,
/// the charge. The gateway data plane calls this directly.
pub async fn run_model(
    state: &AppState,
    account: &str,
    model: &str,
    resolved: hearth_runtime::Resolved,
    bytes: bytes::Bytes,
) -> Result<Response, Failure> {
    let (state, account, model) = (state.clone(), account.to_string(), model.to_string());
    let admission = crate::metering::Admission::admit(&state, &account, &model, &resolved.task)?;
    match resolved.task.as_str() {
        hearth_runtime::app::TEXT_GENERATION => {}
        hearth_runtime::app::TEXT_EMBEDDINGS => {
            return crate::embeddings::run(&state, &model, &bytes, &admission).await;
        }
        // Workers AI lists its reranker under Text Classification.
        hearth_runtime::app::TEXT_CLASSIFICATION if model.contains("reranker") => {
            return crate::embeddings::rerank(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::TEXT_CLASSIFICATION => {
            return crate::embeddings::classify(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::IMAGE_CLASSIFICATION => {
            return crate::images::classify(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::OBJECT_DETECTION => {
            return crate::images::detect(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::IMAGE_TO_TEXT => {
            return crate::images::describe(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::TEXT_TO_IMAGE => {
            return crate::text_to_image::run(&state, &model, &bytes, &admission).await;
        }
        hearth_runtime::app::SPEECH_RECOGNITION => {
            return crate::speech::transcribe(&state, &model, &bytes, &admission).await;
        }
        _ => {
            return Err(hearth_runtime::AppError::TaskNotServed {
                model,
                task: resolved.task,
            }
            .into());
        }
    }
    let mut input: TextGenerationInput = body::parse_json(&bytes)?;
    let image = crate::images::take_image(&mut input)?;
    // Terms come first, whether or not an image comes with the prompt.
    if crate::metering::agreement(&state, &account, &model, input.prompt.as_deref())? {
        return Ok(Json(Envelope::ok(TextGenerationOutput {
            response: Value::String(crate::metering::AGREED.into()),
            tool_calls: Vec::new(),
            usage: Usage::new(0, 0),
        }))
        .into_response());
    }
    // GGUF models run on llama.cpp, images through their projector
    // (streaming, tools and JSON mode as for text); Hugging Face-layout
    // weights are a candle LLaVA or Llama 3.2 Vision, with or without an
    // image. Both answer as a stream of text, streamed or collected below.
    let gguf = state.app.resolve(&model)?.is_gguf();
    let valid = input.validate()?;
    let shape = valid.shape;
    let mut generation = if gguf {
        let mut params = valid.params;
        if let Some(key) = &valid.lora {
            params.adapter = Some(crate::finetunes::adapter_for(
                &state, &account, &model, key,
            )?);
        }
        let prompt = PromptInput::from_source(valid.source, valid.raw);
        state
            .app
            .generate_chat(
                &model,
                prompt,
                &shape,
                params,
                valid.reject_if_busy,
                image.map(crate::images::ChatImage::into_parts),
            )
            .await?
    } else {
        let extras =
            valid.lora.is_some() || !shape.offered().is_empty() || shape.response_format.is_some();
        crate::images::vision_generation(
            &state,
            &model,
            image,
            (&valid.source, valid.raw),
            valid.params,
            extras,
        )
        .await?
    };
    let resolved = generation.resolved.clone();
    let mut response = if valid.stream {
        let mut tools = ToolStream::new(!shape.offered().is_empty());
        let chunk = |response: String, tool_calls: Option<Vec<Value>>, usage: Option<Usage>| {
            sse_event(&TextGenerationChunk {
                response,
                tool_calls,
                usage,
            })
        };
        let events =
            futures::StreamExt::flat_map(stream_items(generation, state.timeout()), move |item| {
                let events: Vec<Result<Event, Infallible>> = match item {
                    StreamItem::Text(t) => {
                        let now = tools.push(&t);
                        if now.is_empty() {
                            Vec::new()
                        } else {
                            vec![chunk(now, None, None)]
                        }
                    }
                    StreamItem::End { usage, .. } => {
                        admission.charge_usage(&usage);
                        let (rest, calls) = tools.finish();
                        let mut events = Vec::new();
                        if !rest.is_empty() {
                            events.push(chunk(rest, None, None));
                        }
                        if !calls.is_empty() {
                            let calls = calls.iter().map(ToolCall::as_native).collect();
                            events.push(chunk(String::new(), Some(calls), None));
                        }
                        events.push(chunk(String::new(), None, Some(usage)));
                        events.push(Ok(Event::default().data("[DONE]")));
                        events
                    }
                    StreamItem::Failed => vec![Ok(Event::default().data("[DONE]"))],
                };
                futures::stream::iter(events)
            });
        Sse::new(events).into_response()
    } else {
        let out = collect(&mut generation, state.timeout()).await?;
        admission.charge_usage(&out.usage);
        let shaped = shaping::shape(out.text, &shape, out.finish)?;
        Json(Envelope::ok(TextGenerationOutput {
            response: shaped.json.unwrap_or(Value::String(shaped.text)),
            tool_calls: shaped.calls.iter().map(ToolCall::as_native).collect(),
            usage: out.usage,
        }))
        .into_response()
    };
    tag_response(&mut response, &resolved);
    Ok(response)
}

fn parse_bool(params: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match params.get(key).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(ApiError::invalid_input(format!(
            "`{key}` must be true or false, got `{other}`"
        ))),
    }
}

fn parse_page(
    params: &HashMap<String, String>,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_input(format!(
                "`{key}` must be an integer between 1 and {max}, got `{v}`"
            ))),
        },
    }
}

fn paginate<T: Clone>(items: &[T], page: u64, per_page: u64) -> (Vec<T>, ResultInfo) {
    let start = ((page - 1) * per_page) as usize;
    let slice: Vec<T> = items
        .iter()
        .skip(start)
        .take(per_page as usize)
        .cloned()
        .collect();
    let info = ResultInfo {
        page,
        per_page,
        count: slice.len() as u64,
        total_count: items.len() as u64,
    };
    (slice, info)
}

pub async fn models_search(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let query = SearchQuery {
        task: params.get("task").cloned().filter(|s| !s.is_empty()),
        search: params.get("search").cloned().filter(|s| !s.is_empty()),
        author: params.get("author").cloned().filter(|s| !s.is_empty()),
        hide_experimental: parse_bool(&params, "hide_experimental")?,
        include_deprecated: parse_bool(&params, "include_deprecated")?,
    };
    let page = parse_page(&params, "page", 1, 100_000)?;
    let per_page = parse_page(&params, "per_page", 100, 1000)?;
    let catalog = state.app.catalog();
    let objects: Vec<Value> = catalog
        .search(&query)
        .into_iter()
        .map(|m| {
            let mut obj = catalog.search_object(m);
            let status = state.app.status(m);
            if let Some(o) = obj.as_object_mut() {
                let mut hearth = json!({
                    "status": status.label(),
                    "servable": status.servable(),
                    "local_model": m.hearth_local,
                });
                if let hearth_runtime::ModelStatus::Aliased { to, .. } = &status {
                    hearth["alias_of"] = json!(to);
                }
                o.insert("hearth".into(), hearth);
            }
            obj
        })
        .collect();
    let (items, info) = paginate(&objects, page, per_page);
    Ok(Json(Envelope::with_info(items, info)).into_response())
}

pub async fn model_schema(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let Some(model) = params.get("model").filter(|m| !m.is_empty()) else {
        return Err(Failure(ApiError::invalid_input(
            "`model` query parameter is required",
        )));
    };
    let Some(entry) = state.app.catalog().get(model) else {
        return Err(Failure(ApiError::new(
            ErrorCode::NoSuchModel,
            format!("No such model {model} or task"),
        )));
    };
    let Some(mut schema) = state.app.catalog().schema(model) else {
        return Err(Failure(ApiError::plain(ErrorCode::ModelSchemaNotFound)));
    };
    for (side, text) in [("input", "Input of"), ("output", "Output of")] {
        if let Some(obj) = schema.get_mut(side).and_then(Value::as_object_mut) {
            obj.entry("additionalProperties").or_insert(json!(true));
            obj.entry("description")
                .or_insert(json!(format!("{text} {} ({})", entry.name, entry.task)));
            obj.entry("type").or_insert(json!("object"));
        }
    }
    Ok(Json(Envelope::ok(schema)).into_response())
}

pub async fn tasks_search(State(state): State<AppState>) -> Json<Envelope<Value>> {
    let tasks: Vec<Value> = state
        .app
        .catalog()
        .tasks()
        .iter()
        .map(|t| json!({"id": t.id, "name": t.name, "description": t.description}))
        .collect();
    Json(Envelope::ok(Value::Array(tasks)))
}

pub async fn authors_search(State(state): State<AppState>) -> Json<Envelope<Value>> {
    let authors: Vec<Value> = state
        .app
        .catalog()
        .authors()
        .into_iter()
        .map(|a| json!({"name": a}))
        .collect();
    Json(Envelope::ok(Value::Array(authors)))
}
