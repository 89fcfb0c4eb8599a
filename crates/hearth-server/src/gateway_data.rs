//! The AI Gateway data plane (`/v1/{account}/{gateway}/...`) for Hearth's
//! own provider, `workers-ai`: the provider-native path
//! (`.../workers-ai/@cf/...`) and the OpenAI-compatible
//! `.../compat/chat/completions` with `workers-ai/@cf/...` model names.
//! Requests reach the Workers AI handlers in-process (no HTTP hop) through
//! the gateway's cache and leave a log entry (`cf-aig-log-id`) written by a
//! background thread, so logging never blocks or slows a request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_gateway::cache::{Cached, ResponseCache, custom_key, key};
use hearth_gateway::{AigHeaders, GatewayError, log_id};
use hearth_types::{ApiError, Envelope, ErrorCode, ResultInfo};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::Failure;

/// Largest response the cache keeps (Cloudflare's limit is 25 MB).
const MAX_CACHED_BYTES: usize = 25 << 20;
/// How much of a body a log entry keeps.
const LOG_HEAD_BYTES: usize = 4096;

/// The gateway's shared pieces: response cache and the log writer's queue.
pub struct GatewayRuntime {
    cache: ResponseCache,
    /// Cache misses being fetched, by cache key.
    inflight: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Cached>>>>,
    limiter: hearth_gateway::limits::GatewayLimiter,
    logs: SyncSender<(String, String, Value)>,
}

impl GatewayRuntime {
    pub fn start(app: Arc<hearth_runtime::App>) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(10_000);
        let spawned = std::thread::Builder::new()
            .name("hearth-gateway-logs".into())
            .spawn(move || write_logs(app, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "gateway log writer did not start; logs will be dropped");
        }
        Arc::new(Self {
            cache: ResponseCache::new(256 << 20),
            inflight: Default::default(),
            limiter: Default::default(),
            logs: tx,
        })
    }
}

/// Writes log entries in batches; exits when every sender is gone, after
/// writing what was queued.
fn write_logs(app: Arc<hearth_runtime::App>, rx: Receiver<(String, String, Value)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        if let Err(e) = app.meter().store().gateway_logs_insert(&batch) {
            tracing::error!(error = %e, count = batch.len(), "could not store gateway logs");
        }
    }
}

fn gateway_failure(e: GatewayError) -> Failure {
    Failure(ApiError::from(e))
}

fn param(p: &HashMap<String, String>, key: &str) -> String {
    p.get(key).cloned().unwrap_or_default()
}

