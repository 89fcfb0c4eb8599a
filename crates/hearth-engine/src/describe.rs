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
//!
//! [`ImageDescriber`] is the entry for both image-to-text architectures:
//! LLaVA here, Llama 3.2 Vision in [`crate::mllama`], chosen by
//! `config.json`'s `model_type`; `generate` is their shared sampling loop.

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

pub(crate) fn compute(e: candle_core::Error) -> DescribeError {
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
    /// Whether `max_tokens` (or the context) ended it rather than the
    /// model's end-of-turn.
    pub by_length: bool,
}

/// Receives an answer as it grows: first an empty piece once the prompt
/// (and image) are read, then each piece of text added since the last
/// call. Returning false stops the generation (its reader left).
pub type Sink<'a> = &'a mut dyn FnMut(&str) -> bool;

/// CLIP's image processor settings (`preprocessor_config.json`).
struct Preprocess {
    shortest_edge: u32,
    crop: u32,
    mean: [f32; 3],
    std: [f32; 3],
}

/// An image-to-text model, of the architecture its `config.json` names.
pub enum ImageDescriber {
    Llava(Llava),
    Mllama(crate::mllama::Mllama),
}

impl ImageDescriber {
    pub fn load(dir: &Path) -> Result<Self, DescribeError> {
        let fail = |reason: String| DescribeError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = crate::hf::json_file(dir, "config.json")
            .map_err(fail)?
            .ok_or_else(|| fail("config.json is missing".into()))?;
        match config.get("model_type").and_then(Value::as_str) {
            Some("mllama") => Ok(Self::Mllama(crate::mllama::Mllama::load(dir, &config)?)),
            Some("llava") => Ok(Self::Llava(Llava::load(dir, &config)?)),
            other => Err(fail(format!(
                "config.json says model_type {other:?}; Hearth reads \"llava\" and \"mllama\" here"
            ))),
        }
    }

    /// Describes an encoded image (or, without one, answers the text).
    /// `prompt` is the user's question in the model's chat format, or with
    /// `raw` the whole prompt (the image token in it places the image;
    /// without one the image goes first).
    pub fn describe(
        &self,
        image: Option<&[u8]>,
        prompt: &str,
        raw: bool,
        params: &GenerationParams,
    ) -> Result<Description, DescribeError> {
        self.answer(image, prompt, raw, params, &mut |_| true)
    }

    /// [`Self::describe`], the text going to `sink` as it grows.
    pub fn answer(
        &self,
        image: Option<&[u8]>,
        prompt: &str,
        raw: bool,
        params: &GenerationParams,
        sink: Sink,
    ) -> Result<Description, DescribeError> {
        match self {
            Self::Llava(m) => m.answer(image, prompt, raw, params, sink),
            Self::Mllama(m) => m.answer(image, prompt, raw, params, sink),
        }
    }

    /// A chat in the model's own format, ready for [`Self::describe`] with
    /// `raw`. `turns` are (role, text, carried the image).
    pub fn chat_prompt(&self, turns: &[(&str, &str, bool)]) -> String {
        match self {
            Self::Llava(_) => chat_prompt(turns),
            Self::Mllama(_) => crate::mllama::chat_prompt(turns),
        }
    }
}

/// `model_type` of the folder's `config.json`, when it has one.
fn vision_model_type(dir: &Path) -> Option<String> {
    crate::hf::json_file(dir, "config.json")
        .ok()
        .flatten()
        .and_then(|c| {
            c.get("model_type")
                .and_then(Value::as_str)
                .map(String::from)
        })
}

/// Whether `dir` holds an image-to-text model Hearth runs (LLaVA or Llama
/// 3.2 Vision; its `config.json` says so).
pub fn is_vision_folder(dir: &Path) -> bool {
    matches!(vision_model_type(dir).as_deref(), Some("llava" | "mllama"))
}

/// LLaVA 1.5.
pub struct Llava {
    tokenizer: tokenizers::Tokenizer,
    vision: ClipVisionTransformer,
    /// Index into candle's per-layer hidden states (`[layer 1, ..., layer
    /// N, pooled]`) of transformers' `vision_feature_layer`.
    feature_layer: usize,
    keep_class_token: bool,
    projector: (Linear, Linear),
    llama: candle_transformers::models::llama::Llama,
    llama_config: LlamaConfig,
    /// F16 where the checkpoint is float16 (llava-1.5-7b-hf is): the
    /// language model then holds half the memory, its attention and logits
    /// still in F32 (candle's llama upcasts them).
    text_dtype: DType,
    image_token: u32,
    eos: Vec<u32>,
    preprocess: Preprocess,
}

