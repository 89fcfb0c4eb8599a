//! HTTP surfaces over [`hearth_runtime::App`], built with axum.
//!
//! One module per surface ([`workers_ai`], [`openai`], [`embeddings`], [`vectorize`],
//! [`gateway`] and its data plane, [`finetunes`], [`markdown`], [`ai_search`]), shared middleware
//! ([`auth`]: bearer tokens and account isolation), and the error mapping
//! ([`error`]: every failure leaves as a Cloudflare envelope with the code and
//! status of the public error table). Handlers stay thin: read the body,
//! validate it into a `hearth-types` value, call one `App` method, shape the
//! answer. [`router`] builds the whole service without a socket, so tests can
//! drive it with `tower::ServiceExt::oneshot`.

pub mod ai_search;
pub mod auth;
pub mod batch;
pub mod body;
pub mod embeddings;
pub mod error;
pub mod finetunes;
pub mod gateway;
pub mod gateway_data;
pub mod gateway_logs;
pub mod images;
pub mod markdown;
pub mod metering;
pub mod openai;
mod shaping;
pub mod speech;
pub mod summarize;
pub mod text_to_image;
pub mod translate;
pub mod vectorize;
pub mod workers_ai;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{any, get, post};
use hearth_runtime::App;
use hearth_runtime::app::Resolved;
use hearth_types::{ApiError, ErrorCode};

use crate::error::Failure;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    /// AI Gateway's response cache and log writer.
    pub gateway: Arc<gateway_data::GatewayRuntime>,
    /// AI Search's answers, served again to similar questions.
    pub search_cache: Arc<hearth_search::cache::SimilarityCache>,
}

impl AppState {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.app.config().request_timeout_secs)
    }

    pub fn body_limit(&self) -> usize {
        self.app.config().max_body_bytes
    }
}

/// Response header naming the weights that served a request.
pub const WEIGHTS_HEADER: &str = "x-hearth-weights";
/// Response header naming the model id that was requested.
pub const MODEL_HEADER: &str = "x-hearth-model";

pub(crate) fn tag_response(response: &mut Response, resolved: &Resolved) {
    let headers = response.headers_mut();
    for (name, value) in [
        (WEIGHTS_HEADER, &resolved.weights_label),
        (MODEL_HEADER, &resolved.requested),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// A success envelope around `result`, tagged with the weights that
/// served it.
pub(crate) fn enveloped<T: serde::Serialize>(result: T, resolved: &Resolved) -> Response {
    let mut response =
        axum::response::IntoResponse::into_response(axum::Json(hearth_types::Envelope::ok(result)));
    tag_response(&mut response, resolved);
    response
}

async fn health() -> &'static str {
    "ok"
}

async fn no_route(uri: axum::http::Uri) -> Failure {
    Failure(ApiError::new(
        ErrorCode::NoRoute,
        format!(
            "Could not route to {}, perhaps your object identifier is invalid?",
            uri.path()
        ),
    ))
}

async fn wrong_method(method: axum::http::Method) -> Failure {
    Failure(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} not supported for requested URI."),
    ))
}

fn vectorize_routes() -> Router<AppState> {
    use vectorize as v;
    Router::new()
        .route("/", get(v::list_indexes).post(v::create_index))
        .route("/{index_name}", get(v::get_index).delete(v::delete_index))
        .route("/{index_name}/info", get(v::info))
        .route("/{index_name}/insert", post(v::insert))
        .route("/{index_name}/upsert", post(v::upsert))
        .route("/{index_name}/query", post(v::query))
        .route("/{index_name}/get_by_ids", post(v::get_by_ids))
        .route("/{index_name}/delete_by_ids", post(v::delete_by_ids))
        .route("/{index_name}/list", get(v::list_vectors))
        .route(
            "/{index_name}/metadata_index/create",
            post(v::create_metadata_index),
        )
        .route(
            "/{index_name}/metadata_index/list",
            get(v::list_metadata_indexes),
        )
        .route(
            "/{index_name}/metadata_index/delete",
            post(v::delete_metadata_index),
        )
}

/// The whole HTTP service.
pub fn router(app: Arc<App>) -> Router {
    service(app).0
}

/// The AI Search items routes under `base` (plain and namespaced paths).
fn items_routes(base: &str) -> Router<AppState> {
    use ai_search::items;
    Router::new()
        .route(
            base,
            get(items::list)
                .post(items::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    items::MAX_UPLOAD_BYTES,
                )),
        )
        .route(
            &format!("{base}/{{item_id}}"),
            get(items::get).delete(items::delete).patch(items::sync),
        )
        .route(&format!("{base}/{{item_id}}/chunks"), get(items::chunks))
        .route(
            &format!("{base}/{{item_id}}/download"),
            get(items::download),
        )
        .route(&format!("{base}/{{item_id}}/logs"), get(items::logs))
}

