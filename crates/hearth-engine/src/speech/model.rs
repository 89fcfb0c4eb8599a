//! The Whisper network under Hugging Face tensor names, on the encoder's
//! plain f32 buffers and weight panels (`crate::encoder`), the two
//! input convolutions included (as im2col products).
//!
//! A 30-second window is 1500 audio frames: its attention runs as `sgemm`
//! products over blocks of queries, and Q, K and V come from one product.
//! Decoding feeds one token at a time, where candle spent more time
//! dispatching its ~25 small tensor ops per layer than computing them; here
//! a step is a handful of panel products and loops. Self-attention keys and
//! values are cached per decoding stream, the audio's cross-attention keys
//! and values are computed once per window, and the cross-attention scores
//! that word timestamps are aligned from can be returned. Logits are
//! computed only for the positions a caller reads: the output projection
//! reads the whole 52k-row embedding table.

use std::sync::Arc;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::encoder::{
    Activation, EncoderError, Heads, Linear, Norm, Precision, attention, for_rows, layer_norm,
    norm, softmax, values, weight_and_bias,
};
use crate::matvec::{Table, dot};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Load(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Encoder(#[from] EncoderError),
    #[error("the decoder holds {0} tokens at most")]
    TooManyTokens(usize),
    #[error("token id {0} is outside the vocabulary")]
    Token(u32),
}

pub type Result<T> = std::result::Result<T, ModelError>;

#[derive(Debug, Clone)]
pub struct Dims {
    pub n_mels: usize,
    pub d_model: usize,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub vocab: usize,
    pub audio_ctx: usize,
    pub text_ctx: usize,
}

const EPS: f32 = 1e-5;

/// A layer's attention weights: Q, K and V stacked into one product (K has
/// no bias in Whisper: zeros), and the output projection.
struct Attention {
    qkv: Linear,
    out: Linear,
}

/// Q, K and V weights of `vb` stacked `[3 d, d]`, or only K and V (`[2 d,
/// d]`, what cross-attention applies to the audio) when `query` is false.
fn projections(vb: &VarBuilder, d: usize, query: bool) -> Result<Linear> {
    let mut weight = Vec::new();
    let mut bias = Vec::new();
    if query {
        let (w, b) = weight_and_bias(&vb.pp("q_proj"), d, d)?;
        weight.extend(w);
        bias.extend(b);
    }
    weight.extend(values(&vb.pp("k_proj"), &[d, d], "weight")?);
    bias.extend(std::iter::repeat_n(0.0, d));
    let (w, b) = weight_and_bias(&vb.pp("v_proj"), d, d)?;
    weight.extend(w);
    bias.extend(b);
    let outputs = bias.len();
    Ok(Linear::new(&weight, bias, d, outputs, Precision::F32))
}

fn linear(vb: &VarBuilder, inputs: usize, outputs: usize) -> Result<Linear> {
    Ok(crate::encoder::linear(vb, inputs, outputs, Precision::F32)?)
}

impl Attention {
    fn load(vb: &VarBuilder, d: usize) -> Result<Self> {
        Ok(Self {
            qkv: projections(vb, d, true)?,
            out: linear(&vb.pp("out_proj"), d, d)?,
        })
    }
}

/// Cross-attention: queries from the text, keys and values from the audio.
struct CrossAttention {
    query: Linear,
    keys_values: Linear,
    out: Linear,
    norm: Norm,
}

struct Block {
    attn_norm: Norm,
    attn: Attention,
    cross: Option<CrossAttention>,
    mlp_norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn load(vb: &VarBuilder, d: usize, cross: bool) -> Result<Self> {
        let cross = if cross {
            let c = vb.pp("encoder_attn");
            Some(CrossAttention {
                query: linear(&c.pp("q_proj"), d, d)?,
                keys_values: projections(&c, d, false)?,
                out: linear(&c.pp("out_proj"), d, d)?,
                norm: norm(&vb.pp("encoder_attn_layer_norm"), d)?,
            })
        } else {
            None
        };
        Ok(Self {
            attn_norm: norm(&vb.pp("self_attn_layer_norm"), d)?,
            attn: Attention::load(&vb.pp("self_attn"), d)?,
            cross,
            mlp_norm: norm(&vb.pp("final_layer_norm"), d)?,
            fc1: linear(&vb.pp("fc1"), d, 4 * d)?,
            fc2: linear(&vb.pp("fc2"), 4 * d, d)?,
        })
    }

    /// `x += fc2(gelu(fc1(norm(x))))`, rows of `d`.
    fn mlp(&self, x: &mut Vec<f32>, rows: usize, d: usize) {
        let mut h = normed(x, &self.mlp_norm, d);
        let mut up = vec![0f32; rows * 4 * d];
        self.fc1
            .apply_then(&h, rows, &mut up, None, Some(Activation::Gelu));
        self.fc2.apply(&up, rows, &mut h, Some(x));
        std::mem::swap(x, &mut h);
    }
}

/// A width-3 convolution over time with padding 1, then GELU, as one
/// product: each output frame's three input frames side by side (im2col)
/// against the kernel flattened to `[outputs, inputs * 3]`.
struct Conv {
    kernel: Linear,
    inputs: usize,
    stride: usize,
}

impl Conv {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize, stride: usize) -> Result<Self> {
        let weight = values(vb, &[outputs, inputs, 3], "weight")?;
        let bias = values(vb, &[outputs], "bias")?;
        Ok(Self {
            kernel: Linear::new(&weight, bias, inputs * 3, outputs, Precision::F32),
            inputs,
            stride,
        })
    }

    /// Time-major `[time, inputs]` -> `[frames, outputs]` and `frames`.
    fn apply(&self, x: &[f32], time: usize) -> (Vec<f32>, usize) {
        let c = self.inputs;
        let frames = (time + 2 - 3) / self.stride + 1;
        let mut columns = vec![0f32; frames * 3 * c];
        columns
            .par_chunks_mut(3 * c)
            .enumerate()
            .for_each(|(t, row)| {
                for k in 0..3 {
                    // Input frame t * stride + k - 1; the padding frames stay zero.
                    let Some(at) = (t * self.stride + k).checked_sub(1).filter(|&a| a < time)
                    else {
                        continue;
                    };
                    for (ch, &v) in x[at * c..(at + 1) * c].iter().enumerate() {
                        row[ch * 3 + k] = v;
                    }
                }
            });
        let mut out = vec![0f32; frames * self.kernel.outputs()];
        self.kernel
            .apply_then(&columns, frames, &mut out, None, Some(Activation::Gelu));
        (out, frames)
    }
}

