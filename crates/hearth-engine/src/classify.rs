//! Text classification (`@cf/huggingface/distilbert-sst-2-int8`): DistilBERT
//! sequence classification as Hugging Face's
//! `DistilBertForSequenceClassification` (the shared encoder,
//! `crate::encoder`, then `pre_classifier`, ReLU and `classifier` on the first
//! token), loaded from the Hugging Face layout. Scores are the softmax over
//! the labels of `config.json`'s `id2label`.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap, linear};
use candle_transformers::models::distilbert::{Config, DistilBertModel};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::embed::EmbedError;
use crate::encoder::{Dense, Encoder, Precision, TokenEncoder, softmax};

pub struct Classifier {
    encoder: Encoder,
    pre_classifier: Dense,
    classifier: Dense,
    labels: Vec<String>,
    tokenizer: Tokenizer,
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
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, EmbedError> {
        let load_err = |e: &dyn std::fmt::Display| crate::hf::load_error(dir, e.to_string());
        let (_, config): (serde_json::Value, serde_json::Value) = crate::hf::read_config(dir)?;
        let labels = labels(&config);
        let vb = crate::hf::weights(dir)?;
        let encoder = Encoder::load(&vb, &config, precision).map_err(|e| load_err(&e))?;
        let h = encoder.hidden();
        let pre_classifier =
            Dense::load(&vb.pp("pre_classifier"), h, h).map_err(|e| load_err(&e))?;
        let classifier =
            Dense::load(&vb.pp("classifier"), h, labels.len()).map_err(|e| load_err(&e))?;
        let tokenizer = crate::hf::tokenizer(dir, encoder.max_tokens())?;
        Ok(Self {
            encoder,
            pre_classifier,
            classifier,
            labels,
            tokenizer,
        })
    }

    /// `(label, probability)` for every label, most likely first.
    pub fn classify(&self, text: &str) -> Result<Vec<(String, f32)>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let first = self
            .encoder
            .forward_first(&[enc.get_ids()])
            .map_err(|e| EmbedError::Compute(e.to_string()))?;
        let mut x = self.pre_classifier.apply(&first[0]);
        x.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut probabilities = self.classifier.apply(&x);
        softmax(&mut probabilities);
        let mut out: Vec<(String, f32)> = self.labels.iter().cloned().zip(probabilities).collect();
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

#[cfg(test)]
mod tests {
    use candle_core::{D, IndexOp, Module, Tensor};

    use super::*;

    /// candle's own DistilBERT is an independent implementation of the
    /// architecture: the shared encoder must give the same probabilities.
    /// The model is switched to ReLU for the comparison because candle runs
    /// DistilBERT's `gelu` as the tanh approximation, where Hugging Face (and
    /// the encoder) use the exact, erf-based one.
    #[test]
    fn probabilities_match_candles_distilbert_on_the_same_weights() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path()).unwrap();
        let path = dir.path().join("config.json");
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, config.replace("\"gelu\"", "\"relu\"")).unwrap();
        let classifier = Classifier::load(dir.path(), Precision::F32).unwrap();
        let (config, _): (Config, serde_json::Value) = crate::hf::read_config(dir.path()).unwrap();
        let vb = crate::hf::weights(dir.path()).unwrap();
        let model = DistilBertModel::load(vb.pp("distilbert"), &config).unwrap();
        let pre = linear(config.dim, config.dim, vb.pp("pre_classifier")).unwrap();
        let head = linear(config.dim, 2, vb.pp("classifier")).unwrap();
        for text in ["i love this movie", "awful film", "great"] {
            let ours = classifier.classify(text).unwrap();
            let ids = classifier.tokenizer.encode(text, true).unwrap();
            let ids = ids.get_ids().to_vec();
            let len = ids.len();
            let ids = Tensor::from_vec(ids, (1, len), &Device::Cpu).unwrap();
            let mask = Tensor::zeros((1, 1, 1, len), DType::U8, &Device::Cpu).unwrap();
            let hidden = model.forward(&ids, &mask).unwrap();
            let x = pre
                .forward(&hidden.i((.., 0)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let probs = candle_nn::ops::softmax(&head.forward(&x).unwrap(), D::Minus1)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (label, p) in &ours {
                let index = classifier.labels.iter().position(|l| l == label).unwrap();
                assert!(
                    (p - probs[index]).abs() < 1e-5,
                    "{text}: {ours:?} vs {probs:?}"
                );
            }
        }
    }
}
