//! Cross-encoder reranking (`@cf/baai/bge-reranker-base`): XLM-RoBERTa
//! sequence classification on candle, loaded from the Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`).
//!
//! Each (query, context) pair is encoded together and the classifier's first
//! logit is its score, as the Workers AI contract returns it (a raw logit;
//! apply a sigmoid for [0, 1]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::xlm_roberta::{Config, XLMRobertaForSequenceClassification};
use serde_json::json;
use tokenizers::Tokenizer;

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
        let load_err = |reason: String| crate::hf::load_error(dir, reason);
        let (config, value): (Config, serde_json::Value) = crate::hf::read_config(dir)?;
        let num_labels = value["id2label"].as_object().map_or(1, |m| m.len().max(1));
        // Positions start after the padding index in RoBERTa models.
        let max_len = config
            .max_position_embeddings
            .saturating_sub(config.pad_token_id as usize + 1)
            .max(8);
        let tokenizer = crate::hf::tokenizer(dir, max_len)?;
        let device = Device::Cpu;
        let vb = crate::hf::weights(dir)?;
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

/// The tiny model's whole vocabulary (besides its special tokens).
pub const TINY_WORDS: &[&str] = &[
    "paris", "is", "the", "capital", "of", "france", "berlin", "germany", "what", "cheese", "bread",
];

/// Write a tiny XLM-RoBERTa reranker with random weights in the Hugging Face
/// layout (config, safetensors, tokenizer) into `dir`. No registry package
/// ships genuine reranker weights; tests and local demos use this to run the
/// real loading and scoring path (it proves shapes and contracts, not quality).
pub fn write_tiny_model(dir: &std::path::Path) -> Result<(), EmbedError> {
    let fail = |e: &dyn std::fmt::Display| EmbedError::Load {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let config = json!({
        "architectures": ["XLMRobertaForSequenceClassification"],
        "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 64,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "attention_probs_dropout_prob": 0.0,
        "hidden_dropout_prob": 0.0, "position_embedding_type": "absolute",
        "vocab_size": 4 + TINY_WORDS.len(), "max_position_embeddings": 64, "type_vocab_size": 1,
        "pad_token_id": 1, "id2label": {"0": "LABEL_0"}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    // Build the architecture through candle's own loader on a VarMap (random
    // init), then save: the tensor names are exactly what the loader reads.
    let cfg: Config = serde_json::from_value(config).map_err(|e| fail(&e))?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    XLMRobertaForSequenceClassification::new(1, &cfg, vb).map_err(|e| fail(&e))?;
    varmap
        .save(dir.join("model.safetensors"))
        .map_err(|e| fail(&e))?;

    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .chain(TINY_WORDS)
        .enumerate()
    {
        vocab.insert(t.to_string(), json!(i));
    }
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("<s>"), seq("A"), special("</s>")],
            "pair": [special("<s>"), seq("A"), special("</s>"), special("</s>"), seq("B"), special("</s>")],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).map_err(|e| fail(&e))?;
    Ok(())
}
