//! Request bodies: read under the size limit, parsed as JSON into a typed
//! input with the offending field named on failure.

use axum::body::Body;
use hearth_types::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// Read a whole body; over `limit` is 3006, empty is 3003.
pub async fn read(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // axum wraps http-body-util's `LengthLimitError`; its text is stable.
        let mut too_large = false;
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cause {
            too_large |= c.to_string().contains("length limit");
            cause = c.source();
        }
        if too_large {
            ApiError::detail(
                ErrorCode::RequestTooLarge,
                format!("the body is over the {limit}-byte limit"),
            )
        } else {
            ApiError::detail(
                ErrorCode::IncompleteRequest,
                format!("body could not be read: {e}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::IncompleteRequest,
            "Request is missing headers or body: body",
        ));
    }
    Ok(bytes)
}

/// Parse JSON into `T`; errors name the field path (`messages[0].role`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_input(format!("body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid_input("body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            ApiError::invalid_input(inner)
        } else {
            ApiError::invalid_input(format!("`{path}`: {inner}"))
        }
    })
}
