//! Workers AI Text Generation: input (`prompt` or `messages` forms), validation
//! into [`ValidTextGeneration`], and output shapes (JSON and SSE chunks).
//!
//! Validation happens once, here, at the edge: downstream code receives a
//! [`ValidTextGeneration`] and never re-checks ranges.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::tools::{OutputShape, ResponseFormat, parse_response_format};

/// Workers AI's default `max_tokens` for nearly every text-generation model.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Workers AI's default sampling temperature.
pub const DEFAULT_TEMPERATURE: f32 = 0.6;

/// The raw `/ai/run` body for a text-generation model, as Workers AI accepts it.
/// Unknown top-level fields are rejected (`deny_unknown_fields`) so typos get a
/// 5006 naming the field instead of being silently dropped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextGenerationInput {
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub repetition_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub lora: Option<String>,
    pub response_format: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Vec<Value>>,
    pub image: Option<Value>,
    pub guided_json: Option<Value>,
    /// REST-level options (`{"rejectIfBusy": true}`), not a model input.
    pub options: Option<RunOptions>,
    /// Batch submission form; handled by the batch API, refused here.
    pub requests: Option<Vec<Value>>,
}

/// Top-level `options` of a REST `/ai/run` call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    #[serde(default)]
    pub reject_if_busy: bool,
}

/// One chat message. `content` is a string or (newer models) an array of parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: MessageContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
    Null(()),
}

impl Default for MessageContent {
    fn default() -> Self {
        MessageContent::Null(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<Value>,
}

impl MessageContent {
    /// The text of the message; text parts are joined, image parts are refused
    /// by the caller before this is used.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(t) => t.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
            MessageContent::Null(()) => String::new(),
        }
    }

    fn has_image(&self) -> bool {
        matches!(self, MessageContent::Parts(parts) if parts.iter().any(|p| p.kind != "text"))
    }
}

/// A message after validation: a known role and plain text, and for
/// function calling the assistant's calls (OpenAI's shape, `arguments` an
/// object, as chat templates expect) or the id of the call a tool answers.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ValidMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ValidMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSource {
    /// `prompt`: wrapped as one user turn unless `raw`.
    Prompt(String),
    Messages(Vec<ValidMessage>),
}

/// Sampling and length controls, checked against Workers AI's ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Keep generating past end-of-sequence tokens (benchmarks; llama-server's `ignore_eos`).
    pub ignore_eos: bool,
    /// Strings that end generation when they appear; they are not returned.
    pub stop: Vec<String>,
    /// Constrained decoding (JSON mode, tool calls).
    pub grammar: Option<Grammar>,
    /// A LoRA adapter (llama.cpp GGUF) applied to this generation only.
    pub adapter: Option<std::path::PathBuf>,
}

/// A llama.cpp GBNF grammar the output is held to.
#[derive(Debug, Clone, PartialEq)]
pub struct Grammar {
    pub gbnf: String,
    /// Lazy grammars hold the output only from the first occurrence of this
    /// text on (a tool call the model chooses to start); without it the
    /// whole output is held from the first token.
    pub trigger: Option<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            top_p: None,
            top_k: None,
            seed: None,
            repetition_penalty: None,
            frequency_penalty: None,
            presence_penalty: None,
            ignore_eos: false,
            stop: Vec::new(),
            grammar: None,
            adapter: None,
        }
    }
}

/// A text-generation request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTextGeneration {
    pub source: PromptSource,
    pub raw: bool,
    pub stream: bool,
    pub params: GenerationParams,
    pub reject_if_busy: bool,
    pub shape: OutputShape,
    /// A fine-tune's name or id whose adapter this run applies.
    pub lora: Option<String>,
}

pub(crate) fn check_range(field: &str, value: f64, lo: f64, hi: f64) -> Result<f32, ApiError> {
    if !value.is_finite() || value < lo || value > hi {
        return Err(ApiError::invalid_input(format!(
            "`{field}` must be between {lo} and {hi}, got {value}"
        )));
    }
    Ok(value as f32)
}

