//! Cited answers: the retrieved chunks go to the generation model in the
//! system message, each under its file name, and the model answers the
//! conversation. Nothing is generated when no chunk passed the threshold.
//! `POST .../instances/{id}/chat/completions` answers in OpenAI's shape
//! plus `chunks`; streamed, a `chunks` event comes first, then the usual
//! `chat.completion.chunk` events and `[DONE]`.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hearth_engine::textgen::Priority;
use hearth_runtime::{Generation, PromptInput};
use hearth_search::answer::{
    DEFAULT_REWRITE_PROMPT, DEFAULT_SYSTEM_PROMPT, context_budget, rewritten_query, system_message,
};
use hearth_search::cache::Threshold;
use hearth_types::textgen::{GenerationParams, Usage, ValidMessage};
use hearth_types::tools::OutputShape;
use serde_json::{Map, Value, json};

use super::retrieval::{Found, query_of, retrieve};
use super::{bad, find, number, retrieval_of};
use crate::error::Failure;
use crate::gateway::param;
use crate::metering::Admission;
use crate::workers_ai::{StreamItem, collect, stream_items};
use crate::{AppState, body, tag_response};

/// What the answer says when nothing passed the threshold: no model runs.
pub const NO_MATCH_ANSWER: &str =
    "No document in this instance matched the question, so no answer was generated.";

/// A generation under way, with what it needs to finish.
pub struct Answering {
    pub generation: Generation,
    pub admission: Admission,
    pub model: String,
}

/// What a request may set about generation.
pub struct AnswerOptions {
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub params: GenerationParams,
}

impl AnswerOptions {
    /// `model`, `system_prompt`, `max_tokens`, `temperature`, `seed` of a
    /// request body, checked.
    pub fn from_request(req: &Value) -> Result<Self, Failure> {
        let text = |key: &str| -> Result<Option<String>, Failure> {
            match req.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("`{key}` must be a string"))),
            }
        };
        let obj = req.as_object().cloned().unwrap_or_default();
        let mut params = GenerationParams::default();
        params.max_tokens = number(
            &obj,
            "max_tokens",
            f64::from(params.max_tokens),
            1.0,
            4096.0,
        )? as u32;
        params.temperature =
            number(&obj, "temperature", f64::from(params.temperature), 0.0, 5.0)? as f32;
        params.seed = match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| bad("`seed` must be a non-negative integer"))?,
            ),
        };
        Ok(Self {
            model: text("model")?,
            system_prompt: text("system_prompt")?,
            params,
        })
    }
}

