//! The transformer pieces BART and DETR share, as their checkpoints lay
//! them out: multi-head attention (`q_proj`, `k_proj`, `v_proj` and
//! `out_proj` with biases, queries scaled by `head_dim^-0.5`, keys and
//! values projected separately so that callers can cache them or add
//! position embeddings to keys only), the `fc1`/`fc2` feed-forward, and
//! post-norm encoder and decoder layers.

use candle_core::Tensor;
use candle_nn::{LayerNorm, Linear, Module, VarBuilder};

/// The feed-forward's activation (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

pub(crate) struct FeedForward {
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) activation: Activation,
}

impl FeedForward {
    pub(crate) fn new(
        vb: &VarBuilder,
        d: usize,
        ffn: usize,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(d, ffn, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn, d, vb.pp("fc2"))?,
            activation,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&self.activation.apply(&self.fc1.forward(x)?)?)
    }
}

/// A post-norm encoder layer: self-attention, then the feed-forward, each
/// added back and normalised.
pub(crate) struct EncoderLayer {
    pub(crate) attention: MultiHeadAttention,
    pub(crate) attention_norm: LayerNorm,
    pub(crate) feed_forward: FeedForward,
    pub(crate) norm: LayerNorm,
}

impl EncoderLayer {
    /// `h` is `[b, t, d]`; `position`, when given, is added to queries and
    /// keys (DETR), never to values.
    pub(crate) fn forward(
        &self,
        h: &Tensor,
        position: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let queries = match position {
            Some(p) => h.broadcast_add(p)?,
            None => h.clone(),
        };
        let keys = self.attention.keys(&queries)?;
        let values = self.attention.values(h)?;
        let attended = self.attention.attend(&queries, &keys, &values, None)?;
        let h = self.attention_norm.forward(&(h + attended)?)?;
        let fed = self.feed_forward.forward(&h)?;
        self.norm.forward(&(h + fed)?)
    }
}

/// A post-norm decoder layer: self-attention, cross-attention over the
/// encoder's output, the feed-forward. Callers run it (BART caches its
/// self-attention, DETR adds positions).
pub(crate) struct DecoderLayer {
    pub(crate) attention: MultiHeadAttention,
    pub(crate) attention_norm: LayerNorm,
    pub(crate) cross: MultiHeadAttention,
    pub(crate) cross_norm: LayerNorm,
    pub(crate) feed_forward: FeedForward,
    pub(crate) norm: LayerNorm,
}

pub(crate) struct MultiHeadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl MultiHeadAttention {
    pub(crate) fn new(vb: VarBuilder, d: usize, heads: usize) -> candle_core::Result<Self> {
        Ok(Self::from_projections(
            [
                candle_nn::linear(d, d, vb.pp("q_proj"))?,
                candle_nn::linear(d, d, vb.pp("k_proj"))?,
                candle_nn::linear(d, d, vb.pp("v_proj"))?,
                candle_nn::linear(d, d, vb.pp("out_proj"))?,
            ],
            heads,
        ))
    }

    /// From the query, key, value and output projections, in that order.
    pub(crate) fn from_projections([q, k, v, out]: [Linear; 4], heads: usize) -> Self {
        Self {
            q,
            k,
            v,
            out,
            heads,
        }
    }

    /// `[b, t, d]` -> `[b, heads, t, head_dim]`.
    fn split(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    pub(crate) fn keys(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.split(&self.k.forward(x)?)
    }

    pub(crate) fn values(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.split(&self.v.forward(x)?)
    }

    /// `x`'s queries (`[b, t, d]`) over `keys`/`values` (`[b, heads, s,
    /// head_dim]`), with an additive `mask` broadcast over the scores.
    pub(crate) fn attend(
        &self,
        x: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let head_dim = d / self.heads;
        let q = self.split(&(self.q.forward(x)? * (head_dim as f64).powf(-0.5))?)?;
        let mut scores = q.matmul(&keys.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = weights
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((b, t, d))?;
        self.out.forward(&mixed)
    }
}
