//! Loading pieces shared by the candle models: a model folder in the
//! Hugging Face layout (config files, tokenizer, weights), and the
//! word-level tokenizer the tiny test models are written with.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::{Value, json};
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

/// `model.safetensors`, memory-mapped (or `pytorch_model.bin` when the
/// folder has no safetensors), as F32 on the CPU.
pub(crate) fn weights(dir: &Path) -> Result<VarBuilder<'static>, EmbedError> {
    let safetensors = dir.join("model.safetensors");
    let pickle = dir.join("pytorch_model.bin");
    // Some hub repos (BAAI/bge-m3 among them) ship only PyTorch's zip/pickle
    // checkpoint; it is read as it is, tensor by tensor.
    if !safetensors.is_file() && pickle.is_file() {
        return VarBuilder::from_pth(&pickle, DType::F32, &Device::Cpu)
            .map_err(|e| load_error(dir, format!("pytorch_model.bin: {e}")));
    }
    // SAFETY: the weights are memory-mapped read-only and Hearth never writes
    // into the models dir while a model is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(&[safetensors], DType::F32, &Device::Cpu) }
        .map_err(|e| load_error(dir, format!("model.safetensors: {e}")))
}

/// A JSON file of a model folder: `None` when the folder has none, an
/// error naming the file when it cannot be read or parsed.
pub(crate) fn json_file(dir: &Path, name: &str) -> Result<Option<Value>, String> {
    match std::fs::read(dir.join(name)) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| format!("{name}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// The folder's `config.json`, which must say `model_type: expected`.
pub(crate) fn config_of_type(dir: &Path, expected: &str) -> Result<Value, String> {
    let config = json_file(dir, "config.json")?.ok_or("config.json is missing")?;
    let model_type = config.get("model_type").and_then(Value::as_str);
    if model_type != Some(expected) {
        return Err(format!(
            "config.json says model_type {model_type:?}; Hearth reads \"{expected}\" here"
        ));
    }
    Ok(config)
}

/// A config's list of sizes (`block_out_channels`, `axes_dims_rope`), or
/// `default` where `key` is absent or not a list.
pub(crate) fn sizes(config: &Value, key: &str, default: &[usize]) -> Vec<usize> {
    config
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

/// A per-channel list of an image processor's config (`image_mean`,
/// `image_std`, in 0-1 units) scaled to 0-255, or `default` (0-1 units).
pub(crate) fn channel_values(processor: &Value, key: &str, default: [f32; 3]) -> [f32; 3] {
    let values = processor
        .get(key)
        .and_then(Value::as_array)
        .filter(|a| a.len() == 3)
        .map(|a| {
            let at = |i: usize| a[i].as_f64().map_or(default[i], |v| v as f32);
            [at(0), at(1), at(2)]
        })
        .unwrap_or(default);
    values.map(|v| v * 255.0)
}

/// Writes the `tokenizer.json` of a tiny test model: a lower-casing,
/// whitespace-splitting word-level vocabulary of `specials` (ids first,
/// registered as special tokens), `words`, then `extra` special tokens
/// (`<image>`), with `post_processor` as given.
pub(crate) fn write_word_level_tokenizer(
    path: &Path,
    specials: &[&str],
    words: &[&str],
    extra: &[&str],
    post_processor: Value,
) -> std::io::Result<()> {
    let mut vocab = serde_json::Map::new();
    for (i, t) in specials.iter().chain(words).chain(extra).enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    let added: Vec<Value> = specials
        .iter()
        .chain(extra)
        .map(|t| {
            json!({"id": vocab[*t], "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": post_processor, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(path, tokenizer.to_string())
}

/// A `TemplateProcessing` post-processor that puts `before` and `after`
/// (special tokens with their ids) around each sequence.
pub(crate) fn template(before: &[(&str, usize)], after: &[(&str, usize)]) -> Value {
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let sequence = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let around = |inner: Vec<Value>| -> Vec<Value> {
        before
            .iter()
            .map(|(t, _)| special(t))
            .chain(inner)
            .chain(after.iter().map(|(t, _)| special(t)))
            .collect()
    };
    let tokens: serde_json::Map<String, Value> = before
        .iter()
        .chain(after)
        .map(|(t, id)| (t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]})))
        .collect();
    json!({"type": "TemplateProcessing", "single": around(vec![sequence("A")]),
        "pair": around(vec![sequence("A"), sequence("B")]), "special_tokens": tokens})
}

/// Makes a tiny random model's output table (`name`, `[vocab, d]`, in
/// `varmap`) always prefer a word of `words` to any other token: rows
/// outside `words` become zero and the rows of `words` come in opposite
/// pairs, so for any hidden state some word scores above zero (a random
/// model that says only end-of-text, or only special tokens, tests
/// nothing).
pub(crate) fn favour_words(
    varmap: &candle_nn::VarMap,
    name: &str,
    words: std::ops::Range<usize>,
) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let var = data
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("no tensor {name}")))?;
    let table = var.as_tensor().to_vec2::<f32>()?;
    let rows = table.len();
    let mut out = vec![vec![0f32; table.first().map_or(0, Vec::len)]; rows];
    let mut i = words.start;
    while i + 1 < words.end.min(rows) {
        out[i] = table[i].clone();
        out[i + 1] = table[i].iter().map(|v| -v).collect();
        i += 2;
    }
    var.set(&candle_core::Tensor::new(out, var.device())?)
}

/// The safetensors files of a folder: `model.safetensors`, or every shard
/// `model.safetensors.index.json` lists; an error names a missing one.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let index = dir.join("model.safetensors.index.json");
    let files = if index.is_file() {
        let raw = std::fs::read(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        let index: Value =
            serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", index.display()))?;
        let mut names: Vec<&str> = index
            .get("weight_map")
            .and_then(Value::as_object)
            .map(|m| m.values().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|f| dir.join(f)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    Ok(files)
}

/// safetensors files memory-mapped as one F32 `VarBuilder` on the CPU.
pub(crate) fn mmap_weights(files: &[PathBuf]) -> Result<VarBuilder<'static>, String> {
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(format!("{} is missing", missing.display()));
    }
    // SAFETY: the files are only read, and Hearth's model folders are not
    // rewritten while a model is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, &Device::Cpu) }
        .map_err(|e| e.to_string())
}
