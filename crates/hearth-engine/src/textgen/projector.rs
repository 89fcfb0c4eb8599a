//! Images in chats with GGUF models, through llama.cpp's multimodal
//! library (`mtmd`): a model file with a multimodal projector beside it
//! (`mmproj*.gguf`, as llama.cpp's converter writes it and the hub's GGUF
//! repositories ship it: Gemma 3, Mistral Small 3.1, Qwen 2.5 VL, LLaVA,
//! SmolVLM, Llama 4) takes images in its prompt. mtmd encodes each image
//! with the projector's vision tower and decodes the embeddings into the
//! sequence where the prompt's media marker stands.
//!
//! No genuine projector ships in a registry package: the tests pair the
//! registry's genuine Gemma 3 language model with a tiny random-weight
//! projector of Gemma 3's architecture (SigLIP tower, average pooling,
//! soft-embedding norm, input projection) written here in llama.cpp's
//! GGUF names.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::TextGenError;

/// The text that stands for an image in a prompt (mtmd's default marker).
pub fn media_marker() -> &'static str {
    llama_cpp_2::mtmd::mtmd_default_marker()
}

/// The projector beside `model`: the one `mmproj*.gguf` file in its folder
/// (several quantizations of one model share it), first by name if there
/// are several.
pub fn projector_for(model: &Path) -> Option<PathBuf> {
    let folder = model.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.as_path() != model
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("mmproj") && n.ends_with(".gguf"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Writes a tiny random Gemma 3 projector whose output is `text_width`
/// wide (the language model's embedding width): 32x32 images in 4x4
/// patches, two SigLIP layers 32 wide, pooled 4x4 to four image tokens.
pub fn write_tiny_gemma3_projector(path: &Path, text_width: usize) -> Result<(), TextGenError> {
    let fail = |e: &dyn std::fmt::Display| TextGenError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (width, ff, layers, patch, image) = (32usize, 64usize, 2usize, 4usize, 32usize);
    let patches = (image / patch) * (image / patch);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, shape: &[usize], fill: Fill| -> Result<(), TextGenError> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| match fill {
                Fill::Random(scale) => rng.random_range(-scale..scale),
                Fill::NearOne => 1.0 + rng.random_range(-0.1f32..0.1),
            })
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| fail(&e))?;
        tensors.push((
            name,
            QTensor::quantize(&t, GgmlDType::F32).map_err(|e| fail(&e))?,
        ));
        Ok(())
    };
    // candle's dims are ggml's reversed: a PyTorch `[out, in]` weight is
    // written as `[out, in]` here and read by ggml as ne = [in, out].
    let linear = 1.0 / (width as f32).sqrt();
    add(
        "v.patch_embd.weight".into(),
        &[width, 3, patch, patch],
        Fill::Random(0.3),
    )?;
    add("v.patch_embd.bias".into(), &[width], Fill::Random(0.1))?;
    add(
        "v.position_embd.weight".into(),
        &[patches, width],
        Fill::Random(0.5),
    )?;
    for i in 0..layers {
        let blk = |part: &str| format!("v.blk.{i}.{part}");
        for part in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            add(
                blk(&format!("{part}.weight")),
                &[width, width],
                Fill::Random(linear * 1.7),
            )?;
            add(blk(&format!("{part}.bias")), &[width], Fill::Random(0.1))?;
        }
        for norm in ["ln1", "ln2"] {
            add(blk(&format!("{norm}.weight")), &[width], Fill::NearOne)?;
            add(blk(&format!("{norm}.bias")), &[width], Fill::Random(0.1))?;
        }
        add(
            blk("ffn_up.weight"),
            &[ff, width],
            Fill::Random(linear * 1.7),
        )?;
        add(blk("ffn_up.bias"), &[ff], Fill::Random(0.1))?;
        add(
            blk("ffn_down.weight"),
            &[width, ff],
            Fill::Random(1.7 / (ff as f32).sqrt()),
        )?;
        add(blk("ffn_down.bias"), &[width], Fill::Random(0.1))?;
    }
    add("v.post_ln.weight".into(), &[width], Fill::NearOne)?;
    add("v.post_ln.bias".into(), &[width], Fill::Random(0.1))?;
    add("mm.soft_emb_norm.weight".into(), &[width], Fill::NearOne)?;
    // Gemma 3 keeps this one as a plain `[vision, text]` parameter.
    add(
        "mm.input_projection.weight".into(),
        &[width, text_width],
        Fill::Random(linear),
    )?;

    let u32v = |v: usize| GgufValue::U32(v as u32);
    let halves = GgufValue::Array(vec![GgufValue::F32(0.5); 3]);
    let meta = [
        ("general.architecture", GgufValue::String("clip".into())),
        (
            "general.name",
            GgufValue::String("tiny gemma3 projector".into()),
        ),
        ("clip.has_vision_encoder", GgufValue::Bool(true)),
        ("clip.projector_type", GgufValue::String("gemma3".into())),
        ("clip.use_gelu", GgufValue::Bool(true)),
        ("clip.vision.image_size", u32v(image)),
        ("clip.vision.patch_size", u32v(patch)),
        ("clip.vision.embedding_length", u32v(width)),
        ("clip.vision.feed_forward_length", u32v(ff)),
        ("clip.vision.projection_dim", u32v(text_width)),
        ("clip.vision.block_count", u32v(layers)),
        ("clip.vision.attention.head_count", u32v(2)),
        (
            "clip.vision.attention.layer_norm_epsilon",
            GgufValue::F32(1e-6),
        ),
        ("clip.vision.image_mean", halves.clone()),
        ("clip.vision.image_std", halves),
    ];
    let meta_refs: Vec<(&str, &GgufValue)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| fail(&e))?);
    gguf_file::write(&mut w, &meta_refs, &tensor_refs).map_err(|e| fail(&e))?;
    w.into_inner().map_err(|e| fail(&e))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Fill {
    Random(f32),
    NearOne,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projector_is_the_mmproj_file_beside_the_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("model-Q4_K_M.gguf");
        std::fs::write(&model, b"x").expect("write");
        assert_eq!(projector_for(&model), None);
        std::fs::write(dir.path().join("notes-mmproj.gguf"), b"x").expect("write");
        std::fs::write(dir.path().join("mmproj-model.txt"), b"x").expect("write");
        assert_eq!(projector_for(&model), None);
        for name in ["mmproj-model-f32.gguf", "mmproj-model-f16.gguf"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(
            projector_for(&model),
            Some(dir.path().join("mmproj-model-f16.gguf"))
        );
    }
}
