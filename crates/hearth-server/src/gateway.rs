//! AI Gateway admin routes: `/ai-gateway/gateways` (create, list with
//! page/per_page/search) and `/ai-gateway/gateways/{gateway_id}` (get, update,
//! delete), and `/ai-gateway/custom-providers` (create, list, get, edit,
//! delete), in the v4 envelope with snake_case fields as Cloudflare answers.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use hearth_gateway::providers::{CustomProviders, custom_provider_object};
use hearth_gateway::{Gateways, object};
use hearth_types::{ApiError, Envelope, ResultInfo};
use serde_json::Value;

use crate::error::Failure;
use crate::{AppState, body};

fn gateways(state: &AppState) -> Gateways<'_> {
    Gateways {
        store: state.app.meter().store(),
        known: &state.gateway.known,
    }
}

pub(crate) fn param<'a>(p: &'a HashMap<String, String>, key: &str) -> &'a str {
    p.get(key).map(String::as_str).unwrap_or("")
}

pub(crate) fn gateway_failure(e: hearth_gateway::GatewayError) -> Failure {
    Failure(ApiError::from(e))
}

/// The gateway `id` of `account`, or 1004/404 naming it.
pub(crate) fn find_gateway(
    state: &AppState,
    account: &str,
    id: &str,
) -> Result<std::sync::Arc<hearth_store::GatewayRow>, Failure> {
    gateways(state)
        .settings(account, id)
        .map_err(gateway_failure)
}

fn as_object(row: &hearth_store::GatewayRow) -> Value {
    object(row, hearth_vector::iso8601)
}

async fn json_body(state: &AppState, request_body: Body) -> Result<Value, Failure> {
    let bytes = body::read(request_body, state.body_limit()).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure(ApiError::new(
            hearth_types::ErrorCode::GatewayInvalid,
            format!("the body is not valid JSON: {e}"),
        ))
    })
}

/// `page` (from 1) and `per_page` (1 to `max_per_page`, default 20) of the
/// gateway list endpoints.
pub(crate) fn page_params(
    q: &HashMap<String, String>,
    max_per_page: u64,
) -> Result<(u64, u64), ApiError> {
    let number = |key: &str, default: u64, max: u64| -> Result<u64, ApiError> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::new(
                    hearth_types::ErrorCode::GatewayInvalid,
                    format!("`{key}` must be a whole number from 1 to {max}, got `{v}`"),
                )),
            },
        }
    };
    Ok((
        number("page", 1, u64::from(u32::MAX))?,
        number("per_page", 20, max_per_page)?,
    ))
}

pub async fn create(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request_body: Body,
) -> Result<Response, Failure> {
    let body = json_body(&state, request_body).await?;
    let now = state.app.meter().now_ms();
    let row = gateways(&state)
        .create(param(&p, "account_id"), &body, now)
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(as_object(&row))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (page, per_page) = page_params(&q, 100)?;
    let rows = gateways(&state)
        .list(param(&p, "account_id"), q.get("search").map(String::as_str))
        .map_err(ApiError::from)?;
    Ok(one_page(
        rows.iter().map(as_object).collect(),
        page,
        per_page,
    ))
}

/// One page of a list answer, with its `result_info`.
pub(crate) fn one_page(all: Vec<Value>, page: u64, per_page: u64) -> Response {
    let total = all.len() as u64;
    let items: Vec<Value> = all
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .collect();
    let info = ResultInfo {
        page,
        per_page,
        count: items.len() as u64,
        total_count: total,
    };
    Json(Envelope::with_info(items, info)).into_response()
}

pub async fn get(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let row = gateways(&state)
        .get(param(&p, "account_id"), param(&p, "gateway_id"))
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(as_object(&row))).into_response())
}

pub async fn update(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request_body: Body,
) -> Result<Response, Failure> {
    let body = json_body(&state, request_body).await?;
    let now = state.app.meter().now_ms();
    let row = gateways(&state)
        .update(param(&p, "account_id"), param(&p, "gateway_id"), &body, now)
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(as_object(&row))).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let row = gateways(&state)
        .delete(param(&p, "account_id"), param(&p, "gateway_id"))
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(as_object(&row))).into_response())
}

fn custom_providers(state: &AppState) -> CustomProviders<'_> {
    CustomProviders {
        store: state.app.meter().store(),
    }
}

fn provider_object(row: &hearth_store::CustomProviderRow) -> Value {
    custom_provider_object(row, hearth_vector::iso8601)
}

/// `POST .../ai-gateway/custom-providers`.
pub async fn create_provider(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request_body: Body,
) -> Result<Response, Failure> {
    let body = json_body(&state, request_body).await?;
    let now = state.app.meter().now_ms();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let row = custom_providers(&state)
        .create(param(&p, "account_id"), id, &body, now)
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(provider_object(&row))).into_response())
}

/// `GET .../ai-gateway/custom-providers` (page, per_page <= 100, search over
/// id/name/slug, enable, beta).
pub async fn list_providers(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let (page, per_page) = page_params(&q, 100)?;
    let flag = |key: &str| -> Result<Option<bool>, ApiError> {
        match q.get(key).map(String::as_str) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::new(
                hearth_types::ErrorCode::GatewayInvalid,
                format!("`{key}` must be true or false, got `{v}`"),
            )),
        }
    };
    let (enable, beta) = (flag("enable")?, flag("beta")?);
    let search = q.get("search").map(|s| s.to_lowercase());
    let rows: Vec<Value> = state
        .app
        .meter()
        .store()
        .custom_provider_list(param(&p, "account_id"))
        .map_err(|e| ApiError::from(hearth_gateway::GatewayError::Store(e)))?
        .iter()
        .map(provider_object)
        .filter(|o| enable.is_none_or(|e| o["enable"].as_bool() == Some(e)))
        .filter(|o| beta.is_none_or(|b| o["beta"].as_bool() == Some(b)))
        .filter(|o| {
            search.as_ref().is_none_or(|s| {
                ["id", "name", "slug"].iter().any(|k| {
                    o[*k]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().contains(s.as_str()))
                })
            })
        })
        .collect();
    Ok(one_page(rows, page, per_page))
}

pub async fn get_provider(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let row = custom_providers(&state)
        .get(param(&p, "account_id"), param(&p, "provider_id"))
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(provider_object(&row))).into_response())
}

/// `PATCH .../ai-gateway/custom-providers/{id}`: the fields given replace
/// the stored ones.
pub async fn edit_provider(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    request_body: Body,
) -> Result<Response, Failure> {
    let body = json_body(&state, request_body).await?;
    let now = state.app.meter().now_ms();
    let row = custom_providers(&state)
        .edit(
            param(&p, "account_id"),
            param(&p, "provider_id"),
            &body,
            now,
        )
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(provider_object(&row))).into_response())
}

pub async fn delete_provider(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let row = custom_providers(&state)
        .delete(param(&p, "account_id"), param(&p, "provider_id"))
        .map_err(ApiError::from)?;
    Ok(Json(Envelope::ok(provider_object(&row))).into_response())
}
