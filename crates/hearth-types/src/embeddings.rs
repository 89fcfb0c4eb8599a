//! Workers AI Text Embeddings (`@cf/baai/bge-*`) and OpenAI's
//! `/v1/embeddings`: inputs, validation into [`ValidEmbeddings`], outputs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::textgen::RunOptions;

/// Most texts in one Workers AI embeddings request (`maxItems: 100`).
pub const MAX_TEXTS: usize = 100;
/// Most characters in one text; longer inputs are refused rather than
/// tokenized (they would be truncated to the model's token limit anyway).
pub const MAX_TEXT_CHARS: usize = 32_768;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsInput {
    pub text: Option<Value>,
    pub pooling: Option<String>,
    /// bge-m3's flag; truncation is what every model here does.
    pub truncate_inputs: Option<bool>,
    /// bge-m3's other forms: `contexts` with a `query` rank the contexts,
    /// `contexts` alone embed them.
    pub query: Option<String>,
    pub contexts: Option<Vec<RerankContext>>,
    pub options: Option<RunOptions>,
    pub requests: Option<Vec<Value>>,
}

/// Which of bge-m3's input forms a request used.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingsForm {
    /// `text`: `{shape, data, pooling}`.
    Text,
    /// `contexts` without `query`: `{response: vectors, shape, pooling}`.
    Contexts,
    /// `contexts` with `query`: `{response: [{id, score}]}` best first.
    Ranked { query: String },
}

/// Requested pooling, as Workers AI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingChoice {
    Mean,
    Cls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidEmbeddings {
    /// `text`, or the contexts' texts.
    pub texts: Vec<String>,
    /// `None` when the request did not say (Workers AI then mean-pools).
    pub pooling: Option<PoolingChoice>,
    pub form: EmbeddingsForm,
}

/// `text` (or OpenAI's `input`): a string or 1–100 non-empty strings.
pub fn validate_texts(field: &str, value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let one = |i: Option<usize>, v: &Value| -> Result<String, ApiError> {
        let name = i.map_or_else(|| format!("`{field}`"), |i| format!("`{field}[{i}]`"));
        let s = v
            .as_str()
            .ok_or_else(|| ApiError::invalid_input(format!("{name} must be a string")))?;
        if s.is_empty() {
            return Err(ApiError::invalid_input(format!(
                "{name} must NOT have fewer than 1 characters"
            )));
        }
        if s.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::invalid_input(format!(
                "{name} must NOT have more than {MAX_TEXT_CHARS} characters"
            )));
        }
        Ok(s.to_string())
    };
    match value {
        None | Some(Value::Null) => Err(ApiError::invalid_input(format!("`{field}` is required"))),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid_input(format!(
                    "`{field}` must NOT have fewer than 1 items"
                )));
            }
            if items.len() > MAX_TEXTS {
                return Err(ApiError::invalid_input(format!(
                    "`{field}` must NOT have more than {MAX_TEXTS} items, got {}",
                    items.len()
                )));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| one(Some(i), v))
                .collect()
        }
        Some(v) => Ok(vec![one(None, v)?]),
    }
}

impl EmbeddingsInput {
    pub fn validate(self) -> Result<ValidEmbeddings, ApiError> {
        if self.requests.is_some() {
            return Err(ApiError::invalid_input(
                "`requests` (async batch) is only accepted with `?queueRequest=true`",
            ));
        }
        let (texts, form) = match (self.text, self.contexts) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_input(
                    "give either `text` or `contexts`, not both",
                ));
            }
            (_, Some(contexts)) => {
                let texts = validate_contexts(contexts)?;
                match self.query {
                    Some(query) if query.is_empty() => {
                        return Err(ApiError::invalid_input(
                            "`query` must NOT have fewer than 1 characters",
                        ));
                    }
                    Some(query) => (texts, EmbeddingsForm::Ranked { query }),
                    None => (texts, EmbeddingsForm::Contexts),
                }
            }
            (text, None) => {
                if self.query.is_some() {
                    return Err(ApiError::invalid_input(
                        "`query` is only accepted together with `contexts`",
                    ));
                }
                (validate_texts("text", text.as_ref())?, EmbeddingsForm::Text)
            }
        };
        let pooling = match self.pooling.as_deref() {
            None => None,
            Some("mean") => Some(PoolingChoice::Mean),
            Some("cls") => Some(PoolingChoice::Cls),
            Some(other) => {
                return Err(ApiError::invalid_input(format!(
                    "`pooling` must be one of mean, cls; got `{other}`"
                )));
            }
        };
        Ok(ValidEmbeddings {
            texts,
            pooling,
            form,
        })
    }
}

