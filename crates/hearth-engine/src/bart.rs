//! Summarization with BART (`facebook/bart-large-cnn`) on candle, from the
//! Hugging Face layout: `config.json`, `model.safetensors`,
//! `tokenizer.json` and `generation_config.json`.
//!
//! The network is transformers' `BartForConditionalGeneration` at
//! inference: learned positions (offset 2), embedding layer norms,
//! post-norm encoder and decoder layers, tied output projection plus
//! `final_logits_bias`. Decoding is transformers' beam search with the
//! model's generation settings (beams, length penalty, min/max length,
//! no-repeat n-grams, forced BOS/EOS, early stopping), one decoder row per
//! beam with its self-attention cache reordered as beams are chosen.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};
use serde_json::Value;

use crate::attention::{Activation, DecoderLayer, EncoderLayer, FeedForward, MultiHeadAttention};

#[derive(Debug, thiserror::Error)]
pub enum SummarizeError {
    #[error("cannot load the summarization model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadInput(String),
    #[error("summarization failed: {0}")]
    Compute(String),
}

fn compute(e: candle_core::Error) -> SummarizeError {
    SummarizeError::Compute(e.to_string())
}

/// BART's positions start at 2 (a fairseq heritage).
const POSITION_OFFSET: usize = 2;

/// The model's settings from `config.json`, `generation_config.json` in
/// front where it has the key.
#[derive(Debug, Clone)]
struct Settings {
    d_model: usize,
    encoder_layers: usize,
    decoder_layers: usize,
    encoder_heads: usize,
    decoder_heads: usize,
    encoder_ffn: usize,
    decoder_ffn: usize,
    vocab: usize,
    max_positions: usize,
    activation: Activation,
    scale_embedding: bool,
    search: BeamSettings,
}

impl Settings {
    fn read(config: &Value, generation: &Value) -> Result<Self, String> {
        let pick = |key: &str| generation.get(key).or_else(|| config.get(key));
        let int = |key: &str, default: usize| {
            pick(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v as usize)
        };
        let token = |key: &str| pick(key).and_then(Value::as_u64).map(|v| v as u32);
        let activation = match config
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu")
        {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(format!("activation_function {other:?} is not supported")),
        };
        for key in ["normalize_before", "add_final_layer_norm"] {
            if config.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(format!(
                    "{key} is set (an mBART-style pre-norm model); Hearth reads BART's post-norm layout"
                ));
            }
        }
        let d_model = int("d_model", 1024);
        for key in ["encoder_attention_heads", "decoder_attention_heads"] {
            let heads = int(key, 16);
            if heads == 0 || d_model % heads != 0 {
                return Err(format!("{key} {heads} does not divide d_model {d_model}"));
            }
        }
        let eos = token("eos_token_id").unwrap_or(2);
        let beams = int("num_beams", 1).max(1);
        Ok(Self {
            d_model,
            encoder_layers: int("encoder_layers", 12),
            decoder_layers: int("decoder_layers", 12),
            encoder_heads: int("encoder_attention_heads", 16),
            decoder_heads: int("decoder_attention_heads", 16),
            encoder_ffn: int("encoder_ffn_dim", 4096),
            decoder_ffn: int("decoder_ffn_dim", 4096),
            vocab: int("vocab_size", 50265),
            max_positions: int("max_position_embeddings", 1024),
            activation,
            scale_embedding: config
                .get("scale_embedding")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            search: BeamSettings {
                beams,
                max_length: int("max_length", 142),
                min_length: int("min_length", 0),
                length_penalty: pick("length_penalty")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0),
                no_repeat_ngram: int("no_repeat_ngram_size", 0),
                early_stopping: pick("early_stopping").and_then(Value::as_bool) == Some(true),
                start: token("decoder_start_token_id").unwrap_or(eos),
                eos,
                forced_bos: token("forced_bos_token_id"),
                forced_eos: token("forced_eos_token_id"),
            },
        })
    }
}