/// A copy of `x` with each `d`-wide row layer-normed.
fn normed(x: &[f32], norm: &Norm, d: usize) -> Vec<f32> {
    let mut h = x.to_vec();
    for_rows(&mut h, d, |row| layer_norm(row, norm, EPS));
    h
}

pub struct Whisper {
    pub dims: Dims,
    conv1: Conv,
    conv2: Conv,
    audio_positions: Vec<f32>,
    encoder: Vec<Block>,
    encoder_norm: Norm,
    /// The token embeddings `[vocab, d]`, also the output projection.
    tokens: Table,
    text_positions: Vec<f32>,
    decoder: Vec<Block>,
    decoder_norm: Norm,
}

/// A window's encoded audio: `[frames, d]`.
pub struct Audio {
    states: Vec<f32>,
    frames: usize,
}

/// The decoder's memory for one window: the cross-attention keys and values
/// of the audio (computed once, shared) and the self-attention cache of the
/// tokens fed so far. Cloning gives an independent stream from the same
/// point.
#[derive(Clone)]
pub struct DecoderState {
    /// Per layer, the audio's keys and values.
    cross: Arc<Vec<AudioKeys>>,
    frames: usize,
    /// Per layer, the fed tokens' `[fed, 2 d]` rows of keys then values.
    past: Vec<Vec<f32>>,
    pub fed: usize,
}

