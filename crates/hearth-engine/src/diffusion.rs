//! Text-to-image with the Stable Diffusion 1.x family (SD 1.5, its img2img
//! and inpainting variants, LCM-merged fine-tunes such as DreamShaper 8
//! LCM) and SDXL (base, Lightning) on candle, loaded from the diffusers
//! folder layout: `text_encoder/` (CLIP), `tokenizer/` (`vocab.json` +
//! `merges.txt`), `unet/`, `vae/` and `scheduler/`, each with its
//! `config.json`, and for SDXL `text_encoder_2/` and `tokenizer_2/`.
//!
//! candle-transformers brings the networks (the UNet's blocks, the VAE
//! decoder; the CLIP text encoders and the UNet's composition are in
//! `clip_text` and `unet`, with the inputs SDXL needs and candle's lack);
//! the samplers are here because candle's draw their noise
//! from an unseeded generator, and a seed must give the same PNG bytes:
//! all noise comes from one `StdRng` seeded by the request. DDIM (eta 0)
//! serves DDIM/PNDM/DPM-Solver configs, Euler (plain or ancestral) the
//! Euler ones, and LCM's consistency sampler the LCM ones. The VAE encoder
//! (img2img, inpainting) is assembled here from candle's public blocks so
//! that the latent mean is reachable (candle's only samples it, unseeded).

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::clip_text::{ClipText, ClipTextSettings};
use crate::unet::{AddedConditions, TextTimeConfig, UNet};
use crate::vision::{VisionError, decode_rgb};

#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("cannot load the diffusion model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadInput(String),
    #[error("image generation failed: {0}")]
    Compute(String),
}

fn compute(e: candle_core::Error) -> DiffusionError {
    DiffusionError::Compute(e.to_string())
}

impl From<VisionError> for DiffusionError {
    fn from(e: VisionError) -> Self {
        match e {
            VisionError::BadImage(m) => DiffusionError::BadInput(m),
            other => DiffusionError::Compute(other.to_string()),
        }
    }
}

/// Memory the UNet's attention scores may take at once: candle computes
/// every head's `cells x cells` matrix for the whole batch together (its
/// sliced attention fails on these shapes), so this bounds the image size.
const ATTENTION_BYTES: f64 = 8.0 * (1u64 << 30) as f64;

/// What to draw, already checked against the task's limits by the caller.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// Pixels; `None` takes the model's native size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: usize,
    /// Classifier-free guidance scale; at 1 or below the unconditioned pass
    /// is skipped.
    pub guidance: f64,
    pub seed: u64,
    /// img2img: the starting image (encoded), and how much of it to redraw.
    pub image: Option<Vec<u8>>,
    pub strength: f64,
    /// Inpainting: where to redraw (white) and keep (black).
    pub mask: Option<Vec<u8>>,
}

/// CLIP's byte-level BPE tokenizer, as `CLIPTokenizerFast` builds it from
/// `vocab.json` and `merges.txt`.
pub(crate) struct ClipTokenizer {
    tokenizer: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    length: usize,
}

impl ClipTokenizer {
    /// `tokenizer.json` when the folder has one (transformers 5 saves only
    /// that), else `vocab.json` and `merges.txt` (the hub's SD repos).
    pub(crate) fn load(dir: &Path, length: usize) -> Result<Self, String> {
        let tokenizer = if dir.join("tokenizer.json").is_file() {
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
                .map_err(|e| format!("tokenizer/tokenizer.json: {e}"))?
        } else {
            Self::from_vocab_and_merges(dir)?
        };
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| format!("the tokenizer has no {token}"))
        };
        let (bos, eos) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        // SD 2 pads with "!", SD 1 with the end token.
        let pad = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|raw| serde_json::from_str::<Value>(&raw).ok())
            .and_then(|c| {
                let pad = c.get("pad_token")?;
                pad.as_str()
                    .or_else(|| pad.get("content").and_then(Value::as_str))
                    .map(str::to_string)
            })
            .and_then(|token| id(&token).ok())
            .unwrap_or(eos);
        Ok(Self {
            tokenizer,
            bos,
            eos,
            pad,
            length,
        })
    }

    /// CLIP's tokenizer as `CLIPTokenizerFast` builds it from the two files.
    fn from_vocab_and_merges(dir: &Path) -> Result<tokenizers::Tokenizer, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("tokenizer/{name}: {e}"))
        };
        let vocab: Value =
            serde_json::from_str(&read("vocab.json")?).map_err(|e| format!("vocab.json: {e}"))?;
        let merges: Vec<String> = read("merges.txt")?
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let spec = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex":
                    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
            "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
                "byte_fallback": false, "vocab": vocab, "merges": merges},
        });
        spec.to_string()
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| format!("tokenizer: {e}"))
    }

    /// `[bos] prompt [eos] pad...`, `length` ids; longer prompts are cut,
    /// as the pipelines do.
    pub(crate) fn ids(&self, text: &str) -> Result<Vec<u32>, DiffusionError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| DiffusionError::BadInput(format!("`prompt` cannot be tokenized: {e}")))?;
        let mut ids = vec![self.bos];
        ids.extend(encoding.get_ids().iter().take(self.length - 2));
        ids.push(self.eos);
        ids.resize(self.length, self.pad);
        Ok(ids)
    }
}

/// The VAE's encoder half with its `quant_conv`, giving the latent mean.
struct VaeEncoder {
    conv_in: candle_nn::Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm: candle_nn::GroupNorm,
    conv_out: candle_nn::Conv2d,
    quant_conv: Option<candle_nn::Conv2d>,
}