/// The generation model: the request's, else the instance's
/// `ai_search_model`, else the server's default.
fn model_of(state: &AppState, settings: &Map<String, Value>, options: &AnswerOptions) -> String {
    options
        .model
        .clone()
        .or_else(|| {
            settings
                .get("ai_search_model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| state.app.config().default_model.clone())
}

/// Starts the generation that answers `conversation` from `chunks`
/// (which must not be empty), charged to `account` as Workers AI usage.
pub async fn start(
    state: &AppState,
    account: &str,
    settings: &Map<String, Value>,
    conversation: Vec<ValidMessage>,
    chunks: &[Found],
    options: AnswerOptions,
) -> Result<Answering, Failure> {
    let instructions = options
        .system_prompt
        .clone()
        .or_else(|| {
            settings
                .get("system_prompt")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let documents: Vec<(&str, &str)> = chunks
        .iter()
        .map(|f| (f.chunk.key.as_str(), f.chunk.text.as_str()))
        .collect();
    let mut messages = vec![ValidMessage::new(
        "system",
        system_message(
            &instructions,
            &documents,
            context_budget(state.app.config().textgen.ctx_per_seq),
        ),
    )];
    messages.extend(conversation.into_iter().filter(|m| m.role != "system"));
    generate(state, account, settings, messages, options).await
}

/// Runs the generation model on `messages`, admitted and charged as
/// Workers AI usage of `account`.
async fn generate(
    state: &AppState,
    account: &str,
    settings: &Map<String, Value>,
    messages: Vec<ValidMessage>,
    options: AnswerOptions,
) -> Result<Answering, Failure> {
    let model = model_of(state, settings, &options);
    let task = state.app.resolve(&model)?.task;
    let admission = Admission::admit(state, account, &model, &task)?;
    crate::metering::agreement(state, account, &model, None)?;
    let generation = state
        .app
        .generate_with(
            &model,
            PromptInput::Messages(messages),
            &OutputShape::default(),
            options.params,
            false,
            Priority::Interactive,
        )
        .await?;
    Ok(Answering {
        generation,
        admission,
        model,
    })
}

/// A query rewrite's model and prompt (either may be the default).
pub struct Rewrite {
    model: Option<String>,
    prompt: Option<String>,
}

impl Rewrite {
    /// From the instance's `rewrite_query` / `rewrite_model`, the v2
    /// request's `ai_search_options.query_rewrite` object, or the legacy
    /// request's `rewrite_query` flag.
    pub fn from_request(
        settings: &Map<String, Value>,
        v2: Option<&Value>,
        legacy: Option<&Value>,
    ) -> Result<Option<Self>, Failure> {
        let v2 = match v2 {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(bad("`ai_search_options.query_rewrite` must be an object")),
        };
        let enabled = match (v2.get("enabled"), legacy) {
            (Some(Value::Bool(b)), _) => *b,
            (Some(v), _) if !v.is_null() => {
                return Err(bad(
                    "`ai_search_options.query_rewrite.enabled` must be a boolean",
                ));
            }
            (_, Some(Value::Bool(b))) => *b,
            (_, Some(v)) if !v.is_null() => return Err(bad("`rewrite_query` must be a boolean")),
            _ => settings
                .get("rewrite_query")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        if !enabled {
            return Ok(None);
        }
        let text = |obj: &Map<String, Value>, key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Some(Self {
            model: text(&v2, "model").or_else(|| text(settings, "rewrite_model")),
            prompt: text(&v2, "rewrite_prompt").or_else(|| text(settings, "rewrite_prompt")),
        }))
    }
}

/// The search query the generation model makes of `query` (the query
/// itself when the model answers nothing usable).
pub async fn rewrite(
    state: &AppState,
    account: &str,
    settings: &Map<String, Value>,
    query: &str,
    how: &Rewrite,
) -> Result<String, Failure> {
    let options = AnswerOptions {
        model: how.model.clone(),
        system_prompt: None,
        params: GenerationParams {
            max_tokens: 48,
            temperature: 0.0,
            ..GenerationParams::default()
        },
    };
    let messages = vec![
        ValidMessage::new(
            "system",
            how.prompt.as_deref().unwrap_or(DEFAULT_REWRITE_PROMPT),
        ),
        ValidMessage::new("user", query),
    ];
    let mut answering = generate(state, account, settings, messages, options).await?;
    let (text, _, _) = finish(state, &mut answering).await?;
    Ok(rewritten_query(&text).unwrap_or_else(|| query.to_string()))
}

/// Waits for a whole answer; `(text, usage, finish_reason)`.
pub async fn finish(
    state: &AppState,
    answering: &mut Answering,
) -> Result<(String, Usage, &'static str), Failure> {
    let out = collect(&mut answering.generation, state.timeout())
        .await
        .map_err(Failure)?;
    answering.admission.charge_usage(&out.usage);
    Ok((out.text, out.usage, out.finish))
}

/// The generation as text pieces, charged when it ends.
pub(crate) fn text_stream(
    state: &AppState,
    answering: Answering,
) -> impl futures::Stream<Item = StreamItem> + Send + 'static {
    let Answering {
        generation,
        admission,
        ..
    } = answering;
    stream_items(generation, state.timeout()).map(move |item| {
        if let StreamItem::End { usage, .. } = &item {
            admission.charge_usage(usage);
        }
        item
    })
}

/// The conversation of an OpenAI-style `messages` array (text content).
fn conversation_of(req: &Value) -> Result<Vec<ValidMessage>, Failure> {
    let Some(Value::Array(messages)) = req.get("messages") else {
        return Err(bad("`messages` must be an array of {role, content}"));
    };
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .filter(|r| ["system", "developer", "user", "assistant", "tool"].contains(r))
                .ok_or_else(|| {
                    bad(format!(
                        "`messages[{i}].role` must be system, developer, user, assistant or tool"
                    ))
                })?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(Value::Null) | None => String::new(),
                Some(_) => {
                    return Err(bad(format!(
                        "`messages[{i}].content` must be a string or an array of parts"
                    )));
                }
            };
            let role = if role == "developer" { "system" } else { role };
            Ok(ValidMessage::new(role, content))
        })
        .collect()
}

fn sse(value: &impl serde::Serialize) -> Result<Event, Infallible> {
    Ok(Event::default().data(serde_json::to_string(value).unwrap_or_default()))
}

/// The response header that says whether the similarity cache answered.
pub const CACHE_STATUS: &str = "cf-aig-cache-status";

/// Where an instance's answers are cached.
pub fn cache_scope(account: &str, instance: &str) -> String {
    format!("{account}/{instance}")
}

/// The similarity cache's threshold for a request, or `None` when it is
/// off: the request's `cache` object over the instance's `cache` (on by
/// default) and `cache_threshold` (`close_enough` by default).
pub fn cache_threshold(
    settings: &Map<String, Value>,
    request: Option<&Value>,
) -> Result<Option<Threshold>, Failure> {
    let request = match request {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad("`ai_search_options.cache` must be an object")),
    };
    let enabled = match request.get("enabled") {
        None | Some(Value::Null) => settings
            .get("cache")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`ai_search_options.cache.enabled` must be a boolean")),
    };
    if !enabled {
        return Ok(None);
    }
    let name = request
        .get("cache_threshold")
        .or_else(|| settings.get("cache_threshold"))
        .filter(|v| !v.is_null());
    match name {
        None => Ok(Some(Threshold::CloseEnough)),
        Some(v) => v.as_str().and_then(Threshold::parse).map(Some).ok_or_else(|| {
            bad(format!(
                "`cache_threshold` must be super_strict_match, close_enough, flexible_friend or anything_goes, got {v}"
            ))
        }),
    }
}