/// What one `decode` call returns.
pub struct Step {
    /// Logits of the asked positions, `[asked, vocab]`.
    logits: Vec<f32>,
    vocab: usize,
    /// When asked, each layer's pre-softmax cross-attention scores
    /// `[heads, fed tokens, frames]`.
    scores: Vec<Vec<f32>>,
    frames: usize,
    fed: usize,
}

impl Step {
    /// The logits of the `i`-th asked position.
    pub fn logits(&self, i: usize) -> &[f32] {
        &self.logits[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Head `head` of layer `layer`'s scores, each token's row cut to the
    /// first `frames` audio frames.
    pub fn head_scores(&self, layer: usize, head: usize, frames: usize) -> Option<Vec<Vec<f32>>> {
        let scores = self.scores.get(layer)?;
        let per_head = self.fed * self.frames;
        let rows = scores.get(head * per_head..(head + 1) * per_head)?;
        Some(
            rows.chunks_exact(self.frames)
                .map(|r| r[..frames.min(self.frames)].to_vec())
                .collect(),
        )
    }
}

impl Whisper {
    pub fn load(vb: VarBuilder, dims: Dims) -> Result<Self> {
        let d = dims.d_model;
        let enc = vb.pp("model.encoder");
        let dec = vb.pp("model.decoder");
        let blocks = |vb: &VarBuilder, n: usize, cross: bool| -> Result<Vec<Block>> {
            (0..n)
                .map(|i| Block::load(&vb.pp(format!("layers.{i}")), d, cross))
                .collect()
        };
        Ok(Self {
            conv1: Conv::load(&enc.pp("conv1"), dims.n_mels, d, 1)?,
            conv2: Conv::load(&enc.pp("conv2"), d, d, 2)?,
            audio_positions: values(&enc, &[dims.audio_ctx, d], "embed_positions.weight")?,
            encoder: blocks(&enc, dims.encoder_layers, false)?,
            encoder_norm: norm(&enc.pp("layer_norm"), d)?,
            tokens: Table::new(values(&dec, &[dims.vocab, d], "embed_tokens.weight")?),
            text_positions: values(&dec, &[dims.text_ctx, d], "embed_positions.weight")?,
            decoder: blocks(&dec, dims.decoder_layers, true)?,
            decoder_norm: norm(&dec.pp("layer_norm"), d)?,
            dims,
        })
    }

    fn heads(&self) -> Heads {
        let size = self.dims.d_model / self.dims.heads;
        Heads {
            query: self.dims.heads,
            key_value: self.dims.heads,
            size,
            scale: (size as f32).powf(-0.5),
            window: None,
        }
    }

    /// `[1, n_mels, 2 * audio_ctx]` log-mel frames -> the window's audio.
    pub fn encode(&self, mel: &Tensor) -> Result<Audio> {
        let d = self.dims.d_model;
        // [1, n_mels, time] -> time-major [time, n_mels]
        let mel = mel.squeeze(0)?.t()?.contiguous()?;
        let time = mel.dim(0)?;
        let mel: Vec<f32> = mel.flatten_all()?.to_vec1()?;
        let (x, time) = self.conv1.apply(&mel, time);
        let (mut x, frames) = self.conv2.apply(&x, time);
        let frames = frames.min(self.dims.audio_ctx);
        x.truncate(frames * d);
        x.iter_mut()
            .zip(&self.audio_positions)
            .for_each(|(x, p)| *x += p);
        let heads = self.heads();
        let mut qkv = vec![0f32; frames * 3 * d];
        let mut context = vec![0f32; frames * d];
        for block in &self.encoder {
            let h = normed(&x, &block.attn_norm, d);
            block.attn.qkv.apply(&h, frames, &mut qkv, None);
            attention(&heads, &qkv, &[frames], &mut context);
            let mut next = h;
            block.attn.out.apply(&context, frames, &mut next, Some(&x));
            x = next;
            block.mlp(&mut x, frames, d);
        }
        for_rows(&mut x, d, |row| layer_norm(row, &self.encoder_norm, EPS));
        Ok(Audio { states: x, frames })
    }

    /// A decoding stream over `audio`, with its cross-attention keys and
    /// values computed.
    pub fn start(&self, audio: &Audio) -> Result<DecoderState> {
        let d = self.dims.d_model;
        let cross = self
            .decoder
            .iter()
            .map(|block| {
                let cross = block.cross.as_ref().ok_or_else(|| {
                    ModelError::Load("decoder block without cross-attention".into())
                })?;
                let mut kv = vec![0f32; audio.frames * 2 * d];
                cross
                    .keys_values
                    .apply(&audio.states, audio.frames, &mut kv, None);
                Ok(AudioKeys::new(&kv, audio.frames, self.dims.heads, d))
            })
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            cross: Arc::new(cross),
            frames: audio.frames,
            past: vec![Vec::new(); self.decoder.len()],
            fed: 0,
        })
    }