impl VaeEncoder {
    fn new(vb: &VarBuilder, c: &AutoEncoderKLConfig) -> candle_core::Result<Self> {
        let enc = vb.pp("encoder");
        let padded = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let channels = &c.block_out_channels;
        let last = *channels
            .last()
            .ok_or_else(|| candle_core::Error::Msg("no VAE blocks".into()))?;
        let conv_in = candle_nn::conv2d(3, channels[0], 3, padded, enc.pp("conv_in"))?;
        let down = channels
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let config = DownEncoderBlock2DConfig {
                    num_layers: c.layers_per_block,
                    resnet_eps: 1e-6,
                    resnet_groups: c.norm_num_groups,
                    add_downsample: i + 1 < channels.len(),
                    downsample_padding: 0,
                    ..Default::default()
                };
                let input = if i > 0 { channels[i - 1] } else { channels[0] };
                DownEncoderBlock2D::new(enc.pp(format!("down_blocks.{i}")), input, out, config)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mid = UNetMidBlock2D::new(
            enc.pp("mid_block"),
            last,
            None,
            UNetMidBlock2DConfig {
                resnet_eps: 1e-6,
                output_scale_factor: 1.,
                attn_num_head_channels: None,
                resnet_groups: Some(c.norm_num_groups),
                ..Default::default()
            },
        )?;
        let norm = candle_nn::group_norm(c.norm_num_groups, last, 1e-6, enc.pp("conv_norm_out"))?;
        let latent = 2 * c.latent_channels;
        let conv_out = candle_nn::conv2d(last, latent, 3, padded, enc.pp("conv_out"))?;
        let quant_conv = if c.use_quant_conv {
            Some(candle_nn::conv2d(
                latent,
                latent,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv_in,
            down,
            mid,
            norm,
            conv_out,
            quant_conv,
        })
    }

    fn mean(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down {
            x = block.forward(&x)?;
        }
        x = self.mid.forward(&x, None)?;
        x = self
            .conv_out
            .forward(&candle_nn::ops::silu(&self.norm.forward(&x)?)?)?;
        if let Some(q) = &self.quant_conv {
            x = q.forward(&x)?;
        }
        let half = x.dim(1)? / 2;
        x.narrow(1, 0, half)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SamplerKind {
    Ddim,
    Euler { ancestral: bool },
    Lcm,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// The noise schedule of `scheduler/scheduler_config.json` and the sampler
/// that walks it.
struct Schedule {
    kind: SamplerKind,
    alphas_cumprod: Vec<f64>,
    spacing: Spacing,
    steps_offset: usize,
    v_prediction: bool,
    final_alpha: f64,
    original_steps: usize,
    timestep_scaling: f64,
}

impl Schedule {
    fn from_config(c: &Value) -> Result<Self, String> {
        let num = |k: &str, d: f64| c.get(k).and_then(Value::as_f64).unwrap_or(d);
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let train = num("num_train_timesteps", 1000.0) as usize;
        let (start, end) = (num("beta_start", 0.0001), num("beta_end", 0.02));
        let betas: Vec<f64> = match text("beta_schedule") {
            "scaled_linear" => linspace(start.sqrt(), end.sqrt(), train)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            "linear" | "" => linspace(start, end, train),
            other => return Err(format!("beta_schedule {other:?} is not supported")),
        };
        let mut product = 1.0;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                product
            })
            .collect();
        let class = text("_class_name");
        let kind = if class.starts_with("LCM") {
            SamplerKind::Lcm
        } else if class.starts_with("EulerAncestral") {
            SamplerKind::Euler { ancestral: true }
        } else if class.starts_with("Euler") {
            SamplerKind::Euler { ancestral: false }
        } else {
            SamplerKind::Ddim
        };
        let spacing = match text("timestep_spacing") {
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            _ => Spacing::Leading,
        };
        let set_alpha_to_one = c
            .get("set_alpha_to_one")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Ok(Self {
            kind,
            final_alpha: if set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            spacing,
            steps_offset: num("steps_offset", 0.0) as usize,
            v_prediction: text("prediction_type") == "v_prediction",
            original_steps: num("original_inference_steps", 50.0) as usize,
            timestep_scaling: num("timestep_scaling", 10.0),
        })
    }

    fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The timesteps of an `n`-step run, noisiest first.
    fn timesteps(&self, n: usize) -> Vec<f64> {
        let t = self.train_steps();
        let last = (t - 1) as f64;
        if self.kind == SamplerKind::Lcm {
            let k = t / self.original_steps.max(1);
            let origin: Vec<usize> = (1..=self.original_steps).rev().map(|i| i * k - 1).collect();
            return (0..n)
                .map(|i| origin[(i * origin.len() / n).min(origin.len() - 1)] as f64)
                .collect();
        }
        let euler = matches!(self.kind, SamplerKind::Euler { .. });
        match self.spacing {
            Spacing::Leading => {
                let ratio = t / n;
                (0..n)
                    .rev()
                    .map(|i| ((i * ratio + self.steps_offset) as f64).min(last))
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / n as f64;
                (0..n)
                    .map(|i| ((t as f64 - i as f64 * ratio).round() - 1.0).max(0.0))
                    .collect()
            }
            Spacing::Linspace => linspace(0.0, last, n)
                .into_iter()
                .rev()
                .map(|v| if euler { v } else { v.round() })
                .collect(),
        }
    }

    fn alpha(&self, t: f64) -> f64 {
        self.alphas_cumprod[(t.round() as usize).min(self.train_steps() - 1)]
    }

    /// Euler's sigma at a (possibly fractional) timestep, interpolated as
    /// diffusers does.
    fn sigma(&self, t: f64) -> f64 {
        let s = |i: usize| {
            let a = self.alphas_cumprod[i.min(self.train_steps() - 1)];
            ((1.0 - a) / a).sqrt()
        };
        let (lo, frac) = (t.floor() as usize, t - t.floor());
        s(lo) * (1.0 - frac) + s(lo + 1) * frac
    }

    /// The noise multiplier of a fresh latent.
    fn init_sigma(&self, first: f64) -> f64 {
        match self.kind {
            SamplerKind::Euler { .. } => {
                let max = self.sigma(first);
                if self.spacing == Spacing::Leading {
                    (max * max + 1.0).sqrt()
                } else {
                    max
                }
            }
            _ => 1.0,
        }
    }

    /// `x0` noised to timestep `t`.
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        match self.kind {
            SamplerKind::Euler { .. } => x0 + (noise * self.sigma(t))?,
            _ => {
                let a = self.alpha(t);
                (x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?
            }
        }
    }

    fn scale_input(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        match self.kind {
            SamplerKind::Euler { .. } => {
                let s = self.sigma(t);
                x / (s * s + 1.0).sqrt()
            }
            _ => Ok(x.clone()),
        }
    }

    /// One denoising step from `timesteps[i]` given the model's output.
    fn step(
        &self,
        output: &Tensor,
        timesteps: &[f64],
        i: usize,
        x: &Tensor,
        noise: &mut Noise,
    ) -> candle_core::Result<Tensor> {
        let t = timesteps[i];
        match self.kind {
            SamplerKind::Ddim => {
                let a = self.alpha(t);
                let prev = t - (self.train_steps() / timesteps.len().max(1)) as f64;
                let a_prev = if prev >= 0.0 {
                    self.alpha(prev)
                } else {
                    self.final_alpha
                };
                let (x0, eps) = self.split(output, x, a)?;
                (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
            }
            SamplerKind::Euler { ancestral } => {
                let sigma = self.sigma(t);
                let next = timesteps.get(i + 1).map_or(0.0, |&n| self.sigma(n));
                let x0 = if self.v_prediction {
                    let c = sigma * sigma + 1.0;
                    ((output * (-sigma / c.sqrt()))? + (x / c)?)?
                } else {
                    (x - (output * sigma)?)?
                };
                let derivative = ((x - &x0)? / sigma)?;
                if !ancestral {
                    return x + (derivative * (next - sigma))?;
                }
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
                    .max(0.0)
                    .sqrt();
                let down = (next * next - up * up).max(0.0).sqrt();
                let moved = (x + (derivative * (down - sigma))?)?;
                if up == 0.0 {
                    return Ok(moved);
                }
                moved + (noise.like(x)? * up)?
            }
            SamplerKind::Lcm => {
                let a = self.alpha(t);
                let (x0, _) = self.split(output, x, a)?;
                let scaled = t * self.timestep_scaling;
                let sigma_data2 = 0.25;
                let c_skip = sigma_data2 / (scaled * scaled + sigma_data2);
                let c_out = scaled / (scaled * scaled + sigma_data2).sqrt();
                let denoised = ((x0 * c_out)? + (x * c_skip)?)?;
                match timesteps.get(i + 1) {
                    None => Ok(denoised),
                    Some(&prev) => {
                        let a_prev = self.alpha(prev);
                        (denoised * a_prev.sqrt())? + (noise.like(x)? * (1.0 - a_prev).sqrt())?
                    }
                }
            }
        }
    }

    /// The clean latent and the noise a model output implies at `alpha`.
    fn split(&self, output: &Tensor, x: &Tensor, a: f64) -> candle_core::Result<(Tensor, Tensor)> {
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        if self.v_prediction {
            let x0 = ((x * sa)? - (output * sb)?)?;
            let eps = ((output * sa)? + (x * sb)?)?;
            Ok((x0, eps))
        } else {
            let x0 = ((x - (output * sb)?)? / sa)?;
            Ok((x0, output.clone()))
        }
    }
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![start; n];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Gaussian noise from a seeded generator (Box-Muller), so that a seed
/// gives the same image on every run and machine.
pub(crate) struct Noise(rand::rngs::StdRng);

impl Noise {
    pub(crate) fn new(seed: u64) -> Self {
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }

    pub(crate) fn like(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.elem_count();
        let mut data = Vec::with_capacity(n + 1);
        while data.len() < n {
            let u1: f64 = self.0.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = self.0.random();
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            data.push((r * theta.cos()) as f32);
            data.push((r * theta.sin()) as f32);
        }
        data.truncate(n);
        Tensor::from_vec(data, x.shape(), x.device())
    }
}

/// A text-to-image model, by what its folder holds: FLUX (the Black
/// Forest Labs transformer and autoencoder files) or Stable Diffusion 1.x
/// (the diffusers layout).
pub enum Diffuser {
    StableDiffusion(Box<StableDiffusion>),
    Flux(Box<crate::flux::Flux>),
}

impl Diffuser {
    pub fn load(dir: &Path) -> Result<Self, DiffusionError> {
        match crate::flux::transformer_file(dir) {
            Some(transformer) => Ok(Self::Flux(Box::new(crate::flux::Flux::load(
                dir,
                &transformer,
            )?))),
            None => Ok(Self::StableDiffusion(Box::new(StableDiffusion::load(dir)?))),
        }
    }

    /// The size drawn when a request names none.
    pub fn native_size(&self) -> u32 {
        match self {
            Self::StableDiffusion(m) => m.native_size(),
            Self::Flux(m) => m.native_size(),
        }
    }

    /// Whether the model redraws a masked part of an image.
    pub fn inpainting(&self) -> bool {
        matches!(self, Self::StableDiffusion(m) if m.inpainting())
    }

    /// Draws the request's image.
    pub fn generate(&self, request: &ImageRequest) -> Result<Drawing, DiffusionError> {
        self.generate_from(request, None)
    }

    /// Draws from the given starting noise instead of the seed's, as
    /// diffusers' `latents` argument does: how a run is reproduced in
    /// another implementation (`bench/diffusion_reference.py`).
    pub fn generate_from(
        &self,
        request: &ImageRequest,
        start: Option<Tensor>,
    ) -> Result<Drawing, DiffusionError> {
        match self {
            Self::StableDiffusion(m) => m.generate_from(request, start),
            Self::Flux(m) => Ok(Drawing {
                image: m.generate(request, start)?,
            }),
        }
    }
}

/// How a pipeline turns prompts into what its UNet attends to.
enum Prompting {
    /// SD 1.x: CLIP's final normed states.
    Clip(Box<(ClipTokenizer, ClipText)>),
    /// SDXL: two encoders.
    Xl(Box<XlPrompting>),
}

/// SDXL's text side: CLIP-L (`text_encoder/`) and OpenCLIP bigG with its
/// projection (`text_encoder_2/`); the UNet attends to both encoders'
/// penultimate states side by side and adds the second's pooled,
/// projected state to its time embedding.
struct XlPrompting {
    tokenizers: [ClipTokenizer; 2],
    encoders: [ClipText; 2],
    /// `force_zeros_for_empty_prompt` (SDXL base's pipeline setting): with
    /// no negative prompt, the unguided branch reads zeros, not the
    /// encoding of "".
    zeros_for_empty_negative: bool,
}

/// Stable Diffusion 1.x or XL from the diffusers layout.
pub struct StableDiffusion {
    prompting: Prompting,
    unet: UNet,
    /// 4, or 9 for inpainting models (latents, mask, masked image).
    unet_in_channels: usize,
    vae: AutoEncoderKL,
    vae_encoder: VaeEncoder,
    latent_channels: usize,
    vae_scale: f64,
    /// Pixels per latent cell.
    vae_factor: usize,
    schedule: Schedule,
    native_size: u32,
    /// Heads of the UNet's first attention block (its largest scores).
    attention_heads: usize,
    /// Latent cells per cell of that block (it runs after this many
    /// halvings of each side, squared).
    attention_shrink: usize,
}

impl StableDiffusion {
    pub fn load(dir: &Path) -> Result<Self, DiffusionError> {
        let fail = |reason: String| DiffusionError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = |sub: &str, name: &str| -> Result<Value, DiffusionError> {
            let path = dir.join(sub).join(name);
            let raw = std::fs::read(&path).map_err(|e| fail(format!("{sub}/{name}: {e}")))?;
            serde_json::from_slice(&raw).map_err(|e| fail(format!("{sub}/{name}: {e}")))
        };
        let weights = |sub: &str, name: &str| -> Result<VarBuilder<'static>, DiffusionError> {
            crate::hf::mmap_weights(&[dir.join(sub).join(name)])
                .map_err(|e| fail(format!("{sub}/{name}: {e}")))
        };

        let (prompting, embed_dim) = if dir.join("text_encoder_2").is_dir() {
            let xl = Self::load_xl_text(dir).map_err(fail)?;
            let width = xl.encoders[0].hidden_size() + xl.encoders[1].hidden_size();
            (Prompting::Xl(Box::new(xl)), width)
        } else {
            let (tokenizer, text, width) = Self::load_clip_text(dir).map_err(fail)?;
            (Prompting::Clip(Box::new((tokenizer, text))), width)
        };

        let unet_config = config("unet", "config.json")?;
        let (unet_cfg, text_time, unet_in_channels, sample_size) =
            unet_settings(&unet_config).map_err(|e| fail(format!("unet/config.json: {e}")))?;
        match (&prompting, text_time) {
            (Prompting::Xl(xl), Some(t)) => {
                let pooled = xl.encoders[1].pooled_size();
                if t.input_dim != pooled + 6 * t.time_dim {
                    return Err(fail(format!(
                        "the UNet's add_embedding takes {} numbers, the text encoder's {pooled} \
                         pooled plus six {}-wide time ids make {}",
                        t.input_dim,
                        t.time_dim,
                        pooled + 6 * t.time_dim
                    )));
                }
            }
            (Prompting::Xl(_), None) => {
                return Err(fail(
                    "text_encoder_2 is present but the UNet takes no added text/time \
                     conditioning (addition_embed_type)"
                        .into(),
                ));
            }
            (Prompting::Clip(_), Some(_)) => {
                return Err(fail(
                    "the UNet is SDXL's (addition_embed_type text_time) but text_encoder_2 \
                     is missing"
                        .into(),
                ));
            }
            (Prompting::Clip(_), None) => {}
        }
        if unet_cfg.cross_attention_dim != embed_dim {
            return Err(fail(format!(
                "the UNet attends to {}-wide text, the text encoder gives {embed_dim}",
                unet_cfg.cross_attention_dim
            )));
        }
        let first_attention = unet_cfg
            .blocks
            .iter()
            .position(|b| b.use_cross_attn.is_some())
            .unwrap_or(0);
        let attention_heads = unet_cfg
            .blocks
            .get(first_attention)
            .map_or(8, |b| b.attention_head_dim.max(1));
        let unet = UNet::new(
            weights("unet", "diffusion_pytorch_model.safetensors")?,
            unet_in_channels,
            unet_config
                .get("out_channels")
                .and_then(Value::as_u64)
                .map_or(4, |v| v as usize),
            &unet_cfg,
            text_time,
        )
        .map_err(|e| fail(format!("unet: {e}")))?;

        let vae_config = config("vae", "config.json")?;
        let vnum = |k: &str, d: usize| {
            vae_config
                .get(k)
                .and_then(Value::as_u64)
                .map_or(d, |v| v as usize)
        };
        let flag = |k: &str| vae_config.get(k).and_then(Value::as_bool).unwrap_or(true);
        let block_out_channels = usize_list(&vae_config, "block_out_channels")
            .unwrap_or_else(|| vec![128, 256, 512, 512]);
        if block_out_channels.is_empty() {
            return Err(fail("vae/config.json: block_out_channels is empty".into()));
        }
        let vae_cfg = AutoEncoderKLConfig {
            block_out_channels,
            layers_per_block: vnum("layers_per_block", 2),
            latent_channels: vnum("latent_channels", 4),
            norm_num_groups: vnum("norm_num_groups", 32),
            use_quant_conv: flag("use_quant_conv"),
            use_post_quant_conv: flag("use_post_quant_conv"),
        };
        let vae_weights = weights("vae", "diffusion_pytorch_model.safetensors")?;
        let vae_encoder =
            VaeEncoder::new(&vae_weights, &vae_cfg).map_err(|e| fail(format!("vae: {e}")))?;
        let vae_factor = 1 << (vae_cfg.block_out_channels.len() - 1);
        let latent_channels = vae_cfg.latent_channels;
        let vae = AutoEncoderKL::new(vae_weights, 3, 3, vae_cfg)
            .map_err(|e| fail(format!("vae: {e}")))?;
        let vae_scale = vae_config
            .get("scaling_factor")
            .and_then(Value::as_f64)
            .unwrap_or(0.18215);
        let schedule = Schedule::from_config(&config("scheduler", "scheduler_config.json")?)
            .map_err(|e| fail(format!("scheduler: {e}")))?;
        Ok(Self {
            prompting,
            unet,
            unet_in_channels,
            vae,
            vae_encoder,
            latent_channels,
            vae_scale,
            vae_factor,
            schedule,
            native_size: (sample_size * vae_factor) as u32,
            attention_heads,
            attention_shrink: 1 << (2 * first_attention),
        })
    }

    /// SD 1.x's CLIP text encoder and tokenizer, and its width.
    fn load_clip_text(dir: &Path) -> Result<(ClipTokenizer, ClipText, usize), String> {
        let text = ClipText::load(&dir.join("text_encoder"), false)
            .map_err(|e| format!("text_encoder: {e}"))?;
        if text.exact_gelu() {
            return Err(
                "text_encoder hidden_act \"gelu\": only CLIP's quick_gelu (Stable Diffusion 1.x) is built"
                    .into(),
            );
        }
        let tokenizer = ClipTokenizer::load(&dir.join("tokenizer"), text.positions())?;
        let width = text.hidden_size();
        Ok((tokenizer, text, width))
    }

    /// SDXL's two text encoders and tokenizers.
    fn load_xl_text(dir: &Path) -> Result<XlPrompting, String> {
        let tokenizer = |sub: &str, encoder: &ClipText| {
            ClipTokenizer::load(&dir.join(sub), encoder.positions())
                .map_err(|e| format!("{sub}: {e}"))
        };
        let first = ClipText::load(&dir.join("text_encoder"), false)
            .map_err(|e| format!("text_encoder: {e}"))?;
        let second = ClipText::load(&dir.join("text_encoder_2"), true)
            .map_err(|e| format!("text_encoder_2: {e}"))?;
        let tokenizers = [
            tokenizer("tokenizer", &first)?,
            tokenizer("tokenizer_2", &second)?,
        ];
        let zeros_for_empty_negative = std::fs::read(dir.join("model_index.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
            .and_then(|c| c.get("force_zeros_for_empty_prompt")?.as_bool())
            .unwrap_or(true);
        Ok(XlPrompting {
            tokenizers,
            encoders: [first, second],
            zeros_for_empty_negative,
        })
    }

    fn native_size(&self) -> u32 {
        self.native_size
    }

    /// Whether the UNet takes a mask and a masked image (an inpainting
    /// model).
    fn inpainting(&self) -> bool {
        self.unet_in_channels == 9
    }

    /// Draws from the given starting noise (`[1, latent channels, height /
    /// factor, width / factor]`) or the seed's; the seed also drives the
    /// noise of ancestral and LCM steps.
    fn generate_from(
        &self,
        request: &ImageRequest,
        start: Option<Tensor>,
    ) -> Result<Drawing, DiffusionError> {
        let width = request.width.unwrap_or(self.native_size) as usize;
        let height = request.height.unwrap_or(self.native_size) as usize;
        for (field, size) in [("width", width), ("height", height)] {
            if size % 8 != 0 || size < self.vae_factor {
                return Err(DiffusionError::BadInput(format!(
                    "`{field}` must be a multiple of 8, got {size}"
                )));
            }
        }
        if request.steps == 0 {
            return Err(DiffusionError::BadInput(
                "`num_steps` must be at least 1".into(),
            ));
        }
        if self.inpainting() && (request.image.is_none() || request.mask.is_none()) {
            return Err(DiffusionError::BadInput(
                "this is an inpainting model: `image` and `mask` are required".into(),
            ));
        }
        if request.mask.is_some() && request.image.is_none() {
            return Err(DiffusionError::BadInput(
                "`mask` needs the `image` it applies to".into(),
            ));
        }
        let (lh, lw) = (height / self.vae_factor, width / self.vae_factor);
        // The first attention block's scores: batch (2 with guidance) x
        // heads x cells^2 floats; past the bound a request could exhaust
        // the machine's memory.
        let max_cells = (ATTENTION_BYTES / (2.0 * self.attention_heads as f64 * 4.0)).sqrt()
            as usize
            * self.attention_shrink;
        if lh * lw > max_cells {
            let side = (max_cells as f64).sqrt() as usize * self.vae_factor;
            return Err(DiffusionError::BadInput(format!(
                "`width` x `height` {width}x{height} is too large for this engine: at most \
                 {max_cells} latent cells of {f}x{f} pixels (about {side}x{side})",
                f = self.vae_factor
            )));
        }
        let guided = request.guidance > 1.0;
        let (context, added) = self.text_context(request, guided, width, height)?;
        let mut noise = Noise::new(request.seed);
        let shape = Tensor::zeros((1, self.latent_channels, lh, lw), DType::F32, &Device::Cpu)
            .map_err(compute)?;
        let initial_noise = match start {
            Some(given) if given.dims() == shape.dims() => given,
            Some(given) => {
                return Err(DiffusionError::BadInput(format!(
                    "the starting latents are {:?}, this size needs {:?}",
                    given.dims(),
                    shape.dims()
                )));
            }
            None => noise.like(&shape).map_err(compute)?,
        };

        let source = match &request.image {
            Some(bytes) => Some(self.pixels(bytes, "image", width, height)?),
            None => None,
        };
        let mask = match &request.mask {
            Some(bytes) => Some(self.mask(bytes, width, height)?),
            None => None,
        };
        let all = self.schedule.timesteps(request.steps);
        // img2img starts part-way, with the source noised to that step;
        // inpainting models always start from pure noise.
        let start = match (&source, self.inpainting()) {
            (Some(_), false) => {
                let strength = request.strength.clamp(0.0, 1.0);
                let kept = ((request.steps as f64 * strength) as usize).min(request.steps);
                request.steps - kept
            }
            _ => 0,
        };
        let timesteps = &all[start..];
        let source_latents = match &source {
            Some(pixels) => Some(self.encode(pixels)?),
            None => None,
        };
        let mut latents = match (&source_latents, timesteps.first()) {
            (Some(x0), Some(&t)) if !self.inpainting() => self
                .schedule
                .add_noise(x0, &initial_noise, t)
                .map_err(compute)?,
            (Some(x0), None) => x0.clone(),
            (_, first) => {
                let sigma = first.map_or(1.0, |&t| self.schedule.init_sigma(t));
                (&initial_noise * sigma).map_err(compute)?
            }
        };
        // What an inpainting UNet reads beside the latents: the mask at
        // latent size and the latents of the image with the hole cut out.
        let inpaint_extra = match (&source, &mask, self.inpainting()) {
            (Some(pixels), Some(m), true) => {
                let keep = m.pixels.lt(0.5).map_err(compute)?.to_dtype(DType::F32);
                let cut = keep
                    .and_then(|k| pixels.broadcast_mul(&k))
                    .map_err(compute)?;
                Some(Tensor::cat(&[&m.latent, &self.encode(&cut)?], 1).map_err(compute)?)
            }
            _ => None,
        };

        for (i, &t) in timesteps.iter().enumerate() {
            let scaled = self.schedule.scale_input(&latents, t).map_err(compute)?;
            let input = match &inpaint_extra {
                Some(extra) => Tensor::cat(&[&scaled, extra], 1).map_err(compute)?,
                None => scaled,
            };
            let input = if guided {
                Tensor::cat(&[&input, &input], 0).map_err(compute)?
            } else {
                input
            };
            let output = self
                .unet
                .forward(&input, t, &context, added.as_ref())
                .map_err(compute)?;
            let output = if guided {
                let uncond = output.i(0..1).map_err(compute)?;
                let cond = output.i(1..2).map_err(compute)?;
                (&uncond + ((cond - &uncond).map_err(compute)? * request.guidance))
                    .map_err(compute)?
            } else {
                output
            };
            latents = self
                .schedule
                .step(&output, timesteps, i, &latents, &mut noise)
                .map_err(compute)?;
            // A plain UNet with a mask: keep the unmasked part on the
            // source's noise path (diffusers' legacy inpainting).
            if let (Some(m), Some(x0), false) = (&mask, &source_latents, self.inpainting()) {
                let kept = match timesteps.get(i + 1) {
                    Some(&next) => self
                        .schedule
                        .add_noise(x0, &initial_noise, next)
                        .map_err(compute)?,
                    None => x0.clone(),
                };
                let keep = (1.0 - &m.latent).map_err(compute)?;
                latents = kept
                    .broadcast_mul(&keep)
                    .and_then(|k| k + latents.broadcast_mul(&m.latent)?)
                    .map_err(compute)?;
            }
        }
        self.decode(&latents)
    }

    /// What the UNet attends to for the prompt, preceded by the negative
    /// prompt's when guidance is on (`[1 or 2, 77, width]`), and for SDXL
    /// the added conditions in the same row order.
    fn text_context(
        &self,
        request: &ImageRequest,
        guided: bool,
        width: usize,
        height: usize,
    ) -> Result<(Tensor, Option<AddedConditions>), DiffusionError> {
        let prompts: &[&str] = if guided {
            &[&request.negative_prompt, &request.prompt]
        } else {
            &[&request.prompt]
        };
        match &self.prompting {
            Prompting::Clip(clip) => {
                let (tokenizer, text) = clip.as_ref();
                let mut ids = Vec::new();
                for prompt in prompts {
                    ids.extend(tokenizer.ids(prompt)?);
                }
                let out = text
                    .encode(&ids, tokenizer.length, tokenizer.eos)
                    .map_err(compute)?;
                Ok((out.last, None))
            }
            Prompting::Xl(xl) => {
                let mut states = Vec::new();
                let mut pooled = None;
                for (tokenizer, encoder) in xl.tokenizers.iter().zip(&xl.encoders) {
                    let mut ids = Vec::new();
                    for prompt in prompts {
                        ids.extend(tokenizer.ids(prompt)?);
                    }
                    let out = encoder
                        .encode(&ids, tokenizer.length, tokenizer.eos)
                        .map_err(compute)?;
                    states.push(out.penultimate);
                    pooled = Some(out.pooled);
                }
                let mut context = Tensor::cat(&states, 2).map_err(compute)?;
                let mut pooled = pooled.ok_or_else(|| {
                    DiffusionError::Compute("SDXL has no second text encoder".into())
                })?;
                if guided && request.negative_prompt.is_empty() && xl.zeros_for_empty_negative {
                    let zero_first = |t: &Tensor| -> candle_core::Result<Tensor> {
                        let cond = t.narrow(0, 1, 1)?;
                        Tensor::cat(&[&cond.zeros_like()?, &cond], 0)
                    };
                    context = zero_first(&context).map_err(compute)?;
                    pooled = zero_first(&pooled).map_err(compute)?;
                }
                let (h, w) = (height as f32, width as f32);
                let row = [h, w, 0.0, 0.0, h, w];
                let time_ids: Vec<f32> = row
                    .iter()
                    .copied()
                    .cycle()
                    .take(6 * prompts.len())
                    .collect();
                let time_ids = Tensor::from_vec(time_ids, (prompts.len(), 6), &Device::Cpu)
                    .map_err(compute)?;
                Ok((
                    context,
                    Some(AddedConditions {
                        text_embeds: pooled,
                        time_ids,
                    }),
                ))
            }
        }
    }

    /// An encoded image resized to the output size, in [-1, 1].
    fn pixels(
        &self,
        bytes: &[u8],
        field: &str,
        width: usize,
        height: usize,
    ) -> Result<Tensor, DiffusionError> {
        let rgb = decode_rgb(bytes, field)?;
        let resized = image::imageops::resize(
            &rgb,
            width as u32,
            height as u32,
            image::imageops::FilterType::Lanczos3,
        );
        let data: Vec<f32> = resized
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 127.5 - 1.0)
            .collect();
        Tensor::from_vec(data, (1, height, width, 3), &Device::Cpu)
            .and_then(|t| t.permute((0, 3, 1, 2)))
            .and_then(|t| t.contiguous())
            .map_err(compute)
    }

    /// A mask image: 1 where to redraw (light), 0 where to keep, at pixel
    /// and at latent size.
    fn mask(&self, bytes: &[u8], width: usize, height: usize) -> Result<Mask, DiffusionError> {
        let rgb = decode_rgb(bytes, "mask")?;
        let gray = image::DynamicImage::ImageRgb8(rgb).to_luma8();
        let binary = |w: usize, h: usize| {
            let small = image::imageops::resize(
                &gray,
                w as u32,
                h as u32,
                image::imageops::FilterType::Triangle,
            );
            let data: Vec<f32> = small
                .into_raw()
                .into_iter()
                .map(|v| if v >= 128 { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_vec(data, (1, 1, h, w), &Device::Cpu).map_err(compute)
        };
        Ok(Mask {
            pixels: binary(width, height)?,
            latent: binary(width / self.vae_factor, height / self.vae_factor)?,
        })
    }

    fn encode(&self, pixels: &Tensor) -> Result<Tensor, DiffusionError> {
        (self.vae_encoder.mean(pixels).map_err(compute)? * self.vae_scale).map_err(compute)
    }

    fn decode(&self, latents: &Tensor) -> Result<Drawing, DiffusionError> {
        let decoded = self
            .vae
            .decode(&(latents / self.vae_scale).map_err(compute)?)
            .map_err(compute)?;
        let (_, _, h, w) = decoded.dims4().map_err(compute)?;
        let pixels: Vec<u8> = ((decoded / 2.0)
            .and_then(|x| x + 0.5)
            .and_then(|x| x.clamp(0f32, 1f32))
            .and_then(|x| x * 255.0)
            .and_then(|x| x.round())
            .and_then(|x| x.to_dtype(DType::U8))
            .and_then(|x| x.i(0))
            .and_then(|x| x.permute((1, 2, 0)))
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1::<u8>()))
        .map_err(compute)?;
        image::RgbImage::from_raw(w as u32, h as u32, pixels)
            .map(|image| Drawing { image })
            .ok_or_else(|| DiffusionError::Compute("decoded image has the wrong size".into()))
    }
}

/// A drawn image.
pub struct Drawing {
    image: image::RgbImage,
}

impl Drawing {
    pub fn width(&self) -> u32 {
        self.image.width()
    }

    pub fn height(&self) -> u32 {
        self.image.height()
    }

    pub fn png(&self) -> Result<Vec<u8>, DiffusionError> {
        self.encode(image::ImageFormat::Png)
    }

    pub fn jpeg(&self) -> Result<Vec<u8>, DiffusionError> {
        self.encode(image::ImageFormat::Jpeg)
    }

    fn encode(&self, format: image::ImageFormat) -> Result<Vec<u8>, DiffusionError> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.image
            .write_to(&mut out, format)
            .map_err(|e| DiffusionError::Compute(e.to_string()))?;
        Ok(out.into_inner())
    }
}

struct Mask {
    pixels: Tensor,
    latent: Tensor,
}

fn usize_list(config: &Value, key: &str) -> Option<Vec<usize>> {
    config
        .get(key)?
        .as_array()?
        .iter()
        .map(|v| v.as_u64().map(|v| v as usize))
        .collect()
}

/// candle's UNet configuration from diffusers' `unet/config.json`, SDXL's
/// added conditioning if the UNet takes it, the number of input channels
/// and the latent sample size.
fn unet_settings(
    c: &Value,
) -> Result<
    (
        UNet2DConditionModelConfig,
        Option<TextTimeConfig>,
        usize,
        usize,
    ),
    String,
> {
    for key in ["time_cond_proj_dim", "class_embed_type"] {
        if c.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "{key} is set: that conditioning (LCM-distilled UNets, class labels) is not built"
            ));
        }
    }
    let num = |k: &str| c.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let text_time = match c.get("addition_embed_type").and_then(Value::as_str) {
        None => None,
        Some("text_time") => Some(TextTimeConfig {
            time_dim: num("addition_time_embed_dim").ok_or("addition_time_embed_dim is missing")?,
            input_dim: num("projection_class_embeddings_input_dim")
                .ok_or("projection_class_embeddings_input_dim is missing")?,
        }),
        Some(other) => {
            return Err(format!(
                "addition_embed_type {other:?}: only SDXL's \"text_time\" is built"
            ));
        }
    };
    let channels = usize_list(c, "block_out_channels")
        .filter(|c| !c.is_empty())
        .ok_or("block_out_channels is missing or empty")?;
    let down: Vec<String> = c
        .get("down_block_types")
        .and_then(Value::as_array)
        .ok_or("down_block_types is missing")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    if down.len() != channels.len() {
        return Err("down_block_types and block_out_channels differ in length".into());
    }
    let per_block = |key: &str, default: usize| -> Vec<usize> {
        match c.get(key) {
            Some(Value::Array(_)) => usize_list(c, key).unwrap_or_default(),
            Some(v) => vec![v.as_u64().map_or(default, |v| v as usize); channels.len()],
            None => vec![default; channels.len()],
        }
    };
    // diffusers' "attention_head_dim" is, for these UNets, the head count
    // (its own comment admits the misnomer); candle reads it the same way.
    let heads = match c.get("num_attention_heads") {
        Some(v) if !v.is_null() => per_block("num_attention_heads", 8),
        _ => per_block("attention_head_dim", 8),
    };
    let layers = per_block("transformer_layers_per_block", 1);
    if heads.len() != channels.len() || layers.len() != channels.len() {
        return Err("per-block lists differ in length from block_out_channels".into());
    }
    let blocks = (0..channels.len())
        .map(|i| BlockConfig {
            out_channels: channels[i],
            use_cross_attn: down[i].contains("CrossAttn").then_some(layers[i]),
            attention_head_dim: heads[i],
        })
        .collect();
    let float = |k: &str, d: f64| c.get(k).and_then(Value::as_f64).unwrap_or(d);
    // candle's down and up blocks build their resnets with 32 groups
    // whatever the config says; every released SD UNet uses 32.
    let groups = num("norm_num_groups").unwrap_or(32);
    if groups != 32 {
        return Err(format!("norm_num_groups {groups}: only 32 is supported"));
    }
    let in_channels = num("in_channels").unwrap_or(4);
    if in_channels != 4 && in_channels != 9 {
        return Err(format!(
            "in_channels {in_channels}: 4 (or 9 for inpainting) expected"
        ));
    }
    Ok((
        UNet2DConditionModelConfig {
            center_input_sample: c
                .get("center_input_sample")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            flip_sin_to_cos: c
                .get("flip_sin_to_cos")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            freq_shift: float("freq_shift", 0.0),
            blocks,
            layers_per_block: num("layers_per_block").unwrap_or(2),
            downsample_padding: num("downsample_padding").unwrap_or(1),
            mid_block_scale_factor: float("mid_block_scale_factor", 1.0),
            norm_num_groups: groups,
            norm_eps: float("norm_eps", 1e-5),
            cross_attention_dim: num("cross_attention_dim").unwrap_or(768),
            sliced_attention_size: None,
            use_linear_projection: c
                .get("use_linear_projection")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        text_time,
        in_channels,
        num("sample_size").unwrap_or(64),
    ))
}

/// Words of the tiny test tokenizer (each a single BPE token).
const TINY_WORDS: &[&str] = &[
    "a", "cat", "dog", "red", "blue", "house", "on", "the", "hill",
];

/// Writes `value` as `dir/sub/name`, making the sub-folder.
pub(crate) fn write_json(
    dir: &Path,
    sub: &str,
    name: &str,
    value: &Value,
) -> Result<(), DiffusionError> {
    let fail = |e: std::io::Error| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir.join(sub)).map_err(fail)?;
    std::fs::write(dir.join(sub).join(name), value.to_string()).map_err(fail)
}

/// Builds a model through candle's own constructors on a random `VarMap`
/// and saves it as `dir/sub/name`: the tensor names are exactly those the
/// loader reads.
pub(crate) fn save_random(
    dir: &Path,
    sub: &str,
    name: &str,
    build: &dyn Fn(VarBuilder) -> candle_core::Result<()>,
) -> Result<(), DiffusionError> {
    let fail = |e: &dyn std::fmt::Display| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let varmap = candle_nn::VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).map_err(|e| fail(&e))?;
    std::fs::create_dir_all(dir.join(sub)).map_err(|e| fail(&e))?;
    varmap.save(dir.join(sub).join(name)).map_err(|e| fail(&e))
}

