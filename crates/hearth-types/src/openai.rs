//! OpenAI-compatible Chat Completions bodies (`/ai/v1/chat/completions`).
//!
//! Like Workers AI, unknown request fields are ignored so that SDKs newer than
//! this file keep working; fields Hearth cannot honour yet are refused by name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::textgen::{
    ChatMessage, GenerationParams, RunOptions, Usage, ValidMessage, validate_messages,
    validate_params,
};
use crate::tools::{OutputShape, parse_response_format};

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub n: Option<i64>,
    pub stop: Option<StopSequences>,
    /// llama-server's extension, honoured so benchmarks compare like with like.
    #[serde(default)]
    pub ignore_eos: bool,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    pub options: Option<RunOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

/// A chat completion request after validation.
#[derive(Debug, Clone)]
pub struct ValidChatCompletion {
    pub model: String,
    pub messages: Vec<ValidMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub params: GenerationParams,
    pub reject_if_busy: bool,
    pub shape: OutputShape,
}

impl ChatCompletionRequest {
    pub fn validate(self) -> Result<ValidChatCompletion, ApiError> {
        let shape = OutputShape::with_tools(
            self.tools.as_deref().unwrap_or_default(),
            self.tool_choice.as_ref(),
        )?
        .with_format(parse_response_format(self.response_format.as_ref(), true)?)?;
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid_input("`n` must be 1"));
        }
        let mut params = validate_params(
            self.max_completion_tokens.or(self.max_tokens),
            self.temperature,
            self.top_p,
            self.top_k,
            self.seed,
            self.repetition_penalty,
            self.frequency_penalty,
            self.presence_penalty,
        )?;
        params.ignore_eos = self.ignore_eos;
        params.stop = match self.stop {
            None => Vec::new(),
            Some(StopSequences::One(s)) => vec![s],
            Some(StopSequences::Many(v)) => v,
        };
        params.stop.retain(|s| !s.is_empty());
        if params.stop.len() > 4 {
            return Err(ApiError::invalid_input("`stop` takes at most 4 sequences"));
        }
        Ok(ValidChatCompletion {
            model: self.model,
            messages: validate_messages(&self.messages)?,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            params,
            reject_if_busy: self.options.is_some_and(|o| o.reject_if_busy),
            shape,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: String,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
}
