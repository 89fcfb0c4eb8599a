//! Loading pieces shared by the candle encoders (embeddings, reranking,
//! classification): a model folder in the Hugging Face layout.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::{Tokenizer, TruncationParams};

use crate::embed::EmbedError;

pub(crate) fn load_error(dir: &Path, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::Load {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// `config.json` parsed twice: into the model's own config type, and as JSON
/// for the keys that type does not carry (`id2label`, limits).
pub(crate) fn read_config<C: serde::de::DeserializeOwned>(
    dir: &Path,
) -> Result<(C, serde_json::Value), EmbedError> {
    let raw = std::fs::read(dir.join("config.json"))
        .map_err(|e| load_error(dir, format!("config.json: {e}")))?;
    let typed =
        serde_json::from_slice(&raw).map_err(|e| load_error(dir, format!("config.json: {e}")))?;
    let value =
        serde_json::from_slice(&raw).map_err(|e| load_error(dir, format!("config.json: {e}")))?;
    Ok((typed, value))
}

/// `tokenizer.json` with its own padding removed (callers pad each batch to
/// its longest input; some shipped tokenizers pad everything to a fixed
/// length) and truncation at `max_len` tokens.
pub(crate) fn tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| load_error(dir, format!("tokenizer.json: {e}")))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| load_error(dir, format!("tokenizer truncation: {e}")))?;
    Ok(tokenizer)
}

/// `model.safetensors`, memory-mapped, as F32 on the CPU.
pub(crate) fn weights(dir: &Path) -> Result<VarBuilder<'static>, EmbedError> {
    // SAFETY: the weights are memory-mapped read-only and Hearth never writes
    // into the models dir while a model is loaded.
    unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .map_err(|e| load_error(dir, format!("model.safetensors: {e}")))
}