/// Writes a tiny CLIP text encoder (`text_encoder/`, `hidden` wide) and its
/// BPE tokenizer (`tokenizer/` vocab and merges: every ASCII letter, plain
/// and word-final, and the test words) to `dir`, for the tiny diffusion
/// models.
pub(crate) fn write_tiny_clip(dir: &Path, dim: usize) -> Result<(), DiffusionError> {
    let fail = |e: &dyn std::fmt::Display| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let write = |sub: &str, name: &str, value: &Value| write_json(dir, sub, name, value);

    // Tokenizer: the special tokens, every ASCII letter (plain and
    // word-final) and the test words, with merges that build them.
    let mut vocab = serde_json::Map::new();
    let mut merges = vec!["#version: 0.2".to_string()];
    let add = |token: String, vocab: &mut serde_json::Map<String, Value>| {
        let id = vocab.len();
        vocab.entry(token).or_insert(Value::from(id));
    };
    for c in 'a'..='z' {
        add(c.to_string(), &mut vocab);
        add(format!("{c}</w>"), &mut vocab);
    }
    for word in TINY_WORDS.iter().filter(|w| w.len() > 1) {
        // Left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>".
        let chars: Vec<char> = word.chars().collect();
        let mut built = chars[0].to_string();
        for (i, &c) in chars.iter().enumerate().skip(1) {
            let piece = if i + 1 == chars.len() {
                format!("{c}</w>")
            } else {
                c.to_string()
            };
            merges.push(format!("{built} {piece}"));
            built.push_str(&piece);
            add(built.clone(), &mut vocab);
        }
    }
    // SDXL's second tokenizer pads with "!".
    add("!".into(), &mut vocab);
    add("<|startoftext|>".into(), &mut vocab);
    add("<|endoftext|>".into(), &mut vocab);
    let vocab_size = vocab.len();
    write("tokenizer", "vocab.json", &Value::Object(vocab))?;
    std::fs::write(dir.join("tokenizer/merges.txt"), merges.join("\n") + "\n")
        .map_err(|e| fail(&e))?;

    let clip = ClipTextConfig {
        vocab_size,
        embed_dim: dim,
        activation: Activation::QuickGelu,
        intermediate_size: 64,
        max_position_embeddings: 77,
        pad_with: None,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        projection_dim: dim,
    };
    write(
        "text_encoder",
        "config.json",
        &serde_json::json!({
            "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
            "vocab_size": vocab_size, "hidden_size": dim, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "projection_dim": dim,
            "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        }),
    )?;
    save_random(dir, "text_encoder", "model.safetensors", &|vb| {
        ClipTextTransformer::new(vb.pp("text_model"), &clip).map(|_| ())
    })?;

    Ok(())
}

/// Writes a tiny Stable Diffusion 1.x with random weights in the diffusers
/// layout (`model_index.json`, `text_encoder/`, `tokenizer/`, `unet/`,
/// `vae/`, `scheduler/`) to `dir`: the real names and configs at toy
/// sizes, built through candle's own constructors on a random `VarMap`.
/// `scheduler` is the scheduler's class (`DDIMScheduler`, `LCMScheduler`,
/// `EulerDiscreteScheduler`, ...); `in_channels` 9 makes an inpainting
/// model. For tests: no genuine diffusion weights ship in a registry
/// package.
pub fn write_tiny_model(
    dir: &Path,
    scheduler: &str,
    in_channels: usize,
) -> Result<(), DiffusionError> {
    let fail = |e: &dyn std::fmt::Display| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let write = |sub: &str, name: &str, value: &Value| write_json(dir, sub, name, value);
    let dim = 32;
    write_tiny_clip(dir, dim)?;
    let unet_json = serde_json::json!({
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 2,
        "block_out_channels": [32, 64], "center_input_sample": false,
        "cross_attention_dim": dim,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0,
        "in_channels": in_channels, "out_channels": 4, "layers_per_block": 1,
        "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
        "sample_size": 32, "use_linear_projection": false,
    });
    let (unet_cfg, _, _, _) = unet_settings(&unet_json).map_err(|e| fail(&e))?;
    write("unet", "config.json", &unet_json)?;
    save_random(dir, "unet", "diffusion_pytorch_model.safetensors", &|vb| {
        UNet::new(vb, in_channels, 4, &unet_cfg, None).map(|_| ())
    })?;

    write_tiny_vae_and_scheduler(dir, scheduler, 0.18215)?;
    let pipeline = if in_channels == 9 {
        "StableDiffusionInpaintPipeline"
    } else {
        "StableDiffusionPipeline"
    };
    write(
        ".",
        "model_index.json",
        &serde_json::json!({
            "_class_name": pipeline,
            "scheduler": ["diffusers", scheduler], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }),
    )
}

/// Writes a tiny SDXL with random weights in the diffusers layout: the
/// SD 1.x tiny parts plus `text_encoder_2/` (a `gelu` CLIP with
/// `text_projection`, wider than the first), `tokenizer_2/` (padding with
/// "!"), and a UNet with SDXL's layout (a plain first block, two
/// transformer layers in the next, linear projections, `text_time` added
/// conditioning over both encoders' 80-wide context).
pub fn write_tiny_xl_model(dir: &Path, scheduler: &str) -> Result<(), DiffusionError> {
    let fail = |e: &dyn std::fmt::Display| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let write = |sub: &str, name: &str, value: &Value| write_json(dir, sub, name, value);
    write_tiny_clip(dir, 32)?;
    std::fs::create_dir_all(dir.join("tokenizer_2")).map_err(|e| fail(&e))?;
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(
            dir.join("tokenizer").join(name),
            dir.join("tokenizer_2").join(name),
        )
        .map_err(|e| fail(&e))?;
    }
    write(
        "tokenizer_2",
        "tokenizer_config.json",
        &serde_json::json!({"pad_token": "!", "model_max_length": 77}),
    )?;
    let vocab_size = ClipTokenizer::load(&dir.join("tokenizer"), 77)
        .map_err(|e| fail(&e))?
        .tokenizer
        .get_vocab_size(true);
    let second = ClipTextSettings {
        vocab_size,
        hidden_size: 48,
        intermediate_size: 96,
        layers: 3,
        heads: 4,
        positions: 77,
        layer_norm_eps: 1e-5,
        exact_gelu: true,
        projection: Some(40),
    };
    let (bos, eos) = (vocab_size - 2, vocab_size - 1);
    write(
        "text_encoder_2",
        "config.json",
        &second.to_config(bos, eos, vocab_size - 3),
    )?;
    save_random(dir, "text_encoder_2", "model.safetensors", &|vb| {
        ClipText::new(vb.pp("text_model"), vb, &second).map(|_| ())
    })?;
    let unet_json = serde_json::json!({
        "_class_name": "UNet2DConditionModel", "act_fn": "silu",
        "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 40 + 6 * 8,
        "attention_head_dim": [2, 4], "block_out_channels": [32, 64],
        "center_input_sample": false, "cross_attention_dim": 32 + 48,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0,
        "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
        "sample_size": 32, "use_linear_projection": true,
    });
    let (unet_cfg, text_time, _, _) = unet_settings(&unet_json).map_err(|e| fail(&e))?;
    write("unet", "config.json", &unet_json)?;
    save_random(dir, "unet", "diffusion_pytorch_model.safetensors", &|vb| {
        UNet::new(vb, 4, 4, &unet_cfg, text_time).map(|_| ())
    })?;
    write_tiny_vae_and_scheduler(dir, scheduler, 0.13025)?;
    write(
        ".",
        "model_index.json",
        &serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true,
            "scheduler": ["diffusers", scheduler], "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        }),
    )
}

/// The tiny pipelines' VAE (four blocks: 8 pixels per latent cell, as in
/// the real models) and scheduler config.
fn write_tiny_vae_and_scheduler(
    dir: &Path,
    scheduler: &str,
    scaling_factor: f64,
) -> Result<(), DiffusionError> {
    let write = |sub: &str, name: &str, value: &Value| write_json(dir, sub, name, value);
    let vae_cfg = AutoEncoderKLConfig {
        block_out_channels: vec![8, 16, 16, 16],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 8,
        use_quant_conv: true,
        use_post_quant_conv: true,
    };
    write(
        "vae",
        "config.json",
        &serde_json::json!({
            "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 16, 16, 16],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
            "norm_num_groups": 8, "sample_size": 32, "scaling_factor": scaling_factor,
        }),
    )?;
    save_random(dir, "vae", "diffusion_pytorch_model.safetensors", &|vb| {
        AutoEncoderKL::new(vb, 3, 3, vae_cfg.clone()).map(|_| ())
    })?;

    write(
        "scheduler",
        "scheduler_config.json",
        &serde_json::json!({
            "_class_name": scheduler, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": if scheduler.starts_with("Euler") { "trailing" } else { "leading" },
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn request(prompt: &str, seed: u64) -> ImageRequest {
        ImageRequest {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: Some(64),
            height: Some(48),
            steps: 3,
            guidance: 7.5,
            seed,
            image: None,
            strength: 1.0,
            mask: None,
        }
    }

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory(png).expect("a PNG").to_rgb8()
    }

    /// Draws and encodes as PNG.
    pub(crate) fn draw(model: &Diffuser, request: &ImageRequest) -> Vec<u8> {
        model.generate(request).and_then(|d| d.png()).expect("draw")
    }

    #[test]
    fn leading_trailing_and_lcm_timesteps_follow_diffusers() {
        let mut s = Schedule::from_config(&serde_json::json!({
            "_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
        }))
        .expect("schedule");
        assert_eq!(s.timesteps(4), [751.0, 501.0, 251.0, 1.0]);
        s.spacing = Spacing::Trailing;
        assert_eq!(s.timesteps(4), [999.0, 749.0, 499.0, 249.0]);
        s.kind = SamplerKind::Lcm;
        assert_eq!(s.timesteps(4), [999.0, 759.0, 499.0, 259.0]);
        // scaled_linear: the last cumulative alpha of SD 1.5's schedule.
        assert!((s.alphas_cumprod[999] - 0.004_660_1).abs() < 1e-6);
    }

    #[test]
    fn the_clip_tokenizer_builds_words_and_pads() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), "DDIMScheduler", 4).expect("write");
        let t = ClipTokenizer::load(&dir.path().join("tokenizer"), 77).expect("tokenizer");
        let ids = t.ids("A  Cat on the HILL").expect("ids");
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], t.bos);
        let words: Vec<String> = ids[1..6]
            .iter()
            .map(|&i| t.tokenizer.id_to_token(i).unwrap_or_default())
            .collect();
        assert_eq!(words, ["a</w>", "cat</w>", "on</w>", "the</w>", "hill</w>"]);
        assert_eq!(ids[6], t.eos);
        assert!(ids[7..].iter().all(|&i| i == t.pad));
    }

    /// SD 1.x reads its CLIP-L through `clip_text`: its final normed
    /// states must be those of candle's CLIP text transformer, which the
    /// SD 1.x pipeline matched against diffusers before.
    #[test]
    fn sd1_text_states_match_candles_clip_transformer() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), "DDIMScheduler", 4).expect("write");
        let (tokenizer, ours, width) = StableDiffusion::load_clip_text(dir.path()).expect("load");
        let mut ids = tokenizer.ids("a red cat on the hill").expect("ids");
        ids.extend(tokenizer.ids("").expect("ids"));
        let states = ours
            .encode(&ids, tokenizer.length, tokenizer.eos)
            .expect("encode")
            .last;
        let weights = crate::hf::mmap_weights(&[dir.path().join("text_encoder/model.safetensors")])
            .expect("weights");
        let config = ClipTextConfig {
            vocab_size: tokenizer.tokenizer.get_vocab_size(true),
            embed_dim: width,
            activation: Activation::QuickGelu,
            intermediate_size: 64,
            max_position_embeddings: 77,
            pad_with: None,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            projection_dim: width,
        };
        let candles = ClipTextTransformer::new(weights.pp("text_model"), &config)
            .and_then(|t| {
                let ids = Tensor::from_slice(&ids, (2, tokenizer.length), &Device::Cpu)?;
                t.forward_with_mask(&ids, usize::MAX)
            })
            .expect("candle");
        assert_eq!(states.dims(), [2, 77, width]);
        let gap = (states - candles)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .expect("gap");
        assert!(gap < 1e-5, "largest difference {gap}");
    }

    #[test]
    fn a_seed_gives_the_same_png_and_sizes_are_honoured() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), "DDIMScheduler", 4).expect("write");
        let model = Diffuser::load(dir.path()).expect("load");
        assert_eq!(model.native_size(), 256);
        let first = draw(&model, &request("a red cat", 7));
        assert_eq!(decode(&first).dimensions(), (64, 48));
        assert_eq!(draw(&model, &request("a red cat", 7)), first);
        assert_ne!(draw(&model, &request("a red cat", 8)), first);
        assert_ne!(draw(&model, &request("a blue dog", 7)), first);
        let mut huge = request("a cat", 1);
        (huge.width, huge.height) = (Some(2048), Some(2048));
        let err = model.generate(&huge).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("too large"));
        let mut odd = request("a cat", 1);
        odd.width = Some(60);
        let err = model.generate(&odd).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`width`"));
    }

    #[test]
    fn every_sampler_draws_img2img_and_masks() {
        for scheduler in [
            "LCMScheduler",
            "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            write_tiny_model(dir.path(), scheduler, 4).expect("write");
            let model = Diffuser::load(dir.path()).expect("load");
            let png = draw(&model, &request("a dog", 3));
            assert_eq!(draw(&model, &request("a dog", 3)), png, "{scheduler}");
            // img2img at strength 0 is the source through the VAE; more
            // strength moves further from it.
            let mut img2img = request("a house", 3);
            img2img.image = Some(png.clone());
            img2img.strength = 0.0;
            let kept = draw(&model, &img2img);
            img2img.strength = 0.7;
            let moved = draw(&model, &img2img);
            assert_ne!(kept, moved, "{scheduler}");
            assert_eq!(decode(&moved).dimensions(), (64, 48));
            // A black mask keeps everything: the same as strength 0's
            // round trip through the VAE.
            let black = {
                let mut out = std::io::Cursor::new(Vec::new());
                image::RgbImage::new(64, 48)
                    .write_to(&mut out, image::ImageFormat::Png)
                    .expect("png");
                out.into_inner()
            };
            img2img.mask = Some(black);
            assert_eq!(draw(&model, &img2img), kept, "{scheduler}");
        }
    }

    #[test]
    fn an_inpainting_model_needs_image_and_mask() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), "DDIMScheduler", 9).expect("write");
        let model = Diffuser::load(dir.path()).expect("load");
        assert!(model.inpainting());
        let err = model
            .generate(&request("a cat", 1))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`mask`"));
        let plain = tempfile::tempdir().expect("tempdir");
        write_tiny_model(plain.path(), "DDIMScheduler", 4).expect("write");
        let source = draw(
            &Diffuser::load(plain.path()).expect("load"),
            &request("a hill", 2),
        );
        let mut inpaint = request("a red house", 5);
        inpaint.image = Some(source.clone());
        inpaint.mask = Some(source);
        let png = draw(&model, &inpaint);
        assert_eq!(decode(&png).dimensions(), (64, 48));
        assert_eq!(draw(&model, &inpaint), png);
    }

    #[test]
    fn a_tiny_sdxl_draws_with_both_encoders_and_its_added_conditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_xl_model(dir.path(), "EulerDiscreteScheduler").expect("write");
        let model = Diffuser::load(dir.path()).expect("load");
        assert_eq!(model.native_size(), 256);
        let first = draw(&model, &request("a red cat", 7));
        assert_eq!(decode(&first).dimensions(), (64, 48));
        assert_eq!(draw(&model, &request("a red cat", 7)), first);
        assert_ne!(draw(&model, &request("a red cat", 8)), first);
        assert_ne!(draw(&model, &request("a blue dog", 7)), first);
        // An empty negative prompt reads zeros; a given one is encoded.
        let mut negative = request("a red cat", 7);
        negative.negative_prompt = "a dog".into();
        assert_ne!(draw(&model, &negative), first);
        // The time ids carry the size: another size is another picture,
        // not a crop of this one.
        let mut square = request("a red cat", 7);
        square.height = Some(64);
        assert_eq!(decode(&draw(&model, &square)).dimensions(), (64, 64));
        // Unguided: one row through the UNet.
        let mut plain = request("a hill", 2);
        plain.guidance = 1.0;
        let png = draw(&model, &plain);
        assert_eq!(draw(&model, &plain), png);
    }

    #[test]
    fn mismatched_and_unbuilt_conditioning_is_refused_clearly() {
        let set = |dir: &Path, key: &str, value: Value| {
            let path = dir.join("unet/config.json");
            let mut c: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            c[key] = value;
            std::fs::write(&path, c.to_string()).expect("write");
        };
        let error = |dir: &Path| {
            Diffuser::load(dir)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), "DDIMScheduler", 4).expect("write");
        set(dir.path(), "addition_embed_type", "text_time".into());
        set(dir.path(), "addition_time_embed_dim", 8.into());
        set(
            dir.path(),
            "projection_class_embeddings_input_dim",
            80.into(),
        );
        assert!(error(dir.path()).contains("text_encoder_2 is missing"));
        set(dir.path(), "addition_embed_type", "image".into());
        assert!(error(dir.path()).contains("addition_embed_type"));

        let xl = tempfile::tempdir().expect("tempdir");
        write_tiny_xl_model(xl.path(), "EulerDiscreteScheduler").expect("write");
        set(
            xl.path(),
            "projection_class_embeddings_input_dim",
            90.into(),
        );
        assert!(error(xl.path()).contains("add_embedding takes 90"));
        set(
            xl.path(),
            "projection_class_embeddings_input_dim",
            88.into(),
        );
        set(xl.path(), "time_cond_proj_dim", 256.into());
        assert!(error(xl.path()).contains("time_cond_proj_dim"));
        std::fs::remove_dir_all(dir.path().join("vae")).expect("rm");
        assert!(Diffuser::load(dir.path()).is_err());
    }
}