pub(crate) fn check_int(field: &str, value: i64, lo: i64, hi: i64) -> Result<i64, ApiError> {
    if value < lo || value > hi {
        return Err(ApiError::invalid_input(format!(
            "`{field}` must be between {lo} and {hi}, got {value}"
        )));
    }
    Ok(value)
}

/// Largest `max_tokens` accepted at the edge; the model's own context window
/// is checked later, once the prompt is tokenized.
pub const MAX_TOKENS_LIMIT: i64 = 131_072;

/// Parse numeric sampling fields shared by the native and OpenAI surfaces.
#[allow(clippy::too_many_arguments)]
pub fn validate_params(
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    seed: Option<i64>,
    repetition_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
) -> Result<GenerationParams, ApiError> {
    let mut params = GenerationParams::default();
    if let Some(v) = max_tokens {
        params.max_tokens = check_int("max_tokens", v, 1, MAX_TOKENS_LIMIT)? as u32;
    }
    if let Some(v) = temperature {
        params.temperature = check_range("temperature", v, 0.0, 5.0)?;
    }
    if let Some(v) = top_p {
        params.top_p = Some(check_range("top_p", v, 0.0, 2.0)?);
    }
    if let Some(v) = top_k {
        params.top_k = Some(check_int("top_k", v, 1, 50)? as u32);
    }
    if let Some(v) = seed {
        params.seed = Some(check_int("seed", v, 0, 9_999_999_999)? as u64);
    }
    if let Some(v) = repetition_penalty {
        params.repetition_penalty = Some(check_range("repetition_penalty", v, 0.0, 2.0)?);
    }
    if let Some(v) = frequency_penalty {
        params.frequency_penalty = Some(check_range("frequency_penalty", v, -2.0, 2.0)?);
    }
    if let Some(v) = presence_penalty {
        params.presence_penalty = Some(check_range("presence_penalty", v, -2.0, 2.0)?);
    }
    Ok(params)
}

/// Check roles and content of chat messages.
pub fn validate_messages(messages: &[ChatMessage]) -> Result<Vec<ValidMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_input(
            "`messages` must contain at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid_input(format!(
                    "`messages[{i}].role` must be one of system, user, assistant, tool; got `{}`",
                    m.role
                )));
            }
            if m.content.has_image() {
                return Err(ApiError::invalid_input(format!(
                    "`messages[{i}].content` has an image part; this model takes text only"
                )));
            }
            let tool_calls = match (&m.tool_calls, m.role.as_str()) {
                (None | Some(Value::Null), _) => None,
                (Some(Value::Array(calls)), "assistant") => Some(
                    calls
                        .iter()
                        .enumerate()
                        .map(|(j, c)| template_call(c).ok_or_else(|| {
                            ApiError::invalid_input(format!(
                                "`messages[{i}].tool_calls[{j}]` must have a `name` (or `function.name`) and object `arguments`"
                            ))
                        }))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                (Some(_), "assistant") => {
                    return Err(ApiError::invalid_input(format!(
                        "`messages[{i}].tool_calls` must be an array"
                    )));
                }
                (Some(_), _) => {
                    return Err(ApiError::invalid_input(format!(
                        "`messages[{i}].tool_calls` is only allowed on assistant messages"
                    )));
                }
            };
            Ok(ValidMessage {
                role: m.role.clone(),
                content: m.content.text(),
                tool_calls,
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
        })
        .collect()
}

/// A call of an earlier assistant turn in the shape chat templates read:
/// `{id?, type: "function", function: {name, arguments: object}}`, from
/// either the legacy `{name, arguments}` or OpenAI's form (whose
/// `arguments` is a JSON string).
fn template_call(call: &Value) -> Option<Value> {
    let func = call.get("function").unwrap_or(call);
    let name = func.get("name")?.as_str()?;
    let arguments = match func.get("arguments") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(v @ Value::Object(_)) => v.clone(),
        None | Some(Value::Null) => serde_json::json!({}),
        Some(_) => return None,
    };
    let mut out = serde_json::json!({
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    });
    if let Some(id) = call.get("id").and_then(Value::as_str) {
        out["id"] = Value::String(id.to_string());
    }
    Some(out)
}

