//! Translation with Mozilla Bergamot's Marian models on candle: the int8
//! "tiny" transformers (6-layer encoder, 2-layer decoder whose
//! self-attention is replaced by an SSRU) read from Marian's binary model
//! format, weights dequantized to F32, greedy decoding.
//!
//! Marian's binary format (version 1): u64 version, u64 count, then per
//! tensor u64 name length, u64 type, u64 shape length, u64 byte length;
//! the names (NUL-terminated), the shapes (i32), a u64 padding length and
//! that padding, then the data. `special:model.yml` holds the model's
//! config. intgemm8 tensors are int8 followed by their f32 quantization
//! multiplier (w = q / multiplier); weight matrices are stored transposed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("cannot load the translation model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadInput(String),
    #[error("translation failed: {0}")]
    Compute(String),
}

fn compute(e: impl std::fmt::Display) -> TranslateError {
    TranslateError::Compute(e.to_string())
}

const TYPE_FLOAT32: u64 = 0x0404;
const TYPE_INTGEMM8: u64 = 0x4101;
/// Longest sentence, in tokens (Marian's default `max-length`).
pub const MAX_INPUT_TOKENS: usize = 256;

struct Raw {
    kind: u64,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn read_marian(bytes: &[u8]) -> Result<HashMap<String, Raw>, String> {
    let u64_at = |at: usize| -> Result<u64, String> {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    if u64_at(0)? != 1 {
        return Err("not a Marian binary model (version 1)".into());
    }
    let count = u64_at(8)? as usize;
    if count > 100_000 {
        return Err(format!("{count} tensors is not plausible"));
    }
    let mut headers = Vec::with_capacity(count);
    let mut at = 16;
    for _ in 0..count {
        headers.push((
            u64_at(at)? as usize,
            u64_at(at + 8)?,
            u64_at(at + 16)? as usize,
            u64_at(at + 24)? as usize,
        ));
        at += 32;
    }
    let mut names = Vec::with_capacity(count);
    for (name_len, ..) in &headers {
        let raw = bytes
            .get(at..at + name_len)
            .ok_or_else(|| "names run past the end".to_string())?;
        names.push(
            String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string(),
        );
        at += name_len;
    }
    let mut shapes = Vec::with_capacity(count);
    for (_, _, shape_len, _) in &headers {
        let mut shape = Vec::with_capacity(*shape_len);
        for i in 0..*shape_len {
            let b = bytes
                .get(at + 4 * i..at + 4 * i + 4)
                .ok_or_else(|| "shapes run past the end".to_string())?;
            let dim = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            shape.push(usize::try_from(dim).map_err(|_| format!("negative dimension {dim}"))?);
        }
        at += 4 * shape_len;
        shapes.push(shape);
    }
    at += 8 + u64_at(at)? as usize;
    let mut tensors = HashMap::with_capacity(count);
    for ((name, shape), (_, kind, _, len)) in names.into_iter().zip(shapes).zip(headers) {
        let data = bytes
            .get(at..at + len)
            .ok_or_else(|| format!("{name} runs past the end"))?
            .to_vec();
        at += len;
        tensors.insert(name, Raw { kind, shape, data });
    }
    Ok(tensors)
}

impl Raw {
    fn tensor(&self, name: &str) -> Result<Tensor, String> {
        let elements: usize = self.shape.iter().product();
        let values: Vec<f32> = match self.kind {
            TYPE_FLOAT32 => self
                .data
                .get(..elements * 4)
                .ok_or_else(|| format!("{name} is short"))?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TYPE_INTGEMM8 => {
                let multiplier = self
                    .data
                    .get(elements..elements + 4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .filter(|m| m.is_finite() && *m > 0.0)
                    .ok_or_else(|| format!("{name} has no quantization multiplier"))?;
                self.data[..elements]
                    .iter()
                    .map(|b| f32::from(*b as i8) / multiplier)
                    .collect()
            }
            other => return Err(format!("{name}: tensor type {other:#x} is not supported")),
        };
        // intgemm multiplies by B transposed, so the converter stored every
        // quantized weight matrix as [out, in] (the header still says [in,
        // out]); the embedding table, read by rows, was kept as it is.
        if self.kind == TYPE_INTGEMM8 && self.shape.len() == 2 && name != "Wemb" {
            return Tensor::from_vec(values, (self.shape[1], self.shape[0]), &Device::Cpu)
                .and_then(|t| t.t()?.contiguous())
                .map_err(|e| e.to_string());
        }
        Tensor::from_vec(values, self.shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
    }
}

/// The config keys Hearth reads from `special:model.yml` (flat `key: value`
/// lines).
fn yaml_value<'a>(yaml: &'a str, key: &str) -> Option<&'a str> {
    yaml.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_matmul(&self.w)?.broadcast_add(&self.b)
    }
}

struct Norm {
    scale: Tensor,
    bias: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + 1e-9)?.sqrt()?)?
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.bias)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm: Norm,
}

