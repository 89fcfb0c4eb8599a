//! The BERT-family transformer encoder behind embeddings (BERT, MiniLM, bge,
//! XLM-RoBERTa), reranking (XLM-RoBERTa) and classification (DistilBERT), run
//! on plain f32 buffers.
//!
//! candle's `BertModel` spends most of a short-sentence batch outside its
//! matrix products: every element-wise step allocates a tensor, attention
//! transposes through copies, and a padded batch computes every padding
//! token. Here the sequences of a batch are packed end to end (no padding, so
//! no mask), Q, K and V come from one product over a fused weight, bias,
//! residual and activation are applied to each block of a product's output
//! as it is computed, and the products run on an AVX-512 or AVX2 kernel over
//! the pre-packed weight panels (`crate::panel_kernel`), or OpenBLAS's
//! `sgemm` (`crate::blas`) on machines with neither.

use candle_core::DType;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::blas::{Operand, sgemm};
use crate::matvec::dot;
use crate::panel_kernel::{Aligned, PANEL};

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{0}")]
    Load(String),
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token { id: u32, vocab: usize },
    #[error("a sequence of {len} tokens is longer than the model's {max} positions")]
    TooLong { len: usize, max: usize },
}

fn load(e: candle_core::Error) -> EncoderError {
    EncoderError::Load(e.to_string())
}

/// The feed-forward activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact, erf-based GELU (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    Tanh,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            _ => None,
        }
    }
}

/// Shape and flavour of an encoder, read from its `config.json`.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub eps: f32,
    pub activation: Activation,
    /// Where the position table starts: 0 for BERT, `pad_token_id + 1` for
    /// RoBERTa and XLM-RoBERTa (their positions count from past the padding
    /// index).
    pub position_offset: usize,
    names: &'static Names,
}

/// Where each layer's tensors live in a checkpoint.
#[derive(Debug)]
struct Names {
    layers: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_out: &'static str,
    attention_norm: &'static str,
    up: &'static str,
    down: &'static str,
    output_norm: &'static str,
}

const BERT: Names = Names {
    layers: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT: Names = Names {
    layers: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    output_norm: "output_layer_norm",
};

impl EncoderConfig {
    /// From a Hugging Face `config.json` of a BERT, (XLM-)RoBERTa or
    /// DistilBERT model.
    pub fn from_json(config: &serde_json::Value) -> Result<Self, EncoderError> {
        let whole = |key: &str| -> Result<usize, EncoderError> {
            config[key]
                .as_u64()
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| EncoderError::Load(format!("config.json has no positive `{key}`")))
        };
        // DistilBERT names the same quantities differently.
        let distil = config["model_type"].as_str() == Some("distilbert")
            || (config.get("dim").is_some() && config.get("n_layers").is_some());
        let key = |bert: &'static str, distilbert: &'static str| {
            if distil { distilbert } else { bert }
        };
        let hidden = whole(key("hidden_size", "dim"))?;
        let heads = whole(key("num_attention_heads", "n_heads"))?;
        if hidden % heads != 0 {
            return Err(EncoderError::Load(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let act = config[key("hidden_act", "activation")]
            .as_str()
            .unwrap_or("gelu");
        let activation = Activation::from_name(act)
            .ok_or_else(|| EncoderError::Load(format!("unsupported hidden_act `{act}`")))?;
        let roberta = config["model_type"]
            .as_str()
            .is_some_and(|t| t.contains("roberta"))
            || config["architectures"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|n| n.as_str().is_some_and(|n| n.contains("Roberta")))
            });
        let position_offset = if roberta {
            config["pad_token_id"].as_u64().unwrap_or(1) as usize + 1
        } else {
            0
        };
        Ok(Self {
            hidden,
            heads,
            intermediate: whole(key("intermediate_size", "hidden_dim"))?,
            layers: whole(key("num_hidden_layers", "n_layers"))?,
            eps: config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            activation,
            position_offset,
            names: if distil { &DISTILBERT } else { &BERT },
        })
    }
}

/// `y = x W^T + b`. The checkpoint stores `W` as `[outputs, inputs]`; it is
/// kept as panels of `PANEL` outputs, each `[inputs, PANEL]` (row-major),
/// so a product reads each panel as one contiguous block and reuses it across
/// a run of tokens from cache. Letting the `gemm` crate see the whole
/// row-major weight instead meant either packing the activations on every
/// call (a third of the encoder's time) or streaming the whole weight once
/// per six tokens (three times slower at batch 1).
pub(crate) struct Linear {
    panels: Panels,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// The weight panels, in full precision or quantized.
enum Panels {
    F32(Aligned),
    /// Weight-only int8: each output's weights are `q * scale` with one
    /// symmetric scale per output (`scales`, padded to whole panels); a work
    /// item widens its panel to f32 in a per-thread buffer (a quarter of the
    /// memory traffic, the same kernel).
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
        /// This layer's key in the widened-panel cache.
        id: u64,
    },
}

/// How the encoder keeps its matrix weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    /// Weight-only int8 with a scale per output (embeddings, norms and
    /// activations stay f32): what the catalog's `-int8` models run in.
    Int8,
}

