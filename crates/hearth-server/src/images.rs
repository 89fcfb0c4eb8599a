//! Image classification (`@cf/microsoft/resnet-50`'s contract, served by
//! EfficientNet-Lite0): the image travels as the raw request body, as a
//! JSON array of bytes (`{"image": [137, 80, ...]}`) or as base64
//! (`{"image": "iVBOR..."}`), the three ways Workers AI takes binary
//! inputs; the answer is the top five `[{label, score}]`, best first.
//! Object detection (`@cf/facebook/detr-resnet-50`) takes the image the
//! same three ways and answers `[{score, label, box: {xmin, ymin, xmax,
//! ymax}}]`, best first, boxes in the image's pixels. Image-to-text
//! (`@cf/llava-hf/llava-1.5-7b-hf`, `@cf/unum/uform-gen2-qwen-500m`) takes
//! the image the same ways beside `prompt`, `raw`, `max_tokens` and the
//! sampling fields, and answers `{description}`.

use axum::response::Response;
use hearth_types::embeddings::{BoundingBox, DetectedObject, LabelScore};

use hearth_types::ApiError;
use hearth_types::textgen::{
    GenerationParams, MessageContent, PromptSource, TextGenerationInput, Usage,
};
use serde_json::{Map, Value, json};

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

/// What image-to-text models are asked when the request has no `prompt`.
const DEFAULT_DESCRIBE_PROMPT: &str = "Generate a caption for this image.";
/// `max_tokens` when the request gives none, as Workers AI's schema has it.
const DEFAULT_DESCRIBE_TOKENS: u32 = 512;

pub async fn describe(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let (image, input) = body::binary_input(bytes, "image")?;
    let (prompt, raw, params) = describe_options(&input)?;
    let (out, resolved) = state
        .app
        .describe_image(model, image, prompt, raw, params)
        .await?;
    admission.charge_usage(&Usage::from_counts(
        out.prompt_tokens,
        out.completion_tokens,
    ));
    Ok(enveloped(json!({ "description": out.text }), &resolved))
}

/// The prompt, `raw` and sampling settings of an image-to-text request
/// (greedy unless a `temperature` is given), each field checked.
fn describe_options(
    input: &Map<String, Value>,
) -> Result<(String, bool, GenerationParams), Failure> {
    const FIELDS: [&str; 11] = [
        "prompt",
        "raw",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
        "messages",
    ];
    let bad = |m: String| Failure(ApiError::invalid_input(m));
    if let Some(other) = input.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "`{other}` is not an input of Image-to-Text (it takes `image`, {})",
            FIELDS[..10]
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if input.contains_key("messages") {
        return Err(bad(
            "`messages` with images is not served yet; send `image` and `prompt`".into(),
        ));
    }
    let ranged = |key: &str, lo: f64, hi: f64| body::number_within(input, key, lo..=hi);
    let whole = |key: &str, lo: f64, hi: f64| body::whole_within(input, key, lo..=hi);
    let prompt = match body::text(input, "prompt")? {
        Some(p) if p.trim().is_empty() => return Err(bad("`prompt` must not be empty".into())),
        Some(p) => p,
        None => DEFAULT_DESCRIBE_PROMPT.to_string(),
    };
    let params = GenerationParams {
        max_tokens: whole("max_tokens", 1.0, 4096.0)?.map_or(DEFAULT_DESCRIBE_TOKENS, |v| v as u32),
        temperature: ranged("temperature", 0.0, 5.0)?.unwrap_or(0.0) as f32,
        top_p: ranged("top_p", 0.0, 2.0)?.map(|v| v as f32),
        top_k: whole("top_k", 1.0, 50.0)?.map(|v| v as u32),
        seed: whole("seed", 0.0, 9_999_999_999.0)?,
        repetition_penalty: ranged("repetition_penalty", 0.0, 2.0)?.map(|v| v as f32),
        frequency_penalty: ranged("frequency_penalty", -2.0, 2.0)?.map(|v| v as f32),
        presence_penalty: ranged("presence_penalty", -2.0, 2.0)?.map(|v| v as f32),
        ..GenerationParams::default()
    };
    Ok((prompt, body::flag(input, "raw")?.unwrap_or(false), params))
}

