//! Workers AI's `toMarkdown`: `POST .../ai/tomarkdown` (multipart, one or
//! more files) answers one result per file, in order, with the file's
//! markdown or its own error; `GET .../ai/tomarkdown/supported` lists the
//! types that convert.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request};
use axum::response::{IntoResponse, Response};
use hearth_search::markdown;
use hearth_types::{ApiError, Envelope};
use serde_json::{Value, json};

use crate::error::Failure;

/// Largest body of one conversion request.
pub const MAX_BODY_BYTES: usize = 100 << 20;

/// Tokens of a text as Workers AI reports them for conversions; Hearth
/// estimates four characters per token (it does not tokenize here).
fn estimated_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

pub async fn supported() -> Json<Envelope<Vec<Value>>> {
    Json(Envelope::ok(
        markdown::supported()
            .into_iter()
            .map(|(mime, ext)| json!({"extension": ext, "mimeType": mime}))
            .collect(),
    ))
}

pub async fn transform(request: Request) -> Result<Response, Failure> {
    let bad = |m: String| Failure(ApiError::invalid_input(m));
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("the body must be a multipart form of files: {e}")))?;
    let mut files = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("multipart body: {e}")))?
    {
        let Some(name) = field
            .file_name()
            .map(str::to_string)
            .or_else(|| field.name().map(str::to_string))
        else {
            continue;
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("multipart field for `{name}`: {e}")))?;
        files.push((name, bytes));
    }
    if files.is_empty() {
        return Err(bad("the form holds no files (send them as `files`)".into()));
    }
    let results = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|(name, bytes)| match markdown::convert(name, bytes) {
                Ok(c) => json!({
                    "name": name,
                    "mimeType": c.mime_type,
                    "format": "markdown",
                    "tokens": estimated_tokens(&c.markdown).to_string(),
                    "data": c.markdown,
                }),
                // `data` and `tokens` stay present: the REST schema (and
                // so the SDK's type) requires them on every result.
                Err(e) => json!({
                    "name": name,
                    "mimeType": markdown::mime_type(name),
                    "format": "error",
                    "tokens": "0",
                    "data": "",
                    "error": e.to_string(),
                }),
            })
            .collect::<Vec<Value>>()
    })
    .await
    .map_err(|e| Failure::internal("conversion task", e))?;
    Ok(Json(Envelope::ok(results)).into_response())
}
