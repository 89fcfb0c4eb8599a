//! EmbeddingGemma's encoder: Gemma 3's transformer run with bidirectional
//! attention (`use_bidirectional_attention` in `config.json`), on the same
//! packed f32 buffers, weight panels and attention as the
//! BERT-family encoder.
//!
//! What differs from BERT: word embeddings scaled by sqrt(hidden) and no
//! position table; RMS norms scaled by `1 + weight` before and after both
//! attention and feed-forward; grouped-query attention whose queries and
//! keys are RMS-normed per head and then rotated by position (RoPE, one base
//! for sliding-window layers and another for full ones); sliding-window
//! layers that see only tokens closer than half the configured window; and a
//! gated tanh-GELU feed-forward.

use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::encoder::{
    Activation, EncoderError, Heads, Linear, Precision, TokenEncoder, activate, attention,
    for_rows, lengths, table_row, under_prefix, values,
};
use crate::matvec::dot;

/// Most positions an encoder serves.
const MAX_POSITIONS: usize = 8192;

/// Shape of a Gemma 3 text model, from its `config.json`.
#[derive(Debug, Clone)]
struct GemmaConfig {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_size: usize,
    /// Queries are scaled by `query_pre_attn_scalar^-1/2`, not by the head size.
    query_scale: f32,
    eps: f32,
    max_positions: usize,
    /// Sliding-window layers attend to keys at a distance below this.
    window: usize,
    sliding: Vec<bool>,
    rope_full: f64,
    rope_local: f64,
}

/// Whether a `config.json` describes a Gemma 3 text model.
pub fn is_gemma(config: &serde_json::Value) -> bool {
    config["model_type"].as_str() == Some("gemma3_text")
        || config["architectures"].as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n.as_str().is_some_and(|n| n.starts_with("Gemma3Text")))
        })
}

impl GemmaConfig {
    fn from_json(config: &serde_json::Value) -> Result<Self, EncoderError> {
        let bad = |m: String| EncoderError::Load(m);
        let whole = |key: &str| -> Result<usize, EncoderError> {
            config[key]
                .as_u64()
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("config.json has no positive `{key}`")))
        };
        if config["use_bidirectional_attention"].as_bool() != Some(true) {
            return Err(bad("this Gemma 3 checkpoint is a causal language model \
                 (no `use_bidirectional_attention`): serve it as text generation from its GGUF"
                .into()));
        }
        let act = config["hidden_activation"]
            .as_str()
            .unwrap_or("gelu_pytorch_tanh");
        if Activation::from_name(act) != Some(Activation::GeluTanh) {
            return Err(bad(format!("unsupported hidden_activation `{act}`")));
        }
        let heads = whole("num_attention_heads")?;
        let kv_heads = config["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |v| v as usize);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_size = config["head_dim"].as_u64().map_or(256, |v| v as usize);
        if !head_size.is_multiple_of(2) {
            return Err(bad(format!("head_dim {head_size} is odd")));
        }
        let layers = whole("num_hidden_layers")?;
        let sliding = match config["layer_types"].as_array() {
            Some(types) if types.len() == layers => types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    other => Err(bad(format!("unknown layer type {other:?}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(types) => {
                return Err(bad(format!(
                    "layer_types lists {} layers, num_hidden_layers says {layers}",
                    types.len()
                )));
            }
            None => {
                let pattern = config["sliding_window_pattern"].as_u64().unwrap_or(6) as usize;
                (0..layers).map(|i| (i + 1) % pattern.max(1) != 0).collect()
            }
        };
        let rope = &config["rope_parameters"];
        for kind in ["full_attention", "sliding_attention"] {
            if let Some(t) = rope[kind]["rope_type"].as_str().filter(|t| *t != "default") {
                return Err(bad(format!("unsupported rope_type `{t}` for {kind}")));
            }
        }
        let rope_full = rope["full_attention"]["rope_theta"]
            .as_f64()
            .or(config["rope_theta"].as_f64())
            .unwrap_or(1_000_000.0);
        let rope_local = rope["sliding_attention"]["rope_theta"]
            .as_f64()
            .or(config["rope_local_base_freq"].as_f64())
            .unwrap_or(10_000.0);
        // transformers turns the configured window into an exclusive bound
        // on the distance either side (`sliding_window // 2 + 1`).
        let window = config["sliding_window"].as_u64().unwrap_or(4096) as usize / 2 + 1;
        Ok(Self {
            hidden: whole("hidden_size")?,
            intermediate: whole("intermediate_size")?,
            heads,
            kv_heads,
            head_size,
            query_scale: (config["query_pre_attn_scalar"]
                .as_f64()
                .unwrap_or(head_size as f64))
            .powf(-0.5) as f32,
            eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            // Gemma 3's 131k positions would cost 0.5 GB of rope tables;
            // embedding inputs are far shorter (EmbeddingGemma: 2048).
            max_positions: (config["max_position_embeddings"].as_u64().unwrap_or(2048) as usize)
                .min(MAX_POSITIONS),
            window,
            sliding,
            rope_full,
            rope_local,
        })
    }
}

/// Rotary position tables for one base: `cos` and `sin` of each
/// (position, frequency), `[positions, size / 2]`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn new(theta: f64, size: usize, positions: usize) -> Self {
        let half = size / 2;
        // In f32, as transformers computes its frequencies and angles.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / size as f32))
            .collect();
        let angles: Vec<f32> = (0..positions)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        Self {
            cos: angles.iter().map(|a| f64::from(*a).cos() as f32).collect(),
            sin: angles.iter().map(|a| f64::from(*a).sin() as f32).collect(),
            half,
        }
    }

    /// Rotates one head's values (halves paired, as `rotate_half` does).
    fn rotate(&self, x: &mut [f32], position: usize) {
        let (first, second) = x.split_at_mut(self.half);
        let cos = &self.cos[position * self.half..][..self.half];
        let sin = &self.sin[position * self.half..][..self.half];
        for (((a, b), c), s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
            let (x1, x2) = (*a, *b);
            *a = x1 * c - x2 * s;
            *b = x2 * c + x1 * s;
        }
    }
}

