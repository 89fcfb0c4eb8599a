//! LoRA adapters: a Hugging Face PEFT adapter (`adapter_config.json` and
//! `adapter_model.safetensors`) checked against its base GGUF and converted,
//! once, to the GGUF adapter llama.cpp applies at run time, as llama.cpp's
//! `convert_lora_to_gguf.py` does: tensors renamed to llama.cpp's names,
//! the `lora_B` of query and key projections permuted like the base
//! model's rows (llama-family GGUFs store those rows in rotary order).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// Cloudflare accepts ranks up to 32 on current base models.
pub const MAX_RANK: u64 = 32;
/// Cloudflare's limit on `adapter_model.safetensors`.
pub const MAX_ADAPTER_BYTES: u64 = 500 * 1000 * 1000;
/// `model_type`s Cloudflare accepts in `adapter_config.json`.
pub const MODEL_TYPES: [&str; 3] = ["mistral", "gemma", "llama"];

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("adapter_config.json: {0}")]
    Config(String),
    #[error("adapter_model.safetensors: {0}")]
    Weights(String),
    #[error("the adapter does not fit the base model: {0}")]
    Mismatch(String),
    #[error("cannot read the base model: {0}")]
    Base(String),
    #[error("cannot write the converted adapter: {0}")]
    Write(String),
}

/// What `adapter_config.json` says, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub rank: u64,
    pub alpha: f64,
    pub model_type: String,
}

/// Reads and checks `adapter_config.json`.
pub fn read_config(bytes: &[u8]) -> Result<AdapterConfig, LoraError> {
    let bad = |m: String| LoraError::Config(m);
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let model_type = v.get("model_type").and_then(Value::as_str).ok_or_else(|| {
        bad(format!(
            "`model_type` is required, one of {}",
            MODEL_TYPES.join(", ")
        ))
    })?;
    if !MODEL_TYPES.contains(&model_type) {
        return Err(bad(format!(
            "`model_type` must be one of {}, got `{model_type}`",
            MODEL_TYPES.join(", ")
        )));
    }
    let rank = v
        .get("r")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .ok_or_else(|| bad("`r` (the rank) must be a positive whole number".into()))?;
    if rank > MAX_RANK {
        return Err(bad(format!(
            "rank `r` is {rank}; at most {MAX_RANK} is supported"
        )));
    }
    if v.get("peft_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "LORA")
    {
        return Err(bad("`peft_type` must be LORA".into()));
    }
    let alpha = v
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .unwrap_or(rank as f64);
    Ok(AdapterConfig {
        rank,
        alpha,
        model_type: model_type.to_string(),
    })
}

/// llama.cpp's name of a PEFT target module's weight in block `layer`.
fn gguf_name(layer: &str, module: &str) -> Option<String> {
    let short = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.weight"))
}

/// Splits `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`
/// into (`blk.3.attn_q.weight`, `A`).
fn split_name(name: &str) -> Option<(String, char)> {
    let rest = name.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    let rest = rest.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, which) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, 'A'))
        .or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, 'B')))?;
    Some((gguf_name(layer, module)?, which))
}

/// Rows of a query/key projection in the order llama-family GGUFs keep
/// them (`convert_hf_to_gguf.py`'s `permute`).
fn permute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

