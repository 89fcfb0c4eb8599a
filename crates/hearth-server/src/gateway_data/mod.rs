//! The AI Gateway data plane (`/v1/{account}/{gateway}/...`): the
//! provider-native path (`.../{provider}/{path}`), the universal endpoint
//! (`POST .../{gateway}` with an array of steps tried in order), and
//! `.../compat/chat/completions` with `provider/model` names. `workers-ai`
//! is this server's own engine, reached in-process; other providers are
//! OpenAI-compatible upstreams from the config (`[gateway.providers.*]`) or
//! the custom-providers API (`custom-<slug>`), reached over HTTP with
//! answers streamed through as they come.
//!
//! Around every call: gateway authentication and rate limits, the exact-
//! match cache (identical requests in flight share one call), retries and
//! timeouts, and a log entry written by a background thread, so logging
//! never blocks a request. Cached responses are mirrored in the store and
//! come back after a restart.

mod forward;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use hearth_gateway::cache::{Cached, ResponseCache, custom_key, key};
use hearth_gateway::providers::{CustomProviders, Upstream};
use hearth_gateway::request::{CustomCost, RetryPolicy, StepConfig, parse_steps};
use hearth_gateway::{AigHeaders, GatewayError, GatewayRow, log_id};
use hearth_store::{CacheRow, LogRecord};
use hearth_types::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::TokenSource;
use crate::error::Failure;
use crate::gateway::{find_gateway, gateway_failure, param};
pub use forward::{Call, Target};

/// Largest response the cache keeps (Cloudflare's limit is 25 MB).
const MAX_CACHED_BYTES: usize = 25 << 20;
/// How much of a body the list view of a log shows.
const LOG_HEAD_BYTES: usize = 4096;
/// Bodies above this are not kept with their log (Cloudflare: 10 MB).
const MAX_LOG_BODY: usize = 10 << 20;
/// How long the writer waits for more entries to store together.
const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(10);
/// Bytes of log bodies waiting for the writer; past it entries are dropped.
const MAX_QUEUED_LOG_BYTES: usize = 256 << 20;

enum Write {
    Log(Box<LogRecord>),
    CachePut(CacheRow),
    CacheDelete(Vec<String>),
    /// Answered once everything sent before it is stored.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The gateway's shared pieces.
pub struct GatewayRuntime {
    cache: ResponseCache,
    /// Cache misses being fetched, by cache key.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Cached>>>>,
    limiter: hearth_gateway::limits::GatewayLimiter,
    writes: SyncSender<Write>,
    queued_bytes: Arc<AtomicUsize>,
    http: reqwest::Client,
    /// Upstreams of the config file, by slug.
    upstreams: HashMap<String, Upstream>,
    pub(crate) known: hearth_gateway::KnownGateways,
}

impl GatewayRuntime {
    pub fn start(app: Arc<hearth_runtime::App>) -> Arc<Self> {
        let config = &app.config().gateway;
        let cache = ResponseCache::new(config.cache_bytes);
        let now = app.meter().now_ms();
        match app.meter().store().cache_load(now, config.cache_bytes) {
            Ok(rows) => {
                for row in rows {
                    let value = Cached {
                        status: row.status,
                        content_type: row.content_type,
                        tokens: tokens(&row.body),
                        body: row.body.into(),
                    };
                    cache.put_until(row.key, value, row.expires_ms, now);
                }
            }
            Err(e) => tracing::warn!(error = %e, "gateway cache not restored"),
        }
        let upstreams = config
            .providers
            .iter()
            .map(|(slug, u)| {
                let api_key = u.api_key.clone().or_else(|| {
                    u.api_key_env
                        .as_ref()
                        .and_then(|var| std::env::var(var).ok())
                });
                let upstream = Upstream {
                    slug: slug.clone(),
                    base_url: u.base_url.trim_end_matches('/').to_string(),
                    api_key,
                    headers: Vec::new(),
                    prices: u.prices.clone(),
                    version: 0,
                };
                (slug.clone(), upstream)
            })
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let (tx, rx) = std::sync::mpsc::sync_channel(10_000);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&queued_bytes);
        let spawned = std::thread::Builder::new()
            .name("hearth-gateway-writer".into())
            .spawn(move || write_loop(app, rx, counter));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "gateway writer did not start; logs will be dropped");
        }
        Arc::new(Self {
            cache,
            inflight: Default::default(),
            limiter: Default::default(),
            writes: tx,
            queued_bytes,
            http,
            upstreams,
            known: Default::default(),
        })
    }

    /// Waits until every queued log entry and cache copy is stored (at a
    /// clean shutdown).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
        }
    }

    fn queue(&self, write: Write) {
        match self.writes.try_send(write) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("gateway writer queue full; a write was dropped")
            }
            Err(TrySendError::Disconnected(_)) => tracing::error!("gateway writer is gone"),
        }
    }

    fn queue_log(&self, record: LogRecord) -> bool {
        let size = record.request_body.len() + record.response_body.len();
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_LOG_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            tracing::warn!("gateway log queue over its byte budget; entry dropped");
            return false;
        }
        match self.writes.try_send(Write::Log(Box::new(record))) {
            Ok(()) => true,
            Err(e) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                tracing::warn!(error = %e, "gateway log entry dropped");
                false
            }
        }
    }
}