/// Where a generated answer goes in the similarity cache once it is whole.
pub struct CacheSlot {
    cache: std::sync::Arc<hearth_search::cache::SimilarityCache>,
    scope: String,
    context: String,
    question: String,
}

impl CacheSlot {
    pub fn new(state: &AppState, scope: String, context: String, question: String) -> Self {
        Self {
            cache: std::sync::Arc::clone(&state.search_cache),
            scope,
            context,
            question,
        }
    }

    pub fn put(&self, answer: Value) {
        self.cache
            .put(&self.scope, &self.context, &self.question, answer);
    }
}

pub fn with_cache_status(mut response: Response, status: &'static str) -> Response {
    response
        .headers_mut()
        .insert(CACHE_STATUS, axum::http::HeaderValue::from_static(status));
    response
}

/// An OpenAI-style completion of known text (no match, or a cached answer).
fn fixed_answer(stream: bool, head: &Value, chunks: &Value, text: &str) -> Response {
    if stream {
        let mut delta = head.clone();
        delta["object"] = json!("chat.completion.chunk");
        delta["choices"] = json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}]);
        let events = vec![
            Ok(Event::default()
                .event("chunks")
                .data(serde_json::to_string(chunks).unwrap_or_default())),
            sse(&delta),
            Ok(Event::default().data("[DONE]")),
        ];
        return Sse::new(futures::stream::iter(events)).into_response();
    }
    let mut body = head.clone();
    body["choices"] = json!([{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]);
    body["chunks"] = chunks.clone();
    Json(body).into_response()
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (account, instance) = (param(&p, "account_id"), param(&p, "instance_id"));
    let row = find(&state, account, instance)?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req: Value = body::parse_json(&bytes)?;
    let conversation = conversation_of(&req)?;
    let question = query_of(&json!({"messages": req.get("messages")}))?;
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`stream` must be a boolean")),
    };
    let options = AnswerOptions::from_request(&req)?;
    let settings = row.settings.as_object().cloned().unwrap_or_default();
    let retrieval = retrieval_of(&settings, &req)?;
    let search_options = req.get("ai_search_options");
    let caching = cache_threshold(&settings, search_options.and_then(|o| o.get("cache")))?;
    let model = model_of(&state, &settings, &options);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head = json!({"id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion", "created": created, "model": model});
    // The answer depends on all of this, the question aside: a cached
    // answer is reused only when all of it is the same.
    let mut cache_options = search_options.cloned().unwrap_or(Value::Null);
    if let Some(o) = cache_options.as_object_mut() {
        o.remove("cache");
    }
    let earlier: Vec<&ValidMessage> = conversation
        .iter()
        .take(conversation.len().saturating_sub(1))
        .collect();
    let context = json!([
        model,
        options.system_prompt,
        options.params.max_tokens,
        options.params.temperature,
        options.params.seed,
        cache_options,
        earlier
    ])
    .to_string();
    let scope = cache_scope(account, instance);
    if let Some(threshold) = caching
        && let Some(hit) = state
            .search_cache
            .get(&scope, &context, &question, threshold)
    {
        let text = hit["content"].as_str().unwrap_or_default();
        return Ok(with_cache_status(
            fixed_answer(stream, &head, &hit["chunks"], text),
            "HIT",
        ));
    }
    let query = match Rewrite::from_request(
        &settings,
        search_options.and_then(|o| o.get("query_rewrite")),
        None,
    )? {
        Some(how) => rewrite(&state, account, &settings, &question, &how).await?,
        None => question.clone(),
    };
    let found = retrieve(&state, account, instance, &settings, &query, &retrieval).await?;
    let chunks = Value::Array(found.iter().map(Found::v2).collect());
    if found.is_empty() {
        return Ok(fixed_answer(stream, &head, &chunks, NO_MATCH_ANSWER));
    }
    let mut answering = start(&state, account, &settings, conversation, &found, options).await?;
    let resolved = answering.generation.resolved.clone();
    let remember = caching.map(|_| CacheSlot::new(&state, scope, context, question));
    let store = move |text: &str, chunks: &Value| {
        if let Some(slot) = &remember {
            slot.put(json!({"content": text, "chunks": chunks}));
        }
    };
    let mut response = if stream {
        let chunk = {
            let head = head.clone();
            move |delta: Value, finish: Option<&str>| {
                let mut event = head.clone();
                event["object"] = json!("chat.completion.chunk");
                event["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
                sse(&event)
            }
        };
        let first = vec![
            Ok(Event::default()
                .event("chunks")
                .data(serde_json::to_string(&chunks).unwrap_or_default())),
            chunk(json!({"role": "assistant", "content": ""}), None),
        ];
        let mut text = String::new();
        let body = text_stream(&state, answering).map(move |item| match item {
            StreamItem::Text(t) => {
                text.push_str(&t);
                vec![chunk(json!({"content": t}), None)]
            }
            StreamItem::End { finish, .. } => {
                store(&text, &chunks);
                vec![
                    chunk(json!({}), Some(finish)),
                    Ok(Event::default().data("[DONE]")),
                ]
            }
            StreamItem::Failed => vec![Ok(Event::default().data("[DONE]"))],
        });
        let events = futures::stream::iter(first).chain(body.flat_map(futures::stream::iter));
        Sse::new(events).into_response()
    } else {
        let (text, usage, finish) = finish(&state, &mut answering).await?;
        store(&text, &chunks);
        let mut body = head;
        body["choices"] = json!([{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]);
        body["usage"] = json!(usage);
        body["chunks"] = chunks;
        Json(body).into_response()
    };
    tag_response(&mut response, &resolved);
    Ok(with_cache_status(
        response,
        if caching.is_some() { "MISS" } else { "BYPASS" },
    ))
}