struct Ffn {
    w1: Linear,
    w2: Linear,
    norm: Norm,
}

impl Ffn {
    /// Post-norm ("dan"): norm(x + W2 relu(W1 x)).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.w2.forward(&self.w1.forward(x)?.relu()?)?;
        self.norm.forward(&(x + h)?)
    }
}

struct Ssru {
    w: Tensor,
    wf: Tensor,
    bf: Tensor,
    norm: Norm,
}

struct DecoderLayer {
    ssru: Ssru,
    context: Attention,
    ffn: Ffn,
}

/// A Bergamot (Marian binary, SSRU decoder) model.
struct Bergamot {
    embeddings: Tensor,
    output_bias: Tensor,
    encoder: Vec<(Attention, Ffn)>,
    decoder: Vec<DecoderLayer>,
    heads: usize,
    dim: usize,
    tokenizer: Tokenizer,
    eos: u32,
    max_length_factor: f32,
    shortlist: Option<Shortlist>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    pub text: String,
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// Sentences of a line: a break after `.`, `!` or `?` (and closing quotes
/// or brackets) followed by a space and an upper-case letter or digit.
fn sentences(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let mut j = k + 1;
        while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | '”' | '’') {
            j += 1;
        }
        let spaced = j < chars.len() && chars[j].1 == ' ';
        let next = chars.get(j + 1).map(|(_, c)| *c);
        if spaced && next.is_some_and(|n| n.is_uppercase() || n.is_ascii_digit()) {
            let end = chars.get(j).map_or(line.len(), |(at, _)| *at);
            out.push(line[start..end].trim());
            start = end;
        }
        let _ = i;
    }
    out.push(line[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

const SHORTLIST_MAGIC: u64 = 0xF11A_48D5_0134_17F5;

/// Marian's binary lexical shortlist (`lex.*.s2t.bin`): for each source
/// token the target tokens it most often translates to. A sentence's
/// output is searched only among the `first` most frequent target tokens
/// and the `best` candidates of each of its source tokens, as Bergamot
/// decodes.
struct Shortlist {
    first: usize,
    best: usize,
    offsets: Vec<u64>,
    lists: Vec<u32>,
}

impl Shortlist {
    /// u64 magic, checksum, first, best, offset count, list length; the
    /// offsets (u64, one past the source vocabulary), the lists (u32).
    fn read(bytes: &[u8]) -> Result<Self, String> {
        let word = |i: usize| -> Result<u64, String> {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| "the shortlist is truncated".to_string())
        };
        if word(0)? != SHORTLIST_MAGIC {
            return Err("not a binary Marian shortlist".into());
        }
        let (first, best) = (word(2)? as usize, word(3)? as usize);
        let (offset_count, list_len) = (word(4)? as usize, word(5)? as usize);
        let lists_at = 48 + offset_count * 8;
        if bytes.len() != lists_at + list_len * 4 {
            return Err("the shortlist's sizes do not match the file".into());
        }
        let offsets: Vec<u64> = (0..offset_count)
            .map(|i| word(6 + i))
            .collect::<Result<_, _>>()?;
        let lists = bytes[lists_at..]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().is_some_and(|l| *l as usize > list_len)
        {
            return Err("the shortlist's offsets are out of order".into());
        }
        Ok(Self {
            first,
            best,
            offsets,
            lists,
        })
    }

    /// Sorted candidate target ids for a sentence's source ids.
    fn candidates(&self, source: &[u32], eos: u32, vocab: usize) -> Vec<u32> {
        let mut out: Vec<u32> = (0..self.first.min(vocab) as u32).collect();
        out.push(eos);
        for id in source {
            let at = *id as usize;
            if let (Some(start), Some(end)) = (self.offsets.get(at), self.offsets.get(at + 1)) {
                let (start, end) = (*start as usize, *end as usize);
                out.extend(
                    self.lists[start..end.min(start + self.best)]
                        .iter()
                        .copied(),
                );
            }
        }
        out.retain(|t| (*t as usize) < vocab);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A translation model: Bergamot's Marian binary (the registry's en<->pt)
/// or a Marian/Opus-MT model in the Hugging Face layout (`config.json`
/// with `model_type: "marian"`, `model.safetensors`, and the source
/// `tokenizer.json`, plus `target_tokenizer.json` when the target
/// vocabulary is separate), on candle-transformers' `marian`.
pub struct Translator {
    engine: Engine,
}

enum Engine {
    Bergamot(Box<Bergamot>),
    Marian(Box<MarianHf>),
}

impl Translator {
    pub fn load(dir: &Path) -> Result<Self, TranslateError> {
        let engine = if model_file(dir).is_some() {
            Engine::Bergamot(Box::new(Bergamot::load(dir)?))
        } else {
            Engine::Marian(Box::new(MarianHf::load(dir)?))
        };
        Ok(Self { engine })
    }

    /// Translates a text sentence by sentence (as Bergamot does: the
    /// models were trained on sentences), keeping its line breaks.
    pub fn translate(&self, text: &str) -> Result<Translation, TranslateError> {
        match &self.engine {
            Engine::Bergamot(b) => b.translate(text),
            Engine::Marian(m) => by_sentence(text, |s| m.translate_sentence(s)),
        }
    }
}

/// A sentence's token ids ending with `eos`; a sentence of `limit` tokens
/// or more is refused.
fn source_ids(
    tokenizer: &Tokenizer,
    text: &str,
    limit: usize,
    eos: u32,
) -> Result<Vec<u32>, TranslateError> {
    let mut ids = tokenizer
        .encode(text, false)
        .map_err(|e| TranslateError::BadInput(format!("`text` cannot be tokenized: {e}")))?
        .get_ids()
        .to_vec();
    if ids.len() >= limit {
        return Err(TranslateError::BadInput(format!(
            "a sentence of `text` is {} tokens; the model takes at most {}",
            ids.len(),
            limit - 1
        )));
    }
    ids.push(eos);
    Ok(ids)
}

/// Runs `one` on each sentence of each line and joins the answers.
fn by_sentence(
    text: &str,
    mut one: impl FnMut(&str) -> Result<(String, usize, usize), TranslateError>,
) -> Result<Translation, TranslateError> {
    let mut out = Translation::default();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.text.push('\n');
        }
        for (k, sentence) in sentences(line).into_iter().enumerate() {
            let (translated, input, output) = one(sentence)?;
            if k > 0 {
                out.text.push(' ');
            }
            out.text.push_str(&translated);
            out.input_tokens += input;
            out.output_tokens += output;
        }
    }
    Ok(out)
}