/// Stores log entries and cache copies in batches; exits when every sender
/// is gone, after storing what was queued.
fn write_loop(app: Arc<hearth_runtime::App>, rx: Receiver<Write>, queued: Arc<AtomicUsize>) {
    let store = app.meter().store();
    while let Ok(first) = rx.recv() {
        // Entries that arrive within a few milliseconds share a transaction:
        // under load that is one commit per batch instead of per request.
        let until = Instant::now() + WRITE_LINGER;
        let mut pending = vec![first];
        while pending.len() < 500 && !matches!(pending.last(), Some(Write::Flush(_))) {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(w) => pending.push(w),
                Err(_) => break,
            }
        }
        let mut logs = Vec::new();
        let mut acks = Vec::new();
        for w in pending {
            match w {
                Write::Log(r) => logs.push(*r),
                Write::CachePut(row) => {
                    if let Err(e) = store.cache_put(&row) {
                        tracing::warn!(error = %e, "could not store a cached response");
                    }
                }
                Write::CacheDelete(keys) => {
                    if let Err(e) = store.cache_delete(&keys) {
                        tracing::warn!(error = %e, "could not delete cached responses");
                    }
                }
                Write::Flush(ack) => acks.push(ack),
            }
        }
        if !logs.is_empty() {
            let bytes: usize = logs
                .iter()
                .map(|r| r.request_body.len() + r.response_body.len())
                .sum();
            match store.gateway_logs_insert(&logs) {
                Ok(0) => {}
                Ok(dropped) => {
                    tracing::debug!(dropped, "log_management STOP_INSERTING dropped entries")
                }
                Err(e) => {
                    tracing::error!(error = %e, count = logs.len(), "could not store gateway logs")
                }
            }
            queued.fetch_sub(bytes, Ordering::Relaxed);
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn head(bytes: &[u8]) -> String {
    let end = bytes.len().min(LOG_HEAD_BYTES);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn usage_of(body: &Value) -> Option<(Option<u64>, Option<u64>)> {
    let usage = body
        .get("result")
        .and_then(|r| r.get("usage"))
        .or_else(|| body.get("usage"))
        .filter(|u| u.is_object())?;
    Some((
        usage.get("prompt_tokens").and_then(Value::as_u64),
        usage.get("completion_tokens").and_then(Value::as_u64),
    ))
}

/// Tokens an answer reports: a JSON body's `usage` (Workers AI or OpenAI
/// shape), or the last `usage` of a server-sent-event stream.
fn tokens(body: &[u8]) -> (Option<u64>, Option<u64>) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return usage_of(&v).unwrap_or((None, None));
    }
    let text = String::from_utf8_lossy(body);
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find_map(|v| usage_of(&v))
        .unwrap_or((None, None))
}

/// The two fields of a request body the gateway acts on, read without
/// building the whole body as a JSON tree.
#[derive(Default, serde::Deserialize)]
struct Peek {
    model: Option<String>,
    stream: Option<bool>,
}

fn peek(body: &[u8]) -> Peek {
    serde_json::from_slice(body).unwrap_or_default()
}

/// A gateway opened for one request: found, authenticated, rate-limited.
struct Opened {
    account: String,
    gateway: Arc<GatewayRow>,
    forward_authorization: bool,
}

fn open(
    state: &AppState,
    account: &str,
    gateway_id: &str,
    source: TokenSource,
) -> Result<Opened, Failure> {
    let gateway = find_gateway(state, account, gateway_id)?;
    let authenticated = gateway
        .settings
        .get("authentication")
        .and_then(Value::as_bool)
        == Some(true);
    if authenticated && source != TokenSource::AigHeader {
        return Err(Failure(ApiError::new(
            ErrorCode::AuthenticationError,
            "Authentication error: this gateway requires `cf-aig-authorization: Bearer <token>`",
        )));
    }
    let now = state.app.meter().now_ms();
    if let Err(retry_ms) = state.gateway.limiter.take(account, &gateway, now) {
        return Err(Failure(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "Rate limited by gateway `{gateway_id}`; retry in {} s",
                (retry_ms + 999) / 1000
            ),
        )));
    }
    Ok(Opened {
        account: account.to_string(),
        gateway,
        forward_authorization: source == TokenSource::AigHeader,
    })
}

