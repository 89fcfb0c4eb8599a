//! The Cloudflare v4 response envelope: `{result, success, errors, messages, result_info?}`.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One entry of `errors[]` (or `messages[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeError {
    pub code: u32,
    pub message: String,
}

/// Pagination facts that list endpoints return beside `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    pub page: u64,
    pub per_page: u64,
    pub count: u64,
    pub total_count: u64,
}

/// Every JSON answer of the `/client/v4` API, errors included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub result: Option<T>,
    pub success: bool,
    pub errors: Vec<EnvelopeError>,
    pub messages: Vec<EnvelopeError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
}

impl<T> Envelope<T> {
    pub fn ok(result: T) -> Self {
        Self {
            result: Some(result),
            success: true,
            errors: Vec::new(),
            messages: Vec::new(),
            result_info: None,
        }
    }

    pub fn with_info(result: T, info: ResultInfo) -> Self {
        Self {
            result_info: Some(info),
            ..Self::ok(result)
        }
    }
}

impl Envelope<()> {
    pub fn error(err: &ApiError) -> Self {
        Self {
            result: None,
            success: false,
            errors: vec![EnvelopeError {
                code: err.code.code(),
                message: err.message.clone(),
            }],
            messages: Vec::new(),
            result_info: None,
        }
    }
}