    /// Feeds `tokens` after those already in `state`; returns the logits of
    /// the fed positions listed in `logits_of` (indices into `tokens`) and,
    /// when asked, each layer's cross-attention scores.
    pub fn decode(
        &self,
        tokens: &[u32],
        state: &mut DecoderState,
        logits_of: &[usize],
        want_scores: bool,
    ) -> Result<Step> {
        let n = tokens.len();
        let d = self.dims.d_model;
        if state.fed + n > self.dims.text_ctx {
            return Err(ModelError::TooManyTokens(self.dims.text_ctx));
        }
        let mut x = vec![0f32; n * d];
        for (i, (&t, row)) in tokens.iter().zip(x.chunks_exact_mut(d)).enumerate() {
            self.tokens
                .row(t as usize, d, row)
                .ok_or(ModelError::Token(t))?;
            let place = &self.text_positions[(state.fed + i) * d..][..d];
            row.iter_mut().zip(place).for_each(|(x, p)| *x += p);
        }
        let heads = self.heads();
        let mut scores = Vec::new();
        let mut qkv = vec![0f32; n * 3 * d];
        for (layer, block) in self.decoder.iter().enumerate() {
            let h = normed(&x, &block.attn_norm, d);
            block.attn.qkv.apply(&h, n, &mut qkv, None);
            let past = &mut state.past[layer];
            for row in qkv.chunks_exact(3 * d) {
                past.extend_from_slice(&row[d..]);
            }
            let queries: Vec<f32> = qkv
                .chunks_exact(3 * d)
                .flat_map(|r| &r[..d])
                .copied()
                .collect();
            let context = attend(&heads, &queries, past, state.fed);
            let mut next = h;
            block.attn.out.apply(&context, n, &mut next, Some(&x));
            x = next;
            if let Some(cross) = &block.cross {
                let h = normed(&x, &cross.norm, d);
                let mut queries = vec![0f32; n * d];
                cross.query.apply(&h, n, &mut queries, None);
                let (context, s) = state.cross[layer].attend(&heads, &queries, want_scores);
                scores.extend(s);
                let mut next = h;
                cross.out.apply(&context, n, &mut next, Some(&x));
                x = next;
            }
            block.mlp(&mut x, n, d);
        }
        state.fed += n;
        let mut hidden = Vec::with_capacity(logits_of.len() * d);
        for &i in logits_of {
            let mut row = x
                .get(i * d..(i + 1) * d)
                .ok_or_else(|| ModelError::Load(format!("no fed position {i}")))?
                .to_vec();
            layer_norm(&mut row, &self.decoder_norm, EPS);
            hidden.extend(row);
        }
        let logits = self.tokens.rows_dot(&hidden, d);
        Ok(Step {
            logits,
            vocab: self.dims.vocab,
            scores,
            frames: state.frames,
            fed: n,
        })
    }
}

