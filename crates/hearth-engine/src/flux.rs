//! FLUX text-to-image (`black-forest-labs/FLUX.1-schnell`) on candle's
//! `flux`, from the repository's layout: the transformer and autoencoder as
//! Black Forest Labs ship them (`flux1-schnell.safetensors` or
//! `flux1-dev.safetensors`, `ae.safetensors`), their diffusers configs
//! (`transformer/config.json`, `vae/config.json`) when present, and the two
//! text encoders in diffusers folders: CLIP-L (`text_encoder/`,
//! `tokenizer/`) for the pooled vector and T5 (`text_encoder_2/`,
//! `tokenizer_2/tokenizer.json`) for the sequence.
//!
//! Sampling is candle's rectified-flow Euler walk (schnell's unshifted
//! schedule, dev's shifted one with its guidance embedding); the starting
//! noise comes from the request's seed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::flux;
use candle_transformers::models::t5::{Config as T5Config, T5EncoderModel};
use serde_json::Value;

use crate::diffusion::{ClipTokenizer, DiffusionError, ImageRequest, Noise};

/// The transformer files Hearth recognises, as the FLUX repositories name
/// them.
const TRANSFORMER_FILES: [&str; 2] = ["flux1-schnell.safetensors", "flux1-dev.safetensors"];

fn compute(e: candle_core::Error) -> DiffusionError {
    DiffusionError::Compute(e.to_string())
}

pub struct Flux {
    clip_tokenizer: ClipTokenizer,
    clip: ClipTextTransformer,
    t5_tokenizer: tokenizers::Tokenizer,
    /// candle's T5 encoder needs `&mut` to run.
    t5: Mutex<T5EncoderModel>,
    t5_length: usize,
    t5_pad: u32,
    model: flux::model::Flux,
    autoencoder: flux::autoencoder::AutoEncoder,
    guidance_embed: bool,
    native_size: u32,
}

/// The transformer file of a FLUX folder, if it is one.
pub(crate) fn transformer_file(dir: &Path) -> Option<PathBuf> {
    TRANSFORMER_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .filter(|_| dir.join("ae.safetensors").is_file())
}

/// `model.safetensors` of a sub-folder, or the shards its index lists.
fn folder_weights(dir: &Path) -> Result<VarBuilder<'static>, String> {
    crate::hf::mmap_weights(&crate::hf::weight_files(dir)?)
}

impl Flux {
    pub(crate) fn load(dir: &Path, transformer: &Path) -> Result<Self, DiffusionError> {
        let fail = |reason: String| DiffusionError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let json = |name: &str| {
            crate::hf::json_file(dir, name)
                .map_err(fail)
                .map(|v| v.unwrap_or(Value::Null))
        };
        let dev = transformer
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("dev"));