fn head(bytes: &[u8]) -> String {
    let end = bytes.len().min(LOG_HEAD_BYTES);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Tokens a Workers AI or OpenAI-shaped answer reports.
fn tokens(body: &Value) -> (Option<u64>, Option<u64>) {
    let usage = body
        .get("result")
        .and_then(|r| r.get("usage"))
        .or_else(|| body.get("usage"));
    match usage {
        Some(u) => (
            u.get("prompt_tokens").and_then(Value::as_u64),
            u.get("completion_tokens").and_then(Value::as_u64),
        ),
        None => (None, None),
    }
}

struct Call {
    account: String,
    gateway: String,
    model: String,
    path: String,
}

async fn proxy<F, Fut>(
    state: AppState,
    call: Call,
    headers: HeaderMap,
    body: bytes::Bytes,
    upstream: F,
) -> Result<Response, Failure>
where
    F: FnOnce(AppState, bytes::Bytes) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let started = Instant::now();
    let store = state.app.meter().store();
    let gateway = store
        .gateway_get(&call.account, &call.gateway)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(|| gateway_failure(GatewayError::NotFound(call.gateway.clone())))?;
    let aig = AigHeaders::parse(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map_err(gateway_failure)?;
    if gateway
        .settings
        .get("authentication")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let token = headers
            .get("cf-aig-authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let owner = token.and_then(|t| state.app.accounts().authenticate(t.trim()));
        if owner.as_deref() != Some(call.account.as_str()) {
            return Err(Failure(ApiError::new(
                ErrorCode::AuthenticationError,
                "Authentication error: this gateway requires `cf-aig-authorization: Bearer <token>`",
            )));
        }
    }
    let now = state.app.meter().now_ms();
    if let Err(retry_ms) = state.gateway.limiter.take(&call.account, &gateway, now) {
        return Err(Failure(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "Rate limited by gateway `{}`; retry in {} s",
                call.gateway,
                (retry_ms + 999) / 1000
            ),
        )));
    }
    let streaming = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("stream").and_then(Value::as_bool))
        .unwrap_or(false);
    let ttl = aig.effective_ttl(&gateway);
    let cacheable = ttl > 0 && !streaming;
    let generation = if gateway
        .settings
        .get("cache_invalidate_on_update")
        .and_then(Value::as_bool)
        == Some(true)
    {
        gateway.modified_ms
    } else {
        0
    };
    let cache_key = match &aig.cache_key {
        Some(k) => custom_key(&call.account, &call.gateway, generation, k),
        None => key(&call.account, &call.gateway, generation, &call.path, &body),
    };
    let rt = Arc::clone(&state.gateway);

    let from_cache = |hit: &Cached, cached: bool| {
        let parsed: Value = serde_json::from_slice(&hit.body).unwrap_or(Value::Null);
        let response = Response::builder()
            .status(hit.status)
            .header(CONTENT_TYPE, hit.content_type.clone())
            .body(Body::from(hit.body.clone()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        (
            response,
            hit.status,
            head(&hit.body),
            cached,
            tokens(&parsed),
        )
    };
    let lookup = (cacheable && !aig.skip_cache)
        .then(|| rt.cache.get(&cache_key, now))
        .flatten();
    let (mut response, status, response_head, cached, (tokens_in, tokens_out)) = match lookup {
        Some(hit) => from_cache(&hit, true),
        None if cacheable && !aig.skip_cache => {
            // Identical requests in flight share one upstream call: the
            // first runs it, the others wait for its answer (and count as hits).
            let cell = {
                let mut inflight = rt.inflight.lock().unwrap_or_else(|e| e.into_inner());
                Arc::clone(inflight.entry(cache_key.clone()).or_default())
            };
            let led = std::sync::atomic::AtomicBool::new(false);
            let shared = cell
                .get_or_init(|| async {
                    led.store(true, std::sync::atomic::Ordering::Relaxed);
                    let response = upstream(state.clone(), body.clone()).await;
                    let status = response.status().as_u16();
                    let (parts, response_body) = response.into_parts();
                    let bytes = axum::body::to_bytes(response_body, MAX_CACHED_BYTES)
                        .await
                        .unwrap_or_default();
                    let value = Cached {
                        status,
                        content_type: parts
                            .headers
                            .get(CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("application/json")
                            .to_string(),
                        body: bytes.to_vec(),
                    };
                    if status == 200 {
                        rt.cache.put(cache_key.clone(), value.clone(), ttl, now);
                    }
                    value
                })
                .await
                .clone();
            let leader = led.load(std::sync::atomic::Ordering::Relaxed);
            if leader {
                let mut inflight = rt.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if inflight
                    .get(&cache_key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell))
                {
                    inflight.remove(&cache_key);
                }
            }
            from_cache(&shared, !leader)
        }
        None => {
            let response = upstream(state.clone(), body.clone()).await;
            let status = response.status().as_u16();
            let is_stream = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if is_stream {
                // Chunks pass through as they come; nothing to cache.
                (response, status, String::new(), false, (None, None))
            } else {
                let (parts, response_body) = response.into_parts();
                let bytes = axum::body::to_bytes(response_body, MAX_CACHED_BYTES)
                    .await
                    .unwrap_or_default();
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let logged_head = head(&bytes);
                (
                    Response::from_parts(parts, Body::from(bytes)),
                    status,
                    logged_head,
                    false,
                    tokens(&parsed),
                )
            }
        }
    };

    let headers_out = response.headers_mut();
    if cacheable {
        headers_out.insert(
            "cf-aig-cache-status",
            HeaderValue::from_static(if cached { "HIT" } else { "MISS" }),
        );
    }
    if aig.collects_log(&gateway) {
        let id = log_id(now, rand::random::<u128>());
        let neurons = state
            .app
            .catalog()
            .get(&call.model)
            .map(|e| {
                e.neurons_for_tokens(
                    tokens_in.unwrap_or(0) as u32,
                    tokens_out.unwrap_or(0) as u32,
                )
            })
            .unwrap_or(0.0);
        let entry = json!({
            "id": id,
            "created_at": hearth_vector::iso8601(now),
            "provider": "workers-ai",
            "model": call.model,
            "path": call.path,
            "duration": started.elapsed().as_millis() as u64,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": neurons / 1000.0 * hearth_runtime::metering::USD_PER_1000_NEURONS,
            "cached": cached,
            "success": (200..300).contains(&status),
            "status_code": status,
            "step": 0,
            "metadata": aig.metadata.as_ref().map(|m| Value::Object(m.clone()).to_string()),
            "event_id": aig.event_id,
            "request_type": "provider",
            "request_content_type": "application/json",
            "request_size": body.len(),
            "request_head": head(&body),
            "response_head": response_head,
        });
        match rt
            .logs
            .try_send((call.account.clone(), call.gateway.clone(), entry))
        {
            Ok(()) => {
                if let Ok(v) = HeaderValue::from_str(&id) {
                    headers_out.insert("cf-aig-log-id", v.clone());
                    headers_out.insert("cf-aig-request-id", v);
                }
            }
            Err(TrySendError::Full(_)) => tracing::warn!("gateway log queue full; entry dropped"),
            Err(TrySendError::Disconnected(_)) => tracing::error!("gateway log writer is gone"),
        }
    }
    headers_out.insert("cf-aig-step", HeaderValue::from_static("0"));
    Ok(response)
}

async fn read_body(
    state: &AppState,
    request: Request,
) -> Result<(HeaderMap, bytes::Bytes), Failure> {
    let (parts, body) = request.into_parts();
    let bytes = crate::body::read(body, state.body_limit()).await?;
    Ok((parts.headers, bytes))
}

/// `POST /v1/{account}/{gateway}/workers-ai/{model}`.
pub async fn workers_ai(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (headers, body) = read_body(&state, request).await?;
    let account = param(&p, "account_id");
    let model = param(&p, "model");
    let call = Call {
        account: account.clone(),
        gateway: param(&p, "gateway_id"),
        model: model.clone(),
        path: format!("workers-ai/{model}"),
    };
    proxy(
        state,
        call,
        headers.clone(),
        body,
        move |state, body| async move {
            let mut params = HashMap::new();
            params.insert("account_id".to_string(), account.clone());
            params.insert("model".to_string(), model.clone());
            let mut builder = Request::builder()
                .method("POST")
                .uri(format!("/client/v4/accounts/{account}/ai/run/{model}"));
            if let Some(ct) = headers.get(CONTENT_TYPE) {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            match builder.body(Body::from(body)) {
                Ok(req) => {
                    crate::workers_ai::run(State(state), Path(params), Query(HashMap::new()), req)
                        .await
                        .into_response()
                }
                Err(_) => Failure(ApiError::plain(ErrorCode::Internal)).into_response(),
            }
        },
    )
    .await
}

/// `POST /v1/{account}/{gateway}/compat/chat/completions` with
/// `model: "workers-ai/@cf/..."`.
pub async fn compat_chat(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (headers, body) = read_body(&state, request).await?;
    let mut json: Value = serde_json::from_slice(&body).map_err(|e| {
        Failure(ApiError::invalid_input(format!(
            "body is not valid JSON: {e}"
        )))
    })?;
    let named = json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(model) = named.strip_prefix("workers-ai/") else {
        let provider = named.split('/').next().unwrap_or("");
        return Err(gateway_failure(GatewayError::Invalid(format!(
            "`model` must be `provider/model`; this Hearth serves the `workers-ai` provider (got {provider:?}); upstream providers are not configured"
        ))));
    };
    let model = model.to_string();
    json["model"] = Value::String(model.clone());
    let rewritten = bytes::Bytes::from(json.to_string());
    let account = param(&p, "account_id");
    let call = Call {
        account: account.clone(),
        gateway: param(&p, "gateway_id"),
        model,
        path: "compat/chat/completions".into(),
    };
    proxy(
        state,
        call,
        headers,
        rewritten,
        move |state, body| async move {
            let mut params = HashMap::new();
            params.insert("account_id".to_string(), account.clone());
            match Request::builder()
                .method("POST")
                .uri(format!(
                    "/client/v4/accounts/{account}/ai/v1/chat/completions"
                ))
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body))
            {
                Ok(req) => crate::openai::chat_completions(State(state), Path(params), req)
                    .await
                    .into_response(),
                Err(_) => Failure(ApiError::plain(ErrorCode::Internal)).into_response(),
            }
        },
    )
    .await
}