/// One provider call as the gateway sees it.
struct Planned {
    provider: String,
    /// `provider/path` as logged and keyed in the cache.
    path: String,
    model: String,
    /// The body asks for a stream (never cached).
    streaming: bool,
    aig: AigHeaders,
    policy: RetryPolicy,
    call: Call,
}

/// The provider behind a slug, or a clear error naming it.
fn upstream(state: &AppState, account: &str, provider: &str) -> Result<Upstream, Failure> {
    if let Some(u) = state.gateway.upstreams.get(provider) {
        return Ok(u.clone());
    }
    if let Some(slug) = provider.strip_prefix("custom-") {
        let providers = CustomProviders {
            store: state.app.meter().store(),
        };
        return providers.upstream(account, slug).map_err(gateway_failure);
    }
    let mut known: Vec<&str> = state.gateway.upstreams.keys().map(String::as_str).collect();
    known.sort_unstable();
    Err(gateway_failure(GatewayError::Invalid(format!(
        "provider `{provider}` is not configured on this Hearth (providers: workers-ai{}{}; add others under [gateway.providers] or as custom providers)",
        if known.is_empty() { "" } else { ", " },
        known.join(", ")
    ))))
}

/// The target of `provider/path` on the provider-native path or in a step.
fn target(
    state: &AppState,
    account: &str,
    provider: &str,
    path: &str,
    query: Option<String>,
) -> Result<Target, Failure> {
    if provider == "workers-ai" {
        if path.starts_with("@cf/") || path.starts_with("@hf/") {
            return Ok(Target::WorkersAiRun {
                model: path.to_string(),
            });
        }
        if path == "v1/chat/completions" {
            return Ok(Target::WorkersAiChat);
        }
        return Err(gateway_failure(GatewayError::Invalid(format!(
            "workers-ai path `{path}` is neither a model id (`@cf/...`) nor `v1/chat/completions`"
        ))));
    }
    Ok(Target::Upstream {
        upstream: upstream(state, account, provider)?,
        path: path.to_string(),
        query,
    })
}

