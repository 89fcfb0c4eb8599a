//! Multi-head attention as BART-family and DETR checkpoints lay it out:
//! `q_proj`, `k_proj`, `v_proj` and `out_proj` with biases, queries scaled
//! by `head_dim^-0.5`, keys and values projected separately so that
//! callers can cache them or add position embeddings to keys only.

use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};

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