/// `GET .../ai-gateway/gateways/{gateway_id}/logs` (page, per_page,
/// order_by_direction).
pub async fn list_logs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id");
    let gateway = param(&p, "gateway_id");
    let store = state.app.meter().store();
    store
        .gateway_get(&account, &gateway)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(|| gateway_failure(GatewayError::NotFound(gateway.clone())))?;
    let (page, per_page) = crate::gateway::page_params(&q, 50)?;
    let ascending = match q.get("order_by_direction").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(gateway_failure(GatewayError::Invalid(format!(
                "`order_by_direction` must be asc or desc, got `{other}`"
            ))));
        }
    };
    let (rows, total) = store
        .gateway_logs(
            &account,
            &gateway,
            (page - 1) * per_page,
            per_page,
            ascending,
        )
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    let info = ResultInfo {
        page,
        per_page,
        count: rows.len() as u64,
        total_count: total,
    };
    Ok(axum::Json(Envelope::with_info(rows, info)).into_response())
}

/// `GET .../ai-gateway/gateways/{gateway_id}/logs/{id}`.
pub async fn get_log(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let entry = state
        .app
        .meter()
        .store()
        .gateway_log(
            &param(&p, "account_id"),
            &param(&p, "gateway_id"),
            &param(&p, "log_id"),
        )
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(|| {
            Failure(ApiError::new(
                ErrorCode::GatewayNotFound,
                format!("no log `{}` in this gateway", param(&p, "log_id")),
            ))
        })?;
    Ok(axum::Json(Envelope::ok(entry)).into_response())
}

