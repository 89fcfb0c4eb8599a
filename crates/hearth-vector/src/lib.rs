//! Vectorize-compatible vector indexes.
//!
//! This crate owns everything under Hearth's `vectorize/` data folder: index
//! definitions, the write-ahead log that makes an acknowledged write survive
//! `kill -9`, snapshots that bound recovery time, the applied in-memory state
//! (vectors, ids, namespaces, metadata indexes) and the HNSW graph that
//! answers queries, with an exact scan when a filter keeps few vectors.
//!
//! Writes follow Vectorize's contract: a write is logged, acknowledged with a
//! `mutationId`, then applied in order by a background applier; `info`
//! reports the last applied mutation. No HTTP here: `hearth-server` maps
//! these calls onto the REST API.

pub mod codec;
pub mod distance;
pub mod filter;
pub mod hnsw;
pub mod index;
pub mod input;
pub mod storage;
pub mod store;
mod time;

pub use filter::Filter;
pub use hnsw::{Hnsw, HnswParams};
pub use index::{IndexState, QueryOptions, Record};
pub use store::{IndexHandle, Vectorize, VectorizeOptions};
pub use time::iso8601;

use hearth_types::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("index `{0}` not found")]
    NotFound(String),
    #[error("an index named `{0}` already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    DimensionMismatch(String),
    #[error("vectorize storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("vectorize data is corrupt: {0}")]
    Corrupt(String),
}

impl VectorError {
    pub fn invalid(message: impl Into<String>) -> Self {
        VectorError::Invalid(message.into())
    }
}

impl From<VectorError> for ApiError {
    fn from(e: VectorError) -> Self {
        let code = match &e {
            VectorError::NotFound(_) => ErrorCode::VectorIndexNotFound,
            VectorError::Exists(_) => ErrorCode::VectorIndexExists,
            VectorError::Invalid(_) => ErrorCode::VectorInvalid,
            VectorError::DimensionMismatch(_) => ErrorCode::VectorDimensionMismatch,
            VectorError::Io(_) | VectorError::Corrupt(_) => {
                tracing::error!(error = %e, "vectorize storage failure");
                return ApiError::plain(ErrorCode::Internal);
            }
        };
        ApiError::detail(code, e)
    }
}
