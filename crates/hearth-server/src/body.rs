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

/// A binary input (`image`, `audio`) in any of the ways Workers AI takes
/// one: the raw body, or a JSON object whose `field` is an array of bytes,
/// a base64 string, or `{body: <base64>, contentType}` (newer typings).
/// Returns the bytes and the rest of the JSON object (empty for a raw body).
pub fn binary_input(
    bytes: &[u8],
    field: &str,
) -> Result<(Vec<u8>, serde_json::Map<String, serde_json::Value>), ApiError> {
    use serde_json::Value;
    let bad = |message: String| ApiError::invalid_input(message);
    if bytes.first() != Some(&b'{') {
        if bytes.is_empty() {
            return Err(bad(format!(
                "`{field}` is empty: send it as the body, or `{{\"{field}\": [...]}}`"
            )));
        }
        return Ok((bytes.to_vec(), serde_json::Map::new()));
    }
    let Value::Object(mut input) = parse_json::<Value>(bytes)? else {
        return Err(bad(format!(
            "the body must be binary data or a JSON object with `{field}`"
        )));
    };
    let data = match input.remove(field) {
        Some(value) => binary_value(value, field)?,
        None => return Err(bad(format!("`{field}` is required"))),
    };
    Ok((data, input))
}

/// The bytes of one binary JSON field: an array of bytes, a base64 string
/// or `{body: <base64>, contentType}`; never empty.
pub fn binary_value(value: serde_json::Value, field: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    use serde_json::Value;
    let bad = |message: String| ApiError::invalid_input(message);
    let base64 = |text: &str, path: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                ApiError::detail(
                    ErrorCode::InvalidBase64,
                    format!("`{path}` is not valid base64: {e}"),
                )
            })
    };
    let data = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|b| *b <= 255)
                    .map(|b| b as u8)
                    .ok_or_else(|| bad(format!("`{field}` must hold bytes (0-255), got {v}")))
            })
            .collect::<Result<Vec<u8>, _>>()?,
        Value::String(text) => base64(&text, field)?,
        Value::Object(object) => match object.get("body") {
            Some(Value::String(text)) => base64(text, &format!("{field}.body"))?,
            Some(other) => {
                return Err(bad(format!(
                    "`{field}.body` must be a base64 string, got {other}"
                )));
            }
            None => return Err(bad(format!("`{field}.body` is required"))),
        },
        other => {
            return Err(bad(format!(
                "`{field}` must be an array of bytes or a base64 string, got {other}"
            )));
        }
    };
    if data.is_empty() {
        return Err(bad(format!("`{field}` is empty")));
    }
    Ok(data)
}

/// An optional boolean field; the first published Workers AI schemas typed
/// some flags (`vad_filter`) as the strings "true" and "false".
pub fn flag(
    input: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<bool>, ApiError> {
    use serde_json::Value;
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(ApiError::invalid_input(format!(
            "`{key}` must be a boolean, got {other}"
        ))),
    }
}

/// An optional number field.
pub fn number(
    input: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<f64>, ApiError> {
    use serde_json::Value;
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::invalid_input(format!(
            "`{key}` must be a number, got {other}"
        ))),
    }
}

/// An optional string field.
pub fn text(
    input: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    use serde_json::Value;
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid_input(format!(
            "`{key}` must be a string, got {other}"
        ))),
    }
}

/// An optional number field within `range`.
pub fn number_within(
    input: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f64>, ApiError> {
    match number(input, key)? {
        Some(v) if !range.contains(&v) => Err(ApiError::invalid_input(format!(
            "`{key}` must be between {} and {}, got {v}",
            range.start(),
            range.end()
        ))),
        other => Ok(other),
    }
}

/// An optional whole-number field within `range`.
pub fn whole_within(
    input: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<u64>, ApiError> {
    match number_within(input, key, range)? {
        Some(v) if v.fract() != 0.0 => Err(ApiError::invalid_input(format!(
            "`{key}` must be a whole number, got {v}"
        ))),
        other => Ok(other.map(|v| v as u64)),
    }
}
