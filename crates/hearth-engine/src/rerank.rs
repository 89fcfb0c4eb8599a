//! Cross-encoder reranking (`@cf/baai/bge-reranker-base`): XLM-RoBERTa
//! sequence classification on candle, loaded from the Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`).
//!
//! Each (query, context) pair is encoded together and the classifier's first
//! logit is its score, as the Workers AI contract returns it (a raw logit;
//! apply a sigmoid for [0, 1]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::xlm_roberta::{Config, XLMRobertaForSequenceClassification};
use tokenizers::{Tokenizer, TruncationParams};

use crate::embed::EmbedError;

pub struct Reranker {
    model: XLMRobertaForSequenceClassification,
    tokenizer: Tokenizer,
    pad_id: u32,
    device: Device,
}

fn compute(e: candle_core::Error) -> EmbedError {
    EmbedError::Compute(e.to_string())
}

impl Reranker {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let load_err = |reason: String| EmbedError::Load {
            path: PathBuf::from(dir),
            reason,
        };
        let raw = std::fs::read(dir.join("config.json"))
            .map_err(|e| load_err(format!("config.json: {e}")))?;
        let config: Config =
            serde_json::from_slice(&raw).map_err(|e| load_err(format!("config.json: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| load_err(format!("config.json: {e}")))?;
        let num_labels = value["id2label"].as_object().map_or(1, |m| m.len().max(1));
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        // Positions start after the padding index in RoBERTa models.
        let max_len = config
            .max_position_embeddings
            .saturating_sub(config.pad_token_id as usize + 1)
            .max(8);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;
        let device = Device::Cpu;
        // SAFETY: the weights are memory-mapped read-only and Hearth never
        // writes into the models dir while a model is loaded.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .map_err(|e| load_err(format!("model.safetensors: {e}")))?;
        let model = XLMRobertaForSequenceClassification::new(num_labels, &config, vb)
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            pad_id: config.pad_token_id,
            device,
        })
    }

    /// Raw relevance logits of each context for `query`, in input order.
    pub fn score(&self, query: &str, contexts: &[String]) -> Result<Vec<f32>, EmbedError> {
        if contexts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = contexts
            .iter()
            .map(|c| {
                self.tokenizer
                    .encode((query, c.as_str()), true)
                    .map_err(|e| EmbedError::Tokenize(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = Vec::with_capacity(contexts.len() * len);
        let mut mask = Vec::with_capacity(contexts.len() * len);
        for enc in &encodings {
            let n = enc.get_ids().len();
            ids.extend_from_slice(enc.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, len - n));
            mask.extend(std::iter::repeat_n(1u32, n));
            mask.extend(std::iter::repeat_n(0u32, len - n));
        }
        let shape = (contexts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device).map_err(compute)?;
        let mask = Tensor::from_vec(mask, shape, &self.device).map_err(compute)?;
        let types = ids.zeros_like().map_err(compute)?;
        let logits = self.model.forward(&ids, &mask, &types).map_err(compute)?;
        let logits = logits.to_vec2::<f32>().map_err(compute)?;
        Ok(logits.iter().map(|row| row[0]).collect())
    }
}
