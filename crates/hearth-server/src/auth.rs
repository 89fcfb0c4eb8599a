//! Bearer tokens on every account route, and account isolation.
//!
//! Order of checks: a missing or unknown token is 10000/401; a path account
//! that does not exist (or is not 32 hex characters) is 7003/404, as
//! Cloudflare answers a bad account id; a token of another account is
//! 10000/403.

use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use hearth_types::{ApiError, ErrorCode};

use crate::AppState;
use crate::error::Failure;

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Where the data plane found the caller's Hearth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `cf-aig-authorization`: `Authorization` is then the provider's key
    /// and is forwarded upstream.
    AigHeader,
    /// `Authorization`: it is Hearth's and never leaves.
    Authorization,
}

pub async fn require_token(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Result<Response, Failure> {
    let token = bearer(&request).map(str::to_string);
    check(&state, &params, &request, token.as_deref())?;
    Ok(next.run(request).await)
}

/// The data plane's check: the account's token in `cf-aig-authorization`
/// (as authenticated gateways take it) or in `Authorization` (as the
/// workers-ai provider takes it).
pub async fn require_gateway_token(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    mut request: Request,
    next: Next,
) -> Result<Response, Failure> {
    let aig = request
        .headers()
        .get("cf-aig-authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let (token, source) = match aig {
        Some(t) => (Some(t), TokenSource::AigHeader),
        None => (
            bearer(&request).map(str::to_string),
            TokenSource::Authorization,
        ),
    };
    check(&state, &params, &request, token.as_deref())?;
    request.extensions_mut().insert(source);
    Ok(next.run(request).await)
}

fn check(
    state: &AppState,
    params: &HashMap<String, String>,
    request: &Request,
    token: Option<&str>,
) -> Result<(), Failure> {
    let account_id = params.get("account_id").map(String::as_str).unwrap_or("");
    let Some(token) = token else {
        return Err(Failure(ApiError::new(
            ErrorCode::AuthenticationError,
            "Authentication error: missing `Authorization: Bearer <token>` header",
        )));
    };
    let Some(owner) = state.app.accounts().authenticate(token) else {
        return Err(Failure(ApiError::plain(ErrorCode::AuthenticationError)));
    };
    if !hearth_runtime::config::is_account_id(account_id)
        || !state.app.accounts().exists(account_id)
    {
        return Err(Failure(ApiError::new(
            ErrorCode::NoRoute,
            format!(
                "Could not route to {}, perhaps your object identifier is invalid?",
                request.uri().path()
            ),
        )));
    }
    if owner != account_id {
        return Err(Failure(ApiError::plain(ErrorCode::AccountForbidden)));
    }
    Ok(())
}