/// Marian/Opus-MT in the Hugging Face layout. candle's model keeps its
/// decoding cache inside, so one translation runs at a time.
struct MarianHf {
    model: std::sync::Mutex<candle_transformers::models::marian::MTModel>,
    config: candle_transformers::models::marian::Config,
    source: Tokenizer,
    target: Tokenizer,
    limit: usize,
}

impl MarianHf {
    fn load(dir: &Path) -> Result<Self, TranslateError> {
        let load = |reason: String| TranslateError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let raw = std::fs::read(dir.join("config.json"))
            .map_err(|e| load(format!("no Marian binary model and no config.json: {e}")))?;
        let mut json: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| load(format!("config.json: {e}")))?;
        if json.get("model_type").and_then(|v| v.as_str()) != Some("marian") {
            return Err(load(
                "config.json is not a Marian model (`model_type`)".into(),
            ));
        }
        // Keys older Opus-MT configs leave out, with transformers' defaults.
        let eos = json
            .get("eos_token_id")
            .cloned()
            .unwrap_or(serde_json::json!(0));
        if let Some(map) = json.as_object_mut() {
            for (key, value) in [
                ("use_cache", serde_json::json!(true)),
                ("is_encoder_decoder", serde_json::json!(true)),
                ("forced_eos_token_id", eos),
                ("share_encoder_decoder_embeddings", serde_json::json!(true)),
                ("scale_embedding", serde_json::json!(false)),
            ] {
                map.entry(key).or_insert(value);
            }
        }
        let config: candle_transformers::models::marian::Config =
            serde_json::from_value(json).map_err(|e| load(format!("config.json: {e}")))?;
        // SAFETY: read-only mapping of a file Hearth never writes while
        // the model is loaded.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(|e| load(format!("model.safetensors: {e}")))?;
        let model = candle_transformers::models::marian::MTModel::new(&config, vb)
            .map_err(|e| load(e.to_string()))?;
        let tokenizer = |name: &str| {
            Tokenizer::from_file(dir.join(name)).map_err(|e| load(format!("{name}: {e}")))
        };
        let source = tokenizer("tokenizer.json")?;
        let target = if dir.join("target_tokenizer.json").exists() {
            tokenizer("target_tokenizer.json")?
        } else {
            source.clone()
        };
        Ok(Self {
            model: std::sync::Mutex::new(model),
            limit: 512,
            config,
            source,
            target,
        })
    }

    fn translate_sentence(&self, text: &str) -> Result<(String, usize, usize), TranslateError> {
        let ids = source_ids(&self.source, text, self.limit, self.config.eos_token_id)?;
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        model.reset_kv_cache();
        let run = |model: &mut candle_transformers::models::marian::MTModel| {
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let encoded = model.encoder().forward(&input, 0)?;
            let mut tokens = vec![self.config.decoder_start_token_id];
            let limit = (ids.len() * 5 / 2 + 10).min(self.limit);
            for step in 0..limit {
                let start = if step == 0 { 0 } else { tokens.len() - 1 };
                let input = Tensor::new(&tokens[start..], &Device::Cpu)?.unsqueeze(0)?;
                let logits = model.decode(&input, &encoded, start)?.squeeze(0)?;
                let mut last: Vec<f32> = logits.get(logits.dim(0)? - 1)?.to_vec1()?;
                // The padding token is never an answer.
                if let Some(pad) = last.get_mut(self.config.pad_token_id as usize) {
                    *pad = f32::NEG_INFINITY;
                }
                let token = last
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(self.config.eos_token_id, |(i, _)| i as u32);
                if token == self.config.eos_token_id || token == self.config.forced_eos_token_id {
                    break;
                }
                tokens.push(token);
            }
            Ok::<_, candle_core::Error>(tokens)
        };
        let tokens = run(&mut model).map_err(compute)?;
        let output = &tokens[1..];
        let translated = self
            .target
            .decode(output, true)
            .map_err(|e| compute(format!("cannot detokenize: {e}")))?;
        Ok((translated, ids.len(), output.len() + 1))
    }
}