/// `PATCH .../ai-gateway/gateways/{gateway_id}/logs/{id}`: human feedback
/// (`feedback` 1 or -1), a `score` (0-100) and `metadata` (up to five
/// string/number/boolean values), each nullable.
pub async fn edit_log(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (_, body) = read_body(&state, request).await?;
    let invalid = |m: String| gateway_failure(GatewayError::Invalid(m));
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    let (account, gateway, id) = (
        param(&p, "account_id"),
        param(&p, "gateway_id"),
        param(&p, "log_id"),
    );
    let store = state.app.meter().store();
    let not_found = || {
        Failure(ApiError::new(
            ErrorCode::GatewayNotFound,
            format!("no log `{id}` in this gateway"),
        ))
    };
    let mut entry = store
        .gateway_log(&account, &gateway, &id)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(not_found)?;
    for (key, value) in patch {
        match (key.as_str(), &value) {
            ("feedback", Value::Null) => {}
            ("feedback", v) if v.as_f64() == Some(1.0) || v.as_f64() == Some(-1.0) => {}
            ("feedback", v) => {
                return Err(invalid(format!(
                    "`feedback` must be 1, -1 or null, got {v}"
                )));
            }
            ("score", Value::Null) => {}
            ("score", v) if v.as_f64().is_some_and(|s| (0.0..=100.0).contains(&s)) => {}
            ("score", v) => {
                return Err(invalid(format!(
                    "`score` must be a number from 0 to 100 or null, got {v}"
                )));
            }
            ("metadata", Value::Null) => {}
            ("metadata", Value::Object(m)) => {
                if m.len() > 5
                    || m.values()
                        .any(|v| v.is_object() || v.is_array() || v.is_null())
                {
                    return Err(invalid(
                        "`metadata` takes up to 5 string, number or boolean values".into(),
                    ));
                }
            }
            ("metadata", v) => {
                return Err(invalid(format!(
                    "`metadata` must be an object or null, got {v}"
                )));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "unknown field `{other}` (feedback, score and metadata can be edited)"
                )));
            }
        }
        let stored = if key == "metadata" && value.is_object() {
            Value::String(value.to_string())
        } else {
            value
        };
        entry[key.as_str()] = stored;
    }
    store
        .gateway_log_replace(&account, &gateway, &id, &entry)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    Ok(axum::Json(Envelope::ok(entry)).into_response())
}
