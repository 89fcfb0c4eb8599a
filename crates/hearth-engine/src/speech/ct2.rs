//! A reader for CTranslate2's `model.bin` (the format faster-whisper
//! converts Whisper into), giving the tensors Hugging Face names so the
//! same network code loads either layout.
//!
//! The file (binary version 6): u32 version, the spec name and revision,
//! u32 variable count, then per variable a u16-length name, u8 rank, u32
//! dims, u8 dtype, u32 byte count and the raw little-endian data; then
//! aliases (a name and the variable it shares). Self-attention Q, K and V
//! are fused in one `linear_0`, cross-attention K and V in `linear_1`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::SpeechError;

/// A variable as stored: shape, dtype code and bytes.
struct Variable {
    dims: Vec<usize>,
    dtype: u8,
    data: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = usize::from(self.u16()?);
        let raw = self.take(n)?;
        let text = std::str::from_utf8(raw).map_err(|e| format!("a name is not UTF-8: {e}"))?;
        Ok(text.trim_end_matches('\0').to_string())
    }
}

fn parse(bytes: &[u8]) -> Result<HashMap<String, Variable>, String> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u32()?;
    if !(5..=6).contains(&version) {
        return Err(format!(
            "CTranslate2 binary version {version} (Hearth reads 5 and 6)"
        ));
    }
    let spec = r.string()?;
    if spec != "WhisperSpec" {
        return Err(format!("a {spec} model, not Whisper"));
    }
    let _revision = r.u32()?;
    let count = r.u32()?;
    let mut variables = HashMap::new();
    for _ in 0..count {
        let name = r.string()?;
        let rank = usize::from(r.u8()?);
        let dims = (0..rank)
            .map(|_| r.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = r.u8()?;
        let size = r.u32()? as usize;
        let data = r.take(size)?.to_vec();
        variables.insert(name, Variable { dims, dtype, data });
    }
    let aliases = r.u32()?;
    for _ in 0..aliases {
        let alias = r.string()?;
        let target = r.string()?;
        if let Some(v) = variables.get(&target) {
            let copy = Variable {
                dims: v.dims.clone(),
                dtype: v.dtype,
                data: v.data.clone(),
            };
            variables.insert(alias, copy);
        }
    }
    Ok(variables)
}

impl Variable {
    fn tensor(&self, name: &str) -> Result<Tensor, String> {
        let dtype = match self.dtype {
            0 => DType::F32,
            1 => DType::U8,
            4 => DType::F16,
            5 => DType::BF16,
            other => return Err(format!("{name}: dtype code {other} is not supported")),
        };
        let t = Tensor::from_raw_buffer(&self.data, dtype, &self.dims, &Device::Cpu)
            .map_err(|e| format!("{name}: {e}"))?;
        // int8 is signed: candle has no i8, so the bytes travel as u8 and
        // are shifted back after widening.
        let widened = t.to_dtype(DType::F32);
        let t = if self.dtype == 1 {
            widened.and_then(|t| t.ge(128f64)?.where_cond(&(&t - 256.0)?, &t))
        } else {
            widened
        };
        t.map_err(|e| format!("{name}: {e}"))
    }

    /// A scalar integer setting such as `num_heads`.
    fn integer(&self) -> Option<usize> {
        match (self.dtype, self.data.len()) {
            (1, 1) => Some(usize::from(self.data[0])),
            (2, 2) => Some(usize::from(u16::from_le_bytes([
                self.data[0],
                self.data[1],
            ]))),
            (3, 4) => {
                Some(
                    u32::from_le_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
                        as usize,
                )
            }
            _ => None,
        }
    }
}

/// What the tensors say about the network (CTranslate2 keeps no
/// `config.json` dimensions).
pub struct Ct2Whisper {
    pub tensors: HashMap<String, Tensor>,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
}

