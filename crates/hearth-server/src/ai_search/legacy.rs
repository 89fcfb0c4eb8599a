//! The legacy AutoRAG surface (`.../autorag/rags/{name}/search`,
//! `/ai-search`, `/sync`) over the same instances: its request fields
//! (`ranking_options.score_threshold`, `{type, key, value}` filters with
//! millisecond timestamps) and its OpenAI vector-store page of results
//! (`attributes.timestamp` in milliseconds). Streamed `ai-search` sends
//! only the generated text, as Workers AI text generation streams it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hearth_search::retrieve::legacy_filter;
use hearth_types::Envelope;
use hearth_types::textgen::ValidMessage;
use serde_json::{Map, Value, json};

use super::answer::{
    AnswerOptions, CacheSlot, NO_MATCH_ANSWER, Rewrite, cache_scope, cache_threshold, finish,
    rewrite, start, text_stream, with_cache_status,
};
use super::retrieval::{Found, Rerank, Retrieval, retrieve};
use super::{bad, file_id, find, start_job};
use crate::error::Failure;
use crate::gateway::param;
use crate::workers_ai::StreamItem;
use crate::{AppState, body, tag_response};

/// A legacy request: its query and its retrieval options in v2 terms.
struct LegacyRequest {
    query: String,
    /// The query as searched: rewritten when `rewrite_query` asks.
    search_query: String,
    retrieval: Map<String, Value>,
    body: Value,
}

fn parse(bytes: &[u8]) -> Result<LegacyRequest, Failure> {
    let body: Value = body::parse_json(bytes)?;
    let query = match body.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        _ => return Err(bad("`query` is required: a non-empty string")),
    };
    let mut retrieval = Map::new();
    if let Some(n) = body.get("max_num_results").filter(|v| !v.is_null()) {
        retrieval.insert("max_num_results".into(), n.clone());
    }
    match body.get("ranking_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            if let Some(t) = o.get("score_threshold").filter(|v| !v.is_null()) {
                retrieval.insert("match_threshold".into(), t.clone());
            }
        }
        Some(_) => return Err(bad("`ranking_options` must be an object")),
    }
    if let Some(f) = body.get("filters").filter(|v| !v.is_null()) {
        let filter = legacy_filter(f).map_err(bad)?;
        retrieval.insert("filters".into(), filter);
    }
    Ok(LegacyRequest {
        search_query: query.clone(),
        query,
        retrieval,
        body,
    })
}