fn meta_u64(content: &gguf_file::Content, key: &str) -> Option<u64> {
    match content.metadata.get(key)? {
        GgufValue::U32(v) => Some(u64::from(*v)),
        GgufValue::U64(v) => Some(*v),
        GgufValue::I32(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// Converts a PEFT adapter for the GGUF model at `base` into llama.cpp's
/// adapter GGUF at `out`, checking every tensor against the base model.
pub fn convert(
    config: &AdapterConfig,
    safetensors: &Path,
    base: &Path,
    out: &Path,
) -> Result<(), LoraError> {
    let mut file = std::fs::File::open(base).map_err(|e| LoraError::Base(e.to_string()))?;
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| LoraError::Base(e.to_string()))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(GgufValue::String(a)) => a.clone(),
        _ => return Err(LoraError::Base("no general.architecture".into())),
    };
    let family = match arch.as_str() {
        "llama" => "llama",
        "mistral" | "mistral3" => "mistral",
        a if a.starts_with("gemma") => "gemma",
        other => {
            return Err(LoraError::Mismatch(format!(
                "the base model's architecture `{other}` takes no LoRA adapters here"
            )));
        }
    };
    if family != config.model_type && !(family == "llama" && config.model_type == "mistral") {
        return Err(LoraError::Mismatch(format!(
            "`model_type` is `{}` but the base model is {arch}",
            config.model_type
        )));
    }
    // llama.cpp stores llama/mistral q and k rows in rotary order.
    let permutes = arch == "llama" || arch == "mistral";
    let heads = meta_u64(&content, &format!("{arch}.attention.head_count")).unwrap_or(0) as usize;
    let kv_heads = meta_u64(&content, &format!("{arch}.attention.head_count_kv"))
        .map_or(heads, |v| v as usize);

    let tensors = candle_core::safetensors::load(safetensors, &Device::Cpu)
        .map_err(|e| LoraError::Weights(format!("cannot be read ({e})")))?;
    let mut pairs: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (name, t) in tensors {
        let Some((target, which)) = split_name(&name) else {
            return Err(LoraError::Weights(format!(
                "tensor `{name}` is not a LoRA weight of a supported module (q/k/v/o, gate/up/down projections)"
            )));
        };
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| LoraError::Weights(e.to_string()))?;
        let slot = pairs.entry(target).or_default();
        if which == 'A' {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    if pairs.is_empty() {
        return Err(LoraError::Weights("holds no LoRA tensors".into()));
    }
    let mut converted: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = pairs.keys().collect();
    names.sort();
    for target in names {
        let (Some(a), Some(b)) = &pairs[target] else {
            return Err(LoraError::Weights(format!(
                "`{target}` needs both lora_A and lora_B"
            )));
        };
        let info = content.tensor_infos.get(target).ok_or_else(|| {
            LoraError::Mismatch(format!("the base model has no tensor `{target}`"))
        })?;
        let base_dims = info.shape.dims();
        let (Ok((rank_a, cols)), Ok((rows, rank_b))) = (a.dims2(), b.dims2()) else {
            return Err(LoraError::Weights(format!(
                "`{target}` tensors must be matrices"
            )));
        };
        if rank_a != rank_b || rank_a as u64 != config.rank {
            return Err(LoraError::Mismatch(format!(
                "`{target}` has rank {rank_a}/{rank_b}, adapter_config.json says r = {}",
                config.rank
            )));
        }
        if base_dims != [rows, cols] {
            return Err(LoraError::Mismatch(format!(
                "`{target}` is {rows}x{cols} after the adapter, the base model's is {base_dims:?}"
            )));
        }
        let b = if permutes && target.ends_with("attn_q.weight") {
            permute_rows(b, heads)
        } else if permutes && target.ends_with("attn_k.weight") {
            permute_rows(b, kv_heads)
        } else {
            Ok(b.clone())
        }
        .map_err(|e| LoraError::Mismatch(format!("`{target}`: {e}")))?;
        for (suffix, t) in [("lora_a", a), ("lora_b", &b)] {
            let q = QTensor::quantize(t, GgmlDType::F32)
                .map_err(|e| LoraError::Write(e.to_string()))?;
            converted.push((format!("{target}.{suffix}"), q));
        }
    }
    let meta = [
        ("general.architecture", GgufValue::String(arch)),
        ("general.type", GgufValue::String("adapter".into())),
        ("adapter.type", GgufValue::String("lora".into())),
        ("adapter.lora.alpha", GgufValue::F32(config.alpha as f32)),
    ];
    let meta_refs: Vec<(&str, &GgufValue)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        converted.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Two uploads completing the pair at once each write their own file.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let partial = out.with_extension(format!("gguf.partial-{stamp}"));
    let written = (|| -> Result<(), String> {
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(&partial).map_err(|e| e.to_string())?);
        gguf_file::write(&mut w, &meta_refs, &tensor_refs).map_err(|e| e.to_string())?;
        let file = w.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&partial, out).map_err(|e| e.to_string())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(LoraError::Write(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rules_follow_cloudflare() {
        let ok = read_config(
            br#"{"r": 8, "lora_alpha": 16, "model_type": "llama", "peft_type": "LORA"}"#,
        )
        .unwrap();
        assert_eq!(ok.rank, 8);
        assert_eq!(ok.alpha, 16.0);
        for (bad, needle) in [
            (&br#"{"r": 8}"#[..], "`model_type`"),
            (br#"{"r": 8, "model_type": "gpt2"}"#, "`model_type`"),
            (br#"{"r": 64, "model_type": "llama"}"#, "at most 32"),
            (br#"{"model_type": "llama"}"#, "`r`"),
            (b"not json", "not valid JSON"),
        ] {
            let e = read_config(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn peft_names_map_to_llama_cpp_names() {
        assert_eq!(
            split_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some(("blk.3.attn_q.weight".into(), 'A'))
        );
        assert_eq!(
            split_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"),
            Some(("blk.12.ffn_down.weight".into(), 'B'))
        );
        assert_eq!(split_name("base_model.model.lm_head.lora_A.weight"), None);
    }

    #[test]
    fn rows_are_permuted_per_head_pair() {
        // Two heads of four rows: [0 1 2 3 | 4 5 6 7] -> [0 2 1 3 | 4 6 5 7].
        let w = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let p = permute_rows(&w, 2).unwrap().flatten_all().unwrap();
        assert_eq!(
            p.to_vec1::<f32>().unwrap(),
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }
}
