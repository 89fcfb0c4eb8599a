//! AI Gateway logs and analytics routes: `GET/DELETE .../gateways/{id}/logs`
//! (filters, search, ordering, paging; bulk delete), `GET/PATCH
//! .../logs/{log_id}`, the stored bodies at `.../logs/{log_id}/request` and
//! `/response`, and `GET .../gateways/{id}/analytics` (requests, errors,
//! cache hits, tokens and cost per time bucket, provider and model).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use hearth_gateway::GatewayError;
use hearth_gateway::logs::parse_query;
use hearth_store::{Bucket, LogQuery};
use hearth_types::{ApiError, Envelope, ErrorCode, ResultInfo};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::Failure;
use crate::gateway::{find_gateway, gateway_failure, param};

fn query_of(pairs: &[(String, String)]) -> Result<(LogQuery, HashMap<String, String>), Failure> {
    let (q, rest) = parse_query(pairs).map_err(gateway_failure)?;
    Ok((q, rest.into_iter().collect()))
}

/// `GET .../ai-gateway/gateways/{gateway_id}/logs`.
pub async fn list_logs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id");
    let gateway = param(&p, "gateway_id");
    find_gateway(&state, account, gateway)?;
    let (query, rest) = query_of(&pairs)?;
    let (page, per_page) = crate::gateway::page_params(&rest, 50)?;
    let (rows, total) = state
        .app
        .meter()
        .store()
        .gateway_logs(account, gateway, &query, (page - 1) * per_page, per_page)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    let info = ResultInfo {
        page,
        per_page,
        count: rows.len() as u64,
        total_count: total,
    };
    Ok(axum::Json(Envelope::with_info(rows, info)).into_response())
}

/// `DELETE .../ai-gateway/gateways/{gateway_id}/logs` (filters, `limit`,
/// order): deletes the matching logs, first in the given order.
pub async fn delete_logs(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id");
    let gateway = param(&p, "gateway_id");
    find_gateway(&state, account, gateway)?;
    let (query, rest) = query_of(&pairs)?;
    let limit = match rest.get("limit") {
        None => None,
        Some(v) => Some(v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            gateway_failure(GatewayError::Invalid(format!(
                "`limit` must be a whole number of at least 1, got `{v}`"
            )))
        })?),
    };
    let deleted = state
        .app
        .meter()
        .store()
        .gateway_logs_delete(account, gateway, &query, limit)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    tracing::info!(%account, %gateway, deleted, "gateway logs deleted");
    Ok(axum::Json(Envelope::ok(json!({"success": true}))).into_response())
}

fn log_not_found(id: &str) -> Failure {
    Failure(ApiError::new(
        ErrorCode::GatewayNotFound,
        format!("no log `{id}` in this gateway"),
    ))
}

/// `GET .../logs/{log_id}/request` and `/response`: the stored body as it
/// was sent or received.
async fn log_body(
    state: AppState,
    p: HashMap<String, String>,
    which: hearth_store::Body,
) -> Result<Response, Failure> {
    let (account, gateway, id) = (
        param(&p, "account_id"),
        param(&p, "gateway_id"),
        param(&p, "log_id"),
    );
    let store = state.app.meter().store();
    let entry = store
        .gateway_log(account, gateway, id)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(|| log_not_found(id))?;
    let body = store
        .gateway_log_body(account, gateway, id, which)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .unwrap_or_default();
    let type_field = match which {
        hearth_store::Body::Request => "request_content_type",
        hearth_store::Body::Response => "response_content_type",
    };
    let content_type = entry
        .get(type_field)
        .and_then(Value::as_str)
        .unwrap_or("application/json")
        .to_string();
    Ok(Response::builder()
        .header(CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| Failure(ApiError::plain(ErrorCode::Internal)).into_response()))
}

pub async fn log_request(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    log_body(state, p, hearth_store::Body::Request).await
}

pub async fn log_response(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    log_body(state, p, hearth_store::Body::Response).await
}

/// `GET .../ai-gateway/gateways/{gateway_id}/analytics`: `start` and `end`
/// (ISO 8601; default the last 24 hours), `bucket` (minute, hour, day) and
/// `group_by` (`provider`, `model` or both, comma-separated). Each bucket
/// has requests, errors, cached, cache_hit_ratio, tokens and cost; `totals`
/// sums them. (Cloudflare serves these through GraphQL; this is Hearth's
/// REST form of the same figures.)
pub async fn analytics(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let account = param(&p, "account_id");
    let gateway = param(&p, "gateway_id");
    find_gateway(&state, account, gateway)?;
    let invalid = |m: String| gateway_failure(GatewayError::Invalid(m));
    let now = state.app.meter().now_ms();
    let end = q
        .get("end")
        .cloned()
        .unwrap_or_else(|| hearth_vector::iso8601(now + 1));
    let start = q
        .get("start")
        .cloned()
        .unwrap_or_else(|| hearth_vector::iso8601(now - 24 * 3600 * 1000));
    for (name, v) in [("start", &start), ("end", &end)] {
        let b = v.as_bytes();
        if v.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(invalid(format!(
                "`{name}` must be an ISO 8601 time, got `{v}`"
            )));
        }
    }
    let bucket = match q.get("bucket").map(String::as_str) {
        None | Some("hour") => Bucket::Hour,
        Some("minute") => Bucket::Minute,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(invalid(format!(
                "`bucket` must be minute, hour or day, got `{other}`"
            )));
        }
    };
    let (mut by_provider, mut by_model) = (false, false);
    if let Some(g) = q.get("group_by") {
        for part in g.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match part {
                "provider" => by_provider = true,
                "model" => by_model = true,
                other => {
                    return Err(invalid(format!(
                        "`group_by` takes provider and model, got `{other}`"
                    )));
                }
            }
        }
    }
    let rows = state
        .app
        .meter()
        .store()
        .gateway_analytics(
            account,
            gateway,
            &start,
            &end,
            bucket,
            by_provider,
            by_model,
        )
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    let ratio = |cached: u64, requests: u64| {
        if requests == 0 {
            0.0
        } else {
            cached as f64 / requests as f64
        }
    };
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64, 0f64);
    let buckets: Vec<Value> = rows
        .iter()
        .map(|r| {
            totals.0 += r.requests;
            totals.1 += r.errors;
            totals.2 += r.cached;
            totals.3 += r.tokens_in;
            totals.4 += r.tokens_out;
            totals.5 += r.cost;
            let mut v = json!(r);
            v["cache_hit_ratio"] = json!(ratio(r.cached, r.requests));
            v
        })
        .collect();
    Ok(axum::Json(Envelope::ok(json!({
        "start": start,
        "end": end,
        "buckets": buckets,
        "totals": {
            "requests": totals.0,
            "errors": totals.1,
            "cached": totals.2,
            "cache_hit_ratio": ratio(totals.2, totals.0),
            "tokens_in": totals.3,
            "tokens_out": totals.4,
            "cost": totals.5,
        },
    })))
    .into_response())
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
            param(&p, "account_id"),
            param(&p, "gateway_id"),
            param(&p, "log_id"),
        )
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?
        .ok_or_else(|| log_not_found(param(&p, "log_id")))?;
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
    let body = crate::body::read(request.into_body(), state.body_limit()).await?;
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
        .gateway_log(account, gateway, id)
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
        .gateway_log_replace(account, gateway, id, &entry)
        .map_err(|e| gateway_failure(GatewayError::Store(e)))?;
    Ok(axum::Json(Envelope::ok(entry)).into_response())
}