/// Reads `model.bin` and returns its tensors under Hugging Face names
/// (`model.encoder.layers.0.self_attn.q_proj.weight`, ...), dequantizing
/// int8 weights with their `weight_scale`.
pub fn read_whisper(path: &Path) -> Result<Ct2Whisper, SpeechError> {
    let load = |reason: String| SpeechError::Load {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| load(e.to_string()))?;
    let vars = parse(&bytes).map_err(load)?;
    let get = |name: &str| -> Result<Tensor, SpeechError> {
        let v = vars
            .get(name)
            .ok_or_else(|| load(format!("no variable {name}")))?;
        let t = v.tensor(name).map_err(load)?;
        match vars.get(&format!("{}_scale", name)) {
            // Per-row scales: w = q / scale.
            Some(scale) => {
                let scale = scale.tensor(name).map_err(load)?;
                let scale = if t.rank() == 2 {
                    scale.reshape(((), 1))
                } else {
                    Ok(scale)
                };
                scale
                    .and_then(|s| t.broadcast_div(&s))
                    .map_err(|e| load(format!("{name}: {e}")))
            }
            None => Ok(t),
        }
    };
    let count_layers = |side: &str| {
        (0..)
            .take_while(|i| vars.contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight")))
            .count()
    };
    let heads = vars
        .get("decoder/num_heads")
        .and_then(Variable::integer)
        .ok_or_else(|| load("no decoder/num_heads".into()))?;
    let (encoder_layers, decoder_layers) = (count_layers("encoder"), count_layers("decoder"));

    let mut out = HashMap::new();
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    let split = |t: &Tensor, parts: usize| -> Result<Vec<Tensor>, SpeechError> {
        let rows = t.dim(0).map_err(|e| load(e.to_string()))? / parts;
        (0..parts)
            .map(|i| t.narrow(0, i * rows, rows).map_err(|e| load(e.to_string())))
            .collect()
    };
    let norm = |from: &str, to: &str, put: &mut dyn FnMut(String, Tensor)| {
        put(format!("{to}.weight"), get(&format!("{from}/gamma"))?);
        put(format!("{to}.bias"), get(&format!("{from}/beta"))?);
        Ok::<_, SpeechError>(())
    };
    let linear = |from: &str, to: &str, put: &mut dyn FnMut(String, Tensor)| {
        put(format!("{to}.weight"), get(&format!("{from}/weight"))?);
        put(format!("{to}.bias"), get(&format!("{from}/bias"))?);
        Ok::<_, SpeechError>(())
    };
    // Fused projections: rows are stacked [q; k; v] (or [k; v]); HF's
    // k_proj has no bias, and CTranslate2 stores zeros there.
    let fused = |from: &str, to: &str, names: &[&str], put: &mut dyn FnMut(String, Tensor)| {
        let w = split(&get(&format!("{from}/weight"))?, names.len())?;
        let b = split(&get(&format!("{from}/bias"))?, names.len())?;
        for ((name, w), b) in names.iter().zip(w).zip(b) {
            put(format!("{to}.{name}.weight"), w);
            if *name != "k_proj" {
                put(format!("{to}.{name}.bias"), b);
            }
        }
        Ok::<_, SpeechError>(())
    };

    for side in ["encoder", "decoder"] {
        let layers = if side == "encoder" {
            encoder_layers
        } else {
            decoder_layers
        };
        let hf = format!("model.{side}");
        for i in 0..layers {
            let (c, h) = (format!("{side}/layer_{i}"), format!("{hf}.layers.{i}"));
            fused(
                &format!("{c}/self_attention/linear_0"),
                &format!("{h}.self_attn"),
                &["q_proj", "k_proj", "v_proj"],
                &mut put,
            )?;
            linear(
                &format!("{c}/self_attention/linear_1"),
                &format!("{h}.self_attn.out_proj"),
                &mut put,
            )?;
            norm(
                &format!("{c}/self_attention/layer_norm"),
                &format!("{h}.self_attn_layer_norm"),
                &mut put,
            )?;
            linear(&format!("{c}/ffn/linear_0"), &format!("{h}.fc1"), &mut put)?;
            linear(&format!("{c}/ffn/linear_1"), &format!("{h}.fc2"), &mut put)?;
            norm(
                &format!("{c}/ffn/layer_norm"),
                &format!("{h}.final_layer_norm"),
                &mut put,
            )?;
            if side == "decoder" {
                linear(
                    &format!("{c}/attention/linear_0"),
                    &format!("{h}.encoder_attn.q_proj"),
                    &mut put,
                )?;
                fused(
                    &format!("{c}/attention/linear_1"),
                    &format!("{h}.encoder_attn"),
                    &["k_proj", "v_proj"],
                    &mut put,
                )?;
                linear(
                    &format!("{c}/attention/linear_2"),
                    &format!("{h}.encoder_attn.out_proj"),
                    &mut put,
                )?;
                norm(
                    &format!("{c}/attention/layer_norm"),
                    &format!("{h}.encoder_attn_layer_norm"),
                    &mut put,
                )?;
            }
        }
        norm(
            &format!("{side}/layer_norm"),
            &format!("{hf}.layer_norm"),
            &mut put,
        )?;
        put(
            format!("{hf}.embed_positions.weight"),
            get(&format!("{side}/position_encodings/encodings"))?,
        );
    }
    for conv in ["conv1", "conv2"] {
        linear(
            &format!("encoder/{conv}"),
            &format!("model.encoder.{conv}"),
            &mut put,
        )?;
    }
    put(
        "model.decoder.embed_tokens.weight".into(),
        get("decoder/embeddings/weight")?,
    );
    Ok(Ct2Whisper {
        tensors: out,
        heads,
        encoder_layers,
        decoder_layers,
    })
}
