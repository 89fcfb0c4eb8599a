//! Local inference, with no HTTP and no SQL.
//!
//! - [`textgen`]: GGUF text generation on llama.cpp (through `llama-cpp-2`):
//!   chat templates rendered with minijinja, a sampler, and one scheduler
//!   thread per loaded model that runs continuous batching over llama.cpp
//!   sequences, fed by a bounded channel; each request carries its own reply
//!   channel, and dropping it frees the sequence. A model with a multimodal
//!   projector beside it takes images through llama.cpp's `mtmd`.
//! - `encoder`: the BERT-family transformer encoder (BERT, MiniLM, bge,
//!   XLM-RoBERTa, DistilBERT) on plain f32 buffers, its products on an AVX-512 or AVX2 kernel
//!   over pre-packed weight panels (`panel_kernel`; OpenBLAS `sgemm` without either and for
//!   attention, [`blas`]), f32 or weight-only int8 ([`Precision`]), behind the next three.
//! - [`embed`]: text embeddings, with dynamic batching of concurrent
//!   requests.
//! - [`classify`]: DistilBERT text classification.
//! - [`rerank`]: cross-encoder reranking (XLM-RoBERTa sequence
//!   classification).
//! - [`bart`]: summarization with BART (Hugging Face layout, transformers'
//!   beam search) on candle.
//! - [`vision`]: image classification (EfficientNet-Lite0 from the legacy
//!   PyTorch format) on candle.
//! - [`describe`]: image-to-text and vision chat (LLaVA 1.5: CLIP vision
//!   tower, projector, llama; Llama 3.2 Vision in [`mllama`]: tiled ViT,
//!   gated cross-attention layers in the decoder) on candle.
//! - [`detect`]: object detection (DETR with a ResNet backbone, Hugging
//!   Face layout) on candle.
//! - [`diffusion`]: text-to-image (Stable Diffusion 1.x and SDXL from the
//!   diffusers layout: txt2img, img2img, inpainting; DDIM, Euler, LCM
//!   samplers with seeded noise; SDXL's text encoders and UNet composition
//!   in `clip_text` and `unet`) on candle, and FLUX ([`flux`]).
//! - [`speech`]: speech recognition (Whisper from CTranslate2's format or
//!   the Hugging Face layout) on candle, audio decoded with symphonia.
//! - [`translate`]: translation with Bergamot's int8 Marian models (SSRU
//!   decoders) from Marian's binary format, on candle.
//! - [`store`]: the model store: which weights are on disk, pulls from a
//!   Hugging Face-compatible hub (resumable, sha-checked, with progress),
//!   removal.
//!
//! Callers (the runtime's `App`) resolve catalog ids to weights and hand the
//! engine validated inputs from `hearth-types`.

mod attention;
pub mod bart;
mod blas;
pub mod classify;
mod clip_text;
pub mod describe;
pub mod detect;
pub mod diffusion;
pub mod embed;
mod encoder;
pub mod flux;
mod gemma_encoder;
mod hf;
mod matvec;
pub mod mllama;
mod panel_kernel;
pub mod rerank;
pub mod speech;
pub mod store;
pub mod textgen;
pub mod translate;
mod unet;
pub mod vision;

pub use classify::Classifier;
pub use embed::{EmbedError, EmbedInfo, EmbedOptions, Embedder, Embeddings, Pooling};
pub use encoder::Precision;

/// What a caller must be told about an engine's error: the request's own
/// mistake (answered 400 with the engine's message), or the engine's failure.
pub trait EngineError: std::error::Error {
    /// The message naming what is wrong with the input; `None` when the
    /// engine itself failed (load or compute).
    fn bad_input(&self) -> Option<&str>;
}

/// `EngineError` for an error enum whose listed variants carry the
/// caller's mistake as their one `String`.
macro_rules! bad_input_variants {
    ($ty:ty: $($variant:ident),+) => {
        impl EngineError for $ty {
            fn bad_input(&self) -> Option<&str> {
                match self {
                    $(Self::$variant(m))|+ => Some(m),
                    _ => None,
                }
            }
        }
    };
}

bad_input_variants!(vision::VisionError: BadImage);
bad_input_variants!(diffusion::DiffusionError: BadInput);
bad_input_variants!(bart::SummarizeError: BadInput);
bad_input_variants!(describe::DescribeError: BadInput);
bad_input_variants!(translate::TranslateError: BadInput);
bad_input_variants!(speech::SpeechError: BadAudio, BadOption);
pub use rerank::Reranker;
pub use store::{ModelStore, PullProgress, StoreError};
pub use textgen::{
    FinishReason, GenEvent, GenerationStream, TextGenError, TextGenOptions, TextGenerator,
};