impl Precision {
    /// `Int8` for the catalog's `-int8` ids.
    pub fn for_model(name: &str) -> Self {
        if name.ends_with("-int8") {
            Self::Int8
        } else {
            Self::F32
        }
    }
}

thread_local! {
    /// A work item's int8 panel, widened, and which (layer, panel) it is:
    /// consecutive items of one thread mostly share a panel.
    static WIDENED: std::cell::RefCell<(Option<PanelKey>, Aligned)> =
        const { std::cell::RefCell::new((None, Aligned::new())) };
}

/// A panel in the widened-panel cache: (layer id, panel index).
type PanelKey = (u64, usize);

/// Tells int8 layers apart in the widened-panel cache.
static NEXT_LINEAR_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Linear {
    pub(crate) fn new(
        weight: &[f32],
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        precision: Precision,
    ) -> Self {
        let padded = outputs.div_ceil(PANEL) * PANEL;
        let mut panels = Aligned::zeroed(padded * inputs);
        for (o, row) in weight.chunks_exact(inputs).enumerate() {
            let panel = &mut panels[o / PANEL * PANEL * inputs..];
            for (i, &w) in row.iter().enumerate() {
                panel[i * PANEL + o % PANEL] = w;
            }
        }
        let panels = match precision {
            Precision::F32 => Panels::F32(panels),
            Precision::Int8 => {
                let mut scales = vec![0f32; padded];
                for (o, row) in weight.chunks_exact(inputs).enumerate() {
                    scales[o] = row.iter().fold(0f32, |m, w| m.max(w.abs())) / 127.0;
                }
                let values = panels
                    .chunks_exact(PANEL)
                    .enumerate()
                    .flat_map(|(at, column)| {
                        let scales = &scales[at / inputs * PANEL..][..PANEL];
                        column.iter().zip(scales).map(|(w, s)| {
                            if *s > 0.0 {
                                (w / s).round().clamp(-127.0, 127.0) as i8
                            } else {
                                0
                            }
                        })
                    })
                    .collect();
                Panels::Int8 {
                    values,
                    scales,
                    id: NEXT_LINEAR_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                }
            }
        };
        Self {
            panels,
            bias,
            inputs,
            outputs,
        }
    }

    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Runs `f` on panel `panel` as f32 (`[inputs, PANEL]`), widening it
    /// first when the weights are int8.
    fn with_panel<R>(&self, panel: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        let size = PANEL * self.inputs;
        match &self.panels {
            Panels::F32(all) => f(&all[panel * size..][..size]),
            Panels::Int8 { values, scales, id } => WIDENED.with_borrow_mut(|(held, buffer)| {
                if *held == Some((*id, panel)) {
                    return f(buffer);
                }
                *held = Some((*id, panel));
                if buffer.len() != size {
                    *buffer = Aligned::zeroed(size);
                }
                let scales = &scales[panel * PANEL..][..PANEL];
                for (out, q) in buffer
                    .chunks_exact_mut(PANEL)
                    .zip(values[panel * size..][..size].chunks_exact(PANEL))
                {
                    for ((o, &q), s) in out.iter_mut().zip(q).zip(scales) {
                        *o = f32::from(q) * s;
                    }
                }
                f(buffer)
            }),
        }
    }
}