#[allow(clippy::too_many_arguments)]
fn plan(
    state: &AppState,
    opened: &Opened,
    provider: &str,
    path: &str,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
    body: bytes::Bytes,
    step: Option<&StepConfig>,
) -> Result<Planned, Failure> {
    let aig = AigHeaders::parse(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map_err(gateway_failure)?;
    let mut policy = RetryPolicy::resolve(&aig, &opened.gateway);
    if let Some(config) = step {
        policy = policy.with_step(config);
    }
    let target = target(state, &opened.account, provider, path, query)?;
    // The body is read once for both facts the gateway acts on.
    let peeked = peek(&body);
    let model = match &target {
        Target::WorkersAiRun { model } => model.clone(),
        _ => peeked.model.unwrap_or_default(),
    };
    Ok(Planned {
        provider: provider.to_string(),
        path: format!("{provider}/{path}"),
        model,
        streaming: peeked.stream.unwrap_or(false),
        aig,
        policy,
        call: Call {
            account: opened.account.clone(),
            target,
            method,
            body,
            headers,
            forward_authorization: opened.forward_authorization,
        },
    })
}

/// What a log entry knows before the answer; finished when it is complete.
struct LogDraft {
    runtime: Arc<GatewayRuntime>,
    record: LogRecord,
    started: Instant,
    pricing: Pricing,
}

enum Pricing {
    Custom(CustomCost),
    Upstream(Upstream, String),
    WorkersAi(Option<Box<hearth_catalog::ModelEntry>>),
}

impl LogDraft {
    fn finish(self, status: u16, cached: bool, content_type: Option<String>, body: &[u8]) {
        let usage = tokens(body);
        self.finish_with(status, cached, content_type, body, usage);
    }

    /// [`LogDraft::finish`] with the answer's token counts already read.
    fn finish_with(
        mut self,
        status: u16,
        cached: bool,
        content_type: Option<String>,
        body: &[u8],
        (tokens_in, tokens_out): (Option<u64>, Option<u64>),
    ) {
        let cost = match &self.pricing {
            Pricing::Custom(c) => c.cost(tokens_in, tokens_out),
            Pricing::Upstream(u, model) => u.cost(model, tokens_in, tokens_out),
            Pricing::WorkersAi(entry) => entry.as_ref().map(|e| {
                e.neurons_for_tokens(
                    tokens_in.unwrap_or(0) as u32,
                    tokens_out.unwrap_or(0) as u32,
                ) / 1000.0
                    * hearth_runtime::metering::USD_PER_1000_NEURONS
            }),
        };
        if let Value::Object(entry) = &mut self.record.entry {
            entry.insert(
                "duration".into(),
                json!(self.started.elapsed().as_millis() as u64),
            );
            entry.insert("tokens_in".into(), json!(tokens_in));
            entry.insert("tokens_out".into(), json!(tokens_out));
            entry.insert("cost".into(), json!(cost.unwrap_or(0.0)));
            entry.insert("cached".into(), json!(cached));
            entry.insert("success".into(), json!((200..300).contains(&status)));
            entry.insert("status_code".into(), json!(status));
            entry.insert("response_content_type".into(), json!(content_type));
            entry.insert("response_size".into(), json!(body.len()));
            entry.insert("response_head".into(), json!(head(body)));
            entry.insert(
                "response_head_complete".into(),
                json!(body.len() <= LOG_HEAD_BYTES),
            );
        }
        if body.len() <= MAX_LOG_BODY {
            self.record.response_body = body.to_vec();
        }
        self.runtime.queue_log(self.record);
    }
}

/// A response body passed through chunk by chunk while a copy is kept for
/// the log, which is written when the body ends or the client goes away.
struct Tee {
    inner: axum::body::BodyDataStream,
    kept: Vec<u8>,
    log: Option<(LogDraft, u16, Option<String>)>,
}

impl Stream for Tee {
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.kept.len() + chunk.len() <= MAX_LOG_BODY {
                    self.kept.extend_from_slice(chunk);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.write_log(),
            Poll::Pending => {}
        }
        polled
    }
}

