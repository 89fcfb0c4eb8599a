//! Summarization (`@cf/facebook/bart-large-cnn`'s contract: `input_text`,
//! `max_length` -> `{summary}`). When the model's weights are installed
//! (or aliased to a BART folder), BART on candle writes the summary with
//! its own beam search; otherwise the server's default instruct model
//! writes it from a summarize prompt, and the `x-hearth-summarizer` header
//! (and the catalog's `hearth_served_by` property) say so. Charged as the
//! Summarization model.

use axum::response::Response;
use hearth_engine::textgen::Priority;
use hearth_runtime::PromptInput;
use hearth_types::ApiError;
use hearth_types::textgen::{GenerationParams, Usage, ValidMessage};
use hearth_types::tools::OutputShape;
use serde_json::{Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::workers_ai::collect;
use crate::{AppState, body, enveloped};

pub use hearth_runtime::app::SUMMARIZATION;
/// Says which model wrote a summary.
pub const SUMMARIZER_HEADER: &str = "x-hearth-summarizer";
/// The instruct model's token bound when the request gives no
/// `max_length`, as the schema's default has it (BART uses its own).
const DEFAULT_MAX_LENGTH: u64 = 1024;

const INSTRUCTIONS: &str = "Summarize the text the user gives in a few sentences. \
Keep the key facts, names and numbers. Reply with the summary only.";

fn bad(message: impl Into<String>) -> Failure {
    Failure(ApiError::invalid_input(message.into()))
}

/// `input_text` and `max_length` of a request, checked.
fn parse(bytes: &[u8]) -> Result<(String, Option<u64>), Failure> {
    let Value::Object(input) = body::parse_json::<Value>(bytes)? else {
        return Err(bad("the body must be a JSON object with `input_text`"));
    };
    let text = match input.get("input_text") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(bad("`input_text` must not be empty")),
        Some(_) => return Err(bad("`input_text` must be a string")),
        None => return Err(bad("`input_text` is required")),
    };
    let max_length = match input.get("max_length") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("`max_length` must be a positive integer, got {v}")))?,
        ),
    };
    if let Some(other) = input
        .keys()
        .find(|k| !["input_text", "max_length"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "`{other}` is not an input of {SUMMARIZATION} (it takes `input_text`, `max_length`)"
        )));
    }
    Ok((text, max_length))
}

pub async fn run(
    state: &AppState,
    account: &str,
    model: &str,
    bytes: &[u8],
) -> Result<Response, Failure> {
    let (text, max_length) = parse(bytes)?;
    if state.app.resolve(model).is_ok() {
        let admission = Admission::admit(state, account, model, SUMMARIZATION)?;
        let max_length = max_length.map(|m| m.min(u64::from(u32::MAX)) as usize);
        let ((summary, input, output), resolved) =
            state.app.summarize(model, text, max_length).await?;
        admission.charge_usage(&Usage::from_counts(input, output));
        return Ok(enveloped(json!({ "summary": summary }), &resolved));
    }
    let max_tokens = max_length
        .unwrap_or(DEFAULT_MAX_LENGTH)
        .min(u64::from(u32::MAX)) as u32;
    let task = InstructedTask {
        task: SUMMARIZATION,
        instructions: INSTRUCTIONS.to_string(),
        header: SUMMARIZER_HEADER,
        answer_key: "summary",
    };
    task.run(state, account, model, text, max_tokens).await
}

/// A task contract answered by the default instruct model from
/// instructions (the system turn) and the user's text, at temperature 0;
/// `header` names the model that wrote the answer `{answer_key: text}`.
/// Charged as `task` on the requested model.
pub(crate) struct InstructedTask {
    pub task: &'static str,
    pub instructions: String,
    pub header: &'static str,
    pub answer_key: &'static str,
}

impl InstructedTask {
    pub async fn run(
        &self,
        state: &AppState,
        account: &str,
        model: &str,
        text: String,
        max_tokens: u32,
    ) -> Result<Response, Failure> {
        let admission = Admission::admit(state, account, model, self.task)?;
        let writer = state.app.config().default_model.clone();
        let params = GenerationParams {
            max_tokens,
            temperature: 0.0,
            ..GenerationParams::default()
        };
        let messages = vec![
            ValidMessage::new("system", self.instructions.clone()),
            ValidMessage::new("user", text),
        ];
        let mut generation = state
            .app
            .generate_with(
                &writer,
                PromptInput::Messages(messages),
                &OutputShape::default(),
                params,
                false,
                Priority::Interactive,
            )
            .await?;
        let out = collect(&mut generation, state.timeout())
            .await
            .map_err(Failure)?;
        admission.charge_usage(&out.usage);
        let answer = json!({ self.answer_key: out.text.trim() });
        let mut response = enveloped(answer, &generation.resolved);
        if let Ok(v) = axum::http::HeaderValue::from_str(&writer) {
            response.headers_mut().insert(self.header, v);
        }
        Ok(response)
    }
}