/// The HTTP service and the gateway runtime, whose queued log entries
/// `GatewayRuntime::flush` stores at a clean shutdown.
pub fn service(app: Arc<App>) -> (Router, Arc<gateway_data::GatewayRuntime>) {
    let gateway = gateway_data::GatewayRuntime::start(Arc::clone(&app));
    let state = AppState {
        app,
        gateway: Arc::clone(&gateway),
        search_cache: Arc::default(),
    };
    // Sync jobs a crash interrupted start again (they run on the runtime).
    if tokio::runtime::Handle::try_current().is_ok() {
        ai_search::resume_jobs(&state);
        ai_search::spawn_scheduler(&state);
    }
    let account = Router::new()
        .route("/ai/run/{*model}", post(workers_ai::run))
        .route("/ai/models/search", get(workers_ai::models_search))
        .route("/ai/models/schema", get(workers_ai::model_schema))
        .route("/ai/tasks/search", get(workers_ai::tasks_search))
        .route("/ai/authors/search", get(workers_ai::authors_search))
        .route("/ai/usage", get(metering::usage))
        .route("/ai/analytics", get(metering::analytics))
        .route("/ai/v1/chat/completions", post(openai::chat_completions))
        .route("/ai/v1/embeddings", post(embeddings::openai))
        .route(
            "/ai/finetunes",
            get(finetunes::list).post(finetunes::create),
        )
        .route("/ai/finetunes/public", get(finetunes::list_public))
        .route(
            "/ai/tomarkdown",
            post(markdown::transform).layer(axum::extract::DefaultBodyLimit::max(
                markdown::MAX_BODY_BYTES,
            )),
        )
        .route("/ai/tomarkdown/supported", get(markdown::supported))
        .route(
            "/ai-search/instances",
            get(ai_search::list).post(ai_search::create),
        )
        .route(
            "/ai-search/instances/{instance_id}",
            get(ai_search::get)
                .put(ai_search::update)
                .delete(ai_search::delete),
        )
        .route(
            "/ai-search/instances/{instance_id}/jobs",
            get(ai_search::list_jobs).post(ai_search::create_job),
        )
        .route(
            "/ai-search/instances/{instance_id}/jobs/{job_id}",
            get(ai_search::get_job).patch(ai_search::update_job),
        )
        .route(
            "/ai-search/instances/{instance_id}/jobs/{job_id}/logs",
            get(ai_search::job_logs),
        )
        .route(
            "/ai-search/instances/{instance_id}/stats",
            get(ai_search::stats),
        )
        .route(
            "/ai-search/instances/{instance_id}/search",
            post(ai_search::search),
        )
        .route(
            "/ai-search/instances/{instance_id}/chat/completions",
            post(ai_search::answer::chat_completions),
        )
        .merge(items_routes("/ai-search/instances/{instance_id}/items"))
        .merge(items_routes(
            "/ai-search/namespaces/{namespace}/instances/{instance_id}/items",
        ))
        .route(
            "/autorag/rags/{instance_id}/search",
            post(ai_search::legacy::search),
        )
        .route(
            "/autorag/rags/{instance_id}/ai-search",
            post(ai_search::legacy::ai_search),
        )
        .route(
            "/autorag/rags/{instance_id}/sync",
            axum::routing::patch(ai_search::legacy::sync),
        )
        .route(
            "/ai/finetunes/{finetune_id}/finetune-assets",
            post(finetunes::upload_asset).layer(axum::extract::DefaultBodyLimit::max(
                finetunes::MAX_UPLOAD_BYTES,
            )),
        )
        .nest("/vectorize/v2/indexes", vectorize_routes())
        .route(
            "/ai-gateway/gateways",
            get(gateway::list).post(gateway::create),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}",
            get(gateway::get)
                .put(gateway::update)
                .delete(gateway::delete),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}/logs",
            get(gateway_logs::list_logs).delete(gateway_logs::delete_logs),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}/logs/{log_id}",
            get(gateway_logs::get_log).patch(gateway_logs::edit_log),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}/logs/{log_id}/request",
            get(gateway_logs::log_request),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}/logs/{log_id}/response",
            get(gateway_logs::log_response),
        )
        .route(
            "/ai-gateway/gateways/{gateway_id}/analytics",
            get(gateway_logs::analytics),
        )
        .route(
            "/ai-gateway/custom-providers",
            get(gateway::list_providers).post(gateway::create_provider),
        )
        .route(
            "/ai-gateway/custom-providers/{provider_id}",
            get(gateway::get_provider)
                .patch(gateway::edit_provider)
                .delete(gateway::delete_provider),
        )
        .method_not_allowed_fallback(wrong_method)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    // The gateway data plane lives outside /client/v4, as on
    // gateway.ai.cloudflare.com/v1/{account}/{gateway}/...
    let data_plane = Router::new()
        .route("/{account_id}/{gateway_id}", post(gateway_data::universal))
        .route(
            "/{account_id}/{gateway_id}/compat/chat/completions",
            post(gateway_data::compat_chat),
        )
        .route(
            "/{account_id}/{gateway_id}/{provider}/{*path}",
            any(gateway_data::provider),
        )
        .method_not_allowed_fallback(wrong_method)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_gateway_token,
        ));
    let router = Router::new()
        .route("/health", get(health))
        .nest("/client/v4/accounts/{account_id}", account)
        .nest("/v1", data_plane)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    (router, gateway)
}
