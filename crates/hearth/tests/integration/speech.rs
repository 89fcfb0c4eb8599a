//! Speech recognition on the genuine whisper-tiny-en weights (the
//! registry's CTranslate2 file): espeak-ng speaks known sentences, Hearth
//! transcribes them from WAV and MP3 under the word error rate bound, with
//! word timestamps in order and inside the audio; the three ways audio
//! travels give the same text; a 70-second passage is transcribed whole
//! across windows; whisper-large-v3-turbo's answer shape; bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

/// What espeak-ng reads: five sentences, and about seventy seconds of
/// distinct sentences (a repeated text would look like a decoding loop to
/// the compression-ratio check). `bench/asr.py` reads the same file.
const TEXTS: &str = include_str!("speech_texts.json");

fn texts(key: &str) -> Vec<String> {
    let all: Value = serde_json::from_str(TEXTS).expect("speech_texts.json");
    all[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

fn sentence(i: usize) -> String {
    texts("sentences")[i].clone()
}

fn url(model: &str) -> String {
    format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
        media_server().base
    )
}

/// espeak-ng's reading of `text` as a WAV.
fn speak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng (scripts/setup-system installs it)");
    assert!(status.success());
    wav
}

/// The same audio as a 64 kb/s MP3.
fn to_mp3(wav: &Path) -> PathBuf {
    let mp3 = wav.with_extension("mp3");
    let status = Command::new("lame")
        .args(["--quiet", "-b", "64"])
        .arg(wav)
        .arg(&mp3)
        .status()
        .expect("lame (scripts/setup-system installs it)");
    assert!(status.success());
    mp3
}

fn words_of(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level Levenshtein distance over the reference's length.
fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words_of(reference), words_of(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut next = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let substitution = row[j] + usize::from(rw != hw);
            next[j + 1] = substitution.min(row[j + 1] + 1).min(next[j] + 1);
        }
        row = next;
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

async fn post_raw(model: &str, body: Vec<u8>, content_type: &str) -> (u16, Value) {
    post_body(&url(model), content_type, body).await
}

/// Seconds of audio in a 16-bit mono WAV.
fn wav_seconds(path: &Path) -> f64 {
    let bytes = std::fs::read(path).expect("wav");
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    (bytes.len() - 44) as f64 / 2.0 / f64::from(rate)
}

fn check_words(result: &Value, seconds: f64) {
    let words = result["words"].as_array().expect("words");
    assert!(!words.is_empty(), "{result}");
    let mut last_start = 0.0;
    for w in words {
        let (start, end) = (
            w["start"].as_f64().unwrap_or(-1.0),
            w["end"].as_f64().unwrap_or(-1.0),
        );
        assert!(
            w["word"].as_str().is_some_and(|t| !t.trim().is_empty()),
            "{w}"
        );
        assert!(
            start >= last_start && end >= start,
            "out of order: {w} in {result}"
        );
        assert!(end <= seconds + 0.05, "past the end ({seconds} s): {w}");
        last_start = start;
    }
    assert_eq!(
        result["word_count"].as_u64(),
        Some(
            result["text"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .count() as u64
        )
    );
}

#[tokio::test]
async fn spoken_sentences_are_transcribed_from_wav_and_mp3() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, sentence) in texts("sentences").iter().enumerate() {
        let wav = speak(dir.path(), &format!("s{i}"), sentence);
        let mp3 = to_mp3(&wav);
        let seconds = wav_seconds(&wav);
        for (path, kind) in [(&wav, "audio/wav"), (&mp3, "audio/mpeg")] {
            let (status, v) =
                post_raw(WHISPER_TINY, std::fs::read(path).expect("audio"), kind).await;
            assert_eq!(status, 200, "{v}");
            let text = v["result"]["text"].as_str().unwrap_or("");
            let wer = word_error_rate(sentence, text);
            assert!(
                wer < 0.25,
                "{kind}: WER {wer:.2}: {sentence:?} heard as {text:?}"
            );
            check_words(&v["result"], seconds + 0.2);
            let vtt = v["result"]["vtt"].as_str().unwrap_or("");
            assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");
        }
    }
}