        let t = json("transformer/config.json")?;
        let tnum = |k: &str, d: usize| t.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize);
        let heads = tnum("num_attention_heads", 24);
        if heads == 0 || tnum("attention_head_dim", 128) == 0 {
            return Err(fail(
                "transformer/config.json: num_attention_heads and attention_head_dim must be positive"
                    .into(),
            ));
        }
        let config = flux::model::Config {
            in_channels: tnum("in_channels", 64),
            vec_in_dim: tnum("pooled_projection_dim", 768),
            context_in_dim: tnum("joint_attention_dim", 4096),
            hidden_size: heads * tnum("attention_head_dim", 128),
            mlp_ratio: 4.0,
            num_heads: heads,
            depth: tnum("num_layers", 19),
            depth_single_blocks: tnum("num_single_layers", 38),
            axes_dim: crate::hf::sizes(&t, "axes_dims_rope", &[16, 56, 56]),
            theta: 10_000,
            qkv_bias: true,
            guidance_embed: t
                .get("guidance_embeds")
                .and_then(Value::as_bool)
                .unwrap_or(dev),
        };
        let model = flux::model::Flux::new(
            &config,
            crate::hf::mmap_weights(&[transformer.to_path_buf()]).map_err(fail)?,
        )
        .map_err(|e| fail(format!("transformer: {e}")))?;

        let v = json("vae/config.json")?;
        let channels = crate::hf::sizes(&v, "block_out_channels", &[128, 256, 512, 512]);
        let ch = channels.first().copied().unwrap_or(128);
        if channels.len() != 4 || channels.iter().any(|&c| c == 0 || c % 32 != 0) {
            return Err(fail(format!(
                "vae block_out_channels {channels:?}: four blocks of multiples of 32 expected"
            )));
        }
        let vnum = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
        let ae_config = flux::autoencoder::Config {
            resolution: 256,
            in_channels: 3,
            ch,
            out_ch: 3,
            ch_mult: channels.iter().map(|c| c / ch).collect(),
            num_res_blocks: vnum("layers_per_block", 2.0) as usize,
            z_channels: vnum("latent_channels", 16.0) as usize,
            scale_factor: vnum("scaling_factor", 0.3611),
            shift_factor: vnum("shift_factor", 0.1159),
        };
        let autoencoder = flux::autoencoder::AutoEncoder::new(
            &ae_config,
            crate::hf::mmap_weights(&[dir.join("ae.safetensors")]).map_err(fail)?,
        )
        .map_err(|e| fail(format!("autoencoder: {e}")))?;

        let c = json("text_encoder/config.json")?;
        let cnum = |k: &str, d: usize| c.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize);
        let clip_config = ClipTextConfig {
            vocab_size: cnum("vocab_size", 49408),
            embed_dim: cnum("hidden_size", 768),
            activation: Activation::QuickGelu,
            intermediate_size: cnum("intermediate_size", 3072),
            max_position_embeddings: cnum("max_position_embeddings", 77),
            pad_with: None,
            num_hidden_layers: cnum("num_hidden_layers", 12),
            num_attention_heads: cnum("num_attention_heads", 12),
            projection_dim: cnum("projection_dim", 768),
        };
        let clip_weights = folder_weights(&dir.join("text_encoder")).map_err(fail)?;
        let clip_weights = if clip_weights.contains_tensor("text_model.final_layer_norm.weight") {
            clip_weights.pp("text_model")
        } else {
            clip_weights
        };
        let clip = ClipTextTransformer::new(clip_weights, &clip_config)
            .map_err(|e| fail(format!("text_encoder: {e}")))?;
        let clip_tokenizer =
            ClipTokenizer::load(&dir.join("tokenizer"), clip_config.max_position_embeddings)
                .map_err(fail)?;

        let t5_config: T5Config = serde_json::from_value(json("text_encoder_2/config.json")?)
            .map_err(|e| fail(format!("text_encoder_2/config.json: {e}")))?;
        let t5 = T5EncoderModel::load(
            folder_weights(&dir.join("text_encoder_2")).map_err(fail)?,
            &t5_config,
        )
        .map_err(|e| fail(format!("text_encoder_2: {e}")))?;
        let t5_tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer_2").join("tokenizer.json"))
                .map_err(|e| {
                    fail(format!(
                        "tokenizer_2/tokenizer.json: {e} (convert the repository's spiece.model)"
                    ))
                })?;
        let native_size = v.get("sample_size").and_then(Value::as_u64).unwrap_or(1024) as u32;
        Ok(Self {
            clip_tokenizer,
            clip,
            t5_tokenizer,
            t5: Mutex::new(t5),
            // The pipelines' max_sequence_length: 256 for schnell, 512 for dev.
            t5_length: if dev { 512 } else { 256 },
            t5_pad: t5_config.pad_token_id as u32,
            model,
            autoencoder,
            guidance_embed: config.guidance_embed,
            native_size,
        })
    }

    pub(crate) fn native_size(&self) -> u32 {
        self.native_size
    }

    /// Draws the request; `start` replaces the seed's starting noise.
    pub(crate) fn generate(
        &self,
        request: &ImageRequest,
        start: Option<Tensor>,
    ) -> Result<image::RgbImage, DiffusionError> {
        if request.image.is_some() || request.mask.is_some() {
            return Err(DiffusionError::BadInput(
                "FLUX takes no `image` or `mask` here (no img2img or inpainting)".into(),
            ));
        }
        let width = request.width.unwrap_or(self.native_size) as usize;
        let height = request.height.unwrap_or(self.native_size) as usize;
        for (field, size) in [("width", width), ("height", height)] {
            if size % 16 != 0 || size == 0 {
                return Err(DiffusionError::BadInput(format!(
                    "`{field}` must be a multiple of 16, got {size}"
                )));
            }
        }
        if request.steps == 0 {
            return Err(DiffusionError::BadInput(
                "`steps` must be at least 1".into(),
            ));
        }
        let t5 = self.t5_embedding(&request.prompt)?;
        let clip = self.clip_embedding(&request.prompt)?;
        let shape = (1, 16, height / 8, width / 8);
        let noise = match start {
            Some(given) if given.dims() == [shape.0, shape.1, shape.2, shape.3] => given,
            Some(given) => {
                return Err(DiffusionError::BadInput(format!(
                    "the starting latents are {:?}, this size needs {shape:?}",
                    given.dims()
                )));
            }
            None => {
                let zeros = Tensor::zeros(shape, DType::F32, &Device::Cpu).map_err(compute)?;
                Noise::new(request.seed).like(&zeros).map_err(compute)?
            }
        };
        let state = flux::sampling::State::new(&t5, &clip, &noise).map_err(compute)?;
        let shift = if self.guidance_embed {
            Some((state.img.dim(1).map_err(compute)?, 0.5, 1.15))
        } else {
            None
        };
        let timesteps = flux::sampling::get_schedule(request.steps, shift);
        let latents = flux::sampling::denoise(
            &self.model,
            &state.img,
            &state.img_ids,
            &state.txt,
            &state.txt_ids,
            &state.vec,
            &timesteps,
            request.guidance,
        )
        .and_then(|img| flux::sampling::unpack(&img, height, width))
        .map_err(compute)?;
        let decoded = self.autoencoder.decode(&latents).map_err(compute)?;
        let pixels: Vec<u8> = decoded
            .clamp(-1f32, 1f32)
            .and_then(|x| (x + 1.0)? * 127.5)
            .and_then(|x| x.round())
            .and_then(|x| x.to_dtype(DType::U8))
            .and_then(|x| x.squeeze(0))
            .and_then(|x| x.permute((1, 2, 0)))
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1::<u8>())
            .map_err(compute)?;
        image::RgbImage::from_raw(width as u32, height as u32, pixels)
            .ok_or_else(|| DiffusionError::Compute("decoded image has the wrong size".into()))
    }

    /// T5's sequence for the prompt, padded (or cut) to the pipeline's
    /// length: `[1, length, d]`.
    fn t5_embedding(&self, prompt: &str) -> Result<Tensor, DiffusionError> {
        let mut ids: Vec<u32> = self
            .t5_tokenizer
            .encode(prompt, true)
            .map_err(|e| DiffusionError::BadInput(format!("`prompt` cannot be tokenized: {e}")))?
            .get_ids()
            .to_vec();
        ids.resize(self.t5_length, self.t5_pad);
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute)?;
        let mut t5 = self
            .t5
            .lock()
            .map_err(|_| DiffusionError::Compute("the T5 encoder failed earlier".into()))?;
        t5.forward(&ids).map_err(compute)
    }

    /// CLIP's pooled vector for the prompt, `[1, d]`.
    fn clip_embedding(&self, prompt: &str) -> Result<Tensor, DiffusionError> {
        let ids = self.clip_tokenizer.ids(prompt)?;
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute)?;
        self.clip.forward(&ids).map_err(compute)
    }
}