/// The model file of a Bergamot folder.
fn model_file(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("model") && n.ends_with(".bin"))
    })
}

impl Bergamot {
    fn load(dir: &Path) -> Result<Self, TranslateError> {
        let load = |reason: String| TranslateError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let file = model_file(dir).ok_or_else(|| load("no model*.bin".into()))?;
        let bytes = std::fs::read(&file).map_err(|e| load(e.to_string()))?;
        let raw = read_marian(&bytes).map_err(load)?;
        let yaml = raw
            .get("special:model.yml")
            .map(|r| String::from_utf8_lossy(&r.data).to_string())
            .unwrap_or_default();
        let setting = |key: &str| yaml_value(&yaml, key).unwrap_or("");
        if setting("type") != "transformer" || setting("dec-cell") != "ssru" {
            return Err(load(format!(
                "a Marian `{}` model with decoder cell `{}`; Hearth reads transformers with an SSRU decoder",
                setting("type"),
                setting("dec-cell")
            )));
        }
        let number = |key: &str| -> Result<usize, TranslateError> {
            setting(key)
                .parse()
                .map_err(|_| load(format!("model.yml has no number `{key}`")))
        };
        let (dim, heads) = (number("dim-emb")?, number("transformer-heads")?);
        let (enc_depth, dec_depth) = (number("enc-depth")?, number("dec-depth")?);
        let get = |name: &str| -> Result<Tensor, TranslateError> {
            raw.get(name)
                .ok_or_else(|| load(format!("no tensor {name}")))?
                .tensor(name)
                .map_err(load)
        };
        let linear = |w: &str, b: &str| -> Result<Linear, TranslateError> {
            Ok(Linear {
                w: get(w)?,
                b: get(b)?,
            })
        };
        let norm = |prefix: &str| -> Result<Norm, TranslateError> {
            Ok(Norm {
                scale: get(&format!("{prefix}_ln_scale"))?,
                bias: get(&format!("{prefix}_ln_bias"))?,
            })
        };
        let attention = |p: &str| -> Result<Attention, TranslateError> {
            Ok(Attention {
                q: linear(&format!("{p}_Wq"), &format!("{p}_bq"))?,
                k: linear(&format!("{p}_Wk"), &format!("{p}_bk"))?,
                v: linear(&format!("{p}_Wv"), &format!("{p}_bv"))?,
                o: linear(&format!("{p}_Wo"), &format!("{p}_bo"))?,
                norm: norm(&format!("{p}_Wo"))?,
            })
        };
        let ffn = |p: &str| -> Result<Ffn, TranslateError> {
            Ok(Ffn {
                w1: linear(&format!("{p}_ffn_W1"), &format!("{p}_ffn_b1"))?,
                w2: linear(&format!("{p}_ffn_W2"), &format!("{p}_ffn_b2"))?,
                norm: norm(&format!("{p}_ffn_ffn"))?,
            })
        };
        let encoder = (1..=enc_depth)
            .map(|l| {
                let p = format!("encoder_l{l}");
                Ok((attention(&format!("{p}_self"))?, ffn(&p)?))
            })
            .collect::<Result<Vec<_>, TranslateError>>()?;
        let decoder = (1..=dec_depth)
            .map(|l| {
                let p = format!("decoder_l{l}");
                Ok(DecoderLayer {
                    ssru: Ssru {
                        w: get(&format!("{p}_rnn_W"))?,
                        wf: get(&format!("{p}_rnn_Wf"))?,
                        bf: get(&format!("{p}_rnn_bf"))?,
                        norm: norm(&format!("{p}_rnn_ffn"))?,
                    },
                    context: attention(&format!("{p}_context"))?,
                    ffn: ffn(&p)?,
                })
            })
            .collect::<Result<Vec<_>, TranslateError>>()?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load(format!("tokenizer.json: {e}")))?;
        let eos = tokenizer
            .token_to_id("</s>")
            .ok_or_else(|| load("the tokenizer has no </s>".into()))?;
        let max_length_factor = std::fs::read_to_string(dir.join("config.intgemm8bitalpha.yml"))
            .ok()
            .and_then(|c| yaml_value(&c, "max-length-factor").and_then(|v| v.parse().ok()))
            .unwrap_or(2.5);
        let shortlist = match std::fs::read_dir(dir)
            .map_err(|e| load(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".s2t.bin"))
            }) {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| load(e.to_string()))?;
                Some(
                    Shortlist::read(&bytes)
                        .map_err(|e| load(format!("{}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        Ok(Self {
            shortlist,
            embeddings: get("Wemb")?,
            output_bias: get("decoder_ff_logit_out_b")?,
            encoder,
            decoder,
            heads,
            dim,
            tokenizer,
            eos,
            max_length_factor,
        })
    }

    /// Marian's sinusoids: sin over the first half of the dimensions, cos
    /// over the second, for positions `start..start + len`.
    fn positions(&self, start: usize, len: usize) -> candle_core::Result<Tensor> {
        let half = self.dim / 2;
        let increment = (10_000f32).ln() / (half as f32 - 1.0);
        let mut data = Vec::with_capacity(len * self.dim);
        for p in start..start + len {
            let angles = (0..half).map(|i| p as f32 * (-(i as f32) * increment).exp());
            let angles: Vec<f32> = angles.collect();
            data.extend(angles.iter().map(|a| a.sin()));
            data.extend(angles.iter().map(|a| a.cos()));
        }
        Tensor::from_vec(data, (1, len, self.dim), &Device::Cpu)
    }

    fn embed(&self, ids: &[u32], start: usize) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?;
        let emb = self.embeddings.index_select(&ids, 0)?.unsqueeze(0)?;
        (emb * (self.dim as f64).sqrt())?.broadcast_add(&self.positions(start, ids.dim(0)?)?)
    }

    /// `[b, len, d]` -> `[b, heads, len, d / heads]`.
    fn split_heads(&self, y: Tensor) -> candle_core::Result<Tensor> {
        let (b, len, d) = y.dims3()?;
        y.reshape((b, len, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `memory` for attention `a`, split into heads.
    fn keys_values(&self, a: &Attention, memory: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(a.k.forward(memory)?)?,
            self.split_heads(a.v.forward(memory)?)?,
        ))
    }

    /// Post-norm attention of `x` over heads-split keys and values.
    fn attend(
        &self,
        a: &Attention,
        x: &Tensor,
        (k, v): &(Tensor, Tensor),
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let q = self.split_heads((a.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let mixed = weights.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        a.norm.forward(&(x + a.o.forward(&mixed)?)?)
    }

    fn encode(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let mut x = self.embed(ids, 0)?;
        for (attention, ffn) in &self.encoder {
            let kv = self.keys_values(attention, &x)?;
            x = self.attend(attention, &x, &kv)?;
            x = ffn.forward(&x)?;
        }
        Ok(x)
    }

    /// One target position through the decoder layers; `states` carries
    /// each SSRU's cell from the previous position.
    fn decoder_step(
        &self,
        input: &Tensor,
        memory: &[(Tensor, Tensor)],
        states: &mut [Option<Tensor>],
    ) -> candle_core::Result<Tensor> {
        let mut x = input.clone();
        for ((layer, state), kv) in self.decoder.iter().zip(states.iter_mut()).zip(memory) {
            // SSRU: f = sigmoid(x Wf + bf); c = f c' + (1 - f) x W;
            // out = relu(c); then the post-norm residual.
            let s = &layer.ssru;
            let f = candle_nn::ops::sigmoid(&x.broadcast_matmul(&s.wf)?.broadcast_add(&s.bf)?)?;
            let candidate = x.broadcast_matmul(&s.w)?;
            let kept = (f.affine(-1.0, 1.0)? * candidate)?;
            let c = match state.take() {
                Some(previous) => ((&f * previous)? + kept)?,
                None => kept,
            };
            let h = c.relu()?;
            *state = Some(c);
            x = s.norm.forward(&(x + h)?)?;
            x = self.attend(&layer.context, &x, kv)?;
            x = layer.ffn.forward(&x)?;
        }
        Ok(x)
    }

    fn translate(&self, text: &str) -> Result<Translation, TranslateError> {
        by_sentence(text, |s| self.translate_sentence(s))
    }

    /// One sentence: (translation, input tokens, output tokens).
    fn translate_sentence(&self, text: &str) -> Result<(String, usize, usize), TranslateError> {
        let ids = source_ids(&self.tokenizer, text, MAX_INPUT_TOKENS, self.eos)?;
        let encoded = self.encode(&ids).map_err(compute)?;
        // The encoder's keys and values, once per sentence for every step.
        let memory = self
            .decoder
            .iter()
            .map(|layer| self.keys_values(&layer.context, &encoded))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(compute)?;
        let limit = ((ids.len() as f32) * self.max_length_factor).ceil() as usize;
        // The output rows searched: the shortlist's candidates, else all.
        let (table, bias, candidates) = match &self.shortlist {
            Some(list) => {
                let vocab = self.embeddings.dim(0).map_err(compute)?;
                let candidates = list.candidates(&ids, self.eos, vocab);
                let index = Tensor::new(candidates.as_slice(), &Device::Cpu).map_err(compute)?;
                (
                    self.embeddings.index_select(&index, 0).map_err(compute)?,
                    self.output_bias.index_select(&index, 1).map_err(compute)?,
                    Some(candidates),
                )
            }
            None => (self.embeddings.clone(), self.output_bias.clone(), None),
        };
        let mut states: Vec<Option<Tensor>> = vec![None; self.decoder.len()];
        let mut output: Vec<u32> = Vec::new();
        // Marian starts the target with an all-zero embedding.
        let mut x = (Tensor::zeros((1, 1, self.dim), DType::F32, &Device::Cpu)
            .and_then(|z| z.broadcast_add(&self.positions(0, 1)?)))
        .map_err(compute)?;
        for step in 0..limit {
            x = self
                .decoder_step(&x, &memory, &mut states)
                .map_err(compute)?;
            let best = crate::matvec::against_rows(&x, &table)
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.broadcast_add(&bias))
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.argmax(0))
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(compute)?;
            let token = match &candidates {
                Some(c) => c.get(best as usize).copied().unwrap_or(self.eos),
                None => best,
            };
            if token == self.eos {
                break;
            }
            output.push(token);
            x = self.embed(&[token], step + 1).map_err(compute)?;
        }
        let translated = self
            .tokenizer
            .decode(&output, true)
            .map_err(|e| compute(format!("cannot detokenize: {e}")))?;
        Ok((translated, ids.len(), output.len() + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_where_a_new_one_starts() {
        assert_eq!(
            sentences("Hello there. How are you? I am fine (really). Mr. smith is 3.5 m tall."),
            vec![
                "Hello there.",
                "How are you?",
                "I am fine (really).",
                "Mr. smith is 3.5 m tall."
            ]
        );
        assert_eq!(sentences("  "), Vec::<&str>::new());
        assert_eq!(sentences("\"Go!\" She ran."), vec!["\"Go!\"", "She ran."]);
    }

    #[test]
    fn shortlists_give_frequent_words_eos_and_each_source_words_candidates() {
        let mut bytes = Vec::new();
        // first 2, best 2; source vocabulary 3 (4 offsets); lists of 5.
        for w in [SHORTLIST_MAGIC, 0, 2, 2, 4, 5, 0, 3, 3, 5] {
            bytes.extend(w.to_le_bytes());
        }
        for t in [7u32, 9, 11, 9, 8] {
            bytes.extend(t.to_le_bytes());
        }
        let list = Shortlist::read(&bytes).expect("read");
        // Source 0 has three candidates, of which the best two count.
        assert_eq!(list.candidates(&[0], 5, 100), vec![0, 1, 5, 7, 9]);
        assert_eq!(list.candidates(&[1, 2], 5, 100), vec![0, 1, 5, 8, 9]);
        assert_eq!(list.candidates(&[0, 2], 5, 9), vec![0, 1, 5, 7, 8]);
        bytes.pop();
        assert!(Shortlist::read(&bytes).is_err());
        assert!(Shortlist::read(&[0u8; 48]).is_err());
    }

    /// A tiny Marian with random weights in the Hugging Face layout
    /// (written through candle's own variable names), with a word-level
    /// tokenizer: it loads through `Translator::load` and answers within
    /// its length bound, the same way twice.
    #[test]
    fn hugging_face_marian_loads_and_translates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let words = [
            "</s>", "<unk>", "<pad>", "hello", "world", "olá", "mundo", "the", "a", "cat",
        ];
        let config = serde_json::json!({
            "model_type": "marian", "vocab_size": words.len(), "decoder_vocab_size": words.len(),
            "max_position_embeddings": 64, "encoder_layers": 1, "encoder_ffn_dim": 16,
            "encoder_attention_heads": 2, "decoder_layers": 1, "decoder_ffn_dim": 16,
            "decoder_attention_heads": 2, "activation_function": "swish", "d_model": 8,
            "decoder_start_token_id": 2, "pad_token_id": 2, "eos_token_id": 0,
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        let mut json = config.clone();
        if let Some(map) = json.as_object_mut() {
            for (k, v) in [
                ("use_cache", serde_json::json!(true)),
                ("is_encoder_decoder", serde_json::json!(true)),
                ("forced_eos_token_id", serde_json::json!(0)),
                ("share_encoder_decoder_embeddings", serde_json::json!(true)),
                ("scale_embedding", serde_json::json!(true)),
            ] {
                map.insert(k.into(), v);
            }
        }
        let cfg: candle_transformers::models::marian::Config =
            serde_json::from_value(json).expect("config");
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        candle_transformers::models::marian::MTModel::new(&cfg, vb).expect("random model");
        varmap
            .save(dir.path().join("model.safetensors"))
            .expect("save");
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
            .collect();
        let tokenizer = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).expect("tok");

        let model = Translator::load(dir.path()).expect("load");
        let first = model.translate("hello world").expect("translate");
        // At most 2.5 times the input (3 tokens with the end) plus 10,
        // and the end.
        assert!(
            first.output_tokens >= 1 && first.output_tokens <= 3 * 5 / 2 + 11,
            "{first:?}"
        );
        assert_eq!(first.input_tokens, 3);
        for word in first.text.split_whitespace() {
            assert!(words.contains(&word), "{word} is not in the vocabulary");
        }
        assert_eq!(model.translate("hello world").expect("again"), first);
        // Two sentences, each with its end token: "hello world ." and
        // "The cat .".
        let two = model.translate("hello world. The cat.").expect("two");
        assert_eq!(two.input_tokens, 4 + 4);

        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "bart"}"#).expect("bart");
        let err = Translator::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a Marian model"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_marian_model() {
        assert!(read_marian(b"not a model at all, not even close").is_err());
        let mut header = 1u64.to_le_bytes().to_vec();
        header.extend(u64::MAX.to_le_bytes());
        assert!(read_marian(&header).is_err());
    }
}
