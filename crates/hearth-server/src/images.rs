//! Image classification (`@cf/microsoft/resnet-50`'s contract, served by
//! EfficientNet-Lite0): the image travels as the raw request body, as a
//! JSON array of bytes (`{"image": [137, 80, ...]}`) or as base64
//! (`{"image": "iVBOR..."}`), the three ways Workers AI takes binary
//! inputs; the answer is the top five `[{label, score}]`, best first.

use axum::Json;
use axum::response::{IntoResponse, Response};
use hearth_types::Envelope;
use serde_json::{Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, tag_response};

/// Labels returned, as Workers AI's image classifiers do.
const TOP: usize = 5;

/// The image bytes of a request in any of the three forms.
pub fn image_bytes(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    Ok(body::binary_input(bytes, "image")?.0)
}

pub async fn classify(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let image = image_bytes(bytes)?;
    let (labels, resolved) = state.app.classify_image(model, image, TOP).await?;
    admission.charge_units(1.0, 0);
    let result: Vec<Value> = labels
        .into_iter()
        .map(|(label, score)| json!({"label": label, "score": score}))
        .collect();
    let mut response = Json(Envelope::ok(result)).into_response();
    tag_response(&mut response, &resolved);
    Ok(response)
}
