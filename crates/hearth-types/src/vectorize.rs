//! Vectorize v2 REST bodies. Vectorize is camelCase on the wire (`topK`,
//! `mutationId`, `processedUpToMutation`), unlike the rest of the v4 API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /vectorize/v2/indexes`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateIndexRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub config: IndexConfigRequest,
}

/// Either `{dimensions, metric}` or `{preset}`; checked by hand so the error
/// says which form was meant.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IndexConfigRequest {
    #[serde(default)]
    pub dimensions: Option<i64>,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub preset: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub dimensions: u32,
    pub metric: Metric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    Cosine,
    Euclidean,
    DotProduct,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "euclidean" => Some(Metric::Euclidean),
            "dot-product" => Some(Metric::DotProduct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
            Metric::DotProduct => "dot-product",
        }
    }
}

/// The index object of every index call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexObject {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub config: IndexConfig,
    pub created_on: String,
    pub modified_on: String,
}

/// One NDJSON line of insert/upsert (and a vector of the binding).
#[derive(Debug, Clone, Deserialize)]
pub struct VectorInput {
    pub id: String,
    pub values: Vec<f64>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// `{mutationId}` answer of every write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutationResponse {
    pub mutation_id: String,
}

/// `returnMetadata`: v2 takes `"none" | "indexed" | "all"`; the binding
/// still accepts v1's booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnMetadata {
    #[default]
    None,
    Indexed,
    All,
}

impl<'de> Deserialize<'de> for ReturnMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(ReturnMetadata::All),
            Value::Bool(false) | Value::Null => Ok(ReturnMetadata::None),
            Value::String(s) => match s.as_str() {
                "none" => Ok(ReturnMetadata::None),
                "indexed" => Ok(ReturnMetadata::Indexed),
                "all" => Ok(ReturnMetadata::All),
                other => Err(serde::de::Error::custom(format!(
                    "unknown value `{other}`, expected \"none\", \"indexed\" or \"all\""
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected \"none\", \"indexed\" or \"all\", got {other}"
            ))),
        }
    }
}

/// `POST .../query`. `id` (Hearth: the binding's `queryById` over REST)
/// may replace `vector`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    #[serde(default)]
    pub vector: Option<Vec<f64>>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub top_k: Option<f64>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub return_values: Option<bool>,
    #[serde(default)]
    pub return_metadata: ReturnMetadata,
    #[serde(default)]
    pub filter: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub id: String,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResponse {
    pub count: usize,
    pub matches: Vec<Match>,
}

/// A stored vector as `get_by_ids` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorOutput {
    pub id: String,
    pub values: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `{ids}` of `get_by_ids` and `delete_by_ids`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdsRequest {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexInfo {
    pub dimensions: u32,
    pub vector_count: usize,
    pub processed_up_to_datetime: Option<String>,
    pub processed_up_to_mutation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorId {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListVectorsResponse {
    pub count: usize,
    pub total_count: usize,
    pub is_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_expiration_timestamp: Option<String>,
    pub vectors: Vec<VectorId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataType {
    String,
    Number,
    Boolean,
}

impl MetadataType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataType::String => "string",
            MetadataType::Number => "number",
            MetadataType::Boolean => "boolean",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataIndex {
    pub property_name: String,
    pub index_type: MetadataType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataIndexList {
    pub metadata_indexes: Vec<MetadataIndex>,
}

/// `POST .../metadata_index/delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataIndexDelete {
    pub property_name: String,
}