pub struct Summarizer {
    tokenizer: tokenizers::Tokenizer,
    shared: Embedding,
    encoder_positions: Embedding,
    decoder_positions: Embedding,
    encoder_norm: LayerNorm,
    decoder_norm: LayerNorm,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    logits_bias: Tensor,
    embed_scale: f64,
    settings: Settings,
}

impl Summarizer {
    pub fn load(dir: &Path) -> Result<Self, SummarizeError> {
        let fail = |reason: String| SummarizeError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = crate::hf::config_of_type(dir, "bart").map_err(fail)?;
        let generation = crate::hf::json_file(dir, "generation_config.json")
            .map_err(fail)?
            .unwrap_or(Value::Null);
        let settings = Settings::read(&config, &generation).map_err(fail)?;
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let vb = crate::hf::mmap_weights(&[dir.join("model.safetensors")])
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        Self::build(vb, tokenizer, settings).map_err(|e| fail(e.to_string()))
    }

    fn build(
        vb: VarBuilder,
        tokenizer: tokenizers::Tokenizer,
        settings: Settings,
    ) -> candle_core::Result<Self> {
        let s = &settings;
        let d = s.d_model;
        let model = vb.pp("model");
        let shared = candle_nn::embedding(s.vocab, d, model.pp("shared"))?;
        let positions = s.max_positions + POSITION_OFFSET;
        let encoder_positions =
            candle_nn::embedding(positions, d, model.pp("encoder.embed_positions"))?;
        let decoder_positions =
            candle_nn::embedding(positions, d, model.pp("decoder.embed_positions"))?;
        let norm = |vb: VarBuilder| candle_nn::layer_norm(d, 1e-5, vb);
        let encoder = (0..s.encoder_layers)
            .map(|i| {
                let vb = model.pp(format!("encoder.layers.{i}"));
                Ok(EncoderLayer {
                    attention: MultiHeadAttention::new(vb.pp("self_attn"), d, s.encoder_heads)?,
                    attention_norm: norm(vb.pp("self_attn_layer_norm"))?,
                    feed_forward: FeedForward::new(&vb, d, s.encoder_ffn, s.activation)?,
                    norm: norm(vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let decoder = (0..s.decoder_layers)
            .map(|i| {
                let vb = model.pp(format!("decoder.layers.{i}"));
                Ok(DecoderLayer {
                    attention: MultiHeadAttention::new(vb.pp("self_attn"), d, s.decoder_heads)?,
                    attention_norm: norm(vb.pp("self_attn_layer_norm"))?,
                    cross: MultiHeadAttention::new(vb.pp("encoder_attn"), d, s.decoder_heads)?,
                    cross_norm: norm(vb.pp("encoder_attn_layer_norm"))?,
                    feed_forward: FeedForward::new(&vb, d, s.decoder_ffn, s.activation)?,
                    norm: norm(vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let logits_bias = if vb.contains_tensor("final_logits_bias") {
            vb.get((1, s.vocab), "final_logits_bias")?
        } else {
            Tensor::zeros((1, s.vocab), DType::F32, &Device::Cpu)?
        };
        Ok(Self {
            tokenizer,
            shared,
            encoder_positions,
            decoder_positions,
            encoder_norm: norm(model.pp("encoder.layernorm_embedding"))?,
            decoder_norm: norm(model.pp("decoder.layernorm_embedding"))?,
            encoder,
            decoder,
            logits_bias,
            embed_scale: if settings.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            settings,
        })
    }

    /// The model's own summary length bound (`max_length` of its
    /// generation settings, in tokens).
    pub fn default_max_length(&self) -> usize {
        self.settings.search.max_length
    }

    /// Summarizes `text` in at most `max_length` tokens (the model's own
    /// bound when `None`); returns the summary and the input and output
    /// token counts.
    pub fn summarize(
        &self,
        text: &str,
        max_length: Option<usize>,
    ) -> Result<(String, usize, usize), SummarizeError> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| {
            SummarizeError::BadInput(format!("`input_text` cannot be tokenized: {e}"))
        })?;
        let mut ids: Vec<u32> = encoding.get_ids().to_vec();
        if ids.is_empty() {
            return Err(SummarizeError::BadInput("`input_text` is empty".into()));
        }
        // Longer inputs are cut, keeping the end-of-text token, as the
        // pipeline's truncation does.
        let limit = self.settings.max_positions;
        if ids.len() > limit {
            let last = ids[ids.len() - 1];
            ids.truncate(limit);
            ids[limit - 1] = last;
        }
        let mut search = self.settings.search.clone();
        if let Some(max) = max_length {
            // `max_length` counts the decoder's start token, as in
            // transformers.
            search.max_length = (max + 1).clamp(2, limit);
            search.min_length = search.min_length.min(search.max_length - 1);
        }
        let memory = self.encode(&ids).map_err(compute)?;
        let mut decoder = DecoderRun::new(self, &memory, search.beams).map_err(compute)?;
        let best = beam_search(&search, |tokens, parents| decoder.step(tokens, parents))
            .map_err(compute)?;
        let summary = self
            .tokenizer
            .decode(&best, true)
            .map_err(|e| SummarizeError::Compute(format!("decoding the summary: {e}")))?;
        Ok((summary.trim().to_string(), ids.len(), best.len()))
    }

    fn embed(
        &self,
        ids: &Tensor,
        positions: &Embedding,
        first_position: usize,
    ) -> candle_core::Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let tokens = (self.shared.forward(ids)? * self.embed_scale)?;
        let at = Tensor::arange(
            (first_position + POSITION_OFFSET) as u32,
            (first_position + POSITION_OFFSET + t) as u32,
            &Device::Cpu,
        )?;
        tokens.broadcast_add(&positions.forward(&at)?)
    }

    /// The encoder's output for one text, `[1, t, d]`.
    fn encode(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let mut h = self
            .encoder_norm
            .forward(&self.embed(&ids, &self.encoder_positions, 0)?)?;
        for layer in &self.encoder {
            h = layer.forward(&h, None)?;
        }
        Ok(h)
    }
}

/// The decoder's state across the steps of one beam search: cross-attention
/// keys and values (the same for every beam) and each layer's
/// self-attention cache, one row per beam.
struct DecoderRun<'a> {
    model: &'a Summarizer,
    cross: Vec<(Tensor, Tensor)>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    position: usize,
}

impl<'a> DecoderRun<'a> {
    fn new(model: &'a Summarizer, memory: &Tensor, beams: usize) -> candle_core::Result<Self> {
        let cross = model
            .decoder
            .iter()
            .map(|layer| {
                let (k, v) = (layer.cross.keys(memory)?, layer.cross.values(memory)?);
                Ok((k.repeat((beams, 1, 1, 1))?, v.repeat((beams, 1, 1, 1))?))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            model,
            cross,
            cache: vec![None; model.decoder.len()],
            position: 0,
        })
    }

    /// Log-probabilities of the next token for each beam, after the caches
    /// are rearranged so that row `i` continues beam `parents[i]`.
    fn step(&mut self, tokens: &[u32], parents: &[u32]) -> candle_core::Result<Vec<Vec<f32>>> {
        let model = self.model;
        let order = Tensor::new(parents, &Device::Cpu)?;
        let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(1)?;
        let mut h = model.decoder_norm.forward(&model.embed(
            &ids,
            &model.decoder_positions,
            self.position,
        )?)?;
        for ((layer, cache), (cross_k, cross_v)) in
            model.decoder.iter().zip(&mut self.cache).zip(&self.cross)
        {
            let (k, v) = (layer.attention.keys(&h)?, layer.attention.values(&h)?);
            let (k, v) = match cache.take() {
                Some((past_k, past_v)) => (
                    Tensor::cat(&[&past_k.index_select(&order, 0)?, &k], 2)?,
                    Tensor::cat(&[&past_v.index_select(&order, 0)?, &v], 2)?,
                ),
                None => (k, v),
            };
            let attended = layer.attention.attend(&h, &k, &v, None)?;
            *cache = Some((k, v));
            h = layer.attention_norm.forward(&(h + attended)?)?;
            let crossed = layer.cross.attend(&h, cross_k, cross_v, None)?;
            h = layer.cross_norm.forward(&(h + crossed)?)?;
            let fed = layer.feed_forward.forward(&h)?;
            h = layer.norm.forward(&(h + fed)?)?;
        }
        self.position += 1;
        let h = h.i((.., 0, ..))?;
        let logits = h
            .matmul(&model.shared.embeddings().t()?)?
            .broadcast_add(&model.logits_bias)?;
        candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()
    }
}

/// transformers' beam search settings.
#[derive(Debug, Clone)]
struct BeamSettings {
    beams: usize,
    /// Decoder tokens, the start token included.
    max_length: usize,
    min_length: usize,
    length_penalty: f64,
    no_repeat_ngram: usize,
    early_stopping: bool,
    start: u32,
    eos: u32,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
}

/// Tokens an n-gram already in `seq` forbids next: those that would repeat
/// an `n`-gram.
fn banned_by_ngrams(seq: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || seq.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &seq[seq.len() + 1 - n..];
    seq.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// transformers' (v5) beam search: each step keeps the best `2 x beams`
/// continuations of all beams; those ending (EOS or the length limit)
/// among the best `beams` become finished hypotheses scored by
/// `logp / generated_length^length_penalty`, the best `beams` unfinished
/// ones run on. With early stopping the search ends once `beams`
/// hypotheses are finished. `step(tokens, parents)` gives each running
/// row's next-token log-probabilities after moving row `parents[i]`'s state
/// to row `i`. Returns the best hypothesis without its start token.
fn beam_search(
    s: &BeamSettings,
    mut step: impl FnMut(&[u32], &[u32]) -> candle_core::Result<Vec<Vec<f32>>>,
) -> candle_core::Result<Vec<u32>> {
    let n = s.beams;
    let mut running: Vec<(Vec<u32>, f64)> = (0..n)
        .map(|i| (vec![s.start], if i == 0 { 0.0 } else { -1e9 }))
        .collect();
    let mut parents: Vec<u32> = (0..n as u32).collect();
    let mut finished: Vec<(Vec<u32>, f64)> = Vec::new();
    loop {
        let cur_len = running[0].0.len();
        let tokens: Vec<u32> = running.iter().map(|(seq, _)| seq[cur_len - 1]).collect();
        let log_probs = step(&tokens, &parents)?;
        let mut candidates: Vec<(f64, usize, u32)> = Vec::with_capacity(n * 2);
        for (b, ((seq, score), row)) in running.iter().zip(&log_probs).enumerate() {
            let mut row: Vec<f64> = row.iter().map(|&p| f64::from(p)).collect();
            let force = |row: &mut Vec<f64>, token: u32| {
                for (i, p) in row.iter_mut().enumerate() {
                    *p = if i == token as usize {
                        0.0
                    } else {
                        f64::NEG_INFINITY
                    };
                }
            };
            for banned in banned_by_ngrams(seq, s.no_repeat_ngram) {
                if let Some(p) = row.get_mut(banned as usize) {
                    *p = f64::NEG_INFINITY;
                }
            }
            if cur_len < s.min_length
                && let Some(p) = row.get_mut(s.eos as usize)
            {
                *p = f64::NEG_INFINITY;
            }
            if let (1, Some(bos)) = (cur_len, s.forced_bos) {
                force(&mut row, bos);
            }
            if let Some(eos) = s.forced_eos
                && cur_len + 1 == s.max_length
            {
                force(&mut row, eos);
            }
            for (token, p) in row.into_iter().enumerate() {
                candidates.push((score + p, b, token as u32));
            }
        }
        // The best 2 x beams continuations, best first (stable for ties).
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates.truncate(2 * n);
        let ends = |token: u32| token == s.eos || cur_len + 1 >= s.max_length;
        let full = |finished: &Vec<(Vec<u32>, f64)>| s.early_stopping && finished.len() >= n;
        if !full(&finished) {
            let penalty = (cur_len as f64).powf(s.length_penalty);
            for &(score, b, token) in candidates.iter().take(n) {
                if ends(token) && score > -1e8 {
                    let mut seq = running[b].0.clone();
                    seq.push(token);
                    finished.push((seq, score / penalty));
                }
            }
            finished.sort_by(|a, b| b.1.total_cmp(&a.1));
            finished.truncate(n);
        }
        let mut next: Vec<(Vec<u32>, f64, u32)> = candidates
            .iter()
            .filter(|c| !ends(c.2))
            .take(n)
            .map(|&(score, b, token)| {
                let mut seq = running[b].0.clone();
                seq.push(token);
                (seq, score, b as u32)
            })
            .collect();
        let continuations = next.len();
        // Fewer live continuations than beams: pad with dead rows so the
        // batch keeps its shape (they can never win).
        while next.len() < n {
            let (seq, _, b) = next
                .first()
                .cloned()
                .unwrap_or_else(|| (running[0].0.clone(), 0.0, 0));
            next.push((seq, -1e9, b));
        }
        // Without early stopping, the search ends when no running beam
        // can beat the worst finished hypothesis any more (transformers'
        // heuristic: a running beam's score at its current length).
        let hopeless = !s.early_stopping
            && finished.len() >= n
            && finished.last().is_some_and(|worst| {
                next[0].1 / (cur_len as f64).powf(s.length_penalty) <= worst.1
            });
        if continuations == 0 || full(&finished) || hopeless {
            break;
        }
        parents = next.iter().map(|(_, _, b)| *b).collect();
        running = next
            .into_iter()
            .map(|(seq, score, _)| (seq, score))
            .collect();
    }
    let best = finished
        .into_iter()
        .next()
        .map(|(seq, _)| seq)
        .unwrap_or_default();
    Ok(best.into_iter().skip(1).filter(|&t| t != s.eos).collect())
}

/// Words of the tiny test tokenizer.
const TINY_WORDS: &[&str] = &[
    "the",
    "river",
    "flows",
    "through",
    "ten",
    "countries",
    "and",
    "four",
    "capitals",
    "lie",
    "on",
    "its",
    "banks",
    "barges",
    "carry",
    "trade",
    "to",
    "sea",
    "a",
    "long",
];

/// Writes a tiny BART with random weights in the Hugging Face layout
/// (`config.json`, `generation_config.json` with bart-large-cnn's search
/// settings at toy lengths, `model.safetensors`, a word-level
/// `tokenizer.json` with `<s> ... </s>`) to `dir`. For tests: no genuine
/// summarization weights ship in a registry package.
pub fn write_tiny_model(dir: &Path) -> Result<(), SummarizeError> {
    let fail = |e: &dyn std::fmt::Display| SummarizeError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let specials = ["<s>", "<pad>", "</s>", "<unk>"];
    let vocab_size = specials.len() + TINY_WORDS.len();
    let config = serde_json::json!({
        "model_type": "bart", "architectures": ["BartForConditionalGeneration"],
        "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "vocab_size": vocab_size,
        "max_position_embeddings": 64, "activation_function": "gelu", "scale_embedding": false,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
        "forced_bos_token_id": 0, "forced_eos_token_id": 2,
    });
    let generation = serde_json::json!({
        "num_beams": 4, "length_penalty": 2.0, "max_length": 20, "min_length": 5,
        "no_repeat_ngram_size": 3, "early_stopping": true, "decoder_start_token_id": 2,
        "bos_token_id": 0, "eos_token_id": 2, "forced_bos_token_id": 0, "forced_eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    std::fs::write(dir.join("generation_config.json"), generation.to_string())
        .map_err(|e| fail(&e))?;
    let settings = Settings::read(&config, &generation).map_err(|e| fail(&e))?;
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    // The builder asks for every tensor the loader reads; the VarMap makes
    // them (random) and saves them under those names.
    let placeholder =
        tokenizers::Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default());
    Summarizer::build(vb, placeholder, settings).map_err(|e| fail(&e))?;
    crate::hf::favour_words(&varmap, "model.shared.weight", specials.len()..vocab_size)
        .map_err(|e| fail(&e))?;
    varmap
        .save(dir.join("model.safetensors"))
        .map_err(|e| fail(&e))?;

    crate::hf::write_word_level_tokenizer(
        &dir.join("tokenizer.json"),
        &specials,
        TINY_WORDS,
        &[],
        crate::hf::template(&[("<s>", 0)], &[("</s>", 2)]),
    )
    .map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "the river flows through ten countries and four capitals lie on its banks \
        and barges carry trade to the sea";

    #[test]
    fn ngrams_ban_what_would_repeat() {
        // "1 2 3 1 2" -> "3" would repeat "1 2 3".
        assert_eq!(banned_by_ngrams(&[1, 2, 3, 1, 2], 3), vec![3]);
        assert!(banned_by_ngrams(&[1, 2], 3).is_empty());
        assert!(banned_by_ngrams(&[1, 2, 3, 1, 2], 0).is_empty());
    }

    /// A fixed toy model: from any state, token 5 is likely, then 6, then
    /// the end token (2); step 0 must force BOS.
    fn toy(tokens: &[u32]) -> Vec<Vec<f32>> {
        tokens
            .iter()
            .map(|_| {
                let mut row = vec![-9.0f32; 8];
                row[5] = -0.2;
                row[6] = -1.0;
                row[2] = -1.5;
                row
            })
            .collect()
    }

    #[test]
    fn beam_search_honours_min_length_ngrams_and_forced_tokens() {
        let settings = BeamSettings {
            beams: 3,
            max_length: 12,
            min_length: 6,
            length_penalty: 1.0,
            no_repeat_ngram: 2,
            early_stopping: true,
            start: 2,
            eos: 2,
            forced_bos: Some(0),
            forced_eos: Some(2),
        };
        let best = beam_search(&settings, |t, _| Ok(toy(t))).expect("search");
        assert_eq!(best[0], 0, "BOS is forced first: {best:?}");
        // At least min_length - 1 generated tokens before the end, and no
        // bigram twice.
        assert!(best.len() >= 5, "{best:?}");
        let pairs: Vec<&[u32]> = best.windows(2).collect();
        for (i, p) in pairs.iter().enumerate() {
            assert!(!pairs[i + 1..].contains(p), "{best:?} repeats {p:?}");
        }
        let mut short = settings.clone();
        short.max_length = 4;
        let best = beam_search(&short, |t, _| Ok(toy(t))).expect("short");
        assert!(best.len() <= 3, "{best:?}");
    }

    #[test]
    fn a_tiny_bart_summarizes_within_the_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = Summarizer::load(dir.path()).expect("load");
        assert_eq!(model.default_max_length(), 20);
        let (summary, input, output) = model.summarize(TEXT, None).expect("summarize");
        assert_eq!(input, 20 + 2);
        assert!(output <= 19, "{output}");
        assert!(!summary.is_empty());
        assert!(
            summary.split_whitespace().all(|w| TINY_WORDS.contains(&w)),
            "{summary}"
        );
        assert_eq!(model.summarize(TEXT, None).expect("again").0, summary);
        let (_, _, short) = model.summarize(TEXT, Some(3)).expect("short");
        assert!(short <= 3, "{short}");
    }

    #[test]
    fn a_folder_that_is_not_bart_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        config["model_type"] = "t5".into();
        std::fs::write(&path, config.to_string()).expect("write");
        let err = Summarizer::load(dir.path()).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("model_type"));
    }
}
