//! Checking what clients send against Vectorize's documented limits, with
//! errors that name the line, vector id or field.

use hearth_types::vectorize::{IndexConfig, IndexConfigRequest, Metric, VectorInput};
use serde_json::{Map, Value};

use crate::VectorError;
use crate::index::Record;

pub const MAX_DIMENSIONS: i64 = 1536;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_ID_BYTES: usize = 64;
pub const MAX_NAMESPACE_BYTES: usize = 64;
pub const MAX_METADATA_BYTES: usize = 10 * 1024;
/// Vectors per insert/upsert request over HTTP (the binding takes 1,000).
pub const MAX_VECTORS_PER_WRITE: usize = 5000;
pub const MAX_IDS_PER_CALL: usize = 1000;
pub const MAX_TOP_K: usize = 100;
/// topK cap when values or all metadata come back.
pub const MAX_TOP_K_WITH_PAYLOAD: usize = 20;
pub const MAX_METADATA_INDEXES: usize = 10;
pub const MAX_INDEXES_PER_ACCOUNT: usize = 50_000;

/// Lowercase letters, digits and dashes, starting with a letter.
pub fn validate_index_name(name: &str) -> Result<(), VectorError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(VectorError::invalid(format!(
            "`name` {name:?} is not a valid index name: use 1 to {MAX_NAME_BYTES} lowercase letters, digits and dashes, starting with a letter"
        )))
    }
}

/// The dimensions and metric of a preset embedding model.
pub fn preset(model: &str) -> Option<IndexConfig> {
    let dimensions = match model {
        "@cf/baai/bge-small-en-v1.5" => 384,
        "@cf/baai/bge-base-en-v1.5" => 768,
        "@cf/baai/bge-large-en-v1.5" => 1024,
        "openai/text-embedding-ada-002" => 1536,
        "cohere/embed-multilingual-v2.0" => 768,
        _ => return None,
    };
    Some(IndexConfig {
        dimensions,
        metric: Metric::Cosine,
    })
}

pub fn index_config(req: &IndexConfigRequest) -> Result<IndexConfig, VectorError> {
    match (&req.preset, req.dimensions, &req.metric) {
        (Some(p), None, None) => preset(p).ok_or_else(|| {
            VectorError::invalid(format!(
                "`config.preset` {p:?} is not a known preset (@cf/baai/bge-small-en-v1.5, @cf/baai/bge-base-en-v1.5, @cf/baai/bge-large-en-v1.5, openai/text-embedding-ada-002, cohere/embed-multilingual-v2.0)"
            ))
        }),
        (Some(_), _, _) => Err(VectorError::invalid(
            "`config` takes either `preset` or `dimensions` with `metric`, not both",
        )),
        (None, Some(d), Some(m)) => {
            if !(1..=MAX_DIMENSIONS).contains(&d) {
                return Err(VectorError::invalid(format!(
                    "`config.dimensions` must be between 1 and {MAX_DIMENSIONS}, got {d}"
                )));
            }
            let metric = Metric::parse(m).ok_or_else(|| {
                VectorError::invalid(format!(
                    "`config.metric` must be \"cosine\", \"euclidean\" or \"dot-product\", got {m:?}"
                ))
            })?;
            Ok(IndexConfig {
                dimensions: d as u32,
                metric,
            })
        }
        (None, None, _) => Err(VectorError::invalid(
            "`config.dimensions` is required (or give `config.preset`)",
        )),
        (None, Some(_), None) => Err(VectorError::invalid("`config.metric` is required")),
    }
}

fn validate_metadata_keys(map: &Map<String, Value>, path: &str) -> Result<(), VectorError> {
    for (key, value) in map {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key.is_empty() || key.contains('.') || key.contains('"') || key.starts_with('$') {
            return Err(VectorError::invalid(format!(
                "metadata key {at:?} is not allowed: keys must be non-empty and must not contain `.` or `\"` or start with `$`"
            )));
        }
        if let Value::Object(inner) = value {
            validate_metadata_keys(inner, &at)?;
        }
    }
    Ok(())
}

