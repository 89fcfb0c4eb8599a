//! Llama 3.2 Vision (`model_type: "mllama"`, transformers'
//! `MllamaForConditionalGeneration`) on candle, from the Hugging Face
//! layout: `config.json` (`vision_config`, `text_config`), the weights
//! (`model.safetensors` or the shards of `model.safetensors.index.json`; the
//! hub's names, `vision_model.*` / `language_model.model.*`, or those
//! transformers 5 saves, `model.vision_model.*` / `model.language_model.*`),
//! `tokenizer.json` and `preprocessor_config.json`.
//!
//! Unlike LLaVA, the image never enters the token sequence: it is resized
//! onto a canvas of up to `max_image_tiles` square tiles, each tile goes
//! through a ViT with aspect-ratio (tile) and position embeddings, a gated
//! global encoder looks across the tiles, and the text decoder reads the
//! result through gated cross-attention layers inserted at
//! `cross_attention_layers`. Text before the `<|image|>` token does not see
//! the image, text after it does. The numerics follow transformers' code
//! line for line, quirks included (the vision encoders mask only padding to
//! padding; rows that see no image attend evenly to every vision token and
//! drop their cross-attention MLP), because `bench/mllama_reference.py`
//! holds Hearth to its greedy outputs.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, RmsNorm, VarBuilder};
use hearth_types::textgen::GenerationParams;
use serde_json::Value;

use crate::describe::{Decoder, DescribeError, Description, Prompt, Sink, compute, generate};
use crate::vision::{decode_rgb, normalized};

/// The image token the processor and the chat template write.
pub const IMAGE_TOKEN: &str = "<|image|>";
const BOS_TOKEN: &str = "<|begin_of_text|>";

/// The image processor's settings (`preprocessor_config.json`).
struct Tiling {
    tile: u32,
    max_tiles: usize,
    /// Per channel, in 0-255 units.
    mean: [f32; 3],
    std: [f32; 3],
}

/// The grids of at most `max_tiles` tiles as (rows, columns), in the
/// processor's order: the aspect-ratio id of a grid is its index + 1.
fn grids(max_tiles: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for a in 1..=max_tiles {
        for b in 1..=max_tiles {
            if a * b <= max_tiles {
                out.push((a, b));
            }
        }
    }
    out
}

impl Tiling {
    /// The canvas (rows, columns of tiles) for an image: the smallest
    /// upscale that fits, else the largest downscale; ties to the smaller
    /// area (`get_optimal_tiled_canvas`).
    fn canvas(&self, height: u32, width: u32) -> (usize, usize) {
        let tile = f64::from(self.tile);
        let grids = grids(self.max_tiles);
        let scales: Vec<f64> = grids
            .iter()
            .map(|&(rows, cols)| {
                let sh = rows as f64 * tile / f64::from(height);
                let sw = cols as f64 * tile / f64::from(width);
                if sw > sh { sh } else { sw }
            })
            .collect();
        let up = scales
            .iter()
            .copied()
            .filter(|&s| s >= 1.0)
            .fold(f64::INFINITY, f64::min);
        let chosen = if up.is_finite() {
            up
        } else {
            scales.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        };
        grids
            .iter()
            .zip(&scales)
            .filter(|(_, s)| **s == chosen)
            .map(|(g, _)| *g)
            .min_by_key(|(rows, cols)| rows * cols)
            .unwrap_or((1, 1))
    }

    /// The image's size on the canvas, aspect kept
    /// (`get_image_size_fit_to_canvas`).
    fn fit(&self, height: u32, width: u32, canvas: (usize, usize)) -> (u32, u32) {
        let canvas_h = canvas.0 as u32 * self.tile;
        let canvas_w = canvas.1 as u32 * self.tile;
        let target_w = width.clamp(self.tile, canvas_w);
        let target_h = height.clamp(self.tile, canvas_h);
        let scale_h = f64::from(target_h) / f64::from(height);
        let scale_w = f64::from(target_w) / f64::from(width);
        if scale_w < scale_h {
            let h = ((f64::from(height) * scale_w).floor() as u32).max(1);
            (h.min(target_h), target_w)
        } else {
            let w = ((f64::from(width) * scale_h).floor() as u32).max(1);
            (target_h, w.min(target_w))
        }
    }

    /// The image as `[max_tiles, 3, tile, tile]` (unused tiles zero), its
    /// aspect-ratio id and its number of tiles: resized (bilinear) onto
    /// the canvas, padded right and bottom with black before normalizing,
    /// cut into tiles row by row (`split_to_tiles`).
    fn pixels(&self, bytes: &[u8]) -> Result<(Tensor, usize, usize), DescribeError> {
        let rgb = decode_rgb(bytes, "image")?;
        let (w, h) = rgb.dimensions();
        let canvas = self.canvas(h, w);
        let (rh, rw) = self.fit(h, w, canvas);
        let (rows, cols) = canvas;
        let mut padded = image::RgbImage::new(cols as u32 * self.tile, rows as u32 * self.tile);
        if (rw, rh) == (w, h) {
            image::imageops::replace(&mut padded, &rgb, 0, 0);
        } else {
            let resized =
                image::imageops::resize(&rgb, rw, rh, image::imageops::FilterType::Triangle);
            image::imageops::replace(&mut padded, &resized, 0, 0);
        }
        let tile = self.tile as usize;
        let tiles = normalized(&padded, self.mean, self.std)?
            .reshape((3, rows, tile, cols, tile))
            .and_then(|t| t.permute((1, 3, 0, 2, 4)))
            .and_then(|t| t.reshape((rows * cols, 3, tile, tile)))
            .and_then(|t| t.pad_with_zeros(0, 0, self.max_tiles - rows * cols))
            .map_err(compute)?;
        let id = grids(self.max_tiles)
            .iter()
            .position(|&g| g == canvas)
            .map_or(1, |i| i + 1);
        Ok((tiles, id, rows * cols))
    }
}