/// Gemma's RMS norm: `x / rms(x) * (1 + weight)`; holds `1 + weight`.
struct RmsNorm(Vec<f32>);

impl RmsNorm {
    fn load(vb: &VarBuilder, size: usize) -> Result<Self, EncoderError> {
        Ok(Self(
            values(vb, &[size], "weight")?
                .into_iter()
                .map(|w| 1.0 + w)
                .collect(),
        ))
    }

    fn apply(&self, row: &mut [f32], eps: f32) {
        let inv = 1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt();
        row.iter_mut()
            .zip(&self.0)
            .for_each(|(x, w)| *x = *x * inv * w);
    }
}

struct GemmaLayer {
    sliding: bool,
    input_norm: RmsNorm,
    /// Query, key and value weights stacked: `[(heads + 2 kv_heads) * head_size, hidden]`.
    qkv: Linear,
    query_norm: RmsNorm,
    key_norm: RmsNorm,
    attention_out: Linear,
    post_attention_norm: RmsNorm,
    pre_feedforward_norm: RmsNorm,
    /// Gate and up projections stacked: `[2 intermediate, hidden]`.
    gate_up: Linear,
    down: Linear,
    post_feedforward_norm: RmsNorm,
}

pub struct GemmaEncoder {
    config: GemmaConfig,
    words: Vec<f32>,
    embed_scale: f32,
    layers: Vec<GemmaLayer>,
    final_norm: RmsNorm,
    rope_full: Rope,
    rope_local: Rope,
}

/// A projection without bias (Gemma has none) from the tensors `names`
/// under `vb`, stacked in order.
fn stacked(
    vb: &VarBuilder,
    names: &[&str],
    outputs: &[usize],
    inputs: usize,
    precision: Precision,
) -> Result<Linear, EncoderError> {
    let mut weight = Vec::new();
    for (name, &rows) in names.iter().zip(outputs) {
        weight.extend(values(&vb.pp(name), &[rows, inputs], "weight")?);
    }
    let total: usize = outputs.iter().sum();
    Ok(Linear::new(
        &weight,
        vec![0.0; total],
        inputs,
        total,
        precision,
    ))
}

impl GemmaEncoder {
    /// The encoder of an EmbeddingGemma checkpoint (a `Gemma3TextModel`,
    /// tensors at the root or under `model.`).
    pub fn load(
        vb: &VarBuilder,
        config: &serde_json::Value,
        precision: Precision,
    ) -> Result<Self, EncoderError> {
        let cfg = GemmaConfig::from_json(config)?;
        let vb = under_prefix(vb, &["model"], "embed_tokens.weight")?;
        let (h, size) = (cfg.hidden, cfg.head_size);
        let vocab = config["vocab_size"].as_u64().unwrap_or(0) as usize;
        let words = values(&vb, &[vocab, h], "embed_tokens.weight")?;
        let (q, kv) = (cfg.heads * size, cfg.kv_heads * size);
        let mut layers = Vec::with_capacity(cfg.sliding.len());
        for (i, &sliding) in cfg.sliding.iter().enumerate() {
            let l = vb.pp(format!("layers.{i}"));
            let attn = l.pp("self_attn");
            let mlp = l.pp("mlp");
            layers.push(GemmaLayer {
                sliding,
                input_norm: RmsNorm::load(&l.pp("input_layernorm"), h)?,
                qkv: stacked(
                    &attn,
                    &["q_proj", "k_proj", "v_proj"],
                    &[q, kv, kv],
                    h,
                    precision,
                )?,
                query_norm: RmsNorm::load(&attn.pp("q_norm"), size)?,
                key_norm: RmsNorm::load(&attn.pp("k_norm"), size)?,
                attention_out: stacked(&attn, &["o_proj"], &[h], q, precision)?,
                post_attention_norm: RmsNorm::load(&l.pp("post_attention_layernorm"), h)?,
                pre_feedforward_norm: RmsNorm::load(&l.pp("pre_feedforward_layernorm"), h)?,
                gate_up: stacked(
                    &mlp,
                    &["gate_proj", "up_proj"],
                    &[cfg.intermediate, cfg.intermediate],
                    h,
                    precision,
                )?,
                down: stacked(&mlp, &["down_proj"], &[h], cfg.intermediate, precision)?,
                post_feedforward_norm: RmsNorm::load(&l.pp("post_feedforward_layernorm"), h)?,
            });
        }
        Ok(Self {
            words,
            // transformers keeps the scale as a tensor of the model's dtype.
            embed_scale: (h as f64).sqrt() as f32,
            layers,
            final_norm: RmsNorm::load(&vb.pp("norm"), h)?,
            rope_full: Rope::new(cfg.rope_full, size, cfg.max_positions),
            rope_local: Rope::new(cfg.rope_local, size, cfg.max_positions),
            config: cfg,
        })
    }
}