/// A vector checked against the index; `at` says where it came from.
pub fn record(input: VectorInput, dims: u32, at: &str) -> Result<Record, VectorError> {
    if input.id.is_empty() || input.id.len() > MAX_ID_BYTES {
        return Err(VectorError::invalid(format!(
            "{at}: `id` must be 1 to {MAX_ID_BYTES} bytes, got {}",
            input.id.len()
        )));
    }
    let id = &input.id;
    if input.values.len() != dims as usize {
        return Err(VectorError::DimensionMismatch(format!(
            "{at}: vector `{id}` has {} dimensions, the index has {dims}",
            input.values.len()
        )));
    }
    let mut values = Vec::with_capacity(input.values.len());
    for (i, &v) in input.values.iter().enumerate() {
        let f = v as f32;
        if !f.is_finite() {
            return Err(VectorError::invalid(format!(
                "{at}: vector `{id}` `values[{i}]` = {v} is not a finite 32-bit float"
            )));
        }
        values.push(f);
    }
    if let Some(ns) = &input.namespace
        && (ns.is_empty() || ns.len() > MAX_NAMESPACE_BYTES)
    {
        return Err(VectorError::invalid(format!(
            "{at}: vector `{id}` `namespace` must be 1 to {MAX_NAMESPACE_BYTES} bytes"
        )));
    }
    if let Some(metadata) = &input.metadata {
        let size = Value::Object(metadata.clone()).to_string().len();
        if size > MAX_METADATA_BYTES {
            return Err(VectorError::invalid(format!(
                "{at}: vector `{id}` `metadata` is {size} bytes; the limit is {MAX_METADATA_BYTES}"
            )));
        }
        validate_metadata_keys(metadata, "")
            .map_err(|e| VectorError::invalid(format!("{at}: vector `{id}`: {e}")))?;
    }
    Ok(Record {
        id: input.id,
        values,
        namespace: input.namespace,
        metadata: input.metadata,
    })
}

/// Parses an insert/upsert body: NDJSON (one vector per line) or the
/// binding's JSON form `{"vectors": [...]}`. With `discard`, lines that do
/// not parse or validate are skipped instead of failing the request.
pub fn parse_vectors(body: &[u8], dims: u32, discard: bool) -> Result<Vec<Record>, VectorError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| VectorError::invalid("the body is not UTF-8 text"))?;
    let mut out = Vec::new();
    // One vector read: kept, skipped (`discard`), or the request's error.
    let mut keep = |parsed: Result<VectorInput, String>, at: String| -> Result<(), VectorError> {
        match parsed
            .map_err(|e| VectorError::invalid(format!("{at}: {e}")))
            .and_then(|v| record(v, dims, &at))
        {
            Ok(r) => out.push(r),
            Err(_) if discard => {}
            Err(e) => return Err(e),
        }
        check_count(out.len())
    };
    if let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text)
        && let Some(vectors) = obj.remove("vectors")
    {
        let Value::Array(items) = vectors else {
            return Err(VectorError::invalid("`vectors` must be an array"));
        };
        check_count(items.len())?;
        for (i, item) in items.into_iter().enumerate() {
            keep(
                serde_json::from_value(item).map_err(|e| e.to_string()),
                format!("vectors[{i}]"),
            )?;
        }
        return Ok(out);
    }
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        keep(
            serde_json::from_str(line).map_err(|e| e.to_string()),
            format!("line {}", n + 1),
        )?;
    }
    if out.is_empty() && !discard {
        return Err(VectorError::invalid("the body holds no vectors"));
    }
    Ok(out)
}

fn check_count(n: usize) -> Result<(), VectorError> {
    if n > MAX_VECTORS_PER_WRITE {
        return Err(VectorError::invalid(format!(
            "a write takes at most {MAX_VECTORS_PER_WRITE} vectors"
        )));
    }
    Ok(())
}

pub fn check_ids(ids: &[String]) -> Result<(), VectorError> {
    if ids.is_empty() {
        return Err(VectorError::invalid("`ids` must not be empty"));
    }
    if ids.len() > MAX_IDS_PER_CALL {
        return Err(VectorError::invalid(format!(
            "`ids` takes at most {MAX_IDS_PER_CALL} ids, got {}",
            ids.len()
        )));
    }
    if let Some(bad) = ids
        .iter()
        .position(|id| id.is_empty() || id.len() > MAX_ID_BYTES)
    {
        return Err(VectorError::invalid(format!(
            "`ids[{bad}]` must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_errors_name_the_line() {
        let body = b"{\"id\":\"a\",\"values\":[1,2]}\n{\"id\":\"b\",\"values\":[1]}\n";
        let e = parse_vectors(body, 2, false).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("1 dimensions"), "{e}");
        let kept = parse_vectors(body, 2, true).unwrap();
        assert_eq!(kept.len(), 1);
        let e = parse_vectors(b"{\"id\":\"a\",\"values\":[1,2]}\nnot json\n", 2, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_vectors(b"{\"id\":\"a\",\"values\":[1e39,2]}", 2, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("values[0]"), "{e}");
        let big = format!(
            "{{\"id\":\"a\",\"values\":[1,2],\"metadata\":{{\"t\":\"{}\"}}}}",
            "x".repeat(11000)
        );
        let e = parse_vectors(big.as_bytes(), 2, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10240"), "{e}");
        let e = parse_vectors(
            b"{\"id\":\"a\",\"values\":[1,2],\"metadata\":{\"a.b\":1}}",
            2,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"a.b\""), "{e}");
    }

    #[test]
    fn json_form_is_accepted() {
        let body = br#"{"vectors":[{"id":"a","values":[1,2],"namespace":"n","metadata":{"k":1}}]}"#;
        let r = parse_vectors(body, 2, false).unwrap();
        assert_eq!(r[0].namespace.as_deref(), Some("n"));
    }
}
