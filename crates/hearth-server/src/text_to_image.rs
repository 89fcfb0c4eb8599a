//! Text-to-Image, in Workers AI's two contracts:
//!
//! - the Stable Diffusion family (`AiTextToImageInput`: `prompt`,
//!   `negative_prompt`, `height`, `width`, `image` / `image_b64` for
//!   img2img, `mask` for inpainting, `num_steps` up to 20, `strength`,
//!   `guidance`, `seed`) answers the raw `image/png` body;
//! - FLUX (`prompt` of 1-2048 characters, `steps` up to 8, nothing else)
//!   answers `{image: <base64 JPEG>}` in the envelope.
//!
//! Whatever the id, the drawing is done by the model its weights folder
//! holds (`hearth_engine::diffusion`: Stable Diffusion 1.x or FLUX).

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hearth_engine::diffusion::ImageRequest;
use hearth_types::ApiError;
use serde_json::{Map, Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, enveloped, tag_response};

/// `height` and `width` bounds of the Stable Diffusion schema.
const MIN_SIZE: u32 = 256;
const MAX_SIZE: u32 = 2048;
const MAX_SD_STEPS: usize = 20;
const MAX_FLUX_STEPS: usize = 8;
const MAX_FLUX_PROMPT: usize = 2048;
/// Tiles are what FLUX is priced by.
const TILE: u32 = 512;

fn bad(message: String) -> Failure {
    Failure(ApiError::invalid_input(message))
}

fn is_flux(model: &str) -> bool {
    model.contains("/flux")
}

pub async fn run(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let Value::Object(input) = body::parse_json::<Value>(bytes)? else {
        return Err(bad("the body must be a JSON object with `prompt`".into()));
    };
    let flux = is_flux(model);
    let request = if flux {
        flux_request(input)?
    } else {
        stable_diffusion_request(input)?
    };
    let steps = request.steps as u32;
    let (drawing, resolved) = state.app.draw(model, request).await?;
    let tiles = drawing.width().div_ceil(TILE) * drawing.height().div_ceil(TILE);
    admission.charge_units(f64::from(tiles), steps);
    if flux {
        let jpeg = drawing.jpeg().map_err(hearth_runtime::AppError::from)?;
        let image = base64::engine::general_purpose::STANDARD.encode(jpeg);
        return Ok(enveloped(json!({ "image": image }), &resolved));
    }
    let png = drawing.png().map_err(hearth_runtime::AppError::from)?;
    let mut response = ([(CONTENT_TYPE, "image/png")], png).into_response();
    tag_response(&mut response, &resolved);
    Ok(response)
}

fn prompt(input: &Map<String, Value>) -> Result<String, Failure> {
    match body::text(input, "prompt")? {
        None => Err(bad("`prompt` is required".into())),
        Some(p) if p.trim().is_empty() => Err(bad("`prompt` must not be empty".into())),
        Some(p) => Ok(p),
    }
}

fn random_seed() -> u64 {
    rand::random()
}

fn stable_diffusion_request(mut input: Map<String, Value>) -> Result<ImageRequest, Failure> {
    const FIELDS: [&str; 11] = [
        "prompt",
        "negative_prompt",
        "height",
        "width",
        "image",
        "image_b64",
        "mask",
        "num_steps",
        "strength",
        "guidance",
        "seed",
    ];
    if let Some(other) = input.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "`{other}` is not an input of Text-to-Image (it takes {})",
            FIELDS.map(|f| format!("`{f}`")).join(", ")
        )));
    }
    let size = |input: &Map<String, Value>, key: &str| {
        body::whole_within(input, key, f64::from(MIN_SIZE)..=f64::from(MAX_SIZE))
            .map(|v| v.map(|v| v as u32))
    };
    let strength = body::number_within(&input, "strength", 0.0..=1.0)?.unwrap_or(1.0);
    let guidance = body::number(&input, "guidance")?.unwrap_or(7.5);
    if !guidance.is_finite() || guidance < 0.0 {
        return Err(bad(format!(
            "`guidance` must be a number of at least 0, got {guidance}"
        )));
    }
    let mut binary = |key: &str| -> Result<Option<Vec<u8>>, Failure> {
        match input.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(body::binary_value(v, key)?)),
        }
    };
    let image = match (binary("image")?, binary("image_b64")?) {
        (Some(_), Some(_)) => {
            return Err(bad("send `image` or `image_b64`, not both".into()));
        }
        (a, b) => a.or(b),
    };
    let mask = binary("mask")?;
    Ok(ImageRequest {
        prompt: prompt(&input)?,
        negative_prompt: body::text(&input, "negative_prompt")?.unwrap_or_default(),
        width: size(&input, "width")?,
        height: size(&input, "height")?,
        steps: body::whole_within(&input, "num_steps", 1.0..=MAX_SD_STEPS as f64)?
            .map_or(MAX_SD_STEPS, |v| v as usize),
        guidance,
        seed: body::whole_within(&input, "seed", 0.0..=(u64::MAX >> 11) as f64)?
            .unwrap_or_else(random_seed),
        image,
        strength,
        mask,
    })
}

fn flux_request(input: Map<String, Value>) -> Result<ImageRequest, Failure> {
    if let Some(other) = input
        .keys()
        .find(|k| !["prompt", "steps"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "`{other}` is not an input of this model (it takes `prompt`, `steps`)"
        )));
    }
    let prompt = prompt(&input)?;
    if prompt.chars().count() > MAX_FLUX_PROMPT {
        return Err(bad(format!(
            "`prompt` is over {MAX_FLUX_PROMPT} characters"
        )));
    }
    Ok(ImageRequest {
        prompt,
        negative_prompt: String::new(),
        width: None,
        height: None,
        steps: body::whole_within(&input, "steps", 1.0..=MAX_FLUX_STEPS as f64)?
            .map_or(4, |v| v as usize),
        // schnell has no guidance input; dev embeds this, its default.
        guidance: 3.5,
        seed: random_seed(),
        image: None,
        strength: 1.0,
        mask: None,
    })
}
