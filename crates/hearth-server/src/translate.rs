//! Translation (`@cf/meta/m2m100-1.2b`'s contract: `text`, `target_lang`,
//! `source_lang` (default `en`) -> `{translated_text}`).
//!
//! No translation engine is built yet (the Bergamot and Marian models are
//! an open issue), so a language pair is served only when the config
//! allows an LLM-backed translation (`[translation] llm_fallback = true`):
//! the default instruct model translates and the `x-hearth-translator`
//! header names it. Otherwise the request is refused with the pair named,
//! never answered with a wrong text.

use axum::response::Response;
use hearth_types::{ApiError, ErrorCode};
use serde_json::Value;

use crate::error::Failure;
use crate::summarize::InstructedTask;
use crate::{AppState, body};

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

/// `(text, source, target)` of a request, checked.
fn parse(bytes: &[u8]) -> Result<(String, String, String), Failure> {
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
    let target =
        language(&input, "target_lang")?.ok_or_else(|| bad("`target_lang` is required"))?;
    let source = language(&input, "source_lang")?.unwrap_or_else(|| "en".into());
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

pub async fn run(
    state: &AppState,
    account: &str,
    model: &str,
    bytes: &[u8],
) -> Result<Response, Failure> {
    let (text, source, target) = parse(bytes)?;
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
        assert!(err(r#"{"text": "hi"}"#).contains("`target_lang` is required"));
        assert!(err(r#"{"text": "", "target_lang": "fr"}"#).contains("`text` must not be empty"));
        assert!(err(r#"{"text": 3, "target_lang": "fr"}"#).contains("`text` must be a string"));
        assert!(err(r#"{"text": "hi", "target_lang": "french!"}"#).contains("`target_lang`"));
        assert!(
            err(r#"{"text": "hi", "target_lang": "fr", "temperature": 1}"#)
                .contains("`temperature`")
        );
        assert!(err(r#"{"requests": []}"#).contains("`requests`"));
        let ok = parse(br#"{"text": "hi", "target_lang": "pt-BR"}"#).ok();
        assert_eq!(ok, Some(("hi".into(), "en".into(), "pt".into())));
    }

    #[test]
    fn codes_get_names() {
        assert_eq!(name_of("fr"), "French");
        assert!(name_of("xh").contains("\"xh\""));
    }
}