pub(crate) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value weights stacked into one `[3 hidden, hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

pub struct Encoder {
    config: EncoderConfig,
    words: Vec<f32>,
    positions: Vec<f32>,
    max_positions: usize,
    /// Row 0 of the token-type table (single-segment input), if the model has one.
    token_type: Option<Vec<f32>>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

pub(crate) fn values(
    vb: &VarBuilder,
    shape: &[usize],
    name: &str,
) -> Result<Vec<f32>, EncoderError> {
    vb.get(shape, name)
        .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
        .map_err(load)
}

/// A fully connected layer's `weight` (`[outputs, inputs]`) and `bias`.
pub(crate) fn weight_and_bias(
    vb: &VarBuilder,
    inputs: usize,
    outputs: usize,
) -> Result<(Vec<f32>, Vec<f32>), EncoderError> {
    Ok((
        values(vb, &[outputs, inputs], "weight")?,
        values(vb, &[outputs], "bias")?,
    ))
}

pub(crate) fn linear(
    vb: &VarBuilder,
    inputs: usize,
    outputs: usize,
    precision: Precision,
) -> Result<Linear, EncoderError> {
    let (weight, bias) = weight_and_bias(vb, inputs, outputs)?;
    Ok(Linear::new(&weight, bias, inputs, outputs, precision))
}

/// A small fully connected layer applied to one vector at a time, as
/// classification heads are (a few rows per request: no `sgemm` needed).
pub struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    /// `weight` and `bias` under `vb`; a layer saved without bias adds zeros.
    pub fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> Result<Self, EncoderError> {
        let (weight, bias) = if vb.contains_tensor("bias") {
            weight_and_bias(vb, inputs, outputs)?
        } else {
            (
                values(vb, &[outputs, inputs], "weight")?,
                vec![0.0; outputs],
            )
        };
        Ok(Self {
            weight,
            bias,
            inputs,
        })
    }

    /// `W x + b`; `x` has `inputs` values.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| b + dot(row, x))
            .collect()
    }
}

/// Layer norms are `weight`/`bias`, or `gamma`/`beta` in older checkpoints.
pub(crate) fn norm(vb: &VarBuilder, size: usize) -> Result<Norm, EncoderError> {
    let (w, b) = if vb.contains_tensor("gamma") {
        ("gamma", "beta")
    } else {
        ("weight", "bias")
    };
    Ok(Norm {
        weight: values(vb, &[size], w)?,
        bias: values(vb, &[size], b)?,
    })
}

impl Encoder {
    /// The encoder of a BERT, (XLM-)RoBERTa or DistilBERT checkpoint; `vb`
    /// may point at the model's root or at its `bert.`/`roberta.`/
    /// `distilbert.` prefix.
    pub fn load(
        vb: &VarBuilder,
        config: &serde_json::Value,
        precision: Precision,
    ) -> Result<Self, EncoderError> {
        let cfg = EncoderConfig::from_json(config)?;
        let vb = under_prefix(
            vb,
            &["bert", "roberta", "distilbert", "model"],
            "embeddings.word_embeddings.weight",
        )?;
        let h = cfg.hidden;
        let vocab = config["vocab_size"].as_u64().unwrap_or(0) as usize;
        let max_positions = config["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        let emb = vb.pp("embeddings");
        let words = values(&emb, &[vocab, h], "word_embeddings.weight")?;
        let positions = values(&emb, &[max_positions, h], "position_embeddings.weight")?;
        let token_type = if emb.contains_tensor("token_type_embeddings.weight") {
            let types = config["type_vocab_size"].as_u64().unwrap_or(2) as usize;
            let table = values(&emb, &[types, h], "token_type_embeddings.weight")?;
            Some(table[..h].to_vec())
        } else {
            None
        };
        let embedding_norm = norm(&emb.pp("LayerNorm"), h)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        let names = cfg.names;
        for i in 0..cfg.layers {
            let l = vb.pp(format!("{}.{i}", names.layers));
            let [q, k, v] = [names.query, names.key, names.value]
                .map(|name| weight_and_bias(&l.pp(name), h, h));
            let (q, k, v) = (q?, k?, v?);
            let qkv = Linear::new(
                &[q.0, k.0, v.0].concat(),
                [q.1, k.1, v.1].concat(),
                h,
                3 * h,
                precision,
            );
            layers.push(Layer {
                qkv,
                attention_out: linear(&l.pp(names.attention_out), h, h, precision)?,
                attention_norm: norm(&l.pp(names.attention_norm), h)?,
                up: linear(&l.pp(names.up), h, cfg.intermediate, precision)?,
                down: linear(&l.pp(names.down), cfg.intermediate, h, precision)?,
                output_norm: norm(&l.pp(names.output_norm), h)?,
            });
        }
        Ok(Self {
            config: cfg,
            words,
            positions,
            max_positions,
            token_type,
            embedding_norm,
            layers,
        })
    }

    fn heads(&self) -> Heads {
        let heads = self.config.heads;
        let size = self.config.hidden / heads;
        Heads {
            query: heads,
            key_value: heads,
            size,
            scale: 1.0 / (size as f32).sqrt(),
            window: None,
        }
    }

    /// The first token's final hidden state of each sequence (zeros for an
    /// empty one): what classification heads read.
    pub fn forward_first(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let hidden = self.forward(sequences)?;
        Ok(split(&hidden, self.hidden(), sequences)
            .map(|rows| first_row(rows, self.hidden()))
            .collect())
    }
}

/// What pooling needs of an encoder: every token's final hidden state.
pub trait TokenEncoder: Send + Sync {
    /// Width of a hidden state.
    fn hidden(&self) -> usize;

    /// Most tokens one sequence may have.
    fn max_tokens(&self) -> usize;

    /// Final hidden states of every token of every sequence, packed end to
    /// end: `[sum of lengths, hidden]`, sequence after sequence.
    fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>, EncoderError>;
}

/// Each sequence's rows of a packed `forward` output (`width` values per
/// token), in order.
pub fn split<'a>(
    hidden: &'a [f32],
    width: usize,
    sequences: &'a [&[u32]],
) -> impl Iterator<Item = &'a [f32]> {
    sequences.iter().scan(0, move |start, s| {
        let rows = &hidden[*start * width..(*start + s.len()) * width];
        *start += s.len();
        Some(rows)
    })
}

/// `vb` itself or `vb` under the first of `prefixes` (a task head's
/// checkpoint nests the encoder under its model name) that holds `tensor`.
pub(crate) fn under_prefix<'a>(
    vb: &VarBuilder<'a>,
    prefixes: &[&str],
    tensor: &str,
) -> Result<VarBuilder<'a>, EncoderError> {
    std::iter::once(vb.clone())
        .chain(prefixes.iter().map(|p| vb.pp(*p)))
        .find(|v| v.contains_tensor(tensor))
        .ok_or_else(|| EncoderError::Load(format!("no {tensor} in the weights")))
}

/// The sequences' lengths, refused when one is longer than `max`.
pub(crate) fn lengths(sequences: &[&[u32]], max: usize) -> Result<Vec<usize>, EncoderError> {
    let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
    match lengths.iter().find(|&&l| l > max) {
        Some(&len) => Err(EncoderError::TooLong { len, max }),
        None => Ok(lengths),
    }
}

/// Row `id` of a `[vocab, width]` embedding table.
pub(crate) fn table_row(table: &[f32], width: usize, id: u32) -> Result<&[f32], EncoderError> {
    table
        .get(id as usize * width..(id as usize + 1) * width)
        .ok_or(EncoderError::Token {
            id,
            vocab: table.len() / width,
        })
}

impl TokenEncoder for Encoder {
    fn hidden(&self) -> usize {
        self.config.hidden
    }

    fn max_tokens(&self) -> usize {
        self.max_positions
            .saturating_sub(self.config.position_offset)
    }

    fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>, EncoderError> {
        let h = self.config.hidden;
        let lengths = lengths(sequences, self.max_tokens())?;
        let tokens: usize = lengths.iter().sum();
        let mut x = vec![0f32; tokens * h];
        let mut rows = x.chunks_exact_mut(h);
        for sequence in sequences {
            for (position, (&id, row)) in sequence.iter().zip(&mut rows).enumerate() {
                let word = table_row(&self.words, h, id)?;
                let at = (position + self.config.position_offset) * h;
                let place = &self.positions[at..at + h];
                for ((o, w), p) in row.iter_mut().zip(word).zip(place) {
                    *o = w + p;
                }
                if let Some(types) = &self.token_type {
                    row.iter_mut().zip(types).for_each(|(o, t)| *o += t);
                }
            }
        }
        let eps = self.config.eps;
        for_rows(&mut x, h, |row| layer_norm(row, &self.embedding_norm, eps));

        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut context = vec![0f32; tokens * h];
        let mut up = vec![0f32; tokens * self.config.intermediate];
        let mut next = vec![0f32; tokens * h];
        for layer in &self.layers {
            layer.qkv.apply(&x, tokens, &mut qkv, None);
            attention(&self.heads(), &qkv, &lengths, &mut context);
            layer
                .attention_out
                .apply(&context, tokens, &mut next, Some(&x));
            for_rows(&mut next, h, |row| {
                layer_norm(row, &layer.attention_norm, eps)
            });
            std::mem::swap(&mut x, &mut next);
            layer
                .up
                .apply_then(&x, tokens, &mut up, None, Some(self.config.activation));
            layer.down.apply(&up, tokens, &mut next, Some(&x));
            for_rows(&mut next, h, |row| layer_norm(row, &layer.output_norm, eps));
            std::mem::swap(&mut x, &mut next);
        }
        Ok(x)
    }
}

impl Linear {
    /// `out = x W^T + b (+ residual)` for `rows` rows of `x`.
    pub(crate) fn apply(&self, x: &[f32], rows: usize, out: &mut [f32], residual: Option<&[f32]>) {
        self.apply_then(x, rows, out, residual, None);
    }

    /// `apply`, then `activation` on each work item's block while it is
    /// still in cache (a separate pass re-read the whole output from memory).
    pub(crate) fn apply_then(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        activation: Option<Activation>,
    ) {
        let (k, n) = (self.inputs, self.outputs);
        let out = &mut out[..rows * n];
        let x = &x[..rows * k];
        let residual = residual.map(|r| &r[..rows * n]);
        if rows == 0 {
            return;
        }
        // Work items are (panel, run of tokens); runs shrink until both
        // threads of a small batch have several items each.
        let panels = n.div_ceil(PANEL);
        let threads = rayon::current_num_threads();
        let mut run = 120;
        while panels * rows.div_ceil(run) < 2 * threads && run > 30 {
            run /= 2;
        }
        let runs = rows.div_ceil(run);
        let dst = SharedOut(out.as_mut_ptr());
        (0..panels * runs).into_par_iter().for_each(|item| {
            let (panel, first) = (item / runs, item % runs * run);
            let outputs = PANEL.min(n - panel * PANEL);
            let tokens = run.min(rows - first);
            let columns = panel * PANEL..panel * PANEL + outputs;
            // The product accumulates onto bias (+ residual): the panel
            // kernel (AVX-512 or AVX2) reads them as it starts; the other
            // paths find them written here, per item rather than in a pass
            // over the whole output.
            let write_start = || {
                for r in first..first + tokens {
                    // SAFETY: row r's columns of this panel lie inside `out`
                    // (r < rows, columns < n) and belong to this item alone.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(dst.at(r * n + columns.start), outputs)
                    };
                    let bias = &self.bias[columns.clone()];
                    match residual {
                        Some(res) => {
                            let res = &res[r * n + columns.start..r * n + columns.end];
                            for ((o, b), x) in row.iter_mut().zip(bias).zip(res) {
                                *o = b + x;
                            }
                        }
                        None => row.copy_from_slice(bias),
                    }
                }
            };
            self.with_panel(panel, |weights| {
                #[cfg(target_arch = "x86_64")]
                if crate::panel_kernel::available() {
                    let start = crate::panel_kernel::Start::Bias {
                        bias: self.bias[columns.start..].as_ptr(),
                        residual: residual.map_or(std::ptr::null(), |res| {
                            res[first * n + columns.start..].as_ptr()
                        }),
                    };
                    // SAFETY: `x` holds rows x k values, `weights` k x PANEL,
                    // the bias this panel's outputs and the residual rows x n
                    // values, and this item alone writes its tokens' outputs
                    // of this panel (at r*n + c).
                    unsafe {
                        crate::panel_kernel::accumulate(
                            x.as_ptr().add(first * k),
                            k,
                            k,
                            weights.as_ptr(),
                            dst.at(first * n + panel * PANEL),
                            n,
                            tokens,
                            outputs,
                            start,
                        );
                    }
                    return;
                }
                write_start();
                if tokens <= FEW_TOKENS {
                    for r in first..first + tokens {
                        // SAFETY: as for the bias above: this item's own block.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(dst.at(r * n + columns.start), outputs)
                        };
                        accumulate_panel(&x[r * k..(r + 1) * k], weights, row);
                    }
                    return;
                }
                // SAFETY: `x` holds rows x k values and `weights` k x PANEL
                // (row-major); this item reads its tokens' rows of `x` and
                // writes (and accumulates onto) out[r][c] at r*n + c for its
                // tokens r and its panel's outputs c, which no other item
                // touches.
                unsafe {
                    sgemm(
                        tokens,
                        outputs,
                        k,
                        1.0,
                        Operand::plain(x.as_ptr().add(first * k), k),
                        Operand::plain(weights.as_ptr(), PANEL),
                        1.0,
                        dst.at(first * n + panel * PANEL),
                        n,
                    );
                }
            });
            if let Some(activation) = activation {
                for r in first..first + tokens {
                    // SAFETY: as for the bias above: this item's own block.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(dst.at(r * n + columns.start), outputs)
                    };
                    activate(row, activation);
                }
            }
        });
    }
}

/// Without the panel kernel, runs of at most this many tokens (decoding steps) skip
/// `sgemm`: a product that small costs less as plain loops than as a
/// library call.
const FEW_TOKENS: usize = 2;

/// `out[c] += sum_i x[i] * weights[i][c]` over one `[inputs, PANEL]`
/// panel: each input adds a scaled panel row to a `PANEL`-wide accumulator,
/// which stays in vector registers.
fn accumulate_panel(x: &[f32], weights: &[f32], out: &mut [f32]) {
    let mut acc = [0f32; PANEL];
    acc[..out.len()].copy_from_slice(out);
    for (&xi, row) in x.iter().zip(weights.chunks_exact(PANEL)) {
        for (a, w) in acc.iter_mut().zip(row) {
            *a += xi * w;
        }
    }
    let outputs = out.len();
    out.copy_from_slice(&acc[..outputs]);
}

/// The output of a product, written by work items on disjoint elements.
struct SharedOut(*mut f32);

// SAFETY: each work item writes only its own (panel, tokens) block.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must be inside the output buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: promised by the caller.
        unsafe { self.0.add(offset) }
    }
}

/// Where a layer's heads sit in its packed rows: each row of the product is
/// all query heads, then the key heads, then the value heads, `size` values
/// each; query head `i` reads key/value head `i / (query / key_value)`
/// (grouped-query attention when `key_value < query`).
pub(crate) struct Heads {
    pub query: usize,
    pub key_value: usize,
    pub size: usize,
    pub scale: f32,
    /// Sliding-window layers attend only to keys closer than this to the
    /// query, on either side.
    pub window: Option<usize>,
}

/// Sequences at least this long run attention as `sgemm` products over
/// blocks of queries; shorter ones (embedding inputs) accumulate scores
/// key by key, which costs less than a product's setup.
const LONG_SEQUENCE: usize = 64;

/// Scores the short path computes at once: one AVX-512 vector.
const KEY_LANES: usize = 16;

/// Queries per work item of the long-sequence path.
const QUERY_BLOCK: usize = 64;

/// Scaled dot-product attention of every head over its own sequence;
/// `context` gets `[tokens, query heads * size]`.
pub(crate) fn attention(heads: &Heads, qkv: &[f32], lengths: &[usize], context: &mut [f32]) {
    let starts: Vec<usize> = lengths
        .iter()
        .scan(0, |at, &len| {
            let start = *at;
            *at += len;
            Some(start)
        })
        .collect();
    let dst = SharedOut(context.as_mut_ptr());
    let (width, out_width) = (heads.width(), heads.out_width());
    let (short, long): (Vec<usize>, Vec<usize>) =
        (0..lengths.len()).partition(|&s| lengths[s] < LONG_SEQUENCE || heads.window.is_some());
    // Long sequences: one work item per (sequence, head, block of queries).
    let blocks: Vec<(usize, usize, usize)> = long
        .iter()
        .flat_map(|&s| {
            (0..heads.query).flat_map(move |hd| {
                (0..lengths[s].div_ceil(QUERY_BLOCK)).map(move |b| (s, hd, b * QUERY_BLOCK))
            })
        })
        .collect();
    blocks
        .into_par_iter()
        .for_each_init(Vec::new, |scores, (s, hd, first)| {
            let (start, len) = (starts[s], lengths[s]);
            let rows = &qkv[start * width..(start + len) * width];
            attend_block(heads, rows, len, hd, first, scores, |i| {
                // SAFETY: token start + i's columns of head hd lie inside
                // `context` and belong to this item alone.
                unsafe { dst.at((start + i) * out_width + hd * heads.size) }
            });
        });
    // Short sequences: one work item per (sequence, head), so a lone
    // sequence still uses every thread; K is transposed per item so each
    // query's scores accumulate across keys in vector lanes instead of
    // ending every short dot product in a horizontal sum.
    let items: Vec<(usize, usize)> = short
        .iter()
        .flat_map(|&s| (0..heads.query).map(move |hd| (s, hd)))
        .collect();
    let size = heads.size;
    items.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(keys_t, scores): &mut (Vec<f32>, Vec<f32>), (sequence, hd)| {
            let (start, len) = (starts[sequence], lengths[sequence]);
            let rows = &qkv[start * width..(start + len) * width];
            let (q_at, k_at, v_at) = heads.columns(hd);
            // Keys padded with zeros to whole vectors: a 15-token sentence
            // otherwise ends every score update in partial-vector and
            // scalar tails.
            let padded = len.next_multiple_of(KEY_LANES);
            keys_t.clear();
            keys_t.resize(size * padded, 0.0);
            for (j, row) in rows.chunks_exact(width).enumerate() {
                for (d, &k) in row[k_at..k_at + size].iter().enumerate() {
                    keys_t[d * padded + j] = k;
                }
            }
            scores.resize(padded, 0.0);
            for (i, row) in rows.chunks_exact(width).enumerate() {
                let keys = match heads.window {
                    Some(w) => i.saturating_sub(w.saturating_sub(1))..len.min(i + w),
                    None => 0..len,
                };
                // Whole vectors around the keys this query sees.
                let lanes =
                    keys.start / KEY_LANES * KEY_LANES..keys.end.next_multiple_of(KEY_LANES);
                scores[lanes.clone()].fill(0.0);
                for (d, &q) in row[q_at..q_at + size].iter().enumerate() {
                    let q = q * heads.scale;
                    let column = &keys_t[d * padded..(d + 1) * padded];
                    add_scaled(&mut scores[lanes.clone()], q, &column[lanes.clone()]);
                }
                let scores = &mut scores[keys.clone()];
                softmax(scores);
                // SAFETY: token start + i's columns of head hd lie inside
                // `context` (start + i < total tokens, columns < out_width)
                // and belong to this item alone.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.at((start + i) * out_width + hd * size),
                        size,
                    )
                };
                o.fill(0.0);
                for (&p, value_row) in scores
                    .iter()
                    .zip(rows[keys.start * width..].chunks_exact(width))
                {
                    add_scaled(o, p, &value_row[v_at..v_at + size]);
                }
            }
        },
    );
}

/// `out += scale * x`, in whole vectors: the compiler kept the plain loop
/// scalar for the short lengths attention runs it at (a head's 32 values).
fn add_scaled(out: &mut [f32], scale: f32, x: &[f32]) {
    let mut out_chunks = out.chunks_exact_mut(KEY_LANES);
    let mut x_chunks = x.chunks_exact(KEY_LANES);
    for (o, x) in (&mut out_chunks).zip(&mut x_chunks) {
        // Copied into locals so that every load visibly precedes every
        // store: inlined, the compiler could not tell `o` and `x` apart
        // and kept the element-wise loop scalar.
        let mut sums = [0f32; KEY_LANES];
        sums.copy_from_slice(o);
        let mut xs = [0f32; KEY_LANES];
        xs.copy_from_slice(x);
        for (s, x) in sums.iter_mut().zip(xs) {
            *s += scale * x;
        }
        o.copy_from_slice(&sums);
    }
    for (o, x) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        *o += scale * x;
    }
}

impl Heads {
    /// Values in one packed row of queries, keys and values.
    fn width(&self) -> usize {
        (self.query + 2 * self.key_value) * self.size
    }

    /// Values in one row of the attention's output.
    fn out_width(&self) -> usize {
        self.query * self.size
    }

    /// Where query head `hd`, and the key and value head it reads, start in a row.
    fn columns(&self, hd: usize) -> (usize, usize, usize) {
        let kv = hd / (self.query / self.key_value.max(1));
        (
            hd * self.size,
            (self.query + kv) * self.size,
            (self.query + self.key_value + kv) * self.size,
        )
    }
}

/// Queries `first..first + QUERY_BLOCK` of head `hd` over all `len` keys of
/// one sequence's `rows`, as two `sgemm` products (scores = Q K^T, then
/// context = softmax(scores) V) read straight from the packed rows; `out(i)`
/// is where query `i`'s context goes.
fn attend_block(
    heads: &Heads,
    rows: &[f32],
    len: usize,
    hd: usize,
    first: usize,
    scores: &mut Vec<f32>,
    out: impl Fn(usize) -> *mut f32,
) {
    let queries = QUERY_BLOCK.min(len - first);
    let (q_at, k_at, v_at) = heads.columns(hd);
    let (width, size) = (heads.width(), heads.size);
    scores.resize(queries * len, 0.0);
    // SAFETY: every read stays inside `rows` (`len` rows of `width`: query
    // rows first..first + queries, key and value rows 0..len, each at its
    // head's `size` columns); `scores` holds queries x len values, written
    // with row stride len.
    unsafe {
        sgemm(
            queries,
            len,
            size,
            heads.scale,
            Operand::plain(rows.as_ptr().add(first * width + q_at), width),
            Operand::transposed(rows.as_ptr().add(k_at), width),
            0.0,
            scores.as_mut_ptr(),
            len,
        );
    }
    scores.chunks_exact_mut(len).for_each(softmax);
    // SAFETY: `out(first)` is query `first`'s context row for this head and
    // the next rows follow at `out_width`; they belong to this item alone.
    // Values are read from `rows` at stride `width`, `len` rows.
    unsafe {
        sgemm(
            queries,
            size,
            len,
            1.0,
            Operand::plain(scores.as_ptr(), len),
            Operand::plain(rows.as_ptr().add(v_at), width),
            0.0,
            out(first),
            heads.out_width(),
        );
    }
}

/// Runs `f` on each `width`-long row, rows in parallel.
pub(crate) fn for_rows(x: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    x.par_chunks_mut(width * 16)
        .for_each(|block| block.chunks_exact_mut(width).for_each(&f));
}

fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for l in 0..16 {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value, in lanes that vectorize (`f32::max` folds one
/// element at a time because of its NaN rule); `-inf` when empty.
fn max(a: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = a.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for x in chunks {
        for l in 0..16 {
            lanes[l] = if x[l] > lanes[l] { x[l] } else { lanes[l] };
        }
    }
    lanes.iter().fold(tail, |m, &x| if x > m { x } else { m })
}

pub(crate) fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    row.iter_mut().for_each(|x| *x -= mean);
    let variance = dot(row, row) / n;
    let inv = 1.0 / (variance + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *x = *x * inv * w + b;
    }
}

/// The first `width` values of a sequence's rows, zeros when it has none.
pub fn first_row(rows: &[f32], width: usize) -> Vec<f32> {
    let mut first = rows[..width.min(rows.len())].to_vec();
    first.resize(width, 0.0);
    first
}

pub fn softmax(x: &mut [f32]) {
    let max = max(x);
    x.iter_mut().for_each(|v| *v = exp(*v - max));
    let total = sum(x);
    x.iter_mut().for_each(|v| *v /= total);
}

pub(crate) fn activate(x: &mut [f32], activation: Activation) {
    match activation {
        Activation::Gelu => x
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2))),
        Activation::GeluTanh => x.iter_mut().for_each(|v| {
            let inner = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
            *v = 0.5 * *v * (1.0 + tanh(inner));
        }),
        Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Tanh => x.iter_mut().for_each(|v| *v = tanh(*v)),
    }
}

/// `e^x` to within a few ulp, in plain arithmetic so loops over it
/// vectorize (libm's `expf` is a call per element): `x = n ln2 + r` with
/// `|r| <= ln2 / 2`, a degree-6 polynomial for `e^r` (Cephes' `expf`
/// coefficients) and `2^n` put straight into the exponent bits.
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from float bits alone: adding 2^23 + 127 puts n + 127 (1..=254
    // after the clamp) in the low mantissa bits. An integer cast here would
    // be saturating and overflow-checked, and keep the loop scalar.
    let biased = (n + 8_388_735.0).to_bits() & 0xff;
    y * f32::from_bits(biased << 23)
}

/// `erf(x)` as a rational function of `x` (Eigen's float `erf`
/// coefficients), exact to float precision past |x| = 4.
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

fn tanh(x: f32) -> f32 {
    // tanh(x) = 1 - 2 / (e^{2x} + 1), saturating cleanly at both ends.
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd sizes: a partial last panel, token runs that are not a multiple
    /// of the kernel's width, and a residual.
    #[test]
    fn products_match_a_plain_triple_loop() {
        for (inputs, outputs, rows) in [(7, 70, 13), (32, 96, 5), (40, 64, 300), (3, 1, 1)] {
            let value = |i: usize| ((i * 7919 % 101) as f32 - 50.0) / 50.0;
            let weight: Vec<f32> = (0..inputs * outputs).map(value).collect();
            let bias: Vec<f32> = (0..outputs).map(|i| value(i + 3)).collect();
            let x: Vec<f32> = (0..rows * inputs).map(|i| value(i + 11)).collect();
            let residual: Vec<f32> = (0..rows * outputs).map(|i| value(i + 17)).collect();
            // int8 is checked against the product of its own quantized weights.
            for precision in [Precision::F32, Precision::Int8] {
                let linear = Linear::new(&weight, bias.clone(), inputs, outputs, precision);
                let effective = |c: usize, i: usize| match &linear.panels {
                    Panels::F32(_) => weight[c * inputs + i],
                    Panels::Int8 { values, scales, .. } => {
                        f32::from(values[(c / PANEL * inputs + i) * PANEL + c % PANEL]) * scales[c]
                    }
                };
                let mut out = vec![f32::NAN; rows * outputs];
                linear.apply(&x, rows, &mut out, Some(&residual));
                for r in 0..rows {
                    for c in 0..outputs {
                        let expected = residual[r * outputs + c]
                            + bias[c]
                            + (0..inputs)
                                .map(|i| x[r * inputs + i] * effective(c, i))
                                .sum::<f32>();
                        let quantized = effective(c, 0);
                        assert!((quantized - weight[c * inputs]).abs() <= 0.5 / 127.0 + 1e-6);
                        let got = out[r * outputs + c];
                        assert!(
                            (got - expected).abs() < 1e-4,
                            "{inputs}x{outputs}x{rows} at ({r},{c}): {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    /// Both attention paths (key by key for short sequences, `sgemm` over
    /// query blocks for long ones) against a direct computation, with
    /// grouped-query heads and a window.
    #[test]
    fn attention_matches_a_direct_computation() {
        let value = |i: usize| ((i * 7919 % 113) as f32 - 56.0) / 40.0;
        let lengths = [3, LONG_SEQUENCE, 2 * QUERY_BLOCK + 5, 1];
        for window in [None, Some(4)] {
            let heads = Heads {
                query: 4,
                key_value: 2,
                size: 8,
                scale: 0.3,
                window,
            };
            let width = (4 + 2 * 2) * 8;
            let tokens: usize = lengths.iter().sum();
            let qkv: Vec<f32> = (0..tokens * width).map(value).collect();
            let mut context = vec![f32::NAN; tokens * 32];
            attention(&heads, &qkv, &lengths, &mut context);
            let mut start = 0;
            for &len in &lengths {
                for hd in 0..4 {
                    let kv = hd / 2;
                    for i in 0..len {
                        let row = |t: usize| &qkv[(start + t) * width..(start + t + 1) * width];
                        let keys: Vec<usize> = (0..len)
                            .filter(|&j| window.is_none_or(|w| i.abs_diff(j) < w))
                            .collect();
                        let mut weights: Vec<f32> = keys
                            .iter()
                            .map(|&j| {
                                (0..8)
                                    .map(|d| row(i)[hd * 8 + d] * row(j)[32 + kv * 8 + d])
                                    .sum::<f32>()
                                    * 0.3
                            })
                            .collect();
                        softmax(&mut weights);
                        for d in 0..8 {
                            let want: f32 = keys
                                .iter()
                                .zip(&weights)
                                .map(|(&j, p)| p * row(j)[48 + kv * 8 + d])
                                .sum();
                            let got = context[(start + i) * 32 + hd * 8 + d];
                            assert!(
                                (got - want).abs() < 1e-5,
                                "len {len} head {hd} query {i}: {got} vs {want}"
                            );
                        }
                    }
                }
                start += len;
            }
        }
    }

    #[test]
    fn exp_erf_and_tanh_match_the_standard_library() {
        let mut worst = (0f32, 0f32, 0f32);
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let e = (exp(x) - x.exp()).abs() / x.exp();
            worst.0 = worst.0.max(e);
            let erf_ref = libm_erf(x as f64) as f32;
            worst.1 = worst.1.max((erf(x) - erf_ref).abs());
            worst.2 = worst.2.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst.0 < 4e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 1e-6, "erf error {}", worst.1);
        assert!(worst.2 < 1e-6, "tanh error {}", worst.2);
        assert!(exp(-200.0) >= 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite());
    }

    /// erf by its Taylor series (|x| < 3) or continued fraction, in f64:
    /// a reference independent of the rational approximation under test.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut total = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for n in (1..60).rev() {
                f = n as f64 / 2.0 / (x.abs() + f);
            }
            let tail = (-x * x).exp() / std::f64::consts::PI.sqrt() / (x.abs() + f);
            (1.0 - tail) * x.signum()
        }
    }
}
