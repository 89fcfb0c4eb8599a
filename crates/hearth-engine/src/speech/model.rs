//! The Whisper network on candle-nn, under Hugging Face tensor names.
//!
//! candle-transformers' whisper model is the same arithmetic, but its
//! decoder re-runs self-attention over the whole prefix at every step and
//! keeps no attention weights; this one caches self-attention keys and
//! values per decoding stream and can return the cross-attention scores
//! that word timestamps are aligned from.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};

pub type Result<T> = candle_core::Result<T>;

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

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear_no_bias(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `[b, t, d]` -> `[b, heads, t, d / heads]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k.forward(x)?)?,
            self.split_heads(&self.v.forward(x)?)?,
        ))
    }

    /// Attention of `x` over keys and values; also the pre-softmax scores
    /// `[b, heads, t_q, t_k]` when asked.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        want_scores: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, d) = x.dims3()?;
        let scale = ((d / self.heads) as f64).powf(-0.5);
        let q = (self.split_heads(&self.q.forward(x)?)? * scale)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = weights.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok((self.out.forward(&mixed)?, want_scores.then_some(scores)))
    }
}

struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(d, 1e-5, vb)
}

impl Block {
    fn load(d: usize, heads: usize, cross: bool, vb: VarBuilder) -> Result<Self> {
        let cross = if cross {
            Some((
                Attention::load(d, heads, vb.pp("encoder_attn"))?,
                layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            attn: Attention::load(d, heads, vb.pp("self_attn"))?,
            attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            cross,
            fc1: candle_nn::linear(d, 4 * d, vb.pp("fc1"))?,
            fc2: candle_nn::linear(4 * d, d, vb.pp("fc2"))?,
            mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(&self.mlp_ln.forward(x)?)?.gelu_erf()?;
        x + self.fc2.forward(&h)?
    }
}

pub struct Whisper {
    pub dims: Dims,
    conv1: Conv1d,
    conv2: Conv1d,
    audio_positions: Tensor,
    encoder: Vec<Block>,
    encoder_ln: LayerNorm,
    tokens: Embedding,
    text_positions: Tensor,
    decoder: Vec<Block>,
    decoder_ln: LayerNorm,
}

/// The decoder's memory for one window: the cross-attention keys and values
/// of the audio (computed once) and the self-attention cache of the tokens
/// fed so far. Cloning is cheap (tensors are shared) and gives an
/// independent stream from the same point.
#[derive(Clone)]
pub struct DecoderState {
    cross: Vec<(Tensor, Tensor)>,
    past: Vec<Option<(Tensor, Tensor)>>,
    pub fed: usize,
}

impl Whisper {
    pub fn load(vb: VarBuilder, dims: Dims) -> Result<Self> {
        let d = dims.d_model;
        let enc = vb.pp("model.encoder");
        let dec = vb.pp("model.decoder");
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let tokens = candle_nn::embedding(dims.vocab, d, dec.pp("embed_tokens"))?;
        Ok(Self {
            conv1: candle_nn::conv1d(dims.n_mels, d, 3, conv(1), enc.pp("conv1"))?,
            conv2: candle_nn::conv1d(d, d, 3, conv(2), enc.pp("conv2"))?,
            audio_positions: enc.get((dims.audio_ctx, d), "embed_positions.weight")?,
            encoder: (0..dims.encoder_layers)
                .map(|i| Block::load(d, dims.heads, false, enc.pp(format!("layers.{i}"))))
                .collect::<Result<_>>()?,
            encoder_ln: layer_norm(d, enc.pp("layer_norm"))?,
            tokens,
            text_positions: dec.get((dims.text_ctx, d), "embed_positions.weight")?,
            decoder: (0..dims.decoder_layers)
                .map(|i| Block::load(d, dims.heads, true, dec.pp(format!("layers.{i}"))))
                .collect::<Result<_>>()?,
            decoder_ln: layer_norm(d, dec.pp("layer_norm"))?,
            dims,
        })
    }

    /// `[b, n_mels, 2 * audio_ctx]` log-mel frames -> `[b, audio_ctx, d]`.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(mel)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let frames = x.dim(1)?;
        let mut x = x.broadcast_add(&self.audio_positions.narrow(0, 0, frames)?)?;
        for block in &self.encoder {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.keys_values(&h)?;
            let (a, _) = block.attn.attend(&h, &k, &v, None, false)?;
            x = block.mlp(&(x + a)?)?;
        }
        self.encoder_ln.forward(&x)
    }

    pub fn start(&self, audio: &Tensor) -> Result<DecoderState> {
        let cross = self
            .decoder
            .iter()
            .map(|block| match &block.cross {
                Some((attn, _)) => attn.keys_values(audio),
                None => Err(candle_core::Error::Msg(
                    "decoder block without cross-attention".into(),
                )),
            })
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            cross,
            past: vec![None; self.decoder.len()],
            fed: 0,
        })
    }

    /// Feeds `tokens` after those already in `state`; returns the logits of
    /// every fed position `[1, n, vocab]` and, when asked, each layer's
    /// cross-attention scores `[1, heads, n, audio_ctx]`.
    pub fn decode(
        &self,
        tokens: &[u32],
        state: &mut DecoderState,
        want_scores: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let n = tokens.len();
        let device = self.text_positions.device();
        if state.fed + n > self.dims.text_ctx {
            return Err(candle_core::Error::Msg(format!(
                "the decoder holds {} tokens at most",
                self.dims.text_ctx
            )));
        }
        let ids = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let mut x = self
            .tokens
            .forward(&ids)?
            .broadcast_add(&self.text_positions.narrow(0, state.fed, n)?)?;
        let mask = (n > 1)
            .then(|| causal_mask(n, state.fed, device))
            .transpose()?;
        let mut scores = Vec::new();
        for (i, block) in self.decoder.iter().enumerate() {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.keys_values(&h)?;
            let (k, v) = match state.past[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let (a, _) = block.attn.attend(&h, &k, &v, mask.as_ref(), false)?;
            state.past[i] = Some((k, v));
            x = (x + a)?;
            if let Some((cross, ln)) = &block.cross {
                let (ck, cv) = &state.cross[i];
                let (a, s) = cross.attend(&ln.forward(&x)?, ck, cv, None, want_scores)?;
                scores.extend(s);
                x = (x + a)?;
            }
            x = block.mlp(&x)?;
        }
        state.fed += n;
        let x = self.decoder_ln.forward(&x)?;
        let logits = self.unembed(&x)?;
        Ok((logits, scores))
    }

    /// Logits `[b, n, vocab]` of hidden states `[b, n, d]` against the tied
    /// token embeddings (see [`crate::matvec`]).
    fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        crate::matvec::against_rows(x, self.tokens.embeddings())
    }
}

/// `[n, past + n]`: position i sees the cached prefix and positions <= i.
fn causal_mask(n: usize, past: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(mask, (n, past + n), device)?.to_dtype(DType::F32)
}