/// An image taken out of a chat request, and the index of the message that
/// carried it (`None` for the `image` field).
pub struct ChatImage {
    bytes: Vec<u8>,
    message: Option<usize>,
}

impl ChatImage {
    /// The encoded image and the index of the message that carried it.
    pub fn into_parts(self) -> (Vec<u8>, Option<usize>) {
        (self.bytes, self.message)
    }
}

/// The image of a text-generation request (vision chat), taken out of it:
/// the `image` field (bytes or base64), or an `image_url` part of a
/// message as a `data:` URI (Hearth fetches nothing). One image per
/// request.
pub fn take_image(input: &mut TextGenerationInput) -> Result<Option<ChatImage>, Failure> {
    use base64::Engine;
    let bad = |m: String| Failure(ApiError::invalid_input(m));
    let mut found = match input.image.take() {
        None | Some(Value::Null) => None,
        Some(v) => Some(ChatImage {
            bytes: body::binary_value(v, "image")?,
            message: None,
        }),
    };
    for (i, message) in input.messages.iter_mut().flatten().enumerate() {
        let MessageContent::Parts(parts) = &mut message.content else {
            continue;
        };
        let mut kept = Vec::with_capacity(parts.len());
        for (j, part) in std::mem::take(parts).into_iter().enumerate() {
            if part.kind == "text" {
                kept.push(part);
                continue;
            }
            let field = format!("messages[{i}].content[{j}]");
            if part.kind != "image_url" {
                return Err(bad(format!(
                    "`{field}.type` must be text or image_url, got `{}`",
                    part.kind
                )));
            }
            let url = part
                .image_url
                .as_ref()
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("`{field}.image_url.url` is required")))?;
            let Some((_, data)) = url
                .strip_prefix("data:")
                .and_then(|d| d.split_once(";base64,"))
            else {
                return Err(bad(format!(
                    "`{field}.image_url.url` must be a data: URI with base64 (Hearth fetches no URLs)"
                )));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| bad(format!("`{field}.image_url.url` is not valid base64: {e}")))?;
            if found.is_some() {
                return Err(bad(format!("`{field}`: one image per request")));
            }
            found = Some(ChatImage {
                bytes,
                message: Some(i),
            });
        }
        *parts = kept;
    }
    Ok(found)
}

/// A chat (about an image, when one comes) with a vision model (a Text
/// Generation id whose weights are a LLaVA or Llama 3.2 Vision folder),
/// as a generation both routes stream or collect like llama.cpp's. The
/// image goes with the message that carried it (the `image` field: the
/// first user turn); a `raw` prompt skips the chat template. Tools, JSON
/// mode and LoRA adapters are GGUF models'.
pub async fn vision_generation(
    state: &AppState,
    model: &str,
    image: Option<ChatImage>,
    (source, raw): (&PromptSource, bool),
    params: GenerationParams,
    extras: bool,
) -> Result<hearth_runtime::app::Generation, Failure> {
    if extras {
        return Err(Failure(ApiError::invalid_input(format!(
            "`tools`, `response_format` and `lora` are served for GGUF models; {model}'s weights are a vision folder"
        ))));
    }
    let (bytes, carrier) = match image {
        Some(ChatImage { bytes, message }) => (Some(bytes), message),
        None => (None, None),
    };
    let with_image = bytes.is_some();
    let turn = |role: &str, text: &str, image: bool| hearth_runtime::app::VisionTurn {
        role: role.to_string(),
        text: text.to_string(),
        image,
    };
    let turns: Vec<_> = match source {
        PromptSource::Prompt(text) => vec![turn("user", text, with_image)],
        PromptSource::Messages(messages) => {
            let first_user = messages.iter().position(|m| m.role == "user");
            let carrier = carrier.or(first_user).filter(|_| with_image);
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| turn(&m.role, &m.content, Some(i) == carrier))
                .collect()
        }
    };
    Ok(state
        .app
        .vision_generate(model, bytes, turns, raw, params)
        .await?)
}
