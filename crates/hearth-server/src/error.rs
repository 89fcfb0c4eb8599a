//! Failures leave as the Cloudflare envelope, with the table's HTTP status.
//! Internal details never reach the client: they were logged where they
//! happened, and the client reads the table's generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_runtime::AppError;
use hearth_types::{ApiError, Envelope};

/// A public error on its way out.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(Envelope::error(&self.0))).into_response()
    }
}

impl Failure {
    /// 5000 for a failure inside Hearth: logged here with what was being
    /// done; the client reads only the table's generic message.
    pub fn internal(doing: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, doing, "internal failure");
        Failure(ApiError::plain(hearth_types::ErrorCode::Internal))
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Failure(e.into())
    }
}