#[tokio::test]
async fn raw_body_byte_array_and_base64_give_the_same_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = std::fs::read(speak(dir.path(), "same", &sentence(2))).expect("wav");
    let (status, raw) = post_raw(WHISPER_TINY, wav.clone(), "application/octet-stream").await;
    assert_eq!(status, 200, "{raw}");
    let as_array: Vec<Value> = wav.iter().map(|b| json!(b)).collect();
    let (status, _, by_array) = post_json(&url(WHISPER_TINY), &json!({"audio": as_array})).await;
    assert_eq!(status, 200, "{by_array}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wav);
    let (status, _, by_b64) = post_json(&url(WHISPER_TINY), &json!({"audio": b64})).await;
    assert_eq!(status, 200, "{by_b64}");
    let (status, _, by_object) = post_json(
        &url(WHISPER),
        &json!({"audio": {"body": b64, "contentType": "audio/wav"}}),
    )
    .await;
    assert_eq!(status, 200, "{by_object}");
    for other in [&by_array, &by_b64, &by_object] {
        assert_eq!(other["result"]["text"], raw["result"]["text"]);
        assert_eq!(other["result"]["words"], raw["result"]["words"]);
    }
}

#[tokio::test]
async fn a_seventy_second_passage_is_transcribed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passage = texts("passage").join(" ");
    let wav = speak(dir.path(), "long", &passage);
    let seconds = wav_seconds(&wav);
    assert!(seconds > 60.0, "the passage is only {seconds} s");
    let (status, v) = post_raw(WHISPER_TINY, std::fs::read(&wav).expect("wav"), "audio/wav").await;
    assert_eq!(status, 200, "{v}");
    let text = v["result"]["text"].as_str().unwrap_or("");
    let wer = word_error_rate(&passage, text);
    assert!(wer < 0.25, "WER {wer:.2}: heard {text:?}");
    check_words(&v["result"], seconds + 0.2);
    // Words from the last window carry its offset.
    let last_end = v["result"]["words"]
        .as_array()
        .and_then(|w| w.last())
        .and_then(|w| w["end"].as_f64())
        .unwrap_or(0.0);
    assert!(
        last_end > seconds - 5.0,
        "last word ends at {last_end} of {seconds} s"
    );
}

#[tokio::test]
async fn turbo_id_answers_with_segments_and_transcription_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = speak(dir.path(), "turbo", &sentence(3));
    let seconds = wav_seconds(&wav);
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&wav).expect("wav"));
    let (status, _, v) = post_json(
        &url(WHISPER_TURBO),
        &json!({"audio": b64, "task": "transcribe", "language": "en", "vad_filter": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = &v["result"];
    assert_eq!(r["transcription_info"]["language"], "en");
    let duration = r["transcription_info"]["duration"].as_f64().unwrap_or(0.0);
    assert!((duration - seconds).abs() < 0.1, "{duration} vs {seconds}");
    let after_vad = r["transcription_info"]["duration_after_vad"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!(after_vad > 0.0 && after_vad <= duration, "{r}");
    let segments = r["segments"].as_array().expect("segments");
    assert!(!segments.is_empty(), "{r}");
    for s in segments {
        for key in [
            "start",
            "end",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(s[key].is_number(), "{key} in {s}");
        }
        assert!(s["words"].as_array().is_some_and(|w| !w.is_empty()), "{s}");
    }
    assert!(
        word_error_rate(&sentence(3), r["text"].as_str().unwrap_or("")) < 0.25,
        "{r}"
    );
    assert!(
        r.get("words").is_none(),
        "turbo keeps words inside segments: {r}"
    );
}

#[tokio::test]
async fn bad_audio_inputs_are_refused_with_the_field_named() {
    let (status, v) = post_raw(
        WHISPER_TINY,
        b"this is plainly not audio".to_vec(),
        "audio/wav",
    )
    .await;
    assert_refused(status, &v, "`audio`");
    for (body, needle) in [
        (json!({"audio": []}), "`audio` is empty"),
        (json!({"audio": [1, 2, 300]}), "`audio` must hold bytes"),
        (json!({"audio": true}), "`audio` must be"),
        (json!({"language": "en"}), "`audio` is required"),
        (json!({"audio": "UklGRg==", "task": "sing"}), "`task`"),
        (
            json!({"audio": "UklGRg==", "vad_filter": 2}),
            "`vad_filter`",
        ),
        (
            json!({"audio": "UklGRg==", "initial_prompt": 5}),
            "`initial_prompt`",
        ),
    ] {
        let (status, _, v) = post_json(&url(WHISPER_TURBO), &body).await;
        assert_refused(status, &v, needle);
    }
    let (status, _, v) = post_json(&url(WHISPER_TURBO), &json!({"audio": "@@not base64@@"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["code"], 5004, "{v}");

    // tiny.en knows only English.
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = speak(dir.path(), "fr", &sentence(0));
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&wav).expect("wav"));
    let (status, _, v) = post_json(
        &url(WHISPER_TURBO),
        &json!({"audio": b64, "language": "fr"}),
    )
    .await;
    assert_refused(status, &v, "`language`");
}