fn page(search_query: &str, found: &[Found]) -> Map<String, Value> {
    let data: Vec<Value> = found
        .iter()
        .map(|f| {
            json!({
                "file_id": file_id(&f.chunk.key),
                "filename": f.chunk.key,
                "score": f.score,
                "attributes": {
                    "timestamp": f.timestamp * 1000,
                    "folder": f.folder,
                    // The item's own metadata (`context` among it).
                    "file": f.metadata.iter()
                        .filter(|(k, _)| !["folder", "filename", "timestamp"].contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Map<String, Value>>(),
                },
                "content": [{"id": f.chunk.id, "type": "text", "text": f.chunk.text}],
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("object".into(), json!("vector_store.search_results.page"));
    out.insert("search_query".into(), json!(search_query));
    out.insert("data".into(), Value::Array(data));
    out.insert("has_more".into(), json!(false));
    out.insert("next_page".into(), Value::Null);
    out
}

/// A request read and checked, before any search.
struct Prepared {
    req: LegacyRequest,
    settings: Map<String, Value>,
    retrieval: Retrieval,
}

async fn prepare(
    state: &AppState,
    p: &HashMap<String, String>,
    request: Request,
) -> Result<Prepared, Failure> {
    let (account, id) = (param(p, "account_id"), param(p, "instance_id"));
    let row = find(state, account, id)?;
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req = parse(&bytes)?;
    let settings = row.settings.as_object().cloned().unwrap_or_default();
    let mut retrieval = Retrieval::from_request(&settings, &req.retrieval, "")?;
    retrieval.rerank = Rerank::from_request(&settings, req.body.get("reranking"), "")?;
    Ok(Prepared {
        req,
        settings,
        retrieval,
    })
}

/// Rewrites the query when asked, then searches.
async fn found_for(
    state: &AppState,
    p: &HashMap<String, String>,
    prepared: &mut Prepared,
) -> Result<Vec<Found>, Failure> {
    let (account, id) = (param(p, "account_id"), param(p, "instance_id"));
    let Prepared {
        req,
        settings,
        retrieval,
    } = prepared;
    if let Some(how) = Rewrite::from_request(settings, None, req.body.get("rewrite_query"))? {
        req.search_query = rewrite(state, account, settings, &req.query, &how).await?;
    }
    retrieve(state, account, id, settings, &req.search_query, retrieval).await
}

pub async fn search(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let mut prepared = prepare(&state, &p, request).await?;
    let found = found_for(&state, &p, &mut prepared).await?;
    let result = page(&prepared.req.search_query, &found);
    Ok(Json(Envelope::ok(Value::Object(result))).into_response())
}

/// The legacy answer page: the answer first, as Cloudflare lists it.
fn answered(mut result: Map<String, Value>, text: &str) -> Value {
    let mut ordered = Map::new();
    ordered.insert("object".into(), result.remove("object").unwrap_or_default());
    ordered.insert(
        "search_query".into(),
        result.remove("search_query").unwrap_or_default(),
    );
    ordered.insert("response".into(), json!(text));
    ordered.extend(result);
    Value::Object(ordered)
}

/// A known answer: streamed as one piece of text, or the whole page.
fn fixed(stream: bool, page: Value) -> Response {
    if stream {
        let text = page["response"].as_str().unwrap_or_default();
        let events = [
            Ok::<_, std::convert::Infallible>(
                Event::default().data(json!({"response": text}).to_string()),
            ),
            Ok(Event::default().data("[DONE]")),
        ];
        return Sse::new(futures::stream::iter(events)).into_response();
    }
    Json(Envelope::ok(page)).into_response()
}

pub async fn ai_search(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let mut prepared = prepare(&state, &p, request).await?;
    let body = &prepared.req.body;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`stream` must be a boolean")),
    };
    let options = AnswerOptions::from_request(body)?;
    let caching = cache_threshold(&prepared.settings, None)?;
    let (account, instance) = (param(&p, "account_id"), param(&p, "instance_id"));
    let scope = cache_scope(account, instance);
    // Everything the answer depends on besides the question.
    let context = json!([
        options.model,
        options.system_prompt,
        options.params.max_tokens,
        options.params.temperature,
        options.params.seed,
        prepared.req.retrieval,
        body.get("reranking"),
        body.get("rewrite_query")
    ])
    .to_string();
    let question = prepared.req.query.clone();
    if let Some(threshold) = caching
        && let Some(hit) = state
            .search_cache
            .get(&scope, &context, &question, threshold)
    {
        return Ok(with_cache_status(fixed(stream, hit), "HIT"));
    }
    let found = found_for(&state, &p, &mut prepared).await?;
    let result = page(&prepared.req.search_query, &found);
    if found.is_empty() {
        return Ok(fixed(stream, answered(result, NO_MATCH_ANSWER)));
    }
    let conversation = vec![ValidMessage::new("user", question.clone())];
    let mut answering = start(
        &state,
        account,
        &prepared.settings,
        conversation,
        &found,
        options,
    )
    .await?;
    let resolved = answering.generation.resolved.clone();
    let remember = caching.map(|_| CacheSlot::new(&state, scope, context, question));
    let store = move |page: &Value| {
        if let Some(slot) = &remember {
            slot.put(page.clone());
        }
    };
    let mut response = if stream {
        let mut text = String::new();
        let events = text_stream(&state, answering).map(move |item| {
            Ok::<_, std::convert::Infallible>(match item {
                StreamItem::Text(t) => {
                    text.push_str(&t);
                    Event::default().data(json!({"response": t}).to_string())
                }
                StreamItem::End { .. } => {
                    store(&answered(result.clone(), &text));
                    Event::default().data("[DONE]")
                }
                StreamItem::Failed => Event::default().data("[DONE]"),
            })
        });
        Sse::new(events).into_response()
    } else {
        let (text, _, _) = finish(&state, &mut answering).await?;
        let page = answered(result, &text);
        store(&page);
        Json(Envelope::ok(page)).into_response()
    };
    tag_response(&mut response, &resolved);
    Ok(with_cache_status(
        response,
        if caching.is_some() { "MISS" } else { "BYPASS" },
    ))
}

/// `PATCH .../autorag/rags/{name}/sync`: starts a sync (or reports the
/// one running) as `{job_id}`.
pub async fn sync(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (account, id) = (param(&p, "account_id"), param(&p, "instance_id"));
    find(&state, account, id)?;
    let job = start_job(&state, account, id, "user")?;
    Ok(Json(Envelope::ok(json!({"job_id": job.id}))).into_response())
}