/// Words of the tiny T5 tokenizer.
const TINY_WORDS: &[&str] = &[
    "a", "cat", "dog", "red", "blue", "house", "on", "the", "hill",
];

/// Writes a tiny FLUX.1-schnell with random weights in the repository's
/// layout (`model_index.json`, `flux1-schnell.safetensors`, `ae.safetensors`,
/// `transformer/config.json`, `vae/config.json` with a 128-pixel native
/// size, `text_encoder/` + `tokenizer/` (CLIP), `text_encoder_2/` +
/// `tokenizer_2/tokenizer.json` (T5)) to `dir`. For tests: no genuine
/// diffusion weights ship in a registry package.
pub fn write_tiny_model(dir: &Path) -> Result<(), DiffusionError> {
    let fail = |e: &dyn std::fmt::Display| DiffusionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let write =
        |sub: &str, name: &str, value: &Value| crate::diffusion::write_json(dir, sub, name, value);
    let dim = 32;
    crate::diffusion::write_tiny_clip(dir, dim)?;
    write(
        ".",
        "model_index.json",
        &serde_json::json!({
            "_class_name": "FluxPipeline",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }),
    )?;

    let transformer = flux::model::Config {
        in_channels: 64,
        vec_in_dim: dim,
        context_in_dim: dim,
        hidden_size: 32,
        mlp_ratio: 4.0,
        num_heads: 2,
        depth: 1,
        depth_single_blocks: 1,
        axes_dim: vec![4, 6, 6],
        theta: 10_000,
        qkv_bias: true,
        guidance_embed: false,
    };
    write(
        "transformer",
        "config.json",
        &serde_json::json!({
            "_class_name": "FluxTransformer2DModel", "in_channels": 64, "patch_size": 1,
            "pooled_projection_dim": dim, "joint_attention_dim": dim, "num_attention_heads": 2,
            "attention_head_dim": 16, "num_layers": 1, "num_single_layers": 1,
            "axes_dims_rope": [4, 6, 6], "guidance_embeds": false,
        }),
    )?;
    crate::diffusion::save_random(dir, ".", "flux1-schnell.safetensors", &|vb| {
        flux::model::Flux::new(&transformer, vb).map(|_| ())
    })?;
    let autoencoder = flux::autoencoder::Config {
        resolution: 256,
        in_channels: 3,
        ch: 32,
        out_ch: 3,
        ch_mult: vec![1, 1, 1, 1],
        num_res_blocks: 1,
        z_channels: 16,
        scale_factor: 0.3611,
        shift_factor: 0.1159,
    };
    write(
        "vae",
        "config.json",
        &serde_json::json!({
            "_class_name": "AutoencoderKL", "block_out_channels": [32, 32, 32, 32],
            "layers_per_block": 1, "latent_channels": 16, "scaling_factor": 0.3611,
            "shift_factor": 0.1159, "sample_size": 128, "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
                "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                "UpDecoderBlock2D"],
            "norm_num_groups": 32, "act_fn": "silu", "use_quant_conv": false,
            "use_post_quant_conv": false, "mid_block_add_attention": true,
        }),
    )?;
    crate::diffusion::save_random(dir, ".", "ae.safetensors", &|vb| {
        flux::autoencoder::AutoEncoder::new(&autoencoder, vb).map(|_| ())
    })?;

    let specials = ["<pad>", "</s>", "<unk>"];
    let t5_json = serde_json::json!({
        "vocab_size": specials.len() + TINY_WORDS.len(), "d_model": dim, "d_kv": 8, "d_ff": 64,
        "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": true,
        "tie_word_embeddings": false, "pad_token_id": 0, "eos_token_id": 1,
    });
    write("text_encoder_2", "config.json", &t5_json)?;
    let t5: T5Config = serde_json::from_value(t5_json).map_err(|e| fail(&e))?;
    crate::diffusion::save_random(dir, "text_encoder_2", "model.safetensors", &|vb| {
        // The embedding under transformers' name, `shared.weight` (made
        // first, so that candle's loader takes it).
        vb.get_with_hints(
            (t5.vocab_size, t5.d_model),
            "shared.weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        T5EncoderModel::load(vb, &t5).map(|_| ())
    })?;
    std::fs::create_dir_all(dir.join("tokenizer_2")).map_err(|e| fail(&e))?;
    crate::hf::write_word_level_tokenizer(
        &dir.join("tokenizer_2").join("tokenizer.json"),
        &specials,
        TINY_WORDS,
        &[],
        crate::hf::template(&[], &[("</s>", 1)]),
    )
    .map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::Diffuser;
    use crate::diffusion::tests::draw;

    fn request(prompt: &str, seed: u64) -> ImageRequest {
        ImageRequest {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: None,
            height: None,
            steps: 2,
            guidance: 0.0,
            seed,
            image: None,
            strength: 1.0,
            mask: None,
        }
    }

    #[test]
    fn a_tiny_flux_draws_its_native_size_and_a_seed_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = Diffuser::load(dir.path()).expect("load");
        assert!(matches!(model, Diffuser::Flux(_)));
        assert_eq!(model.native_size(), 128);
        let png = draw(&model, &request("a red cat", 4));
        let image = image::load_from_memory(&png).expect("png").to_rgb8();
        assert_eq!(image.dimensions(), (128, 128));
        assert_eq!(draw(&model, &request("a red cat", 4)), png);
        assert_ne!(draw(&model, &request("a red cat", 5)), png);
        assert_ne!(draw(&model, &request("a blue house", 4)), png);
        let mut sized = request("a dog", 1);
        (sized.width, sized.height) = (Some(64), Some(96));
        let image = image::load_from_memory(&draw(&model, &sized)).expect("png");
        assert_eq!((image.width(), image.height()), (64, 96));
        sized.width = Some(72);
        let err = model.generate(&sized).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`width`"));
        let mut img2img = request("a dog", 1);
        img2img.image = Some(png);
        assert!(model.generate(&img2img).is_err());
    }
}
