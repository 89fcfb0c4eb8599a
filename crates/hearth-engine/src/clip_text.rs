//! CLIP's text transformer as Stable Diffusion reads it: the final normed
//! states (SD 1.x), the penultimate layer's (SDXL conditions on those of
//! both of its encoders), the pooled end-of-text state and the optional
//! `text_projection` of `CLIPTextModelWithProjection`, with either of
//! CLIP's activations (`quick_gelu` for CLIP-L, exact `gelu` for OpenCLIP
//! bigG).
//!
//! candle-transformers has two CLIP text models and neither fits SDXL: the
//! `clip` one knows only `quick_gelu` and returns the final normed state,
//! the `stable_diffusion` one takes only its presets (private config
//! fields), so no test-size model can be built.

use std::path::Path;

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde_json::Value;

/// The sizes and activation of a CLIP text encoder, from its
/// transformers `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct ClipTextSettings {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub positions: usize,
    pub layer_norm_eps: f64,
    /// `quick_gelu` (false) or the exact `gelu` (true).
    pub exact_gelu: bool,
    /// `Some(width)` for `CLIPTextModelWithProjection`.
    pub projection: Option<usize>,
}

impl ClipTextSettings {
    pub(crate) fn from_config(c: &Value, with_projection: bool) -> Result<Self, String> {
        let num = |k: &str, d: usize| c.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize);
        let exact_gelu = match c.get("hidden_act").and_then(Value::as_str) {
            None | Some("quick_gelu") => false,
            Some("gelu") => true,
            Some(other) => {
                return Err(format!(
                    "hidden_act {other:?}: CLIP's quick_gelu or gelu expected"
                ));
            }
        };
        let hidden_size = num("hidden_size", 768);
        let heads = num("num_attention_heads", 12);
        if heads == 0 || hidden_size % heads != 0 {
            return Err(format!(
                "hidden_size {hidden_size} does not split into {heads} heads"
            ));
        }
        Ok(Self {
            vocab_size: num("vocab_size", 49408),
            hidden_size,
            intermediate_size: num("intermediate_size", 3072),
            layers: num("num_hidden_layers", 12),
            heads,
            positions: num("max_position_embeddings", 77),
            layer_norm_eps: c
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
            exact_gelu,
            projection: with_projection.then(|| num("projection_dim", hidden_size)),
        })
    }

    /// The `config.json` transformers writes for these settings.
    pub(crate) fn to_config(&self, bos: usize, eos: usize, pad: usize) -> Value {
        serde_json::json!({
            "architectures": [if self.projection.is_some() {
                "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
            "model_type": "clip_text_model",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "max_position_embeddings": self.positions,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": if self.exact_gelu { "gelu" } else { "quick_gelu" },
            "projection_dim": self.projection.unwrap_or(self.hidden_size),
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
        })
    }
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What Stable Diffusion takes from one encoder.
pub(crate) struct ClipTextOutput {
    /// The last layer's states through the final norm: `[batch, tokens,
    /// hidden]` (what SD 1.x attends to).
    pub last: Tensor,
    /// The hidden states before the last layer: `[batch, tokens, hidden]`.
    pub penultimate: Tensor,
    /// The final-normed state at each row's end-of-text token, through
    /// `text_projection` when the model has one: `[batch, width]`.
    pub pooled: Tensor,
}

pub(crate) struct ClipText {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
    settings: ClipTextSettings,
}

impl ClipText {
    /// Reads the weights in transformers' names: `text` holds
    /// `embeddings.`, `encoder.` and `final_layer_norm.`, `root` the
    /// `text_projection` (transformers writes `text` as `root.pp("text_model")`).
    pub(crate) fn new(
        text: VarBuilder,
        root: VarBuilder,
        settings: &ClipTextSettings,
    ) -> candle_core::Result<Self> {
        let s = settings;
        let norm = |vb: VarBuilder| candle_nn::layer_norm(s.hidden_size, s.layer_norm_eps, vb);
        let square = |vb: VarBuilder| candle_nn::linear(s.hidden_size, s.hidden_size, vb);
        let layers = (0..s.layers)
            .map(|i| {
                let l = text.pp("encoder.layers").pp(i.to_string());
                let attn = l.pp("self_attn");
                Ok(Layer {
                    norm1: norm(l.pp("layer_norm1"))?,
                    q: square(attn.pp("q_proj"))?,
                    k: square(attn.pp("k_proj"))?,
                    v: square(attn.pp("v_proj"))?,
                    out: square(attn.pp("out_proj"))?,
                    norm2: norm(l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(s.hidden_size, s.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(s.intermediate_size, s.hidden_size, l.pp("mlp.fc2"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let embeddings = text.pp("embeddings");
        Ok(Self {
            token_embedding: candle_nn::embedding(
                s.vocab_size,
                s.hidden_size,
                embeddings.pp("token_embedding"),
            )?,
            position_embedding: candle_nn::embedding(
                s.positions,
                s.hidden_size,
                embeddings.pp("position_embedding"),
            )?,
            layers,
            final_norm: norm(text.pp("final_layer_norm"))?,
            projection: match s.projection {
                Some(width) => Some(candle_nn::linear_no_bias(
                    s.hidden_size,
                    width,
                    root.pp("text_projection"),
                )?),
                None => None,
            },
            settings: s.clone(),
        })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub(crate) fn load(dir: &Path, with_projection: bool) -> Result<Self, String> {
        let raw =
            std::fs::read(dir.join("config.json")).map_err(|e| format!("config.json: {e}"))?;
        let config: Value =
            serde_json::from_slice(&raw).map_err(|e| format!("config.json: {e}"))?;
        let settings = ClipTextSettings::from_config(&config, with_projection)?;
        let vb = crate::hf::mmap_weights(&[dir.join("model.safetensors")])
            .map_err(|e| format!("model.safetensors: {e}"))?;
        // transformers 5 saves a plain CLIPTextModel without the
        // `text_model.` prefix.
        let text = if vb.contains_tensor("text_model.final_layer_norm.weight") {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        Self::new(text, vb, &settings).map_err(|e| e.to_string())
    }

    pub(crate) fn hidden_size(&self) -> usize {
        self.settings.hidden_size
    }

    /// Whether the layers use the exact `gelu` (OpenCLIP), not `quick_gelu`.
    pub(crate) fn exact_gelu(&self) -> bool {
        self.settings.exact_gelu
    }

    /// The longest token row (77 for every released CLIP).
    pub(crate) fn positions(&self) -> usize {
        self.settings.positions
    }

    /// The pooled width: the projection's, else the hidden size.
    pub(crate) fn pooled_size(&self) -> usize {
        self.settings
            .projection
            .unwrap_or(self.settings.hidden_size)
    }

    /// Encodes rows of `tokens` ids each; `eos` marks the pooled position
    /// (the first end-of-text token of the row, which is also its largest
    /// id, where transformers' legacy configs take the argmax).
    pub(crate) fn encode(
        &self,
        ids: &[u32],
        tokens: usize,
        eos: u32,
    ) -> candle_core::Result<ClipTextOutput> {
        let rows = ids.len() / tokens.max(1);
        if tokens > self.settings.positions || rows * tokens != ids.len() {
            candle_core::bail!("{} ids are not rows of {tokens} tokens", ids.len());
        }
        let input = Tensor::from_slice(ids, (rows, tokens), &Device::Cpu)?;
        let positions = Tensor::arange(0u32, tokens as u32, &Device::Cpu)?;
        let mut x = self
            .token_embedding
            .forward(&input)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let causal: Vec<f32> = (0..tokens)
            .flat_map(|i| (0..tokens).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (tokens, tokens), &Device::Cpu)?;
        let mut penultimate = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last {
                penultimate = x.clone();
            }
            x = self.layer(layer, &x, &causal)?;
        }
        let normed = self.final_norm.forward(&x)?;
        let mut pooled = Vec::with_capacity(rows);
        for (row, chunk) in ids.chunks(tokens).enumerate() {
            let at = chunk.iter().position(|&t| t == eos).unwrap_or(tokens - 1);
            pooled.push(normed.i((row, at))?.unsqueeze(0)?);
        }
        let pooled = Tensor::cat(&pooled, 0)?;
        let pooled = match &self.projection {
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        };
        Ok(ClipTextOutput {
            last: normed,
            penultimate,
            pooled,
        })
    }

    fn layer(&self, l: &Layer, x: &Tensor, causal: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let heads = self.settings.heads;
        let d = c / heads;
        let h = l.norm1.forward(x)?;
        let split = |y: Tensor| y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous();
        let q = split((l.q.forward(&h)? * (d as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(&h)?)?;
        let v = split(l.v.forward(&h)?)?;
        let scores = q
            .matmul(&k.transpose(2, 3)?.contiguous()?)?
            .broadcast_add(causal)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        let x = (x + l.out.forward(&attended)?)?;
        let h = l.fc1.forward(&l.norm2.forward(&x)?)?;
        let h = if self.settings.exact_gelu {
            h.gelu_erf()?
        } else {
            (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?
        };
        x + l.fc2.forward(&h)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// The layers' maths against a direct reading of transformers'
    /// `CLIPTextTransformer` on one head and one layer: the penultimate
    /// state of a one-layer model is the embedding sum, and the pooled
    /// state is the normed output at the end token.
    #[test]
    fn penultimate_and_pooled_states_come_from_the_right_places() {
        let settings = ClipTextSettings {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            layers: 1,
            heads: 2,
            positions: 6,
            layer_norm_eps: 1e-5,
            exact_gelu: true,
            projection: Some(4),
        };
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = ClipText::new(vb.pp("text_model"), vb, &settings).expect("model");
        let ids = [1u32, 5, 9, 0, 0, 0, 1, 9, 0, 0, 0, 0];
        let out = model.encode(&ids, 6, 9).expect("encode");
        assert_eq!(out.penultimate.dims(), [2, 6, 8]);
        assert_eq!(out.pooled.dims(), [2, 4]);
        let tokens = Tensor::from_slice(&ids, (2, 6), &Device::Cpu).expect("ids");
        let embedded = model
            .token_embedding
            .forward(&tokens)
            .and_then(|e| {
                let p = Tensor::arange(0u32, 6, &Device::Cpu)?;
                e.broadcast_add(&model.position_embedding.forward(&p)?)
            })
            .expect("embed");
        let gap = (out.penultimate - embedded)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .expect("gap");
        assert_eq!(gap, 0.0);
        // Row 0 ends at position 2, row 1 at position 1: changing a token
        // after the end moves the states there but not the pooled one
        // (causal attention).
        let mut later = ids;
        later[4] = 3;
        let moved = model.encode(&later, 6, 9).expect("encode");
        let same = (moved.pooled - &out.pooled)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .expect("gap");
        assert_eq!(same, 0.0);
        assert!(model.encode(&ids[..11], 6, 9).is_err());
    }
}
