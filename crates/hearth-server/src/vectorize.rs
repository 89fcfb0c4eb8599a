//! Vectorize v2 REST routes (`/vectorize/v2/indexes/...`). Handlers parse
//! and check the body, then call the store on a blocking thread: queries
//! and log appends are CPU and disk work that must not stall the runtime.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use hearth_types::envelope::Envelope;
use hearth_types::vectorize::{
    CreateIndexRequest, IdsRequest, MetadataIndex, MetadataIndexDelete, MetadataIndexList,
    MutationResponse, QueryRequest, QueryResponse, ReturnMetadata,
};
use hearth_types::{ApiError, ErrorCode};
use hearth_vector::input::{MAX_TOP_K, MAX_TOP_K_WITH_PAYLOAD};
use hearth_vector::{Filter, IndexHandle, QueryOptions, VectorError, Vectorize};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use crate::error::Failure;
use crate::{AppState, body};

type Params = Path<HashMap<String, String>>;

fn ok<T: Serialize>(result: T) -> Response {
    Json(Envelope::ok(result)).into_response()
}

/// Parse a JSON body; errors carry Vectorize's code and name the field.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    body::parse_json(bytes).map_err(|e| {
        let detail = e
            .message
            .strip_prefix("Bad input: ")
            .unwrap_or(&e.message)
            .to_string();
        ApiError::detail(ErrorCode::VectorInvalid, detail)
    })
}

fn store(state: &AppState) -> Result<Arc<Vectorize>, Failure> {
    Ok(state.app.vectorize().map_err(ApiError::from)?)
}

fn param<'a>(params: &'a HashMap<String, String>, key: &str) -> &'a str {
    params.get(key).map(String::as_str).unwrap_or("")
}

fn index(state: &AppState, params: &HashMap<String, String>) -> Result<Arc<IndexHandle>, Failure> {
    Ok(store(state)?
        .get(param(params, "account_id"), param(params, "index_name"))
        .map_err(ApiError::from)?)
}

/// Runs store work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => Ok(r.map_err(ApiError::from)?),
        Err(e) => {
            tracing::error!(error = %e, "vectorize task failed");
            Err(Failure(ApiError::plain(ErrorCode::Internal)))
        }
    }
}

pub async fn create_index(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: CreateIndexRequest = parse(&bytes)?;
    let store = store(&state)?;
    let account = param(&params, "account_id").to_string();
    let object = blocking(move || store.create(&account, req)).await?;
    Ok((StatusCode::CREATED, Json(Envelope::ok(object))).into_response())
}

pub async fn list_indexes(
    State(state): State<AppState>,
    Path(params): Params,
) -> Result<Response, Failure> {
    Ok(ok(store(&state)?.list(param(&params, "account_id"))))
}

pub async fn get_index(
    State(state): State<AppState>,
    Path(params): Params,
) -> Result<Response, Failure> {
    Ok(ok(index(&state, &params)?.object().clone()))
}

pub async fn delete_index(
    State(state): State<AppState>,
    Path(params): Params,
) -> Result<Response, Failure> {
    let store = store(&state)?;
    let account = param(&params, "account_id").to_string();
    let name = param(&params, "index_name").to_string();
    blocking(move || store.delete(&account, &name)).await?;
    Ok(Json(Envelope::<()>::ok(())).into_response())
}

pub async fn info(
    State(state): State<AppState>,
    Path(params): Params,
) -> Result<Response, Failure> {
    Ok(ok(index(&state, &params)?.info()))
}

/// The vectors of an insert/upsert body: NDJSON, the JSON form, or a
/// multipart form whose `vectors` field holds the NDJSON file.
async fn upload(state: &AppState, request: Request) -> Result<bytes::Bytes, Failure> {
    let limit = state.app.config().vectorize.max_upload_bytes;
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        return Ok(body::read(request.into_body(), limit).await?);
    }
    let bad = |m: String| Failure(ApiError::detail(ErrorCode::VectorInvalid, m));
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("multipart body: {e}")))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("multipart body: {e}")))?
    {
        if field.name() == Some("vectors") {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| bad(format!("multipart field `vectors`: {e}")))?;
            if bytes.len() > limit {
                return Err(Failure(ApiError::detail(
                    ErrorCode::RequestTooLarge,
                    format!("the body is over the {limit}-byte limit"),
                )));
            }
            return Ok(bytes);
        }
    }
    Err(bad("the multipart form has no `vectors` field".into()))
}

async fn write(
    state: AppState,
    params: HashMap<String, String>,
    query: HashMap<String, String>,
    request: Request,
    upsert: bool,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let discard = match query.get("unparsable-behavior").map(String::as_str) {
        None | Some("error") => false,
        Some("discard") => true,
        Some(other) => {
            return Err(Failure(ApiError::detail(
                ErrorCode::VectorInvalid,
                format!("`unparsable-behavior` must be \"error\" or \"discard\", got {other:?}"),
            )));
        }
    };
    let bytes = upload(&state, request).await?;
    let mutation_id = blocking(move || {
        let records = hearth_vector::input::parse_vectors(&bytes, handle.dimensions(), discard)?;
        if upsert {
            handle.upsert(records)
        } else {
            handle.insert(records)
        }
    })
    .await?;
    Ok(ok(MutationResponse { mutation_id }))
}

