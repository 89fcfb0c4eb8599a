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

pub struct Translator {
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

/// The model file of a Bergamot folder.
fn model_file(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("model") && n.ends_with(".bin"))
    })
}

impl Translator {
    pub fn load(dir: &Path) -> Result<Self, TranslateError> {
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

    /// Translates a text sentence by sentence (as Bergamot does: the
    /// models were trained on sentences), keeping its line breaks.
    pub fn translate(&self, text: &str) -> Result<Translation, TranslateError> {
        let mut out = Translation::default();
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.text.push('\n');
            }
            let mut first = true;
            for sentence in sentences(line) {
                let (translated, input, output) = self.translate_sentence(sentence)?;
                if !first {
                    out.text.push(' ');
                }
                first = false;
                out.text.push_str(&translated);
                out.input_tokens += input;
                out.output_tokens += output;
            }
        }
        Ok(out)
    }

    /// One sentence: (translation, input tokens, output tokens).
    fn translate_sentence(&self, text: &str) -> Result<(String, usize, usize), TranslateError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TranslateError::BadInput(format!("`text` cannot be tokenized: {e}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() >= MAX_INPUT_TOKENS {
            return Err(TranslateError::BadInput(format!(
                "a sentence of `text` is {} tokens; the model takes at most {}",
                ids.len(),
                MAX_INPUT_TOKENS - 1
            )));
        }
        ids.push(self.eos);
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

    #[test]
    fn garbage_is_not_a_marian_model() {
        assert!(read_marian(b"not a model at all, not even close").is_err());
        let mut header = 1u64.to_le_bytes().to_vec();
        header.extend(u64::MAX.to_le_bytes());
        assert!(read_marian(&header).is_err());
    }
}
