//! Automatic Speech Recognition: the audio travels as the raw request
//! body, as a JSON array of bytes (`{"audio": [82, 73, ...]}`) or as base64
//! (`whisper-large-v3-turbo`'s `audio`, also `{body, contentType}`).
//!
//! Two answer shapes, chosen by the id asked for, as Workers AI has them:
//! `@cf/openai/whisper` and `whisper-tiny-en` answer `{text, word_count,
//! words, vtt}`; `whisper-large-v3-turbo` answers `{transcription_info,
//! text, word_count, segments[{..., words}], vtt}`.

use axum::response::Response;
use hearth_engine::speech::{Segment, Task, TranscribeOptions, Transcript};
use hearth_types::ApiError;
use serde_json::{Map, Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, enveloped};

/// Encoded audio larger than this is refused before decoding (Workers AI's
/// own request limit is 25 MB).
pub const MAX_AUDIO_BYTES: usize = 25 << 20;
/// Decoded audio longer than this is refused.
pub const MAX_AUDIO_SECONDS: f64 = 3600.0;

fn bad(message: impl Into<String>) -> Failure {
    Failure(ApiError::invalid_input(message.into()))
}

/// The decoding options a request carries (`whisper-large-v3-turbo`'s
/// fields; the older models take only `audio`, and Hearth reads the same
/// fields for them too).
fn options(input: &Map<String, Value>) -> Result<TranscribeOptions, Failure> {
    let task = match body::text(input, "task")?.as_deref() {
        None | Some("transcribe") => Task::Transcribe,
        Some("translate") => Task::Translate,
        Some(other) => {
            return Err(bad(format!(
                "`task` must be \"transcribe\" or \"translate\", got {other:?}"
            )));
        }
    };
    let mut options = TranscribeOptions {
        task,
        language: body::text(input, "language")?.filter(|l| !l.is_empty()),
        initial_prompt: body::text(input, "initial_prompt")?,
        prefix: body::text(input, "prefix")?,
        vad_filter: body::flag(input, "vad_filter")?.unwrap_or(false),
        ..TranscribeOptions::default()
    };
    if let Some(c) = body::flag(input, "condition_on_previous_text")? {
        options.condition_on_previous_text = c;
    }
    if let Some(v) = body::number(input, "no_speech_threshold")? {
        options.no_speech_threshold = v as f32;
    }
    if let Some(v) = body::number(input, "compression_ratio_threshold")? {
        options.compression_ratio_threshold = v as f32;
    }
    if let Some(v) = body::number(input, "log_prob_threshold")? {
        options.log_prob_threshold = v as f32;
    }
    // Decoding is greedy with temperature fallback; `beam_size` and
    // `hallucination_silence_threshold` are checked for type and accepted.
    if let Some(beam) = body::number(input, "beam_size")?
        && !(1.0..=10.0).contains(&beam)
    {
        return Err(bad(format!(
            "`beam_size` must be between 1 and 10, got {beam}"
        )));
    }
    body::number(input, "hallucination_silence_threshold")?;
    Ok(options)
}

/// `HH:MM:SS.mmm`, WebVTT's timestamp.
fn vtt_time(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            vtt_time(s.start),
            vtt_time(s.end),
            s.text.trim()
        ));
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn words(segment: &Segment) -> Vec<Value> {
    segment
        .words
        .iter()
        .map(|w| json!({"word": w.word, "start": round(w.start), "end": round(w.end)}))
        .collect()
}

/// The answer in the shape of the model asked for.
pub fn answer(model: &str, transcript: &Transcript) -> Value {
    let text = transcript.text();
    let word_count = text.split_whitespace().count();
    if model.contains("whisper-large-v3-turbo") {
        let segments: Vec<Value> = transcript
            .segments
            .iter()
            .map(|s| {
                json!({
                    "start": round(s.start),
                    "end": round(s.end),
                    "text": s.text.trim(),
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                    "words": words(s),
                })
            })
            .collect();
        json!({
            "transcription_info": {
                "language": transcript.language,
                "language_probability": transcript.language_probability,
                "duration": round(transcript.duration),
                "duration_after_vad": round(transcript.duration_after_vad),
            },
            "text": text,
            "word_count": word_count,
            "segments": segments,
            "vtt": vtt(&transcript.segments),
        })
    } else {
        let words: Vec<Value> = transcript.segments.iter().flat_map(words).collect();
        json!({
            "text": text,
            "word_count": word_count,
            "words": words,
            "vtt": vtt(&transcript.segments),
        })
    }
}

pub async fn transcribe(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let (audio, input) = body::binary_input(bytes, "audio")?;
    if audio.len() > MAX_AUDIO_BYTES {
        return Err(bad(format!(
            "`audio` is {} bytes; the limit is {MAX_AUDIO_BYTES}",
            audio.len()
        )));
    }
    let options = options(&input)?;
    let (transcript, resolved) = state
        .app
        .transcribe(model, audio, options, MAX_AUDIO_SECONDS)
        .await?;
    admission.charge_units(transcript.duration / 60.0, 0);
    Ok(enveloped(answer(model, &transcript), &resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtt_times_are_webvtt() {
        assert_eq!(vtt_time(0.0), "00:00:00.000");
        assert_eq!(vtt_time(3723.4567), "01:02:03.457");
    }

    #[test]
    fn option_types_are_checked_by_name() {
        let input = |v: Value| v.as_object().cloned().unwrap_or_default();
        let err = options(&input(json!({"task": "sing"})))
            .err()
            .map(|f| f.0.to_string());
        assert!(err.unwrap_or_default().contains("`task`"));
        let err = options(&input(json!({"vad_filter": 3})))
            .err()
            .map(|f| f.0.to_string());
        assert!(err.unwrap_or_default().contains("`vad_filter`"));
        let ok = options(&input(json!({"vad_filter": "true", "language": "en"})));
        assert!(ok.is_ok_and(|o| o.vad_filter && o.language.as_deref() == Some("en")));
    }
}
