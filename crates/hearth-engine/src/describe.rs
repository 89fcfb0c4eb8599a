//! Image-to-text with LLaVA 1.5 (`llava-hf/llava-1.5-7b-hf`) on candle,
//! from the Hugging Face layout: `config.json` (`model_type: "llava"`,
//! `vision_config`, `text_config`), the weights (`model.safetensors` or
//! shards listed by `model.safetensors.index.json`; the hub's names,
//! `language_model.model.*`, or those transformers 5 saves,
//! `model.language_model.*`), `tokenizer.json` and
//! `preprocessor_config.json`.
//!
//! transformers' `LlavaForConditionalGeneration` at inference: the CLIP
//! vision tower's hidden state at `vision_feature_layer` (class token
//! dropped by the "default" strategy), the two-layer GELU projector, and the
//! projected patches put in place of the `<image>` token of the prompt
//! (`USER: <image>\n{prompt} ASSISTANT:`) before a llama language model
//! generates the description.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::text_model::Activation;
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use candle_transformers::models::llama::{Cache, Config as LlamaConfig, LlamaEosToks};
use hearth_types::textgen::GenerationParams;
use serde_json::Value;

use crate::textgen::sampling::Sampler;
use crate::vision::{VisionError, decode_rgb, normalized};

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("cannot load the image-to-text model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadInput(String),
    #[error("image-to-text failed: {0}")]
    Compute(String),
}

fn compute(e: candle_core::Error) -> DescribeError {
    DescribeError::Compute(e.to_string())
}

impl From<VisionError> for DescribeError {
    fn from(e: VisionError) -> Self {
        match e {
            VisionError::BadImage(m) => DescribeError::BadInput(m),
            other => DescribeError::Compute(other.to_string()),
        }
    }
}

/// What the generated description is, with its token counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// CLIP's image processor settings (`preprocessor_config.json`).
struct Preprocess {
    shortest_edge: u32,
    crop: u32,
    mean: [f32; 3],
    std: [f32; 3],
}

pub struct ImageDescriber {
    tokenizer: tokenizers::Tokenizer,
    vision: ClipVisionTransformer,
    /// Index into candle's per-layer hidden states (`[layer 1, ..., layer
    /// N, pooled]`) of transformers' `vision_feature_layer`.
    feature_layer: usize,
    keep_class_token: bool,
    projector: (Linear, Linear),
    llama: candle_transformers::models::llama::Llama,
    llama_config: LlamaConfig,
    image_token: u32,
    eos: Vec<u32>,
    preprocess: Preprocess,
}

