//! Translation (`@cf/meta/m2m100-1.2b`'s contract: `text`, `target_lang`,
//! `source_lang` (default `en`) -> `{translated_text}`).
//!
//! A pair is translated by the installed model for it (Bergamot's en<->pt,
//! `@cf/mozilla/translate-en-pt`, on the translation engine), asked for by
//! its own id or through m2m100's; the `x-hearth-translator` header names
//! the model that wrote the answer. A pair no installed model covers is
//! translated by the default instruct model when the config allows it
//! (`[translation] llm_fallback = true`), else refused with the pair named,
//! never answered with a wrong text.

use axum::response::Response;
use hearth_types::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::summarize::InstructedTask;
use crate::{AppState, body, enveloped};

/// The task name in the catalog.
pub const TRANSLATION: &str = "Translation";
/// Says which model wrote a translation.
pub const TRANSLATOR_HEADER: &str = "x-hearth-translator";
/// Longest `text` taken, in characters.
const MAX_TEXT_CHARS: usize = 32_000;

/// English names of common ISO 639-1 codes, for the instructions; other
/// well-formed codes are passed to the model as codes.
const LANGUAGES: &[(&str, &str)] = &[
    ("ar", "Arabic"),
    ("bg", "Bulgarian"),
    ("bn", "Bengali"),
    ("ca", "Catalan"),
    ("cs", "Czech"),
    ("da", "Danish"),
    ("de", "German"),
    ("el", "Greek"),
    ("en", "English"),
    ("es", "Spanish"),
    ("et", "Estonian"),
    ("fa", "Persian"),
    ("fi", "Finnish"),
    ("fr", "French"),
    ("he", "Hebrew"),
    ("hi", "Hindi"),
    ("hr", "Croatian"),
    ("hu", "Hungarian"),
    ("id", "Indonesian"),
    ("it", "Italian"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("lt", "Lithuanian"),
    ("lv", "Latvian"),
    ("ms", "Malay"),
    ("nl", "Dutch"),
    ("no", "Norwegian"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("ro", "Romanian"),
    ("ru", "Russian"),
    ("sk", "Slovak"),
    ("sl", "Slovenian"),
    ("sr", "Serbian"),
    ("sv", "Swedish"),
    ("sw", "Swahili"),
    ("th", "Thai"),
    ("tr", "Turkish"),
    ("uk", "Ukrainian"),
    ("ur", "Urdu"),
    ("vi", "Vietnamese"),
    ("zh", "Chinese"),
];

fn bad(message: impl Into<String>) -> Failure {
    Failure(ApiError::invalid_input(message.into()))
}

/// A language code as the request gave it, lower-cased and checked:
/// ISO 639 (two or three letters), optionally with a region (`pt-BR`).
fn language(input: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, Failure> {
    let code = match input.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => return Err(bad(format!("`{key}` must be a language code, got {other}"))),
    };
    let (base, region) = code.split_once(['-', '_']).unwrap_or((&code, ""));
    let base_ok = (2..=3).contains(&base.len()) && base.chars().all(|c| c.is_ascii_alphabetic());
    let region_ok = region.is_empty()
        || ((2..=4).contains(&region.len()) && region.chars().all(|c| c.is_ascii_alphanumeric()));
    if !base_ok || !region_ok {
        return Err(bad(format!(
            "`{key}` must be a language code such as \"en\" or \"pt-BR\", got {code:?}"
        )));
    }
    Ok(Some(base.to_ascii_lowercase()))
}

fn name_of(code: &str) -> String {
    LANGUAGES.iter().find(|(c, _)| *c == code).map_or_else(
        || format!("the language with ISO 639 code \"{code}\""),
        |(_, n)| (*n).to_string(),
    )
}

/// `(text, source, target)` of a request, checked. Left out, `source` is
/// the model's (`en` for m2m100); `target` may be left out only for a
/// model of one language pair.
fn parse(bytes: &[u8]) -> Result<(String, Option<String>, Option<String>), Failure> {
    let Value::Object(input) = body::parse_json::<Value>(bytes)? else {
        return Err(bad(
            "the body must be a JSON object with `text` and `target_lang`",
        ));
    };
    if input.contains_key("requests") {
        return Err(bad(
            "`requests` (an async batch) is not taken for translation yet; send one `text`",
        ));
    }
    let text = match input.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(bad("`text` must not be empty")),
        Some(other) => return Err(bad(format!("`text` must be a string, got {other}"))),
        None => return Err(bad("`text` is required")),
    };
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(bad(format!(
            "`text` is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    let target = language(&input, "target_lang")?;
    let source = language(&input, "source_lang")?;
    if let Some(other) = input
        .keys()
        .find(|k| !["text", "source_lang", "target_lang"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "`{other}` is not an input of {TRANSLATION} (it takes `text`, `source_lang`, `target_lang`)"
        )));
    }
    Ok((text, source, target))
}

/// `(source, target)` of a one-pair model id (`.../translate-en-pt`).
fn pair_of(model: &str) -> Option<(String, String)> {
    let tail = model.rsplit('/').next()?.strip_prefix("translate-")?;
    let (source, target) = tail.split_once('-')?;
    Some((source.to_string(), target.to_string()))
}

pub async fn run(
    state: &AppState,
    account: &str,
    model: &str,
    bytes: &[u8],
) -> Result<Response, Failure> {
    let (text, source, target) = parse(bytes)?;
    let (source, target) = match (pair_of(model), source, target) {
        (Some((from, to)), source, target) => {
            let source = source.unwrap_or_else(|| from.clone());
            let target = target.unwrap_or_else(|| to.clone());
            if (source.as_str(), target.as_str()) != (from.as_str(), to.as_str()) {
                return Err(bad(format!(
                    "{model} translates {from} -> {to}, not {source} -> {target} \
                     (`source_lang`, `target_lang`)"
                )));
            }
            (source, target)
        }
        (None, source, Some(target)) => (source.unwrap_or_else(|| "en".into()), target),
        (None, _, None) => return Err(bad("`target_lang` is required")),
    };
    if let Some(translator) = state.app.translation_model_for(&source, &target) {
        let admission = Admission::admit(state, account, model, TRANSLATION)?;
        let (translation, resolved) = state.app.translate(&translator, text).await?;
        admission.charge(
            translation.input_tokens as u64,
            translation.output_tokens as u64,
        );
        let mut response = enveloped(json!({"translated_text": translation.text}), &resolved);
        // `x-hearth-model` is the id asked for (m2m100's, say); the pair
        // model that answered is in `x-hearth-translator`.
        for (name, value) in [
            (crate::MODEL_HEADER, model),
            (TRANSLATOR_HEADER, &translator),
        ] {
            if let Ok(v) = axum::http::HeaderValue::from_str(value) {
                response.headers_mut().insert(name, v);
            }
        }
        return Ok(response);
    }
    if !state.app.config().translation.llm_fallback {
        return Err(Failure(ApiError::new(
            ErrorCode::ModelNotInstalled,
            format!(
                "{model}: no installed translation model covers {source} -> {target}; \
                 set `[translation] llm_fallback = true` to let the default instruct model translate"
            ),
        )));
    }
    let (from, to) = (name_of(&source), name_of(&target));
    let task = InstructedTask {
        task: TRANSLATION,
        instructions: format!(
            "Translate the text the user gives from {from} to {to}. Keep its meaning, \
             names and numbers. Reply with the translation only."
        ),
        header: TRANSLATOR_HEADER,
        answer_key: "translated_text",
    };
    // A translation is rarely more than twice the source's tokens; four
    // characters per token bounds it from the text's length.
    let budget = (text.chars().count() / 2 + 64).min(4096) as u32;
    task.run(state, account, model, text, budget).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_by_name() {
        let err = |body: &str| {
            parse(body.as_bytes())
                .err()
                .map(|f| f.0.to_string())
                .unwrap_or_default()
        };
        assert!(err(r#"{"target_lang": "fr"}"#).contains("`text` is required"));
        assert!(err(r#"{"text": "", "target_lang": "fr"}"#).contains("`text` must not be empty"));
        assert!(err(r#"{"text": 3, "target_lang": "fr"}"#).contains("`text` must be a string"));
        assert!(err(r#"{"text": "hi", "target_lang": "french!"}"#).contains("`target_lang`"));
        assert!(
            err(r#"{"text": "hi", "target_lang": "fr", "temperature": 1}"#)
                .contains("`temperature`")
        );
        assert!(err(r#"{"requests": []}"#).contains("`requests`"));
        let ok = parse(br#"{"text": "hi", "target_lang": "pt-BR"}"#).ok();
        assert_eq!(ok, Some(("hi".into(), None, Some("pt".into()))));
        assert_eq!(
            pair_of("@cf/mozilla/translate-en-pt"),
            Some(("en".into(), "pt".into()))
        );
        assert_eq!(pair_of("@cf/meta/m2m100-1.2b"), None);
    }

    #[test]
    fn codes_get_names() {
        assert_eq!(name_of("fr"), "French");
        assert!(name_of("xh").contains("\"xh\""));
    }
}