/// Attention of `queries` (`[n, d]`) over the fed tokens' `keys_values`
/// (`[len, 2 d]`: each row a key then a value), heads in parallel; query `i`
/// sees keys `0..=past + i`. Returns the context `[n, d]`.
fn attend(heads: &Heads, queries: &[f32], keys_values: &[f32], past: usize) -> Vec<f32> {
    let size = heads.size;
    let d = heads.query * size;
    let n = queries.len() / d;
    let len = keys_values.len() / (2 * d);
    let per_head: Vec<Vec<f32>> = (0..heads.query)
        .into_par_iter()
        .map(|hd| {
            let mut context = vec![0f32; n * size];
            let mut weights = vec![0f32; len];
            for (i, out) in context.chunks_exact_mut(size).enumerate() {
                let q = &queries[i * d + hd * size..][..size];
                let seen = (past + i + 1).min(len);
                let weights = &mut weights[..seen];
                for (w, row) in weights.iter_mut().zip(keys_values.chunks_exact(2 * d)) {
                    *w = dot(q, &row[hd * size..][..size]) * heads.scale;
                }
                softmax(weights);
                for (&p, row) in weights.iter().zip(keys_values.chunks_exact(2 * d)) {
                    let v = &row[d + hd * size..][..size];
                    out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                }
            }
            context
        })
        .collect();
    interleave_heads(&per_head, n, size)
}

/// A window's cross-attention keys and values for one layer, laid out so a
/// decoding step reads each head's part front to back: keys transposed per
/// head (`[heads][size][frames]`, each query's scores accumulate across
/// frames in vector lanes) and values per head (`[heads][frames][size]`).
struct AudioKeys {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    frames: usize,
}

impl AudioKeys {
    /// From `[frames, 2 d]` rows of keys then values.
    fn new(rows: &[f32], frames: usize, heads: usize, d: usize) -> Self {
        let size = d / heads;
        let mut keys_t = vec![0f32; frames * d];
        let mut values = vec![0f32; frames * d];
        for (j, row) in rows.chunks_exact(2 * d).enumerate() {
            for hd in 0..heads {
                for dd in 0..size {
                    keys_t[(hd * size + dd) * frames + j] = row[hd * size + dd];
                }
                values[(hd * frames + j) * size..][..size]
                    .copy_from_slice(&row[d + hd * size..][..size]);
            }
        }
        Self {
            keys_t,
            values,
            frames,
        }
    }

    /// Attention of `queries` (`[n, d]`) over the audio, heads in parallel:
    /// the context `[n, d]` and, when asked, the pre-softmax scores
    /// `[heads, n, frames]`.
    fn attend(
        &self,
        heads: &Heads,
        queries: &[f32],
        want_scores: bool,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let size = heads.size;
        let d = heads.query * size;
        let frames = self.frames;
        let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..heads.query)
            .into_par_iter()
            .map(|hd| {
                let keys_t = &self.keys_t[hd * size * frames..][..size * frames];
                let values = &self.values[hd * frames * size..][..frames * size];
                let mut context = vec![0f32; queries.len() / d * size];
                let mut raw = Vec::new();
                let mut weights = vec![0f32; frames];
                for (i, out) in context.chunks_exact_mut(size).enumerate() {
                    weights.fill(0.0);
                    let q = &queries[i * d + hd * size..][..size];
                    for (&q, column) in q.iter().zip(keys_t.chunks_exact(frames)) {
                        let q = q * heads.scale;
                        weights
                            .iter_mut()
                            .zip(column)
                            .for_each(|(w, k)| *w += q * k);
                    }
                    if want_scores {
                        raw.extend_from_slice(&weights);
                    }
                    softmax(&mut weights);
                    for (&p, v) in weights.iter().zip(values.chunks_exact(size)) {
                        out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                    }
                }
                (context, raw)
            })
            .collect();
        let (contexts, scores): (Vec<Vec<f32>>, Vec<Vec<f32>>) = per_head.into_iter().unzip();
        let context = interleave_heads(&contexts, queries.len() / d, size);
        (context, want_scores.then(|| scores.concat()))
    }
}

/// Each head's `[n, size]` context side by side as `[n, heads * size]`.
fn interleave_heads(per_head: &[Vec<f32>], n: usize, size: usize) -> Vec<f32> {
    let d = per_head.len() * size;
    let mut context = vec![0f32; n * d];
    for (hd, head) in per_head.iter().enumerate() {
        for (i, row) in head.chunks_exact(size).enumerate() {
            context[i * d + hd * size..][..size].copy_from_slice(row);
        }
    }
    context
}