impl ImageDescriber {
    pub fn load(dir: &Path) -> Result<Self, DescribeError> {
        let fail = |reason: String| DescribeError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = crate::hf::config_of_type(dir, "llava").map_err(fail)?;
        let vision_config = config.get("vision_config").cloned().unwrap_or(Value::Null);
        let text_config = config.get("text_config").cloned().unwrap_or(Value::Null);
        let vnum = |k: &str, d: usize| {
            vision_config
                .get(k)
                .and_then(Value::as_u64)
                .map_or(d, |v| v as usize)
        };
        if let Some(act) = vision_config.get("hidden_act").and_then(Value::as_str)
            && act != "quick_gelu"
        {
            return Err(fail(format!(
                "vision hidden_act {act:?}: CLIP's quick_gelu expected"
            )));
        }
        let vision_cfg = ClipVisionConfig {
            embed_dim: vnum("hidden_size", 768),
            activation: Activation::QuickGelu,
            intermediate_size: vnum("intermediate_size", 3072),
            num_hidden_layers: vnum("num_hidden_layers", 12),
            num_attention_heads: vnum("num_attention_heads", 12),
            projection_dim: vnum("projection_dim", 512),
            num_channels: vnum("num_channels", 3),
            image_size: vnum("image_size", 224),
            patch_size: vnum("patch_size", 32),
        };
        // transformers' LlamaConfig defaults fill what `text_config` omits
        // (llava-1.5-7b-hf's names only a few keys).
        let tnum = |k: &str, d: usize| {
            text_config
                .get(k)
                .and_then(Value::as_u64)
                .map_or(d, |v| v as usize)
        };
        let heads = tnum("num_attention_heads", 32);
        let llama_config = LlamaConfig {
            hidden_size: tnum("hidden_size", 4096),
            intermediate_size: tnum("intermediate_size", 11008),
            vocab_size: tnum("vocab_size", 32000),
            num_hidden_layers: tnum("num_hidden_layers", 32),
            num_attention_heads: heads,
            num_key_value_heads: tnum("num_key_value_heads", heads),
            use_flash_attn: false,
            rms_norm_eps: text_config
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            // transformers 5 moved it into `rope_parameters`.
            rope_theta: text_config
                .get("rope_theta")
                .or_else(|| text_config.pointer("/rope_parameters/rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10000.0) as f32,
            bos_token_id: Some(tnum("bos_token_id", 1) as u32),
            eos_token_id: Some(LlamaEosToks::Single(tnum("eos_token_id", 2) as u32)),
            rope_scaling: None,
            max_position_embeddings: tnum("max_position_embeddings", 2048),
            tie_word_embeddings: text_config
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        for (what, width, heads) in [
            (
                "vision",
                vision_cfg.embed_dim,
                vision_cfg.num_attention_heads,
            ),
            (
                "text",
                llama_config.hidden_size,
                llama_config.num_attention_heads,
            ),
        ] {
            if heads == 0 || width % heads != 0 {
                return Err(fail(format!(
                    "{what} num_attention_heads {heads} does not divide hidden_size {width}"
                )));
            }
        }
        let layers = vision_cfg.num_hidden_layers as i64;
        let feature = config
            .get("vision_feature_layer")
            .and_then(Value::as_i64)
            .unwrap_or(-2);
        // transformers indexes (embeddings, layer 1, ..., layer N).
        let hf_index = if feature < 0 {
            layers + 1 + feature
        } else {
            feature
        };
        if !(1..=layers).contains(&hf_index) {
            return Err(fail(format!(
                "vision_feature_layer {feature} is not a layer's output"
            )));
        }
        let strategy = config
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
            .unwrap_or("default");

        let vb = crate::hf::weight_files(dir)
            .and_then(|files| crate::hf::mmap_weights(&files))
            .map_err(fail)?;
        // The hub's checkpoints name `vision_tower.vision_model.*` and
        // `language_model.model.*`; transformers 5 saves `vision_tower.*`,
        // and may nest everything under `model.` with a bare language model.
        let vision_vb = [
            "vision_tower.vision_model",
            "vision_tower",
            "model.vision_tower",
        ]
        .iter()
        .find(|p| vb.contains_tensor(&format!("{p}.embeddings.patch_embedding.weight")))
        .map(|p| vb.pp(*p))
        .ok_or_else(|| fail("no vision tower (vision_tower.*) in the weights".into()))?;
        let projector_vb = ["multi_modal_projector", "model.multi_modal_projector"]
            .iter()
            .find(|p| vb.contains_tensor(&format!("{p}.linear_1.weight")))
            .map(|p| vb.pp(*p))
            .ok_or_else(|| fail("no multi_modal_projector in the weights".into()))?;
        let llama_vb = if vb.contains_tensor("language_model.model.embed_tokens.weight") {
            vb.pp("language_model")
        } else if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            vb.clone()
                .rename_f(|name: &str| match name.strip_prefix("model.") {
                    Some(rest) => format!("model.language_model.{rest}"),
                    None => name.to_string(),
                })
        } else {
            return Err(fail(
                "no language model (language_model.*) in the weights".into(),
            ));
        };
        // candle's llama loader unwraps missing layers: check them first.
        for i in 0..llama_config.num_hidden_layers {
            let name = format!("model.layers.{i}.self_attn.q_proj.weight");
            if !llama_vb.contains_tensor(&name) {
                return Err(fail(format!("the language model lacks {name}")));
            }
        }
        let vision = ClipVisionTransformer::new(vision_vb, &vision_cfg)
            .map_err(|e| fail(format!("vision tower: {e}")))?;
        let text_hidden = llama_config.hidden_size;
        let projector = (
            candle_nn::linear(
                vision_cfg.embed_dim,
                text_hidden,
                projector_vb.pp("linear_1"),
            )
            .map_err(|e| fail(format!("projector: {e}")))?,
            candle_nn::linear(text_hidden, text_hidden, projector_vb.pp("linear_2"))
                .map_err(|e| fail(format!("projector: {e}")))?,
        );
        let llama = candle_transformers::models::llama::Llama::load(llama_vb, &llama_config)
            .map_err(|e| fail(format!("language model: {e}")))?;
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let image_token = config
            .get("image_token_index")
            .or_else(|| config.get("image_token_id"))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
            .or_else(|| tokenizer.token_to_id("<image>"))
            .ok_or_else(|| fail("no image token (image_token_index or <image>)".into()))?;
        let mut eos = vec![tnum("eos_token_id", 2) as u32];
        eos.extend(tokenizer.token_to_id("</s>"));

        let processor = crate::hf::json_file(dir, "preprocessor_config.json")
            .map_err(fail)?
            .unwrap_or(Value::Null);
        let size = |pointer: &str| processor.pointer(pointer).and_then(Value::as_u64);
        let image_size = vision_cfg.image_size as u64;
        let preprocess = Preprocess {
            shortest_edge: size("/size/shortest_edge")
                .or_else(|| size("/size"))
                .unwrap_or(image_size) as u32,
            crop: size("/crop_size/height")
                .or_else(|| size("/crop_size"))
                .unwrap_or(image_size) as u32,
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
        if preprocess.crop as usize != vision_cfg.image_size {
            return Err(fail(format!(
                "the processor crops {} pixels, the vision tower takes {}",
                preprocess.crop, vision_cfg.image_size
            )));
        }
        Ok(Self {
            tokenizer,
            vision,
            feature_layer: (hf_index - 1) as usize,
            keep_class_token: strategy == "full",
            projector,
            llama,
            llama_config,
            image_token,
            eos,
            preprocess,
        })
    }

    /// Describes an encoded image. `prompt` is the user's question in the
    /// model's chat format, or with `raw` the whole prompt (an `<image>`
    /// in it places the image; without one the image goes first).
    pub fn describe(
        &self,
        image: &[u8],
        prompt: &str,
        raw: bool,
        params: &GenerationParams,
    ) -> Result<Description, DescribeError> {
        let pixels = self.pixels(image)?;
        let text = if raw {
            if prompt.contains("<image>") {
                prompt.to_string()
            } else {
                format!("<image>\n{prompt}")
            }
        } else {
            format!("USER: <image>\n{prompt} ASSISTANT:")
        };
        let ids: Vec<u32> = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| DescribeError::BadInput(format!("`prompt` cannot be tokenized: {e}")))?
            .get_ids()
            .to_vec();
        let Some(at) = ids.iter().position(|&t| t == self.image_token) else {
            return Err(DescribeError::BadInput(
                "the prompt lost its image placeholder when tokenized".into(),
            ));
        };
        let features = self.image_features(&pixels).map_err(compute)?;
        let patches = features.dim(0).map_err(compute)?;
        let prompt_tokens = ids.len() - 1 + patches;
        let limit = self.llama_config.max_position_embeddings;
        if prompt_tokens >= limit {
            return Err(DescribeError::BadInput(format!(
                "the prompt and image take {prompt_tokens} tokens; the model's context is {limit}"
            )));
        }
        let embed = |part: &[u32]| -> candle_core::Result<Tensor> {
            let t = Tensor::new(part, &Device::Cpu)?.unsqueeze(0)?;
            self.llama.embed(&t)?.squeeze(0)
        };
        let mut pieces = Vec::new();
        if at > 0 {
            pieces.push(embed(&ids[..at]).map_err(compute)?);
        }
        pieces.push(features);
        if at + 1 < ids.len() {
            pieces.push(embed(&ids[at + 1..]).map_err(compute)?);
        }
        let inputs = Tensor::cat(&pieces, 0)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute)?;
        let mut cache =
            Cache::new(true, DType::F32, &self.llama_config, &Device::Cpu).map_err(compute)?;
        let mut logits = self
            .llama
            .forward_input_embed(&inputs, 0, &mut cache)
            .map_err(compute)?;
        let history: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let mut sampler = Sampler::new(params, &history);
        let budget = (params.max_tokens as usize).min(limit - prompt_tokens);
        let mut out: Vec<u32> = Vec::new();
        let mut position = prompt_tokens;
        while out.len() < budget {
            let row = logits
                .squeeze(0)
                .and_then(|l| l.to_vec1::<f32>())
                .map_err(compute)?;
            let token = sampler.sample(&row) as u32;
            if self.eos.contains(&token) {
                break;
            }
            sampler.accept(token as i32);
            out.push(token);
            if out.len() == budget {
                break;
            }
            let next = Tensor::new(&[token], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(compute)?;
            logits = self
                .llama
                .forward(&next, position, &mut cache)
                .map_err(compute)?;
            position += 1;
        }
        let text = self
            .tokenizer
            .decode(&out, true)
            .map_err(|e| DescribeError::Compute(format!("decoding: {e}")))?;
        Ok(Description {
            text: text.trim().to_string(),
            prompt_tokens,
            completion_tokens: out.len(),
        })
    }

    /// The projected image patches, `[patches, text hidden]`.
    fn image_features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let states = self.vision.output_hidden_states(pixels)?;
        let chosen = states
            .get(self.feature_layer)
            .ok_or_else(|| candle_core::Error::Msg("no such vision layer".into()))?
            .i(0)?;
        let chosen = if self.keep_class_token {
            chosen
        } else {
            chosen.i(1..)?
        };
        let hidden = self.projector.0.forward(&chosen)?.gelu_erf()?;
        self.projector.1.forward(&hidden)
    }

    /// CLIP's processing: the shorter side to `shortest_edge` (bicubic),
    /// the centre `crop` square, CLIP's mean and std.
    fn pixels(&self, bytes: &[u8]) -> Result<Tensor, DescribeError> {
        let rgb = decode_rgb(bytes, "image")?;
        let (w, h) = rgb.dimensions();
        let p = &self.preprocess;
        let scale = p.shortest_edge as f64 / f64::from(w.min(h));
        // transformers rounds the longer side down (int()).
        let (rw, rh) = if w <= h {
            (p.shortest_edge, (f64::from(h) * scale) as u32)
        } else {
            ((f64::from(w) * scale) as u32, p.shortest_edge)
        };
        let (rw, rh) = (rw.max(p.crop), rh.max(p.crop));
        let resized =
            image::imageops::resize(&rgb, rw, rh, image::imageops::FilterType::CatmullRom);
        let (left, top) = ((rw - p.crop) / 2, (rh - p.crop) / 2);
        let crop = image::imageops::crop_imm(&resized, left, top, p.crop, p.crop).to_image();
        Ok(normalized(&crop, p.mean, p.std)?)
    }
}

/// Whether `dir` holds a LLaVA model (its `config.json` says so).
pub fn is_llava_folder(dir: &Path) -> bool {
    crate::hf::config_of_type(dir, "llava").is_ok()
}

/// A chat rendered as llava-1.5-hf's chat template does: `ROLE: ` before
/// each user and assistant turn (system text bare), `<image>\n` at the
/// start of the turn that carried the image, each text followed by a space,
/// and `ASSISTANT:` to answer. `turns` are (role, text, carried the image).
pub fn chat_prompt(turns: &[(&str, &str, bool)]) -> String {
    let mut prompt = String::new();
    for (role, text, image) in turns {
        if *role != "system" {
            prompt.push_str(&role.to_uppercase());
            prompt.push_str(": ");
        }
        if *image {
            prompt.push_str("<image>\n");
        }
        prompt.push_str(text);
        prompt.push(' ');
    }
    prompt.push_str("ASSISTANT:");
    prompt
}

/// Words of the tiny test tokenizer.
const TINY_WORDS: &[&str] = &[
    "user",
    ":",
    "assistant",
    "describe",
    "the",
    "image",
    ".",
    "a",
    "cat",
    "on",
    "red",
    "mat",
    "what",
    "is",
    "this",
    "?",
    "it",
    "small",
    "photo",
    "of",
];

/// Writes a tiny LLaVA 1.5 with random weights in the hub's layout
/// (`config.json` with `vision_config`/`text_config`, `model.safetensors`
/// with `vision_tower.vision_model.*`, `multi_modal_projector.*`,
/// `language_model.*`, a word-level `tokenizer.json` with `<image>`, a CLIP
/// `preprocessor_config.json`) to `dir`: 28-pixel images in 14-pixel
/// patches. For tests: no genuine image-to-text weights ship in a registry
/// package.
pub fn write_tiny_model(dir: &Path) -> Result<(), DescribeError> {
    let fail = |e: &dyn std::fmt::Display| DescribeError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let specials = ["<unk>", "<s>", "</s>"];
    let image_token = specials.len() + TINY_WORDS.len();
    let vocab_size = image_token + 1;
    let config = serde_json::json!({
        "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": image_token, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 28, "patch_size": 14, "projection_dim": 32, "hidden_act": "quick_gelu"},
        "text_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "vocab_size": vocab_size, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
            "bos_token_id": 1, "eos_token_id": 2},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let vision = ClipVisionConfig {
        embed_dim: 32,
        activation: Activation::QuickGelu,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        projection_dim: 32,
        num_channels: 3,
        image_size: 28,
        patch_size: 14,
    };
    let text = LlamaConfig {
        hidden_size: 32,
        intermediate_size: 64,
        vocab_size,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        use_flash_attn: false,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        bos_token_id: Some(1),
        eos_token_id: Some(LlamaEosToks::Single(2)),
        rope_scaling: None,
        max_position_embeddings: 128,
        tie_word_embeddings: false,
    };
    ClipVisionTransformer::new(vb.pp("vision_tower.vision_model"), &vision)
        .map_err(|e| fail(&e))?;
    candle_nn::linear(32, 32, vb.pp("multi_modal_projector.linear_1")).map_err(|e| fail(&e))?;
    candle_nn::linear(32, 32, vb.pp("multi_modal_projector.linear_2")).map_err(|e| fail(&e))?;
    candle_transformers::models::llama::Llama::load(vb.pp("language_model"), &text)
        .map_err(|e| fail(&e))?;
    crate::hf::favour_words(
        &varmap,
        "language_model.lm_head.weight",
        specials.len()..image_token,
    )
    .map_err(|e| fail(&e))?;
    varmap
        .save(dir.join("model.safetensors"))
        .map_err(|e| fail(&e))?;

    crate::hf::write_word_level_tokenizer(
        &dir.join("tokenizer.json"),
        &specials,
        TINY_WORDS,
        &["<image>"],
        crate::hf::template(&[("<s>", 1)], &[]),
    )
    .map_err(|e| fail(&e))?;
    let processor = serde_json::json!({
        "image_processor_type": "CLIPImageProcessor", "do_resize": true, "do_center_crop": true,
        "size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28},
        "do_normalize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
    });
    std::fs::write(dir.join("preprocessor_config.json"), processor.to_string())
        .map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::test_png as png;

    fn greedy(max_tokens: u32) -> GenerationParams {
        GenerationParams {
            max_tokens,
            temperature: 0.0,
            ..GenerationParams::default()
        }
    }

    #[test]
    fn a_tiny_llava_describes_within_the_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = ImageDescriber::load(dir.path()).expect("load");
        let image = png(40, 30, 3);
        let out = model
            .describe(&image, "describe the image .", false, &greedy(12))
            .expect("describe");
        // "<s> user : <image> describe the image . assistant :" is 10 ids,
        // the image 4 patches in place of one.
        assert_eq!(out.prompt_tokens, 9 + 4);
        assert!(out.completion_tokens <= 12);
        assert!(
            out.text.split_whitespace().all(|w| TINY_WORDS.contains(&w)),
            "{}",
            out.text
        );
        let again = model
            .describe(&image, "describe the image .", false, &greedy(12))
            .expect("again");
        assert_eq!(again, out);
        let short = model
            .describe(&image, "what is this ?", false, &greedy(2))
            .expect("short");
        assert!(short.completion_tokens <= 2);
        let raw = model
            .describe(&image, "a photo of", true, &greedy(3))
            .expect("raw");
        assert_eq!(raw.prompt_tokens, 4 + 4);
        let err = model
            .describe(b"not an image", "describe", false, &greedy(3))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`image`"));
    }

    #[test]
    fn chats_render_as_llava_templates_do() {
        let prompt = chat_prompt(&[
            ("system", "be brief", false),
            ("user", "what is this?", true),
            ("assistant", "a cat", false),
            ("user", "what colour?", false),
        ]);
        assert_eq!(
            prompt,
            "be brief USER: <image>\nwhat is this? ASSISTANT: a cat USER: what colour? ASSISTANT:"
        );
    }

    #[test]
    fn a_folder_that_is_not_llava_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        config["model_type"] = "llava_next".into();
        std::fs::write(&path, config.to_string()).expect("write");
        let err = ImageDescriber::load(dir.path())
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("model_type"));
        std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
        config["model_type"] = "llava".into();
        std::fs::write(&path, config.to_string()).expect("write");
        let err = ImageDescriber::load(dir.path())
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("model.safetensors"));
    }
}