impl TokenEncoder for GemmaEncoder {
    fn hidden(&self) -> usize {
        self.config.hidden
    }

    fn max_tokens(&self) -> usize {
        self.config.max_positions
    }

    fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>, EncoderError> {
        let cfg = &self.config;
        let (h, size, eps) = (cfg.hidden, cfg.head_size, cfg.eps);
        let lengths = lengths(sequences, self.max_tokens())?;
        let tokens: usize = lengths.iter().sum();
        let positions: Vec<usize> = lengths.iter().flat_map(|&len| 0..len).collect();
        let mut x = vec![0f32; tokens * h];
        for (row, &id) in x
            .chunks_exact_mut(h)
            .zip(sequences.iter().copied().flatten())
        {
            let word = table_row(&self.words, h, id)?;
            row.iter_mut()
                .zip(word)
                .for_each(|(o, w)| *o = w * self.embed_scale);
        }

        let width = (cfg.heads + 2 * cfg.kv_heads) * size;
        let inter = cfg.intermediate;
        let mut normed = vec![0f32; tokens * h];
        let mut qkv = vec![0f32; tokens * width];
        let mut context = vec![0f32; tokens * cfg.heads * size];
        let mut branch = vec![0f32; tokens * h];
        let mut gate_up = vec![0f32; tokens * 2 * inter];
        let mut gated = vec![0f32; tokens * inter];
        for layer in &self.layers {
            normed.copy_from_slice(&x);
            for_rows(&mut normed, h, |row| layer.input_norm.apply(row, eps));
            layer.qkv.apply(&normed, tokens, &mut qkv, None);
            let rope = if layer.sliding {
                &self.rope_local
            } else {
                &self.rope_full
            };
            qkv.par_chunks_mut(width)
                .zip(&positions)
                .for_each(|(row, &position)| {
                    let (queries, rest) = row.split_at_mut(cfg.heads * size);
                    let keys = &mut rest[..cfg.kv_heads * size];
                    for head in queries.chunks_exact_mut(size) {
                        layer.query_norm.apply(head, eps);
                        rope.rotate(head, position);
                    }
                    for head in keys.chunks_exact_mut(size) {
                        layer.key_norm.apply(head, eps);
                        rope.rotate(head, position);
                    }
                });
            let heads = Heads {
                query: cfg.heads,
                key_value: cfg.kv_heads,
                size,
                scale: cfg.query_scale,
                window: layer.sliding.then_some(cfg.window),
            };
            attention(&heads, &qkv, &lengths, &mut context);
            layer
                .attention_out
                .apply(&context, tokens, &mut branch, None);
            add_normed(&mut x, &mut branch, h, &layer.post_attention_norm, eps);

            normed.copy_from_slice(&x);
            for_rows(&mut normed, h, |row| {
                layer.pre_feedforward_norm.apply(row, eps)
            });
            layer.gate_up.apply(&normed, tokens, &mut gate_up, None);
            gated
                .par_chunks_mut(inter)
                .zip(gate_up.par_chunks_mut(2 * inter))
                .for_each(|(out, row)| {
                    let (gate, up) = row.split_at_mut(inter);
                    activate(gate, Activation::GeluTanh);
                    for ((o, g), u) in out.iter_mut().zip(gate.iter()).zip(up.iter()) {
                        *o = g * u;
                    }
                });
            layer.down.apply(&gated, tokens, &mut branch, None);
            add_normed(&mut x, &mut branch, h, &layer.post_feedforward_norm, eps);
        }
        for_rows(&mut x, h, |row| self.final_norm.apply(row, eps));
        Ok(x)
    }
}

/// `x += norm(branch)`, row by row: Gemma normalizes each block's output
/// before adding it to the residual stream.
fn add_normed(x: &mut [f32], branch: &mut [f32], width: usize, norm: &RmsNorm, eps: f32) {
    x.par_chunks_mut(width)
        .zip(branch.par_chunks_mut(width))
        .for_each(|(x, b)| {
            norm.apply(b, eps);
            x.iter_mut().zip(b.iter()).for_each(|(x, b)| *x += b);
        });
}