impl Llava {
    /// The model in `dir`, whose `config.json` (already read, and saying
    /// `model_type: "llava"`) is `config`.
    pub(crate) fn load(dir: &Path, config: &Value) -> Result<Self, DescribeError> {
        let fail = |reason: String| DescribeError::Load {
            path: dir.display().to_string(),
            reason,
        };
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
        let text_dtype = match ["dtype", "torch_dtype"]
            .iter()
            .find_map(|k| text_config.get(*k).or_else(|| config.get(*k)))
            .and_then(Value::as_str)
        {
            Some("float16") => DType::F16,
            _ => DType::F32,
        };
        let text_vb = vb.clone().set_dtype(text_dtype);
        let llama_vb = if text_vb.contains_tensor("language_model.model.embed_tokens.weight") {
            text_vb.pp("language_model")
        } else if text_vb.contains_tensor("model.language_model.embed_tokens.weight") {
            text_vb.rename_f(|name: &str| match name.strip_prefix("model.") {
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
            text_dtype,
            image_token,
            eos,
            preprocess,
        })
    }

    /// [`ImageDescriber::answer`] for LLaVA: the image's patches take the
    /// place of `<image>`.
    pub fn answer(
        &self,
        image: Option<&[u8]>,
        prompt: &str,
        raw: bool,
        params: &GenerationParams,
        sink: Sink,
    ) -> Result<Description, DescribeError> {
        let pixels = image.map(|image| self.pixels(image)).transpose()?;
        let text = match (raw, pixels.is_some()) {
            (true, true) if !prompt.contains("<image>") => format!("<image>\n{prompt}"),
            (true, _) => prompt.to_string(),
            (false, true) => format!("USER: <image>\n{prompt} ASSISTANT:"),
            (false, false) => format!("USER: {prompt} ASSISTANT:"),
        };
        let ids: Vec<u32> = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| DescribeError::BadInput(format!("`prompt` cannot be tokenized: {e}")))?
            .get_ids()
            .to_vec();
        let at = ids.iter().position(|&t| t == self.image_token);
        let features = match (&pixels, at) {
            (Some(pixels), Some(_)) => Some(
                self.image_features(pixels)
                    .and_then(|f| f.to_dtype(self.text_dtype))
                    .map_err(compute)?,
            ),
            (Some(_), None) => {
                return Err(DescribeError::BadInput(
                    "the prompt lost its image placeholder when tokenized".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(DescribeError::BadInput(
                    "the prompt has an <image> placeholder but no image came with it".into(),
                ));
            }
            (None, None) => None,
        };
        let patches = match &features {
            Some(f) => f.dim(0).map_err(compute)?,
            None => 1,
        };
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
        match (features, at) {
            (Some(features), Some(at)) => {
                if at > 0 {
                    pieces.push(embed(&ids[..at]).map_err(compute)?);
                }
                pieces.push(features);
                if at + 1 < ids.len() {
                    pieces.push(embed(&ids[at + 1..]).map_err(compute)?);
                }
            }
            _ => pieces.push(embed(&ids).map_err(compute)?),
        }
        let inputs = Tensor::cat(&pieces, 0)
            .and_then(|t| t.unsqueeze(0))
            .map_err(compute)?;
        let mut cache =
            Cache::new(true, self.text_dtype, &self.llama_config, &Device::Cpu).map_err(compute)?;
        let logits = self
            .llama
            .forward_input_embed(&inputs, 0, &mut cache)
            .and_then(|l| l.squeeze(0))
            .map_err(compute)?;
        let mut position = prompt_tokens;
        let decoder = Decoder {
            tokenizer: &self.tokenizer,
            eos: &self.eos,
        };
        let prompt = Prompt {
            ids: &ids,
            tokens: prompt_tokens,
            room: limit - prompt_tokens,
        };
        generate(&decoder, prompt, logits, params, sink, |token| {
            let next = Tensor::new(&[token], &Device::Cpu)?.unsqueeze(0)?;
            let logits = self.llama.forward(&next, position, &mut cache)?;
            position += 1;
            logits.squeeze(0)
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

/// What a model's answer needs from it beside its logits.
pub(crate) struct Decoder<'a> {
    pub tokenizer: &'a tokenizers::Tokenizer,
    pub eos: &'a [u32],
}

/// The prompt an answer follows: its ids (they seed the repetition
/// penalties), how many positions it takes (LLaVA's image is many), and
/// the room left after it in the context.
pub(crate) struct Prompt<'a> {
    pub ids: &'a [u32],
    pub tokens: usize,
    pub room: usize,
}

/// Samples after the prompt's `first` logits until an `eos` token, the
/// request's `max_tokens`, the room left in the context, or a `sink` that
/// returns false; `step` feeds one token and returns the next logits. The
/// text goes to `sink` as it grows (see [`Sink`]) and comes back whole.
pub(crate) fn generate(
    decoder: &Decoder,
    prompt: Prompt,
    first: Tensor,
    params: &GenerationParams,
    sink: Sink,
    mut step: impl FnMut(u32) -> candle_core::Result<Tensor>,
) -> Result<Description, DescribeError> {
    let history: Vec<i32> = prompt.ids.iter().map(|&t| t as i32).collect();
    let mut sampler = Sampler::new(params, &history);
    let budget = (params.max_tokens as usize).min(prompt.room);
    let decode = |ids: &[u32]| -> Result<String, DescribeError> {
        decoder
            .tokenizer
            .decode(ids, true)
            .map(|t| t.trim_start().to_string())
            .map_err(|e| DescribeError::Compute(format!("decoding: {e}")))
    };
    let mut out: Vec<u32> = Vec::new();
    let mut sent = String::new();
    let mut listening = sink("");
    let mut logits = first;
    while listening && out.len() < budget {
        let row = logits.to_vec1::<f32>().map_err(compute)?;
        let token = sampler.sample(&row) as u32;
        if decoder.eos.contains(&token) {
            break;
        }
        sampler.accept(token as i32);
        out.push(token);
        // Pieces go out once whole characters, and only while the decoded
        // text keeps what was already sent as its start.
        let text = decode(&out)?;
        if !text.ends_with('\u{FFFD}')
            && let Some(piece) = text.strip_prefix(sent.as_str())
            && !piece.is_empty()
        {
            listening = sink(piece);
            sent = text;
        }
        if out.len() == budget {
            break;
        }
        logits = step(token).map_err(compute)?;
    }
    let text = decode(&out)?;
    if listening
        && let Some(piece) = text.strip_prefix(sent.as_str())
        && !piece.is_empty()
    {
        sink(piece);
    }
    Ok(Description {
        by_length: out.len() == budget,
        text,
        prompt_tokens: prompt.tokens,
        completion_tokens: out.len(),
    })
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

/// Words of the tiny test tokenizers.
pub(crate) const TINY_WORDS: &[&str] = &[
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

/// Saves a tiny random image-to-text model built in `varmap`: its output
/// table (`language_model.lm_head.weight`) made to favour [`TINY_WORDS`],
/// `model.safetensors`, and a word-level `tokenizer.json` of `specials`
/// (the first after `<unk>` being begin-of-text), the words and the
/// `image` token, which comes last.
pub(crate) fn save_tiny(
    dir: &Path,
    varmap: &candle_nn::VarMap,
    specials: &[&str],
    image: &str,
) -> Result<(), String> {
    let words = specials.len()..specials.len() + TINY_WORDS.len();
    crate::hf::favour_words(varmap, "language_model.lm_head.weight", words)
        .map_err(|e| e.to_string())?;
    varmap
        .save(dir.join("model.safetensors"))
        .map_err(|e| e.to_string())?;
    let bos = specials.get(1).copied().unwrap_or("<s>");
    crate::hf::write_word_level_tokenizer(
        &dir.join("tokenizer.json"),
        specials,
        TINY_WORDS,
        &[image],
        crate::hf::template(&[(bos, 1)], &[]),
    )
    .map_err(|e| e.to_string())
}

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
    save_tiny(dir, &varmap, &specials, "<image>").map_err(|e| fail(&e))?;
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

/// Greedy decoding of at most `max_tokens`, for the image-to-text tests.
#[cfg(test)]
pub(crate) fn greedy(max_tokens: u32) -> GenerationParams {
    GenerationParams {
        max_tokens,
        temperature: 0.0,
        ..GenerationParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::test_png as png;

    #[test]
    fn a_tiny_llava_describes_within_the_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = ImageDescriber::load(dir.path()).expect("load");
        let image = png(40, 30, 3);
        let out = model
            .describe(Some(&image), "describe the image .", false, &greedy(12))
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
            .describe(Some(&image), "describe the image .", false, &greedy(12))
            .expect("again");
        assert_eq!(again, out);
        let short = model
            .describe(Some(&image), "what is this ?", false, &greedy(2))
            .expect("short");
        assert!(short.completion_tokens <= 2);
        let raw = model
            .describe(Some(&image), "a photo of", true, &greedy(3))
            .expect("raw");
        assert_eq!(raw.prompt_tokens, 4 + 4);
        let err = model
            .describe(Some(b"not an image"), "describe", false, &greedy(3))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`image`"));
    }

    /// A float16 checkpoint (llava-1.5-7b-hf is one) runs its language
    /// model in F16, half the memory.
    #[test]
    fn a_float16_checkpoint_runs_its_language_model_in_half_precision() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let image = png(40, 30, 3);
        let ask = |model: &ImageDescriber| {
            model
                .describe(Some(&image), "describe the image .", false, &greedy(12))
                .expect("describe")
        };
        let full = ImageDescriber::load(dir.path()).expect("load");
        let path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        config["torch_dtype"] = serde_json::json!("float16");
        std::fs::write(&path, config.to_string()).expect("write");
        let half = ImageDescriber::load(dir.path()).expect("load");
        let (ImageDescriber::Llava(f), ImageDescriber::Llava(h)) = (&full, &half) else {
            panic!("both are LLaVA");
        };
        assert_eq!((f.text_dtype, h.text_dtype), (DType::F32, DType::F16));
        let (answer, halved) = (ask(&full), ask(&half));
        assert!(answer.completion_tokens > 0, "{answer:?}");
        // A random tiny model's logits are near ties, which half precision
        // may order otherwise: the answer's shape is what is compared.
        assert_eq!(halved.prompt_tokens, answer.prompt_tokens);
        assert!(halved.completion_tokens > 0, "{halved:?}");
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
