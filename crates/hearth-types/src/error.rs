//! The one table of public errors: Cloudflare code, HTTP status, default message.
//!
//! Every error a client can see is a variant of [`ErrorCode`]; the mapping to
//! code and status is one exhaustive `match`, so adding a variant forces a
//! decision about how it looks on the wire. Codes follow Workers AI's documented
//! table (and the platform codes its API gateway layer answers with); codes
//! marked "Hearth" have no Cloudflare twin and say so in their message.

use std::fmt;

/// A public error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 5007: the model id names no model (or no task) in the catalog.
    NoSuchModel,
    /// 5006: the input does not match the model's schema.
    InvalidInput,
    /// 5004: a base64 field does not decode.
    InvalidBase64,
    /// 5021: prompt plus requested output does not fit the context window.
    ContextWindowExceeded,
    /// 5005: the model takes no LoRA adapters.
    LoraUnsupported,
    /// 3039: the fine-tune named by `lora` is missing files or cannot be used.
    FinetuneInvalid,
    /// Fine-tunes API: no fine-tune of that id or name in the account (Hearth's code).
    FinetuneNotFound,
    /// 3003: the body (or a required header) is missing.
    IncompleteRequest,
    /// 3006: the body is over the size limit.
    RequestTooLarge,
    /// 3007: the request ran past its time limit.
    Timeout,
    /// 3008: the request was aborted.
    Aborted,
    /// 3040: capacity exceeded (queue full, or `rejectIfBusy` on a busy model).
    OutOfCapacity,
    /// 3036: the daily free Neurons allocation is used up.
    AccountLimited,
    /// 3040 with 429: the account's requests-per-minute limit for the task or
    /// model is used up. Cloudflare documents no code of its own for this;
    /// 3040 is the 429 that clients already retry.
    RateLimited,
    /// 5016: the account has not accepted the model's terms (`prompt: "agree"`).
    ModelAgreement,
    /// 9001 (Hearth): the model is in the catalog but its weights are not installed here.
    ModelNotInstalled,
    /// 10000: missing or wrong API token.
    AuthenticationError,
    /// 10000 with 403: the token is valid but not for this account.
    AccountForbidden,
    /// 7003: the path names no route or no such account.
    NoRoute,
    /// 7001: the route exists but not for this method.
    MethodNotAllowed,
    /// 7000: no schema for the requested model.
    ModelSchemaNotFound,
    /// Vectorize: no index of that name in the account. Vectorize's own
    /// codes are not documented; the codes of this group are Hearth's, in the
    /// 40000 range that Vectorize's binding errors use.
    VectorIndexNotFound,
    /// Vectorize: an index of that name already exists.
    VectorIndexExists,
    /// Vectorize: a vector or query does not have the index's dimensions.
    VectorDimensionMismatch,
    /// Vectorize: the request breaks a documented rule or limit (the message names the field).
    VectorInvalid,
    /// AI Gateway admin API: an invalid field (the message names it). The
    /// gateway API's codes are undocumented; its custom-providers API answers
    /// 1002/1003/1004 for invalid/duplicate/not found, and Hearth uses the same.
    GatewayInvalid,
    /// AI Gateway: a gateway with that id exists.
    GatewayExists,
    /// AI Gateway: no gateway with that id.
    GatewayNotFound,
    /// AI Gateway: the provider did not start answering within
    /// `cf-aig-request-timeout` (Hearth's code; Cloudflare documents none).
    GatewayTimeout,
    /// AI Gateway: the provider could not be reached (connection refused or
    /// dropped) after every attempt (Hearth's code).
    GatewayUpstream,
    /// 5000: something failed inside Hearth; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// Every variant, for tests and documentation.
    pub const ALL: [ErrorCode; 31] = [
        ErrorCode::NoSuchModel,
        ErrorCode::InvalidInput,
        ErrorCode::InvalidBase64,
        ErrorCode::ContextWindowExceeded,
        ErrorCode::LoraUnsupported,
        ErrorCode::FinetuneInvalid,
        ErrorCode::FinetuneNotFound,
        ErrorCode::IncompleteRequest,
        ErrorCode::RequestTooLarge,
        ErrorCode::Timeout,
        ErrorCode::Aborted,
        ErrorCode::OutOfCapacity,
        ErrorCode::AccountLimited,
        ErrorCode::RateLimited,
        ErrorCode::ModelAgreement,
        ErrorCode::ModelNotInstalled,
        ErrorCode::AuthenticationError,
        ErrorCode::AccountForbidden,
        ErrorCode::NoRoute,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ModelSchemaNotFound,
        ErrorCode::VectorIndexNotFound,
        ErrorCode::VectorIndexExists,
        ErrorCode::VectorDimensionMismatch,
        ErrorCode::VectorInvalid,
        ErrorCode::GatewayInvalid,
        ErrorCode::GatewayExists,
        ErrorCode::GatewayNotFound,
        ErrorCode::GatewayTimeout,
        ErrorCode::GatewayUpstream,
        ErrorCode::Internal,
    ];

    /// `(code, HTTP status, default message)`.
    pub const fn spec(self) -> (u32, u16, &'static str) {
        match self {
            ErrorCode::NoSuchModel => (5007, 400, "No such model or task"),
            ErrorCode::InvalidInput => (5006, 400, "Bad input"),
            ErrorCode::InvalidBase64 => (5004, 400, "Invalid data type for base64 input"),
            ErrorCode::ContextWindowExceeded => (
                5021,
                400,
                "The estimated number of input and maximum output tokens exceeded this model context window limit.",
            ),
            ErrorCode::LoraUnsupported => (5005, 405, "Model does not support LoRA inference"),
            ErrorCode::FinetuneInvalid => (3039, 400, "Fine-tune is missing files"),
            ErrorCode::FinetuneNotFound => (7404, 404, "Fine-tune not found"),
            ErrorCode::IncompleteRequest => (3003, 400, "Request is missing headers or body"),
            ErrorCode::RequestTooLarge => (3006, 413, "Request is too large"),
            ErrorCode::Timeout => (3007, 408, "Request timeout"),
            ErrorCode::Aborted => (3008, 408, "Request was aborted"),
            ErrorCode::OutOfCapacity => (
                3040,
                429,
                "Capacity temporarily exceeded, please try again.",
            ),
            ErrorCode::AccountLimited => (
                3036,
                429,
                "You have used up your daily free allocation of 10,000 neurons, please upgrade to Cloudflare's Workers Paid plan if you would like to continue usage.",
            ),
            ErrorCode::RateLimited => (3040, 429, "Rate limited"),
            ErrorCode::ModelAgreement => (5016, 403, "Model agreement"),
            ErrorCode::ModelNotInstalled => (
                9001,
                503,
                "Model weights are not installed on this Hearth node",
            ),
            ErrorCode::AuthenticationError => (10000, 401, "Authentication error"),
            ErrorCode::AccountForbidden => (10000, 403, "Authentication error"),
            ErrorCode::NoRoute => (
                7003,
                404,
                "Could not route to the requested URI, perhaps your object identifier is invalid?",
            ),
            ErrorCode::MethodNotAllowed => (7001, 405, "Method not supported for requested URI."),
            ErrorCode::ModelSchemaNotFound => (7000, 400, "Model schema not found"),
            ErrorCode::VectorIndexNotFound => (40004, 404, "vectorize.index.not_found"),
            ErrorCode::VectorIndexExists => (40002, 409, "vectorize.index.duplicate_name"),
            ErrorCode::VectorDimensionMismatch => {
                (40006, 400, "vectorize.vector.dimension_mismatch")
            }
            ErrorCode::VectorInvalid => (40005, 400, "vectorize.invalid_request"),
            ErrorCode::GatewayInvalid => (1002, 400, "Invalid gateway settings"),
            ErrorCode::GatewayExists => (1003, 409, "Gateway already exists"),
            ErrorCode::GatewayNotFound => (1004, 404, "Gateway not found"),
            ErrorCode::GatewayTimeout => (2007, 504, "Provider request timed out"),
            ErrorCode::GatewayUpstream => (2008, 502, "Provider unreachable"),
            ErrorCode::Internal => (5000, 500, "Internal error"),
        }
    }

    pub const fn code(self) -> u32 {
        self.spec().0
    }

    pub const fn status(self) -> u16 {
        self.spec().1
    }

    pub const fn default_message(self) -> &'static str {
        self.spec().2
    }
}

/// A public error: a kind from the table and the message the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The table's default message, unchanged.
    pub fn plain(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    /// The default message followed by a detail, as Workers AI does
    /// (`"Bad input: ..."`).
    pub fn detail(code: ErrorCode, detail: impl fmt::Display) -> Self {
        Self::new(code, format!("{}: {detail}", code.default_message()))
    }

    pub fn invalid_input(detail: impl fmt::Display) -> Self {
        Self::detail(ErrorCode::InvalidInput, detail)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_status() {
        for code in ErrorCode::ALL {
            let (num, status, message) = code.spec();
            assert!((400..600).contains(&status), "{code:?}");
            assert!(num > 0 && !message.is_empty(), "{code:?}");
        }
    }
}
