//! Image classification (`@cf/microsoft/resnet-50`'s contract, served by
//! EfficientNet-Lite0): the image travels as the raw request body, as a
//! JSON array of bytes (`{"image": [137, 80, ...]}`) or as base64
//! (`{"image": "iVBOR..."}`), the three ways Workers AI takes binary
//! inputs; the answer is the top five `[{label, score}]`, best first.

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hearth_types::{ApiError, Envelope};
use serde_json::{Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, tag_response};

/// Labels returned, as Workers AI's image classifiers do.
const TOP: usize = 5;

fn bad(message: impl Into<String>) -> Failure {
    Failure(ApiError::invalid_input(message.into()))
}

/// The image bytes of a request in any of the three forms.
pub fn image_bytes(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    if bytes.first() != Some(&b'{') {
        if bytes.is_empty() {
            return Err(bad(
                "`image` is empty: send the image as the body, or `{\"image\": [...]}`",
            ));
        }
        return Ok(bytes.to_vec());
    }
    let Value::Object(input) = body::parse_json::<Value>(bytes)? else {
        return Err(bad(
            "the body must be an image or a JSON object with `image`",
        ));
    };
    let image = match input.get("image") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|b| *b <= 255)
                    .map(|b| b as u8)
                    .ok_or_else(|| bad(format!("`image` must hold bytes (0-255), got {v}")))
            })
            .collect::<Result<Vec<u8>, _>>()?,
        Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| bad(format!("`image` is not valid base64: {e}")))?,
        Some(other) => {
            return Err(bad(format!(
                "`image` must be an array of bytes or a base64 string, got {other}"
            )));
        }
        None => return Err(bad("`image` is required")),
    };
    if image.is_empty() {
        return Err(bad("`image` is empty"));
    }
    Ok(image)
}

pub async fn classify(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let image = image_bytes(bytes)?;
    let (labels, resolved) = state.app.classify_image(model, image, TOP).await?;
    admission.charge(0, 0);
    let result: Vec<Value> = labels
        .into_iter()
        .map(|(label, score)| json!({"label": label, "score": score}))
        .collect();
    let mut response = Json(Envelope::ok(result)).into_response();
    tag_response(&mut response, &resolved);
    Ok(response)
}