/// Attention of `q` `[1, h, n, d]` over `k`, `v` `[1, h / groups, m, d]`
/// (each key/value head serving `groups` consecutive query heads, as
/// `repeat_kv` would lay them out), with an additive mask `[n, m]`. The
/// query heads of a group are stacked as rows against their one key/value
/// head rather than the keys and values copied per head: decoding reads
/// the whole cache and the image's keys every step.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let (b, h, n, d) = q.dims4()?;
    let q = q.contiguous()?.reshape((b, h / groups, groups * n, d))?;
    let scale = (d as f64).powf(-0.5);
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match mask {
        Some(m) if groups > 1 => scores.broadcast_add(&m.repeat((groups, 1))?)?,
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    candle_nn::ops::softmax_last_dim(&scores)?
        .matmul(&v.contiguous()?)?
        .reshape((b, h, n, d))
}

/// `[1, n, heads * d]` as `[1, heads, n, d]`.
fn heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, n, width) = x.dims3()?;
    x.reshape((b, n, heads, width / heads))?.transpose(1, 2)
}

/// `[1, heads, n, d]` back to `[1, n, heads * d]`.
fn merge(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, h * d))
}

/// A learned scalar gate, read as its tanh.
fn gate(vb: &VarBuilder, name: &str) -> candle_core::Result<f64> {
    let value = vb.get(1, name)?.to_vec1::<f32>()?;
    Ok(f64::from(value.first().copied().unwrap_or(0.0)).tanh())
}

struct VisionLayer {
    projections: [Linear; 4],
    fc1: Linear,
    fc2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    /// tanh of the global encoder's attention and feed-forward gates.
    gates: Option<(f64, f64)>,
    heads: usize,
}

