//! Image classification (`@cf/microsoft/resnet-50`'s contract, served by
//! EfficientNet-Lite0): the image travels as the raw request body, as a
//! JSON array of bytes (`{"image": [137, 80, ...]}`) or as base64
//! (`{"image": "iVBOR..."}`), the three ways Workers AI takes binary
//! inputs; the answer is the top five `[{label, score}]`, best first.

use axum::response::Response;
use hearth_types::embeddings::LabelScore;

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, enveloped};

/// Labels returned, as Workers AI's image classifiers do.
const TOP: usize = 5;

pub async fn classify(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let (image, _) = body::binary_input(bytes, "image")?;
    let (labels, resolved) = state.app.classify_image(model, image, TOP).await?;
    admission.charge_units(1.0, 0);
    let result: Vec<LabelScore> = labels
        .into_iter()
        .map(|(label, score)| LabelScore { label, score })
        .collect();
    Ok(enveloped(result, &resolved))
}
