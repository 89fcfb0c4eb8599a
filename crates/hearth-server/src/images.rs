//! Image classification (`@cf/microsoft/resnet-50`'s contract, served by
//! EfficientNet-Lite0): the image travels as the raw request body, as a
//! JSON array of bytes (`{"image": [137, 80, ...]}`) or as base64
//! (`{"image": "iVBOR..."}`), the three ways Workers AI takes binary
//! inputs; the answer is the top five `[{label, score}]`, best first.
//! Object detection (`@cf/facebook/detr-resnet-50`) takes the image the
//! same three ways and answers `[{score, label, box: {xmin, ymin, xmax,
//! ymax}}]`, best first, boxes in the image's pixels.

use axum::response::Response;
use hearth_types::embeddings::{BoundingBox, DetectedObject, LabelScore};

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

pub async fn detect(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let (image, _) = body::binary_input(bytes, "image")?;
    let (found, resolved) = state
        .app
        .detect_objects(model, image, hearth_engine::detect::THRESHOLD)
        .await?;
    admission.charge_units(1.0, 0);
    let result: Vec<DetectedObject> = found
        .into_iter()
        .map(|d| DetectedObject {
            score: d.score,
            label: d.label,
            bounding_box: BoundingBox {
                xmin: d.xmin,
                ymin: d.ymin,
                xmax: d.xmax,
                ymax: d.ymax,
            },
        })
        .collect();
    Ok(enveloped(result, &resolved))
}