/// `result` of a Workers AI embeddings run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsOutput {
    pub shape: [usize; 2],
    pub data: Vec<Vec<f32>>,
    /// Absent for models whose schema has no pooling (embeddinggemma).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<PoolingChoice>,
}

/// OpenAI `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAiEmbeddingsRequest {
    pub model: String,
    pub input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(Debug, Clone)]
pub struct ValidOpenAiEmbeddings {
    pub model: String,
    pub texts: Vec<String>,
    pub format: EncodingFormat,
    pub dimensions: Option<usize>,
}

impl OpenAiEmbeddingsRequest {
    pub fn validate(self) -> Result<ValidOpenAiEmbeddings, ApiError> {
        if self
            .input
            .as_array()
            .is_some_and(|a| a.first().is_some_and(|v| !v.is_string()))
        {
            return Err(ApiError::invalid_input(
                "`input` must be a string or an array of strings (token arrays are not supported)",
            ));
        }
        let texts = validate_texts("input", Some(&self.input))?;
        let format = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(ApiError::invalid_input(format!(
                    "`encoding_format` must be float or base64; got `{other}`"
                )));
            }
        };
        Ok(ValidOpenAiEmbeddings {
            model: self.model,
            texts,
            format,
            dimensions: self.dimensions.map(|d| d as usize),
        })
    }
}

/// Most contexts one rerank request may score.
pub const MAX_CONTEXTS: usize = 100;

/// `@cf/baai/bge-reranker-base` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankInput {
    pub query: Option<String>,
    pub contexts: Option<Vec<RerankContext>>,
    pub top_k: Option<i64>,
    pub options: Option<RunOptions>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankContext {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidRerank {
    pub query: String,
    pub contexts: Vec<String>,
    pub top_k: Option<usize>,
}

impl RerankInput {
    pub fn validate(self) -> Result<ValidRerank, ApiError> {
        let query = self
            .query
            .ok_or_else(|| ApiError::invalid_input("`query` is required"))?;
        if query.is_empty() {
            return Err(ApiError::invalid_input(
                "`query` must NOT have fewer than 1 characters",
            ));
        }
        let contexts = validate_contexts(
            self.contexts
                .ok_or_else(|| ApiError::invalid_input("`contexts` is required"))?,
        )?;
        let top_k = match self.top_k {
            None => None,
            Some(k) if k >= 1 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid_input(format!(
                    "`top_k` must be at least 1, got {k}"
                )));
            }
        };
        Ok(ValidRerank {
            query,
            contexts,
            top_k,
        })
    }
}

/// `contexts: [{text}]`: 1 to `MAX_CONTEXTS` items of non-empty text.
fn validate_contexts(contexts: Vec<RerankContext>) -> Result<Vec<String>, ApiError> {
    if contexts.is_empty() || contexts.len() > MAX_CONTEXTS {
        return Err(ApiError::invalid_input(format!(
            "`contexts` must have between 1 and {MAX_CONTEXTS} items, got {}",
            contexts.len()
        )));
    }
    for (i, c) in contexts.iter().enumerate() {
        if c.text.is_empty() || c.text.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::invalid_input(format!(
                "`contexts[{i}].text` must have between 1 and {MAX_TEXT_CHARS} characters"
            )));
        }
    }
    Ok(contexts.into_iter().map(|c| c.text).collect())
}

/// bge-m3's `contexts` without `query`: the contexts' vectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextEmbeddingsOutput {
    pub response: Vec<Vec<f32>>,
    pub shape: [usize; 2],
    pub pooling: PoolingChoice,
}

/// One ranked context: its index in the request and its raw score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankedContext {
    pub id: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankOutput {
    pub response: Vec<RankedContext>,
}

/// `@cf/huggingface/distilbert-sst-2-int8` input: one non-empty text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationInput {
    pub text: Option<Value>,
    pub options: Option<RunOptions>,
}

impl ClassificationInput {
    pub fn validate(self) -> Result<String, ApiError> {
        if self.text.as_ref().is_some_and(Value::is_array) {
            return Err(ApiError::invalid_input("`text` must be a string"));
        }
        Ok(validate_texts("text", self.text.as_ref())?.remove(0))
    }
}

/// One label of a classification result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// One object found by an object detection model (`detr-resnet-50`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectedObject {
    pub score: f32,
    pub label: String,
    #[serde(rename = "box")]
    pub bounding_box: BoundingBox,
}

/// A box in the image's pixels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BoundingBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}