impl TextGenerationInput {
    pub fn validate(self) -> Result<ValidTextGeneration, ApiError> {
        if self.requests.is_some() {
            return Err(ApiError::invalid_input(
                "`requests` (async batch) is only accepted with `?queueRequest=true`",
            ));
        }
        for (field, present) in [
            ("functions", self.functions.is_some()),
            ("image", self.image.is_some()),
        ] {
            if present {
                return Err(ApiError::invalid_input(format!(
                    "`{field}` is not supported by this model on Hearth yet"
                )));
            }
        }
        let source = match (self.prompt, self.messages) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_input(
                    "oneOf at '/' not met: give either `prompt` or `messages`, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid_input(
                    "oneOf at '/' not met: `prompt` or `messages` is required",
                ));
            }
            (Some(prompt), None) => {
                if prompt.is_empty() {
                    return Err(ApiError::invalid_input(
                        "`prompt` must NOT have fewer than 1 characters",
                    ));
                }
                if prompt.chars().count() > 131_072 {
                    return Err(ApiError::invalid_input(
                        "`prompt` must NOT have more than 131072 characters",
                    ));
                }
                PromptSource::Prompt(prompt)
            }
            (None, Some(messages)) => PromptSource::Messages(validate_messages(&messages)?),
        };
        let params = validate_params(
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.top_k,
            self.seed,
            self.repetition_penalty,
            self.frequency_penalty,
            self.presence_penalty,
        )?;
        let shape = OutputShape::with_tools(
            self.tools.as_deref().unwrap_or_default(),
            self.tool_choice.as_ref(),
        )?;
        let mut response_format = parse_response_format(self.response_format.as_ref(), false)?;
        match self.guided_json {
            None | Some(Value::Null) => {}
            Some(schema @ Value::Object(_)) if response_format.is_none() => {
                response_format = Some(ResponseFormat::JsonSchema(schema));
            }
            Some(Value::Object(_)) => {
                return Err(ApiError::invalid_input(
                    "give either `guided_json` or `response_format`, not both",
                ));
            }
            Some(_) => {
                return Err(ApiError::invalid_input(
                    "`guided_json` must be a JSON Schema object",
                ));
            }
        }
        if response_format.is_some() && self.stream {
            return Err(ApiError::invalid_input(
                "JSON mode (`response_format`) does not stream on Workers AI; drop `stream` or `response_format`",
            ));
        }
        if self.raw && (!shape.tools.is_empty() || response_format.is_some()) {
            return Err(ApiError::invalid_input(
                "`raw: true` skips the chat template that carries `tools`; use `messages` without `raw`",
            ));
        }
        let shape = shape.with_format(response_format)?;
        Ok(ValidTextGeneration {
            source,
            raw: self.raw,
            stream: self.stream,
            params,
            reject_if_busy: self.options.is_some_and(|o| o.reject_if_busy),
            shape,
            lora: self.lora.filter(|l| !l.is_empty()),
        })
    }
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }

    /// From engine token counts, saturating at `u32::MAX`.
    pub fn from_counts(prompt_tokens: usize, completion_tokens: usize) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self::new(count(prompt_tokens), count(completion_tokens))
    }
}

/// Non-streamed `result` of a text-generation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextGenerationOutput {
    /// The answer's text, or under JSON mode the JSON value it holds.
    pub response: Value,
    pub tool_calls: Vec<Value>,
    pub usage: Usage,
}

/// One SSE `data:` payload of a streamed run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextGenerationChunk {
    pub response: String,
    /// Calls, sent once each is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ValidTextGeneration, ApiError> {
        serde_json::from_value::<TextGenerationInput>(v)
            .map_err(ApiError::invalid_input)?
            .validate()
    }

    #[test]
    fn defaults_follow_workers_ai() {
        let v = parse(serde_json::json!({"prompt": "hi"})).unwrap();
        assert_eq!(v.params.max_tokens, 256);
        assert_eq!(v.params.temperature, 0.6);
        assert!(!v.raw && !v.stream);
    }

    #[test]
    fn out_of_range_names_the_field() {
        let e = parse(serde_json::json!({"prompt": "hi", "top_k": 99})).unwrap_err();
        assert!(e.message.contains("`top_k`"), "{}", e.message);
    }
}
