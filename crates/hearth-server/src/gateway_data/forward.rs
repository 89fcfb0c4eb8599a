//! One call to a provider, with the retry policy around it: Hearth's own
//! `workers-ai` handlers in-process, or an upstream over HTTP with the body
//! streamed back as it arrives. A try fails on a connection error, on no
//! first byte within the request timeout, or on a 429/5xx answer; failed
//! tries are repeated after the backoff's delay while attempts remain.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_gateway::providers::Upstream;
use hearth_gateway::request::RetryPolicy;
use hearth_types::{ApiError, ErrorCode};

use crate::AppState;
use crate::error::Failure;

/// Where a call goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST .../ai/run/{model}` of this server.
    WorkersAiRun { model: String },
    /// `POST .../ai/v1/chat/completions` of this server.
    WorkersAiChat,
    Upstream {
        upstream: Upstream,
        path: String,
        query: Option<String>,
    },
}

/// Everything one try needs.
pub struct Call {
    pub account: String,
    pub target: Target,
    pub method: Method,
    pub body: bytes::Bytes,
    /// The caller's headers (cf-aig-* and hop-by-hop ones are not forwarded).
    pub headers: HeaderMap,
    /// Whether the caller's `Authorization` is the provider's key (the Hearth
    /// token came in `cf-aig-authorization`) and may be forwarded.
    pub forward_authorization: bool,
}

/// Headers that describe one connection, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            // Bodies are passed through as sent; a compressed one could
            // not be logged, cached or token-counted.
            | "accept-encoding"
    )
}

async fn in_process(state: &AppState, call: &Call) -> Response {
    let account = call.account.clone();
    match &call.target {
        Target::WorkersAiRun { model } => {
            let resolved = match state.app.resolve(model) {
                Ok(r) => r,
                Err(e) => return Failure::from(e).into_response(),
            };
            crate::workers_ai::run_model(state, &account, model, resolved, call.body.clone())
                .await
                .into_response()
        }
        _ => {
            let mut params = HashMap::new();
            params.insert("account_id".to_string(), account.clone());
            let request = Request::builder()
                .method("POST")
                .uri(format!(
                    "/client/v4/accounts/{account}/ai/v1/chat/completions"
                ))
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(call.body.clone()));
            match request {
                Ok(request) => {
                    crate::openai::chat_completions(State(state.clone()), Path(params), request)
                        .await
                        .into_response()
                }
                Err(_) => Failure(ApiError::plain(ErrorCode::Internal)).into_response(),
            }
        }
    }
}

async fn over_http(
    client: &reqwest::Client,
    call: &Call,
    upstream: &Upstream,
    path: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let url = upstream.url(path, query);
    let mut request = client.request(call.method.clone(), &url);
    let mut has_authorization = false;
    for (name, value) in &call.headers {
        let n = name.as_str();
        if hop_by_hop(n) || n.starts_with("cf-aig-") || n.starts_with("cf-") {
            continue;
        }
        if name == AUTHORIZATION {
            if !call.forward_authorization {
                continue;
            }
            has_authorization = true;
        }
        request = request.header(name, value);
    }
    if !has_authorization && let Some(key) = &upstream.api_key {
        request = request.bearer_auth(key);
    }
    for (name, value) in &upstream.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let answer = request
        .body(call.body.clone())
        .send()
        .await
        .map_err(|e| {
            // The URL can carry credentials in its user part; name the provider only.
            tracing::warn!(provider = %upstream.slug, error = %e.without_url(), "upstream request failed");
            ApiError::new(
                ErrorCode::GatewayUpstream,
                format!("provider `{}` could not be reached", upstream.slug),
            )
        })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if hop_by_hop(name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response = response.header(n, v);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(|_| ApiError::plain(ErrorCode::Internal))
}

async fn once(
    state: &AppState,
    client: &reqwest::Client,
    call: &Call,
) -> Result<Response, ApiError> {
    match &call.target {
        Target::Upstream {
            upstream,
            path,
            query,
        } => over_http(client, call, upstream, path, query.as_deref()).await,
        _ => Ok(in_process(state, call).await),
    }
}

fn retryable(r: &Result<Response, ApiError>) -> bool {
    match r {
        Err(_) => true,
        Ok(resp) => {
            resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS
        }
    }
}

/// The call under `policy`; the last try's answer (or error) comes back.
pub async fn with_retries(
    state: &AppState,
    client: &reqwest::Client,
    call: &Call,
    policy: RetryPolicy,
) -> Response {
    let mut attempt = 1;
    loop {
        let result = match policy.timeout_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms), once(state, client, call))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(ApiError::new(
                        ErrorCode::GatewayTimeout,
                        format!(
                            "the provider sent nothing within cf-aig-request-timeout ({ms} ms)"
                        ),
                    )),
                }
            }
            None => once(state, client, call).await,
        };
        if attempt >= policy.max_attempts || !retryable(&result) {
            return match result {
                Ok(r) => r,
                Err(e) => Failure(e).into_response(),
            };
        }
        let wait = policy.delay_before(attempt);
        tracing::debug!(attempt, wait_ms = wait, "retrying a failed provider call");
        drop(result);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        attempt += 1;
    }
}