pub async fn insert(
    State(state): State<AppState>,
    Path(params): Params,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    write(state, params, query, request, false).await
}

pub async fn upsert(
    State(state): State<AppState>,
    Path(params): Params,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, Failure> {
    write(state, params, query, request, true).await
}

fn invalid(message: String) -> Failure {
    Failure(ApiError::detail(ErrorCode::VectorInvalid, message))
}

pub async fn query(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: QueryRequest = parse(&bytes)?;
    let return_values = req.return_values.unwrap_or(false);
    let cap = if return_values || req.return_metadata == ReturnMetadata::All {
        MAX_TOP_K_WITH_PAYLOAD
    } else {
        MAX_TOP_K
    };
    let top_k = match req.top_k {
        None => 5,
        Some(k) if k.fract() == 0.0 && k >= 1.0 && k <= cap as f64 => k as usize,
        Some(k) => {
            return Err(invalid(format!(
                "`topK` must be a whole number from 1 to {cap}{}, got {k}",
                if cap == MAX_TOP_K_WITH_PAYLOAD {
                    " when values or all metadata are returned"
                } else {
                    ""
                }
            )));
        }
    };
    let filter = req
        .filter
        .as_ref()
        .map(Filter::parse)
        .transpose()
        .map_err(ApiError::from)?;
    if let Some(ns) = &req.namespace
        && (ns.is_empty() || ns.len() > hearth_vector::input::MAX_NAMESPACE_BYTES)
    {
        return Err(invalid("`namespace` must be 1 to 64 bytes".into()));
    }
    let dims = handle.dimensions() as usize;
    let vector: Vec<f32> = match (req.vector, req.id) {
        (Some(v), None) => {
            if v.len() != dims {
                return Err(Failure(ApiError::detail(
                    ErrorCode::VectorDimensionMismatch,
                    format!(
                        "invalid query vector, expected {dims} dimensions, and got {} dimensions",
                        v.len()
                    ),
                )));
            }
            let mut out = Vec::with_capacity(dims);
            for (i, x) in v.into_iter().enumerate() {
                let f = x as f32;
                if !f.is_finite() {
                    return Err(invalid(format!(
                        "`vector[{i}]` = {x} is not a finite 32-bit float"
                    )));
                }
                out.push(f);
            }
            out
        }
        (None, Some(id)) => handle
            .values_of(&id)
            .ok_or_else(|| invalid(format!("no vector with id `{id}` to query by")))?,
        (Some(_), Some(_)) => return Err(invalid("give `vector` or `id`, not both".into())),
        (None, None) => return Err(invalid("`vector` is required".into())),
    };
    let options = QueryOptions {
        top_k,
        namespace: req.namespace,
        filter,
        return_values,
        return_metadata: req.return_metadata,
        ef: if return_values {
            handle.default_ef().max(2 * top_k).max(200)
        } else {
            handle.default_ef().max(top_k)
        },
    };
    let matches = blocking(move || Ok(handle.query(&vector, &options))).await?;
    Ok(ok(QueryResponse {
        count: matches.len(),
        matches,
    }))
}

pub async fn get_by_ids(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: IdsRequest = parse(&bytes)?;
    let vectors = blocking(move || handle.get_by_ids(&req.ids)).await?;
    Ok(ok(vectors))
}

pub async fn delete_by_ids(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: IdsRequest = parse(&bytes)?;
    let mutation_id = blocking(move || handle.delete_by_ids(req.ids)).await?;
    Ok(ok(MutationResponse { mutation_id }))
}

pub async fn list_vectors(
    State(state): State<AppState>,
    Path(params): Params,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let count = match query.get("count") {
        None => 100,
        Some(c) => match c.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "`count` must be a whole number from 1 to 1000, got {c:?}"
                )));
            }
        },
    };
    let cursor = query.get("cursor").cloned();
    Ok(ok(handle.list_vectors(count, cursor.as_deref())))
}

pub async fn create_metadata_index(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: MetadataIndex = parse(&bytes)?;
    let mutation_id =
        blocking(move || handle.create_metadata_index(req.property_name, req.index_type)).await?;
    Ok(ok(MutationResponse { mutation_id }))
}

pub async fn list_metadata_indexes(
    State(state): State<AppState>,
    Path(params): Params,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    Ok(ok(MetadataIndexList {
        metadata_indexes: handle.metadata_indexes(),
    }))
}

pub async fn delete_metadata_index(
    State(state): State<AppState>,
    Path(params): Params,
    request_body: Body,
) -> Result<Response, Failure> {
    let handle = index(&state, &params)?;
    let bytes = body::read(request_body, state.body_limit()).await?;
    let req: MetadataIndexDelete = parse(&bytes)?;
    let mutation_id = blocking(move || handle.delete_metadata_index(req.property_name)).await?;
    Ok(ok(MutationResponse { mutation_id }))
}
