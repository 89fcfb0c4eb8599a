//! Cross-encoder reranking (`@cf/baai/bge-reranker-base`): XLM-RoBERTa
//! sequence classification, loaded from the Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`): the shared
//! encoder (`crate::encoder`), then the classification head on the first
//! token (`classifier.dense`, tanh, `classifier.out_proj`).
//!
//! Each (query, context) pair is encoded together, all pairs of a request in
//! one packed forward pass, and the classifier's first logit is its score, as
//! the Workers AI contract returns it (a raw logit; apply a sigmoid for
//! [0, 1]).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::xlm_roberta::{Config, XLMRobertaForSequenceClassification};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::embed::EmbedError;
use crate::encoder::{Dense, Encoder, Precision, TokenEncoder};

pub struct Reranker {
    encoder: Encoder,
    dense: Dense,
    out_proj: Dense,
    tokenizer: Tokenizer,
}

impl Reranker {
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, EmbedError> {
        let load_err = |reason: String| crate::hf::load_error(dir, reason);
        let (_, config): (serde_json::Value, serde_json::Value) = crate::hf::read_config(dir)?;
        let num_labels = config["id2label"].as_object().map_or(1, |m| m.len().max(1));
        let vb = crate::hf::weights(dir)?;
        let encoder =
            Encoder::load(&vb, &config, precision).map_err(|e| load_err(e.to_string()))?;
        let h = encoder.hidden();
        let head = vb.pp("classifier");
        let dense = Dense::load(&head.pp("dense"), h, h).map_err(|e| load_err(e.to_string()))?;
        let out_proj = Dense::load(&head.pp("out_proj"), h, num_labels)
            .map_err(|e| load_err(e.to_string()))?;
        let tokenizer = crate::hf::tokenizer(dir, encoder.max_tokens().max(8))?;
        Ok(Self {
            encoder,
            dense,
            out_proj,
            tokenizer,
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
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let firsts = self
            .encoder
            .forward_first(&sequences)
            .map_err(|e| EmbedError::Compute(e.to_string()))?;
        Ok(firsts
            .iter()
            .map(|first| {
                let mut x = self.dense.apply(first);
                x.iter_mut().for_each(|v| *v = v.tanh());
                self.out_proj.apply(&x)[0]
            })
            .collect())
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
        "architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
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

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;

    /// candle's own XLM-RoBERTa (padded batch, attention mask) is an
    /// independent implementation of the same architecture: the packed
    /// encoder must agree with it on every pair of a mixed-length batch.
    #[test]
    fn scores_match_candles_xlm_roberta_on_the_same_weights() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path()).unwrap();
        let reranker = Reranker::load(dir.path(), Precision::F32).unwrap();
        let query = "what is the capital of France";
        let contexts: Vec<String> = [
            "Paris is the capital of France",
            "cheese",
            "Berlin is the capital of Germany and Paris is the capital of France",
        ]
        .map(String::from)
        .to_vec();
        let ours = reranker.score(query, &contexts).unwrap();

        let (config, _): (Config, serde_json::Value) = crate::hf::read_config(dir.path()).unwrap();
        let vb = crate::hf::weights(dir.path()).unwrap();
        let reference = XLMRobertaForSequenceClassification::new(1, &config, vb).unwrap();
        let encodings: Vec<_> = contexts
            .iter()
            .map(|c| {
                reranker
                    .tokenizer
                    .encode((query, c.as_str()), true)
                    .unwrap()
            })
            .collect();
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap();
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in &encodings {
            let n = e.get_ids().len();
            ids.extend_from_slice(e.get_ids());
            ids.extend(std::iter::repeat_n(config.pad_token_id, len - n));
            mask.extend((0..len).map(|i| u32::from(i < n)));
        }
        let shape = (contexts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu).unwrap();
        let types = ids.zeros_like().unwrap();
        let logits = reference.forward(&ids, &mask, &types).unwrap();
        let expected: Vec<f32> = logits
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| r[0])
            .collect();
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-4, "{ours:?} vs {expected:?}");
        }
    }
}