impl VisionLayer {
    fn load(
        vb: VarBuilder,
        width: usize,
        ffn: usize,
        heads: usize,
        eps: f64,
        gated: bool,
    ) -> candle_core::Result<Self> {
        let attn = vb.pp("self_attn");
        let projection = |name: &str| candle_nn::linear_no_bias(width, width, attn.pp(name));
        Ok(Self {
            projections: [
                projection("q_proj")?,
                projection("k_proj")?,
                projection("v_proj")?,
                projection("o_proj")?,
            ],
            fc1: candle_nn::linear(width, ffn, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(ffn, width, vb.pp("mlp.fc2"))?,
            norm1: candle_nn::layer_norm(width, eps, vb.pp("input_layernorm"))?,
            norm2: candle_nn::layer_norm(width, eps, vb.pp("post_attention_layernorm"))?,
            gates: if gated {
                Some((gate(&vb, "gate_attn")?, gate(&vb, "gate_ffn")?))
            } else {
                None
            },
            heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let [q, k, v, o] = &self.projections;
        let h = self.norm1.forward(x)?;
        let attended = attend(
            &heads(&q.forward(&h)?, self.heads)?,
            &heads(&k.forward(&h)?, self.heads)?,
            &heads(&v.forward(&h)?, self.heads)?,
            Some(mask),
            1,
        )?;
        let mut attended = o.forward(&merge(&attended)?)?;
        if let Some((g, _)) = self.gates {
            attended = (attended * g)?;
        }
        let x = (x + attended)?;
        let h = self.norm2.forward(&x)?;
        let mut h = self.fc2.forward(&self.fc1.forward(&h)?.gelu_erf()?)?;
        if let Some((_, g)) = self.gates {
            h = (h * g)?;
        }
        x + h
    }
}

/// An aspect-ratio embedding added per tile, gated.
struct TileEmbedding {
    table: Tensor,
    gate: f64,
}

impl TileEmbedding {
    fn add(&self, x: &Tensor, id: usize) -> candle_core::Result<Tensor> {
        let (tiles, _, width) = x.dims3()?;
        let row = (self.table.i(id)?.reshape((tiles, 1, width))? * self.gate)?;
        x.broadcast_add(&row)
    }
}

struct VisionModel {
    patch: Conv2d,
    class: Tensor,
    position: Tensor,
    position_gate: f64,
    tile_position: Tensor,
    pre_tile: TileEmbedding,
    post_tile: TileEmbedding,
    norm_pre: LayerNorm,
    norm_post: LayerNorm,
    layers: Vec<VisionLayer>,
    global_layers: Vec<VisionLayer>,
    intermediate: Vec<usize>,
    width: usize,
    /// Tokens per tile: the patches and the class token.
    tokens: usize,
}

impl VisionModel {
    /// The vision states the text decoder attends to, `[tiles * tokens,
    /// width * (1 + intermediate layers)]`: per tile token, the global
    /// encoder's output, then the chosen local layers' outputs interleaved
    /// feature by feature (transformers stacks them on a last axis).
    fn forward(&self, pixels: &Tensor, id: usize, valid: usize) -> candle_core::Result<Tensor> {
        let tiles = pixels.dim(0)?;
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let x = self.pre_tile.add(&patches, id)?;
        let class = self
            .class
            .reshape((1, 1, self.width))?
            .broadcast_as((tiles, 1, self.width))?;
        let x = Tensor::cat(&[&class, &x], 1)?;
        let x = x.broadcast_add(&(&self.position * (1.0 - self.position_gate))?)?;
        let tile_position =
            (self
                .tile_position
                .i(id)?
                .reshape((tiles, self.tokens, self.width))?
                * self.position_gate)?;
        let x = self.norm_pre.forward(&(x + tile_position)?)?;
        let padded = self.tokens.div_ceil(8) * 8;
        let x = x.pad_with_zeros(1, 0, padded - self.tokens)?.reshape((
            1,
            tiles * padded,
            self.width,
        ))?;
        // transformers' mask is the outer product of the padding flags: only
        // padding attends not to padding.
        let pad: Vec<bool> = (0..tiles * padded)
            .map(|i| i / padded >= valid || i % padded >= self.tokens)
            .collect();
        let n = pad.len();
        let mask: Vec<f32> = (0..n * n)
            .map(|ij| {
                if pad[ij / n] && pad[ij % n] {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, n), &Device::Cpu)?;
        let mut x = x;
        let mut kept = Vec::with_capacity(self.intermediate.len());
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &mask)?;
            if self.intermediate.contains(&i) {
                kept.push((i, x.clone()));
            }
        }
        let x = self
            .norm_post
            .forward(&x)?
            .reshape((tiles, padded, self.width))?;
        let mut x = self
            .post_tile
            .add(&x, id)?
            .reshape((1, tiles * padded, self.width))?;
        for layer in &self.global_layers {
            x = layer.forward(&x, &mask)?;
        }
        let x = x
            .reshape((tiles, padded, self.width))?
            .narrow(1, 0, self.tokens)?;
        let chosen: Vec<Tensor> = self
            .intermediate
            .iter()
            .filter_map(|i| kept.iter().find(|(k, _)| k == i).map(|(_, t)| t.clone()))
            .collect();
        let stacked = Tensor::stack(&chosen, D::Minus1)?
            .reshape((tiles, padded, self.width * chosen.len()))?
            .narrow(1, 0, self.tokens)?;
        Tensor::cat(&[&x, &stacked], D::Minus1)?.reshape((tiles * self.tokens, ()))
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(vb: VarBuilder, width: usize, ffn: usize) -> candle_core::Result<Self> {
        Ok(Self {
            gate: candle_nn::linear_no_bias(width, ffn, vb.pp("gate_proj"))?,
            up: candle_nn::linear_no_bias(width, ffn, vb.pp("up_proj"))?,
            down: candle_nn::linear_no_bias(ffn, width, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gated = (self.gate.forward(x)?.silu()? * self.up.forward(x)?)?;
        self.down.forward(&gated)
    }
}

struct Projections {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

impl Projections {
    fn load(vb: &VarBuilder, width: usize, kv_width: usize) -> candle_core::Result<Self> {
        Ok(Self {
            q: candle_nn::linear_no_bias(width, width, vb.pp("q_proj"))?,
            k: candle_nn::linear_no_bias(width, kv_width, vb.pp("k_proj"))?,
            v: candle_nn::linear_no_bias(width, kv_width, vb.pp("v_proj"))?,
            o: candle_nn::linear_no_bias(width, width, vb.pp("o_proj"))?,
        })
    }
}

struct CrossAttention {
    projections: Projections,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_gate: f64,
    mlp_gate: f64,
}

enum Mixer {
    SelfAttention(Projections),
    Cross(CrossAttention),
}

struct DecoderLayer {
    mixer: Mixer,
    mlp: Mlp,
    norm1: RmsNorm,
    norm2: RmsNorm,
}

/// What the cross-attention layers read: the vision keys and values of
/// each layer (computed once), and per text row its additive mask over the
/// vision tokens and whether it sees the image at all.
struct CrossState {
    keys_values: Vec<Option<(Tensor, Tensor)>>,
    /// The mask of a row that sees the image, `[vision tokens]`.
    seeing: Tensor,
}

struct TextModel {
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    heads: usize,
    kv_heads: usize,
    inv_freq: Vec<f32>,
}

/// The key/value cache of a generation.
struct Cache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross: Option<CrossState>,
    position: usize,
}

impl TextModel {
    fn rope(&self, start: usize, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            for f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (n, half), &Device::Cpu)?,
        ))
    }

    /// The cross-attention keys and values of every cross layer for the
    /// vision states `[tokens, width]`.
    fn cross_keys_values(
        &self,
        states: &Tensor,
    ) -> candle_core::Result<Vec<Option<(Tensor, Tensor)>>> {
        let states = states.unsqueeze(0)?;
        self.layers
            .iter()
            .map(|layer| match &layer.mixer {
                Mixer::Cross(cross) => {
                    let p = &cross.projections;
                    let k = heads(&p.k.forward(&states)?, self.kv_heads)?;
                    let k = cross.k_norm.forward(&k.contiguous()?)?;
                    let v = heads(&p.v.forward(&states)?, self.kv_heads)?;
                    Ok(Some((k, v)))
                }
                Mixer::SelfAttention(_) => Ok(None),
            })
            .collect()
    }

    /// Logits of the last of `ids`, which continue `cache`; `sees` says per
    /// id whether it comes at or after the image token.
    fn forward(
        &self,
        ids: &[u32],
        sees: &[bool],
        cache: &mut Cache,
    ) -> candle_core::Result<Tensor> {
        let n = ids.len();
        let ids_t = Tensor::new(ids, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids_t, 0)?.unsqueeze(0)?;
        let start = cache.position;
        let (cos, sin) = self.rope(start, n)?;
        let causal = if n > 1 {
            let total = start + n;
            let mask: Vec<f32> = (0..n * total)
                .map(|ij| {
                    if ij % total > start + ij / total {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            Some(Tensor::from_vec(mask, (n, total), &Device::Cpu)?)
        } else {
            None
        };
        // Rows that see no image attend evenly to every vision token (a zero
        // mask) and drop their cross-attention MLP.
        let cross_rows = match &cache.cross {
            Some(cross) => {
                let tokens = cross.seeing.dim(0)?;
                let zeros = Tensor::zeros(tokens, DType::F32, &Device::Cpu)?;
                let rows: Vec<Tensor> = sees
                    .iter()
                    .map(|&s| {
                        if s {
                            cross.seeing.clone()
                        } else {
                            zeros.clone()
                        }
                    })
                    .collect();
                let keep: Vec<f32> = sees.iter().map(|&s| if s { 1.0 } else { 0.0 }).collect();
                Some((
                    Tensor::stack(&rows, 0)?,
                    Tensor::from_vec(keep, (1, n, 1), &Device::Cpu)?,
                ))
            }
            None => None,
        };
        let groups = self.heads / self.kv_heads;
        for (i, layer) in self.layers.iter().enumerate() {
            match &layer.mixer {
                Mixer::SelfAttention(p) => {
                    let h = layer.norm1.forward(&x)?;
                    let q = heads(&p.q.forward(&h)?, self.heads)?.contiguous()?;
                    let k = heads(&p.k.forward(&h)?, self.kv_heads)?.contiguous()?;
                    let v = heads(&p.v.forward(&h)?, self.kv_heads)?;
                    let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
                    let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
                    let (k, v) = match cache.self_kv[i].take() {
                        Some((pk, pv)) => {
                            (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)
                        }
                        None => (k, v),
                    };
                    cache.self_kv[i] = Some((k.clone(), v.clone()));
                    let attended = attend(&q, &k, &v, causal.as_ref(), groups)?;
                    x = (&x + p.o.forward(&merge(&attended)?)?)?;
                    let h = layer.mlp.forward(&layer.norm2.forward(&x)?)?;
                    x = (x + h)?;
                }
                Mixer::Cross(cross) => {
                    // Text without an image skips the cross-attention layers.
                    let (Some(state), Some((mask, keep))) = (&cache.cross, &cross_rows) else {
                        continue;
                    };
                    let Some((k, v)) = &state.keys_values[i] else {
                        continue;
                    };
                    let p = &cross.projections;
                    let h = layer.norm1.forward(&x)?;
                    let q = heads(&p.q.forward(&h)?, self.heads)?;
                    let q = cross.q_norm.forward(&q.contiguous()?)?;
                    let attended = attend(&q, k, v, Some(mask), groups)?;
                    let attended = p.o.forward(&merge(&attended)?)?;
                    x = (&x + (attended * cross.attn_gate)?)?;
                    let h = layer.mlp.forward(&layer.norm2.forward(&x)?)?;
                    let h = h.broadcast_mul(keep)?;
                    x = (&x + (h * cross.mlp_gate)?)?;
                }
            }
        }
        cache.position += n;
        let last = x.i((0, n - 1))?.unsqueeze(0)?;
        self.lm_head.forward(&self.norm.forward(&last)?)?.squeeze(0)
    }
}

/// Llama 3's rotary frequencies, rescaled as `rope_type: "llama3"` says
/// (long wavelengths divided by `factor`, a smooth blend in between).
fn inverse_frequencies(head_dim: usize, theta: f64, scaling: Option<&Value>) -> Vec<f32> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let Some(s) = scaling.filter(|s| {
        s.get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            == Some("llama3")
    }) else {
        return base.into_iter().map(|f| f as f32).collect();
    };
    let num = |k: &str, d: f64| s.get(k).and_then(Value::as_f64).unwrap_or(d);
    let factor = num("factor", 8.0);
    let low = num("low_freq_factor", 1.0);
    let high = num("high_freq_factor", 4.0);
    let old = num("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
            let out = if medium {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            };
            out as f32
        })
        .collect()
}

pub struct Mllama {
    tokenizer: tokenizers::Tokenizer,
    vision: VisionModel,
    projector: Linear,
    text: TextModel,
    tiling: Tiling,
    image_token: u32,
    eos: Vec<u32>,
    max_positions: usize,
}

/// The first of `prefixes` under which `probe` names a tensor.
fn find_prefix(vb: &VarBuilder, prefixes: &[&str], probe: &str) -> Option<String> {
    prefixes
        .iter()
        .find(|p| vb.contains_tensor(&format!("{p}.{probe}")))
        .map(|p| (*p).to_string())
}

/// The sizes `config.json` gives, with transformers' defaults (those of
/// Llama 3.2 11B Vision) for what it omits.
struct Shapes {
    width: usize,
    vision_heads: usize,
    ffn: usize,
    image_size: usize,
    patch: usize,
    channels: usize,
    max_tiles: usize,
    local_layers: usize,
    global_layers: usize,
    intermediate: Vec<usize>,
    eps: f64,
    hidden: usize,
    text_heads: usize,
    kv_heads: usize,
    text_ffn: usize,
    text_layers: usize,
    vocab: usize,
    cross_layers: Vec<usize>,
    rms_eps: f64,
    inv_freq: Vec<f32>,
    max_positions: usize,
}

impl Shapes {
    fn read(config: &Value) -> Result<Self, String> {
        let vc = config.get("vision_config").unwrap_or(&Value::Null);
        let tc = config.get("text_config").unwrap_or(&Value::Null);
        let num = |c: &Value, k: &str, d: usize| {
            c.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize)
        };
        if let Some(act) = vc.get("hidden_act").and_then(Value::as_str)
            && act != "gelu"
        {
            return Err(format!("vision hidden_act {act:?}: gelu expected"));
        }
        let shapes = Self {
            width: num(vc, "hidden_size", 1280),
            vision_heads: num(vc, "attention_heads", num(vc, "num_attention_heads", 16)),
            ffn: num(vc, "intermediate_size", 5120),
            image_size: num(vc, "image_size", 448),
            patch: num(vc, "patch_size", 14),
            channels: num(vc, "num_channels", 3),
            max_tiles: num(vc, "max_num_tiles", 4),
            local_layers: num(vc, "num_hidden_layers", 32),
            global_layers: num(vc, "num_global_layers", 8),
            intermediate: crate::hf::sizes(vc, "intermediate_layers_indices", &[3, 7, 15, 23, 30]),
            eps: vc.get("norm_eps").and_then(Value::as_f64).unwrap_or(1e-5),
            hidden: num(tc, "hidden_size", 4096),
            text_heads: num(tc, "num_attention_heads", 32),
            kv_heads: num(tc, "num_key_value_heads", 8),
            text_ffn: num(tc, "intermediate_size", 14336),
            text_layers: num(tc, "num_hidden_layers", 40),
            vocab: num(tc, "vocab_size", 128256),
            cross_layers: crate::hf::sizes(
                tc,
                "cross_attention_layers",
                &[3, 8, 13, 18, 23, 28, 33, 38],
            ),
            rms_eps: tc
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
            inv_freq: Vec::new(),
            max_positions: num(tc, "max_position_embeddings", 131_072),
        };
        let grid_list: Option<Vec<(usize, usize)>> = vc
            .get("supported_aspect_ratios")
            .and_then(Value::as_array)
            .map(|ratios| {
                ratios
                    .iter()
                    .filter_map(|r| {
                        let r = r.as_array()?;
                        Some((r.first()?.as_u64()? as usize, r.get(1)?.as_u64()? as usize))
                    })
                    .collect()
            });
        if let Some(given) = grid_list
            && given != grids(shapes.max_tiles)
        {
            return Err(format!(
                "supported_aspect_ratios {given:?} differ from the processor's grids of {} tiles",
                shapes.max_tiles
            ));
        }
        if let Some(bad) = shapes
            .intermediate
            .iter()
            .find(|&&i| i >= shapes.local_layers)
        {
            return Err(format!(
                "intermediate_layers_indices names layer {bad} of {}",
                shapes.local_layers
            ));
        }
        for (what, w, h) in [
            ("vision", shapes.width, shapes.vision_heads),
            ("text", shapes.hidden, shapes.text_heads),
        ] {
            if h == 0 || w % h != 0 {
                return Err(format!(
                    "{what} attention heads {h} do not divide hidden_size {w}"
                ));
            }
        }
        if shapes.kv_heads == 0 || !shapes.text_heads.is_multiple_of(shapes.kv_heads) {
            return Err(format!(
                "num_key_value_heads {} does not divide num_attention_heads {}",
                shapes.kv_heads, shapes.text_heads
            ));
        }
        if shapes.patch == 0 || !shapes.image_size.is_multiple_of(shapes.patch) {
            return Err(format!(
                "patch_size {} does not divide image_size {}",
                shapes.patch, shapes.image_size
            ));
        }
        let vision_out = shapes.width * (1 + shapes.intermediate.len());
        if let Some(declared) = vc.get("vision_output_dim").and_then(Value::as_u64)
            && declared as usize != vision_out
        {
            return Err(format!(
                "vision_output_dim {declared} is not {vision_out} (hidden_size x (1 + intermediate layers))"
            ));
        }
        // transformers 5 keeps rope_theta inside rope_parameters; 4.x has
        // rope_theta beside rope_scaling.
        let rope = tc.get("rope_parameters").or_else(|| tc.get("rope_scaling"));
        let theta = tc
            .get("rope_theta")
            .or_else(|| tc.pointer("/rope_parameters/rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(500_000.0);
        Ok(Self {
            inv_freq: inverse_frequencies(shapes.hidden / shapes.text_heads, theta, rope),
            ..shapes
        })
    }

    /// Vision tokens per tile: the patches and the class token.
    fn tile_tokens(&self) -> usize {
        (self.image_size / self.patch).pow(2) + 1
    }
}

/// The model's modules from weights under the given prefixes.
fn build(
    shapes: &Shapes,
    vision_vb: VarBuilder,
    projector_vb: VarBuilder,
    text_vb: VarBuilder,
    head_vb: VarBuilder,
) -> candle_core::Result<(VisionModel, Linear, TextModel)> {
    let s = shapes;
    let vvb = vision_vb;
    let ratios = grids(s.max_tiles).len() + 1;
    let tokens = s.tile_tokens();
    let tile = |name: &str| -> candle_core::Result<TileEmbedding> {
        let v = vvb.pp(name);
        Ok(TileEmbedding {
            table: v.get((ratios, s.max_tiles * s.width), "embedding.weight")?,
            gate: gate(&v, "gate")?,
        })
    };
    let layers = |name: &str, count: usize, gated: bool| -> candle_core::Result<Vec<VisionLayer>> {
        (0..count)
            .map(|i| {
                VisionLayer::load(
                    vvb.pp(format!("{name}.layers.{i}")),
                    s.width,
                    s.ffn,
                    s.vision_heads,
                    s.eps,
                    gated,
                )
            })
            .collect()
    };
    let positions = vvb.pp("gated_positional_embedding");
    let vision = VisionModel {
        patch: candle_nn::conv2d_no_bias(
            s.channels,
            s.width,
            s.patch,
            candle_nn::Conv2dConfig {
                stride: s.patch,
                ..Default::default()
            },
            vvb.pp("patch_embedding"),
        )?,
        class: vvb.get(s.width, "class_embedding")?,
        position: positions.get((tokens, s.width), "embedding")?,
        position_gate: gate(&positions, "gate")?,
        tile_position: positions.get(
            (ratios, s.max_tiles * tokens * s.width),
            "tile_embedding.weight",
        )?,
        pre_tile: tile("pre_tile_positional_embedding")?,
        post_tile: tile("post_tile_positional_embedding")?,
        norm_pre: candle_nn::layer_norm(s.width, 1e-5, vvb.pp("layernorm_pre"))?,
        norm_post: candle_nn::layer_norm(s.width, 1e-5, vvb.pp("layernorm_post"))?,
        layers: layers("transformer", s.local_layers, false)?,
        global_layers: layers("global_transformer", s.global_layers, true)?,
        intermediate: s.intermediate.clone(),
        width: s.width,
        tokens,
    };
    let vision_out = s.width * (1 + s.intermediate.len());
    let projector = candle_nn::linear(vision_out, s.hidden, projector_vb)?;

    let head_dim = s.hidden / s.text_heads;
    let kv_width = s.kv_heads * head_dim;
    let mut decoder = Vec::with_capacity(s.text_layers);
    for i in 0..s.text_layers {
        let lvb = text_vb.pp(format!("layers.{i}"));
        let mixer = if s.cross_layers.contains(&i) {
            let cvb = lvb.pp("cross_attn");
            Mixer::Cross(CrossAttention {
                projections: Projections::load(&cvb, s.hidden, kv_width)?,
                q_norm: candle_nn::rms_norm(head_dim, s.rms_eps, cvb.pp("q_norm"))?,
                k_norm: candle_nn::rms_norm(head_dim, s.rms_eps, cvb.pp("k_norm"))?,
                attn_gate: gate(&lvb, "cross_attn_attn_gate")?,
                mlp_gate: gate(&lvb, "cross_attn_mlp_gate")?,
            })
        } else {
            Mixer::SelfAttention(Projections::load(&lvb.pp("self_attn"), s.hidden, kv_width)?)
        };
        decoder.push(DecoderLayer {
            mixer,
            mlp: Mlp::load(lvb.pp("mlp"), s.hidden, s.text_ffn)?,
            norm1: candle_nn::rms_norm(s.hidden, s.rms_eps, lvb.pp("input_layernorm"))?,
            norm2: candle_nn::rms_norm(s.hidden, s.rms_eps, lvb.pp("post_attention_layernorm"))?,
        });
    }
    let text = TextModel {
        // Eight rows past the vocabulary: the image token's and spares.
        embed: text_vb.get((s.vocab + 8, s.hidden), "embed_tokens.weight")?,
        layers: decoder,
        norm: candle_nn::rms_norm(s.hidden, s.rms_eps, text_vb.pp("norm"))?,
        lm_head: candle_nn::linear_no_bias(s.hidden, s.vocab, head_vb)?,
        heads: s.text_heads,
        kv_heads: s.kv_heads,
        inv_freq: s.inv_freq.clone(),
    };
    Ok((vision, projector, text))
}

impl Mllama {
    /// The model in `dir`, whose `config.json` (already read, and saying
    /// `model_type: "mllama"`) is `config`.
    pub(crate) fn load(dir: &Path, config: &Value) -> Result<Self, DescribeError> {
        let fail = |reason: String| DescribeError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let shapes = Shapes::read(config).map_err(fail)?;
        let vb = crate::hf::weight_files(dir)
            .and_then(|files| crate::hf::mmap_weights(&files))
            .map_err(fail)?;
        // The hub's checkpoints name `vision_model.*` and
        // `language_model.model.*`; transformers 5 saves them under `model.`.
        let vision_prefix = find_prefix(
            &vb,
            &["vision_model", "model.vision_model"],
            "class_embedding",
        )
        .ok_or_else(|| fail("no vision model (vision_model.*) in the weights".into()))?;
        let projector_prefix = find_prefix(
            &vb,
            &["multi_modal_projector", "model.multi_modal_projector"],
            "weight",
        )
        .ok_or_else(|| fail("no multi_modal_projector in the weights".into()))?;
        let text_prefix = find_prefix(
            &vb,
            &["language_model.model", "model.language_model"],
            "embed_tokens.weight",
        )
        .ok_or_else(|| fail("no language model (language_model.*) in the weights".into()))?;
        let head_prefix = find_prefix(&vb, &["language_model.lm_head", "lm_head"], "weight")
            .ok_or_else(|| fail("no lm_head in the weights".into()))?;
        let (vision, projector, text) = build(
            &shapes,
            vb.pp(&vision_prefix),
            vb.pp(&projector_prefix),
            vb.pp(&text_prefix),
            vb.pp(&head_prefix),
        )
        .map_err(|e| fail(e.to_string()))?;
        let tc = config.get("text_config").unwrap_or(&Value::Null);
        let (image_size, max_tiles) = (shapes.image_size, shapes.max_tiles);

        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let image_token = config
            .get("image_token_index")
            .or_else(|| config.get("image_token_id"))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
            .or_else(|| tokenizer.token_to_id(IMAGE_TOKEN))
            .ok_or_else(|| {
                fail(format!(
                    "no image token (image_token_index or {IMAGE_TOKEN})"
                ))
            })?;
        let mut eos: Vec<u32> = Vec::new();
        let generation = crate::hf::json_file(dir, "generation_config.json")
            .map_err(fail)?
            .unwrap_or(Value::Null);
        for source in [tc.get("eos_token_id"), generation.get("eos_token_id")]
            .into_iter()
            .flatten()
        {
            match source {
                Value::Array(ids) => {
                    eos.extend(ids.iter().filter_map(Value::as_u64).map(|v| v as u32))
                }
                other => eos.extend(other.as_u64().map(|v| v as u32)),
            }
        }
        for name in ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"] {
            eos.extend(tokenizer.token_to_id(name));
        }
        eos.sort_unstable();
        eos.dedup();

        let processor = crate::hf::json_file(dir, "preprocessor_config.json")
            .map_err(fail)?
            .unwrap_or(Value::Null);
        let tile_size = processor
            .pointer("/size/height")
            .and_then(Value::as_u64)
            .unwrap_or(image_size as u64) as usize;
        if tile_size != image_size {
            return Err(fail(format!(
                "the processor makes {tile_size}-pixel tiles, the vision model takes {image_size}"
            )));
        }
        let processor_tiles = processor
            .get("max_image_tiles")
            .and_then(Value::as_u64)
            .map_or(max_tiles, |v| v as usize);
        if processor_tiles != max_tiles {
            return Err(fail(format!(
                "the processor cuts up to {processor_tiles} tiles, the vision model takes {max_tiles}"
            )));
        }
        let tiling = Tiling {
            tile: tile_size as u32,
            max_tiles,
            mean: crate::hf::channel_values(
                &processor,
                "image_mean",
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
            ),
            std: crate::hf::channel_values(
                &processor,
                "image_std",
                [0.268_629_54, 0.261_302_6, 0.275_777_1],
            ),
        };
        Ok(Self {
            tokenizer,
            vision,
            projector,
            text,
            tiling,
            image_token,
            eos,
            max_positions: shapes.max_positions,
        })
    }

    /// The vision model's keys and values for each cross-attention layer,
    /// and the mask of a text row that sees the image (its unused tiles
    /// masked out).
    fn cross_state(&self, image: &[u8]) -> Result<CrossState, DescribeError> {
        let (pixels, aspect_id, valid) = self.tiling.pixels(image)?;
        let states = self
            .vision
            .forward(&pixels, aspect_id, valid)
            .and_then(|s| self.projector.forward(&s))
            .map_err(compute)?;
        let tokens = self.vision.tokens;
        let seeing: Vec<f32> = (0..self.tiling.max_tiles * tokens)
            .map(|i| if i / tokens < valid { 0.0 } else { f32::MIN })
            .collect();
        Ok(CrossState {
            keys_values: self.text.cross_keys_values(&states).map_err(compute)?,
            seeing: Tensor::from_vec(seeing, states.dim(0).map_err(compute)?, &Device::Cpu)
                .map_err(compute)?,
        })
    }

    /// The prompt the processor builds from a raw one: image tokens first
    /// (with an image, one is added when none is there), then the
    /// begin-of-text token unless the prompt has it
    /// (`build_string_from_input`).
    fn raw_prompt(prompt: &str, image: bool) -> String {
        let prompt = if image && !prompt.contains(IMAGE_TOKEN) {
            format!("{IMAGE_TOKEN}{prompt}")
        } else {
            prompt.to_string()
        };
        if prompt.contains(BOS_TOKEN) {
            return prompt;
        }
        let mut rest = prompt.as_str();
        let mut images = 0;
        while let Some(r) = rest.strip_prefix(IMAGE_TOKEN) {
            rest = r;
            images += 1;
        }
        format!("{}{BOS_TOKEN}{rest}", IMAGE_TOKEN.repeat(images))
    }

    /// [`crate::describe::ImageDescriber::answer`] for Llama 3.2 Vision:
    /// without an image the cross-attention layers are skipped, as
    /// transformers does.
    pub fn answer(
        &self,
        image: Option<&[u8]>,
        prompt: &str,
        raw: bool,
        params: &GenerationParams,
        sink: Sink,
    ) -> Result<Description, DescribeError> {
        let text = if raw {
            Self::raw_prompt(prompt, image.is_some())
        } else {
            chat_prompt(&[("user", prompt, image.is_some())])
        };
        let ids: Vec<u32> = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| DescribeError::BadInput(format!("`prompt` cannot be tokenized: {e}")))?
            .get_ids()
            .to_vec();
        let at = ids.iter().position(|&t| t == self.image_token);
        match (image.is_some(), at) {
            (true, None) => {
                return Err(DescribeError::BadInput(
                    "the prompt lost its image token when tokenized".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(DescribeError::BadInput(format!(
                    "the prompt holds {IMAGE_TOKEN} but no image came with it"
                )));
            }
            _ => {}
        }
        if ids.iter().filter(|&&t| t == self.image_token).count() > 1 {
            return Err(DescribeError::BadInput(format!(
                "the prompt holds more than one {IMAGE_TOKEN}; one image is given"
            )));
        }
        let prompt_tokens = ids.len();
        if prompt_tokens >= self.max_positions {
            return Err(DescribeError::BadInput(format!(
                "the prompt takes {prompt_tokens} tokens; the model's context is {}",
                self.max_positions
            )));
        }
        let cross = match image {
            Some(image) => Some(self.cross_state(image)?),
            None => None,
        };
        let mut cache = Cache {
            self_kv: vec![None; self.text.layers.len()],
            cross,
            position: 0,
        };
        let at = at.unwrap_or(ids.len());
        let sees: Vec<bool> = (0..ids.len()).map(|i| i >= at).collect();
        let first = self
            .text
            .forward(&ids, &sees, &mut cache)
            .map_err(compute)?;
        let decoder = Decoder {
            tokenizer: &self.tokenizer,
            eos: &self.eos,
        };
        let prompt = Prompt {
            ids: &ids,
            tokens: prompt_tokens,
            room: self.max_positions - prompt_tokens,
        };
        generate(&decoder, prompt, first, params, sink, |token| {
            self.text.forward(&[token], &[true], &mut cache)
        })
    }
}

/// A chat rendered as Llama 3.2 Vision's chat template does:
/// begin-of-text, each turn under its role header and closed by
/// `<|eot_id|>`, `<|image|>` at the start of the turn that carried the
/// image, and the assistant header to answer. Without an image the
/// template opens with its system turn (knowledge cutoff, the date, the
/// system text); with one it refuses a system turn, which Hearth keeps as a
/// plain turn instead. `turns` are (role, text, carried the image).
pub fn chat_prompt(turns: &[(&str, &str, bool)]) -> String {
    let mut prompt = String::from(BOS_TOKEN);
    let mut turns = turns;
    if !turns.iter().any(|(_, _, image)| *image) {
        let system = match turns.first() {
            Some(("system", text, _)) => {
                turns = &turns[1..];
                text.trim()
            }
            _ => "",
        };
        // The template's date when the renderer has no clock: answers stay
        // reproducible.
        prompt.push_str(
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\
             Today Date: 26 Jul 2024\n\n",
        );
        prompt.push_str(system);
        prompt.push_str("<|eot_id|>");
    }
    for (role, text, image) in turns {
        prompt.push_str("<|start_header_id|>");
        prompt.push_str(role);
        prompt.push_str("<|end_header_id|>\n\n");
        if *image {
            prompt.push_str(IMAGE_TOKEN);
        }
        prompt.push_str(text);
        prompt.push_str("<|eot_id|>");
    }
    prompt.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    prompt
}

/// Opens a tiny random model's gates (the loader's default leaves them
/// zero, shut) to tanh 0.9, so that its image matters, and sets the other
/// tensors the loader leaves at zero (embedding tables), biases aside, to
/// random normal values.
fn open_gates(varmap: &candle_nn::VarMap) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for (name, var) in data.iter() {
        let t = var.as_tensor();
        if name.ends_with("gate") {
            var.set(&t.ones_like()?.affine(1.5, 0.0)?)?;
        } else if !name.ends_with("bias") && t.abs()?.sum_all()?.to_scalar::<f32>()? == 0.0 {
            var.set(&t.randn_like(0.0, 1.0)?)?;
        }
    }
    Ok(())
}

/// Writes a tiny Llama 3.2 Vision with random weights in the hub's layout
/// (`config.json` with `vision_config`/`text_config` and Llama 3's rope
/// scaling, `model.safetensors` with `vision_model.*`,
/// `multi_modal_projector.*`, `language_model.*`, a word-level
/// `tokenizer.json` with Llama 3's header tokens and `<|image|>`, an
/// `MllamaImageProcessor` `preprocessor_config.json`) to `dir`: 28-pixel
/// tiles of 14-pixel patches, up to 4 tiles, two cross-attention layers.
/// For tests: no genuine Llama 3.2 Vision weights ship in a registry
/// package.
pub fn write_tiny_model(dir: &Path) -> Result<(), DescribeError> {
    let fail = |e: &dyn std::fmt::Display| DescribeError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let specials = [
        "<unk>",
        BOS_TOKEN,
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ];
    let vocab = specials.len() + crate::describe::TINY_WORDS.len();
    let config = serde_json::json!({
        "model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": vocab,
        "vision_config": {"model_type": "mllama_vision_model", "hidden_size": 32,
            "attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 4,
            "num_global_layers": 2, "image_size": 28, "patch_size": 14, "max_num_tiles": 4,
            "intermediate_layers_indices": [1, 3], "vision_output_dim": 96, "norm_eps": 1e-5,
            "hidden_act": "gelu",
            "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]},
        "text_config": {"model_type": "mllama_text_model", "hidden_size": 32,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
            "num_hidden_layers": 4, "cross_attention_layers": [1, 3], "vocab_size": vocab,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            "bos_token_id": 1, "eos_token_id": [2, 5], "hidden_act": "silu"},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    let shapes = Shapes::read(&config).map_err(|e| fail(&e))?;
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    build(
        &shapes,
        vb.pp("vision_model"),
        vb.pp("multi_modal_projector"),
        vb.pp("language_model.model"),
        vb.pp("language_model.lm_head"),
    )
    .map_err(|e| fail(&e))?;
    open_gates(&varmap).map_err(|e| fail(&e))?;
    crate::describe::save_tiny(dir, &varmap, &specials, IMAGE_TOKEN).map_err(|e| fail(&e))?;
    let processor = serde_json::json!({
        "image_processor_type": "MllamaImageProcessor", "do_convert_rgb": true,
        "do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "max_image_tiles": 4,
        "resample": 2, "rescale_factor": 0.00392156862745098,
        "size": {"height": 28, "width": 28},
    });
    std::fs::write(dir.join("preprocessor_config.json"), processor.to_string())
        .map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{ImageDescriber, TINY_WORDS, greedy};
    use crate::vision::test_png as png;

    #[test]
    fn a_tiny_llama_vision_answers_about_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = ImageDescriber::load(dir.path()).expect("load");
        assert!(matches!(model, ImageDescriber::Mllama(_)));
        let image = png(40, 30, 3);
        let out = model
            .describe(Some(&image), "describe the image .", false, &greedy(12))
            .expect("describe");
        // <|begin_of_text|> <|start_header_id|> user <|end_header_id|>
        // <|image|> describe the image . <|eot_id|> <|start_header_id|>
        // assistant <|end_header_id|>: the image is one token, not patches.
        assert_eq!(out.prompt_tokens, 13);
        assert_eq!(out.completion_tokens, 12, "{}", out.text);
        assert!(
            out.text.split_whitespace().all(|w| TINY_WORDS.contains(&w)),
            "{}",
            out.text
        );
        let again = model
            .describe(Some(&image), "describe the image .", false, &greedy(12))
            .expect("again");
        assert_eq!(again, out);

        // Another picture, cut into another grid of tiles, changes what
        // seeded sampling draws: the image reaches the words.
        let seeded = GenerationParams {
            max_tokens: 16,
            temperature: 1.0,
            seed: Some(7),
            ..GenerationParams::default()
        };
        let a = model
            .describe(Some(&image), "what is this ?", false, &seeded)
            .expect("a");
        let b = model
            .describe(Some(&png(30, 90, 11)), "what is this ?", false, &seeded)
            .expect("b");
        assert_ne!(a.text, b.text);

        let raw = model
            .describe(Some(&image), "a photo of", true, &greedy(3))
            .expect("raw");
        // <|image|> <|begin_of_text|> a photo of.
        assert_eq!(raw.prompt_tokens, 5);
        assert!(raw.completion_tokens <= 3);
        let err = model
            .describe(Some(&image), "<|image|> a <|image|> b", true, &greedy(3))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("more than one"));
        let err = model
            .describe(Some(b"not an image"), "describe", false, &greedy(3))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`image`"));
    }

    #[test]
    fn answers_stream_in_pieces_and_stop_when_the_reader_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = ImageDescriber::load(dir.path()).expect("load");
        let image = png(40, 30, 3);
        let mut pieces: Vec<String> = Vec::new();
        let whole = model
            .answer(
                Some(&image),
                "what is this ?",
                false,
                &greedy(10),
                &mut |p| {
                    pieces.push(p.to_string());
                    true
                },
            )
            .expect("answer");
        // The empty piece says the prompt is read; the rest join to the
        // answer, which ran its full length.
        assert_eq!(pieces.first().map(String::as_str), Some(""));
        assert_eq!(pieces.concat(), whole.text);
        assert!(pieces.len() > 3, "{pieces:?}");
        assert!(whole.by_length);
        let mut heard = 0;
        let cut = model
            .answer(
                Some(&image),
                "what is this ?",
                false,
                &greedy(10),
                &mut |_| {
                    heard += 1;
                    heard < 3
                },
            )
            .expect("cut");
        assert_eq!(cut.completion_tokens, 2, "{cut:?}");
        assert!(!cut.by_length);
    }

    #[test]
    fn chats_render_as_the_llama_vision_template_does() {
        assert_eq!(
            chat_prompt(&[("user", "What is this?", true)]),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is this?\
             <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            Mllama::raw_prompt("a photo of", true),
            "<|image|><|begin_of_text|>a photo of"
        );
        assert_eq!(
            Mllama::raw_prompt("<|image|><|image|>two", true),
            "<|image|><|image|><|begin_of_text|>two"
        );
        assert_eq!(
            Mllama::raw_prompt("<|begin_of_text|>x <|image|>", true),
            "<|begin_of_text|>x <|image|>"
        );
    }

    #[test]
    fn images_are_tiled_as_the_processor_tiles_them() {
        let tiling = Tiling {
            tile: 560,
            max_tiles: 4,
            mean: [127.5; 3],
            std: [127.5; 3],
        };
        // (height, width) -> canvas and fitted size, from transformers'
        // get_optimal_tiled_canvas and get_image_size_fit_to_canvas.
        for ((h, w), canvas, fitted) in [
            ((300, 800), (1, 2), (300, 800)),
            ((1000, 1000), (2, 2), (1000, 1000)),
            ((4000, 3000), (2, 2), (1120, 840)),
            ((100, 2000), (1, 4), (100, 2000)),
            ((560, 560), (1, 1), (560, 560)),
            ((2000, 300), (4, 1), (2000, 300)),
        ] {
            let got = tiling.canvas(h, w);
            assert_eq!(got, canvas, "{h}x{w}");
            assert_eq!(tiling.fit(h, w, got), fitted, "{h}x{w}");
        }
        assert_eq!(
            grids(4),
            vec![
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (2, 1),
                (2, 2),
                (3, 1),
                (4, 1)
            ]
        );
    }

    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        // transformers' _compute_llama3_parameters for head_dim 128, theta
        // 500000, factor 8, low 1, high 4, original context 8192.
        let f = inverse_frequencies(
            128,
            500_000.0,
            Some(&serde_json::json!({"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192})),
        );
        assert_eq!(f.len(), 64);
        for (i, want) in [
            (0, 1.0f32),
            (20, 0.016_560_44),
            (30, 0.001_371_893_7),
            (40, 3.428_102_4e-5),
            (45, 1.229_763_9e-5),
            (50, 4.411_534_5e-6),
            (63, 3.068_926e-7),
        ] {
            assert!(
                (f[i] - want).abs() <= want * 1e-5,
                "{i}: {} vs {want}",
                f[i]
            );
        }
    }
}
