//! Text classification (`@cf/huggingface/distilbert-sst-2-int8`): DistilBERT
//! sequence classification on candle (the encoder, then `pre_classifier`,
//! ReLU and `classifier` on the first token, as Hugging Face's
//! `DistilBertForSequenceClassification`), loaded from the Hugging Face
//! layout. Scores are the softmax over the labels of `config.json`'s `id2label`.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap, linear};
use candle_transformers::models::distilbert::{Config, DistilBertModel};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::embed::EmbedError;

pub struct Classifier {
    model: DistilBertModel,
    pre_classifier: Linear,
    classifier: Linear,
    labels: Vec<String>,
    tokenizer: Tokenizer,
    device: Device,
}

fn compute(e: candle_core::Error) -> EmbedError {
    EmbedError::Compute(e.to_string())
}

/// Labels in id order from `id2label` (`LABEL_i` where absent).
fn labels(config: &serde_json::Value) -> Vec<String> {
    let map = config["id2label"].as_object();
    let n = map.map_or(2, |m| m.len().max(1));
    (0..n)
        .map(|i| {
            map.and_then(|m| m.get(&i.to_string()))
                .and_then(|v| v.as_str())
                .map_or_else(|| format!("LABEL_{i}"), str::to_string)
        })
        .collect()
}

impl Classifier {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let load_err = |reason: String| crate::hf::load_error(dir, reason);
        let (config, value): (Config, serde_json::Value) = crate::hf::read_config(dir)?;
        let labels = labels(&value);
        let max_len = value["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        let tokenizer = crate::hf::tokenizer(dir, max_len)?;
        let device = Device::Cpu;
        let vb = crate::hf::weights(dir)?;
        let load = |vb: VarBuilder| -> candle_core::Result<(DistilBertModel, Linear, Linear)> {
            Ok((
                DistilBertModel::load(vb.pp("distilbert"), &config)?,
                linear(config.dim, config.dim, vb.pp("pre_classifier"))?,
                linear(config.dim, labels.len(), vb.pp("classifier"))?,
            ))
        };
        let (model, pre_classifier, classifier) = load(vb).map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            model,
            pre_classifier,
            classifier,
            labels,
            tokenizer,
            device,
        })
    }

    /// `(label, probability)` for every label, most likely first.
    pub fn classify(&self, text: &str) -> Result<Vec<(String, f32)>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        let len = ids.len().max(1);
        let ids = Tensor::from_vec(ids, (1, len), &self.device).map_err(compute)?;
        // candle's DistilBERT masks where the mask is non-zero; one text has no padding.
        let mask = Tensor::zeros((1, 1, 1, len), DType::U8, &self.device).map_err(compute)?;
        let hidden = self.model.forward(&ids, &mask).map_err(compute)?;
        let first = hidden.i((.., 0)).map_err(compute)?;
        let x = self
            .pre_classifier
            .forward(&first)
            .map_err(compute)?
            .relu()
            .map_err(compute)?;
        let logits = self.classifier.forward(&x).map_err(compute)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)
            .map_err(compute)?
            .squeeze(0)
            .map_err(compute)?
            .to_vec1::<f32>()
            .map_err(compute)?;
        let mut out: Vec<(String, f32)> = self.labels.iter().cloned().zip(probs).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

/// Write a tiny DistilBERT sentiment classifier (NEGATIVE/POSITIVE) with
/// random weights in the Hugging Face layout into `dir`. No registry package
/// ships genuine classifier weights; tests and demos use this to run the real
/// loading and scoring path (shapes and contracts, not quality).
pub fn write_tiny_model(dir: &Path) -> Result<(), EmbedError> {
    let fail = |e: &dyn std::fmt::Display| EmbedError::Load {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let words = [
        "i", "love", "hate", "this", "movie", "great", "awful", "film",
    ];
    let config = json!({
        "architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert",
        "vocab_size": 4 + words.len(), "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
        "activation": "gelu", "max_position_embeddings": 64, "initializer_range": 0.02,
        "pad_token_id": 0, "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    let cfg: Config = serde_json::from_value(config).map_err(|e| fail(&e))?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    DistilBertModel::load(vb.pp("distilbert"), &cfg).map_err(|e| fail(&e))?;
    linear(cfg.dim, cfg.dim, vb.pp("pre_classifier")).map_err(|e| fail(&e))?;
    linear(cfg.dim, 2, vb.pp("classifier")).map_err(|e| fail(&e))?;
    varmap
        .save(dir.join("model.safetensors"))
        .map_err(|e| fail(&e))?;
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(&words)
        .enumerate()
    {
        vocab.insert(t.to_string(), json!(i));
    }
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]"), seq("A"), special("[SEP]")],
            "pair": [special("[CLS]"), seq("A"), special("[SEP]"), seq("B"), special("[SEP]")],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).map_err(|e| fail(&e))?;
    Ok(())
}