impl Tee {
    fn write_log(&mut self) {
        if let Some((draft, status, content_type)) = self.log.take() {
            draft.finish(status, false, content_type, &self.kept);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.write_log();
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn from_cache(hit: &Cached) -> Response {
    Response::builder()
        .status(hit.status)
        .header(CONTENT_TYPE, hit.content_type.clone())
        .body(Body::from(hit.body.clone()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Runs one planned call through cache, retries and log; `step` is its
/// index on the universal endpoint (0 elsewhere).
async fn execute(
    state: &AppState,
    opened: &Opened,
    planned: Planned,
    step: usize,
    request_type: &'static str,
) -> Response {
    let rt = Arc::clone(&state.gateway);
    let now = state.app.meter().now_ms();
    let Planned {
        provider,
        path,
        model,
        streaming,
        aig,
        policy,
        call,
    } = planned;
    let ttl = aig.effective_ttl(&opened.gateway);
    let cacheable = ttl > 0 && !streaming;
    let generation = if opened
        .gateway
        .settings
        .get("cache_invalidate_on_update")
        .and_then(Value::as_bool)
        == Some(true)
    {
        opened.gateway.modified_ms
    } else {
        0
    };
    let cache_key = match &aig.cache_key {
        Some(k) => custom_key(&opened.account, &opened.gateway.id, generation, k),
        None => {
            let provider_version = match &call.target {
                Target::Upstream { upstream, .. } => upstream.version,
                _ => 0,
            };
            key(
                &opened.account,
                &opened.gateway.id,
                generation,
                &format!("{} {path} v{provider_version}", call.method),
                &call.body,
            )
        }
    };

    let id = log_id(now, rand::random::<u128>());
    let draft = aig.collects_log(&opened.gateway).then(|| {
        let max_logs = opened
            .gateway
            .settings
            .get("log_management")
            .and_then(Value::as_u64);
        let delete_oldest = opened
            .gateway
            .settings
            .get("log_management_strategy")
            .and_then(Value::as_str)
            == Some("DELETE_OLDEST");
        let pricing = match (&aig.custom_cost, &call.target) {
            (Some(c), _) => Pricing::Custom(*c),
            (None, Target::Upstream { upstream, .. }) => {
                Pricing::Upstream(upstream.clone(), model.clone())
            }
            (None, _) => Pricing::WorkersAi(state.app.catalog().get(&model).cloned().map(Box::new)),
        };
        let mut entry = Map::new();
        entry.insert("id".into(), json!(id));
        entry.insert("created_at".into(), json!(hearth_vector::iso8601(now)));
        entry.insert("provider".into(), json!(provider));
        entry.insert("model".into(), json!(model));
        entry.insert("path".into(), json!(path));
        entry.insert("step".into(), json!(step));
        entry.insert("custom_cost".into(), json!(aig.custom_cost.is_some()));
        entry.insert(
            "metadata".into(),
            json!(
                aig.metadata
                    .as_ref()
                    .map(|m| Value::Object(m.clone()).to_string())
            ),
        );
        entry.insert("event_id".into(), json!(aig.event_id));
        entry.insert("request_type".into(), json!(request_type));
        entry.insert(
            "request_content_type".into(),
            json!(content_type(&call.headers)),
        );
        entry.insert("request_size".into(), json!(call.body.len()));
        entry.insert("request_head".into(), json!(head(&call.body)));
        entry.insert(
            "request_head_complete".into(),
            json!(call.body.len() <= LOG_HEAD_BYTES),
        );
        LogDraft {
            runtime: Arc::clone(&rt),
            record: LogRecord {
                account: opened.account.clone(),
                gateway: opened.gateway.id.clone(),
                entry: Value::Object(entry),
                request_body: if call.body.len() <= MAX_LOG_BODY {
                    call.body.to_vec()
                } else {
                    Vec::new()
                },
                response_body: Vec::new(),
                max_logs,
                delete_oldest,
            },
            started: Instant::now(),
            pricing,
        }
    });
    let logged = draft.is_some();

    let lookup = (cacheable && !aig.skip_cache)
        .then(|| rt.cache.get(&cache_key, now))
        .flatten();
    let (mut response, cached) = match lookup {
        Some(hit) => {
            if let Some(d) = draft {
                d.finish_with(
                    hit.status,
                    true,
                    Some(hit.content_type.clone()),
                    &hit.body,
                    hit.tokens,
                );
            }
            (from_cache(&hit), true)
        }
        None if cacheable && !aig.skip_cache => {
            // Identical requests in flight share one provider call: the
            // first runs it, the others wait for its answer (and are hits).
            let cell = {
                let mut inflight = rt.inflight.lock().unwrap_or_else(|e| e.into_inner());
                Arc::clone(inflight.entry(cache_key.clone()).or_default())
            };
            let led = AtomicBool::new(false);
            let shared = cell
                .get_or_init(|| async {
                    led.store(true, Ordering::Relaxed);
                    let response = forward::with_retries(state, &rt.http, &call, policy).await;
                    let status = response.status().as_u16();
                    let (parts, body) = response.into_parts();
                    let value = match axum::body::to_bytes(body, MAX_CACHED_BYTES).await {
                        Ok(bytes) => Cached {
                            status,
                            content_type: content_type(&parts.headers)
                                .unwrap_or_else(|| "application/json".into()),
                            tokens: tokens(&bytes),
                            body: bytes,
                        },
                        Err(_) => Cached {
                            status: 502,
                            content_type: "application/json".into(),
                            tokens: (None, None),
                            body: serde_json::to_vec(&hearth_types::Envelope::error(
                                &ApiError::new(
                                    ErrorCode::GatewayUpstream,
                                    "the provider's answer broke off or is over 25 MB",
                                ),
                            ))
                            .unwrap_or_default()
                            .into(),
                        },
                    };
                    if (200..300).contains(&value.status) {
                        let expires_ms = now.saturating_add(ttl as i64 * 1000);
                        let evicted =
                            rt.cache
                                .put_until(cache_key.clone(), value.clone(), expires_ms, now);
                        rt.queue(Write::CachePut(CacheRow {
                            key: cache_key.clone(),
                            expires_ms,
                            stored_ms: now,
                            status: value.status,
                            content_type: value.content_type.clone(),
                            body: value.body.to_vec(),
                        }));
                        if !evicted.is_empty() {
                            rt.queue(Write::CacheDelete(evicted));
                        }
                    }
                    value
                })
                .await
                .clone();
            let leader = led.load(Ordering::Relaxed);
            if leader {
                let mut inflight = rt.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if inflight
                    .get(&cache_key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell))
                {
                    inflight.remove(&cache_key);
                }
            }
            if let Some(d) = draft {
                d.finish_with(
                    shared.status,
                    !leader,
                    Some(shared.content_type.clone()),
                    &shared.body,
                    shared.tokens,
                );
            }
            (from_cache(&shared), !leader)
        }
        None => {
            let response = forward::with_retries(state, &rt.http, &call, policy).await;
            let response = match draft {
                None => response,
                Some(d) => {
                    let status = response.status().as_u16();
                    let ct = content_type(response.headers());
                    let (parts, body) = response.into_parts();
                    let tee = Tee {
                        inner: body.into_data_stream(),
                        kept: Vec::new(),
                        log: Some((d, status, ct)),
                    };
                    Response::from_parts(parts, Body::from_stream(tee))
                }
            };
            (response, false)
        }
    };
    let headers = response.headers_mut();
    if cacheable {
        headers.insert(
            "cf-aig-cache-status",
            HeaderValue::from_static(if cached { "HIT" } else { "MISS" }),
        );
    }
    if logged && let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("cf-aig-log-id", v.clone());
        headers.insert("cf-aig-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&step.to_string()) {
        headers.insert("cf-aig-step", v);
    }
    response
}

async fn read_request(
    state: &AppState,
    request: Request,
) -> Result<(Method, HeaderMap, Option<String>, TokenSource, bytes::Bytes), Failure> {
    let (parts, body) = request.into_parts();
    let bytes = crate::body::read(body, state.body_limit()).await?;
    let source = parts
        .extensions
        .get::<TokenSource>()
        .copied()
        .unwrap_or(TokenSource::Authorization);
    Ok((
        parts.method,
        parts.headers,
        parts.uri.query().map(str::to_string),
        source,
        bytes,
    ))
}

/// `ANY /v1/{account}/{gateway}/{provider}/{path...}`: the provider-native path.
pub async fn provider(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (method, headers, query, source, body) = read_request(&state, request).await?;
    let opened = open(
        &state,
        param(&p, "account_id"),
        param(&p, "gateway_id"),
        source,
    )?;
    let planned = plan(
        &state,
        &opened,
        param(&p, "provider"),
        param(&p, "path"),
        query,
        method,
        headers,
        body,
        None,
    )?;
    Ok(execute(&state, &opened, planned, 0, "provider").await)
}

/// `POST /v1/{account}/{gateway}/compat/chat/completions` with
/// `model: "{provider}/{model}"`.
pub async fn compat_chat(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (_, headers, _, source, body) = read_request(&state, request).await?;
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
    let Some((provider, model)) = named
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
    else {
        return Err(gateway_failure(GatewayError::Invalid(format!(
            "`model` must be `provider/model` (e.g. `workers-ai/@cf/meta/llama-3.1-8b-instruct`), got {named:?}"
        ))));
    };
    let opened = open(
        &state,
        param(&p, "account_id"),
        param(&p, "gateway_id"),
        source,
    )?;
    json["model"] = Value::String(model.to_string());
    let path = if provider == "workers-ai" {
        "v1/chat/completions"
    } else {
        "chat/completions"
    };
    let mut planned = plan(
        &state,
        &opened,
        provider,
        path,
        None,
        Method::POST,
        headers,
        bytes::Bytes::from(json.to_string()),
        None,
    )?;
    planned.path = "compat/chat/completions".into();
    planned.model = model.to_string();
    Ok(execute(&state, &opened, planned, 0, "compat").await)
}

/// `POST /v1/{account}/{gateway}`: the universal endpoint. Steps are tried
/// in order; a step that fails (error status, timeout, unreachable) after
/// its retries hands over to the next; `cf-aig-step` names the one that
/// answered.
pub async fn universal(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    let (_, headers, _, source, body) = read_request(&state, request).await?;
    let steps = parse_steps(&body).map_err(gateway_failure)?;
    let opened = open(
        &state,
        param(&p, "account_id"),
        param(&p, "gateway_id"),
        source,
    )?;
    // Every step is checked before any runs, so a typo in a fallback is
    // reported at once rather than after the primary fails.
    let mut planned = Vec::with_capacity(steps.len());
    for step in &steps {
        // The step's headers win over the request's.
        let mut merged = headers.clone();
        for (k, v) in &step.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                merged.insert(name, value);
            }
        }
        merged.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (path, query) = match step.endpoint.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (step.endpoint.clone(), None),
        };
        planned.push(plan(
            &state,
            &opened,
            &step.provider,
            &path,
            query,
            Method::POST,
            merged,
            bytes::Bytes::from(step.query.to_string()),
            Some(&step.config),
        )?);
    }
    let last = planned.len() - 1;
    for (i, p) in planned.into_iter().enumerate() {
        let response = execute(&state, &opened, p, i, "universal").await;
        if response.status().is_success() || i == last {
            return Ok(response);
        }
        tracing::debug!(step = i, status = %response.status(), "universal step failed; falling back");
    }
    Err(Failure(ApiError::plain(ErrorCode::Internal)))
}

/// Gateway options of the Workers AI run endpoint and binding
/// (`gateway: {id, skipCache, cacheTtl, cacheKey, metadata, collectLog, ...}`)
/// as the `cf-aig-*` headers they stand for.
pub fn options_as_headers(options: &Value) -> Result<(String, HeaderMap), Failure> {
    let invalid = |m: String| gateway_failure(GatewayError::Invalid(m));
    let Value::Object(o) = options else {
        return Err(invalid("`gateway` must be an object with an `id`".into()));
    };
    let id = match o.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return Err(invalid(
                "`gateway.id` is required (the gateway's id)".into(),
            ));
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in o {
        let name = match k.as_str() {
            "id" => continue,
            "skipCache" => "cf-aig-skip-cache",
            "cacheTtl" => "cf-aig-cache-ttl",
            "cacheKey" => "cf-aig-cache-key",
            "metadata" => "cf-aig-metadata",
            "collectLog" => "cf-aig-collect-log",
            "eventId" => "cf-aig-event-id",
            "requestTimeoutMs" => "cf-aig-request-timeout",
            "retries" => {
                let Value::Object(r) = v else {
                    return Err(invalid(format!(
                        "`gateway.retries` must be an object, got {v}"
                    )));
                };
                for (rk, rv) in r {
                    let name = match rk.as_str() {
                        "maxAttempts" => "cf-aig-max-attempts",
                        "retryDelayMs" => "cf-aig-retry-delay",
                        "backoff" => "cf-aig-backoff",
                        other => return Err(invalid(format!("unknown `gateway.retries.{other}`"))),
                    };
                    insert_option(&mut headers, name, rv)?;
                }
                continue;
            }
            other => {
                return Err(invalid(format!(
                    "unknown `gateway.{other}` (id, skipCache, cacheTtl, cacheKey, metadata, collectLog, eventId, requestTimeoutMs, retries)"
                )));
            }
        };
        insert_option(&mut headers, name, v)?;
    }
    Ok((id, headers))
}

fn insert_option(headers: &mut HeaderMap, name: &'static str, v: &Value) -> Result<(), Failure> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let value = HeaderValue::from_str(&text).map_err(|_| {
        gateway_failure(GatewayError::Invalid(format!(
            "`{name}` value is not valid in a header"
        )))
    })?;
    headers.insert(name, value);
    Ok(())
}

/// Runs a Workers AI model through a gateway on behalf of the run endpoint.
pub async fn run_through(
    state: &AppState,
    account: &str,
    model: &str,
    options: &Value,
    body: bytes::Bytes,
) -> Result<Response, Failure> {
    let (gateway_id, mut headers) = options_as_headers(options)?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The run endpoint already checked the account's token; gateway
    // authentication is satisfied by it.
    let opened = open(state, account, &gateway_id, TokenSource::AigHeader)?;
    let planned = plan(
        state,
        &opened,
        "workers-ai",
        model,
        None,
        Method::POST,
        headers,
        body,
        None,
    )?;
    Ok(execute(state, &opened, planned, 0, "workers-ai binding").await)
}
