//! `@cf/meta/m2m100-1.2b`'s contract. English <-> Portuguese go to the
//! genuine Bergamot models (the registry's int8 Marian): five sentences
//! come out with the expected words and come back close to where they
//! started. Other pairs: with `[translation] llm_fallback` the default
//! instruct model (SmolLM2) translates and a header says so; without it
//! they are refused with the pair named. Bad inputs are refused by field.

use serde_json::json;

use crate::support::*;

const M2M100: &str = "@cf/meta/m2m100-1.2b";
const EN_PT: &str = "@cf/mozilla/translate-en-pt";
const PT_EN: &str = "@cf/mozilla/translate-pt-en";

/// English sentences and words their Portuguese must hold.
const SENTENCES: [(&str, &[&str]); 5] = [
    (
        "The weather today is sunny with a light breeze from the west.",
        &["ensolarado", "brisa", "oeste"],
    ),
    (
        "Please call Stella and ask her to bring these things with her from the store.",
        &["Stella", "coisas", "loja"],
    ),
    (
        "The children played in the garden after lunch.",
        &["crianças", "jardim", "almoço"],
    ),
    (
        "Open the window and let the fresh air into the room.",
        &["janela", "ar fresco"],
    ),
    (
        "We will meet at the library at three o'clock tomorrow.",
        &["biblioteca", "amanhã"],
    ),
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect())
        .collect()
}

async fn translate(model: &str, body: serde_json::Value) -> (String, String) {
    let (status, headers, v) = post_json(&run_url(model), &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-hearth-model"], model);
    let by = headers
        .get("x-hearth-translator")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        v["result"]["translated_text"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        by,
    )
}

#[tokio::test]
async fn english_and_portuguese_go_through_the_genuine_bergamot_models() {
    for (english, expected) in SENTENCES {
        let (portuguese, by) = translate(
            M2M100,
            json!({"text": english, "source_lang": "en", "target_lang": "pt"}),
        )
        .await;
        assert_eq!(by, EN_PT);
        for word in expected {
            assert!(
                portuguese.contains(word),
                "{english:?} -> {portuguese:?} lacks {word:?}"
            );
        }
        let (back, by) = translate(PT_EN, json!({"text": portuguese})).await;
        assert_eq!(by, PT_EN);
        let original = words(english);
        let kept = original.iter().filter(|w| words(&back).contains(w)).count();
        assert!(
            kept * 10 >= original.len() * 6,
            "{english:?} came back as {back:?}"
        );
    }
    // Several sentences are translated one by one and joined.
    let two = format!("{} {}", SENTENCES[2].0, SENTENCES[3].0);
    let (portuguese, _) = translate(EN_PT, json!({"text": two, "target_lang": "pt"})).await;
    assert!(
        portuguese.contains("jardim") && portuguese.contains("janela"),
        "{portuguese}"
    );
    // One sentence past the model's 255 tokens is refused by field.
    let endless = "and then the dog ran ".repeat(80);
    let (status, _, v) = post_json(&run_url(EN_PT), &json!({ "text": endless })).await;
    assert_refused(status, &v, "`text`");
    // A pair model answers only its pair.
    let (status, _, v) = post_json(
        &run_url(EN_PT),
        &json!({"text": "Hi.", "target_lang": "fr"}),
    )
    .await;
    assert_refused(status, &v, "en -> pt");
}

#[tokio::test]
async fn the_instruct_model_translates_when_allowed_and_says_so() {
    let url = format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{M2M100}",
        media_server().base
    );
    let (status, headers, v) = post_json(
        &url,
        &json!({"text": "Good morning, my friend.", "source_lang": "en", "target_lang": "fr"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let text = v["result"]["translated_text"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{v}");
    assert_eq!(v["result"].as_object().map(|o| o.len()), Some(1), "{v}");
    assert_eq!(headers["x-hearth-translator"], SMOLLM);
}

#[tokio::test]
async fn without_the_fallback_an_uncovered_pair_is_refused_by_name() {
    let (status, _, v) = post_json(
        &run_url(M2M100),
        &json!({"text": "Good morning.", "target_lang": "de"}),
    )
    .await;
    assert_ne!(status, 200, "{v}");
    assert_eq!(v["success"], false, "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("en -> de") && message.contains("llm_fallback"),
        "{v}"
    );

    for (body, needle) in [
        (json!({"target_lang": "fr"}), "`text` is required"),
        (
            json!({"text": "", "target_lang": "fr"}),
            "`text` must not be empty",
        ),
        (
            json!({"text": ["a"], "target_lang": "fr"}),
            "`text` must be a string",
        ),
        (json!({"text": "hi"}), "`target_lang` is required"),
        (json!({"text": "hi", "target_lang": 7}), "`target_lang`"),
        (
            json!({"text": "hi", "target_lang": "fr", "source_lang": "english!"}),
            "`source_lang`",
        ),
        (
            json!({"text": "hi", "target_lang": "fr", "max_tokens": 5}),
            "`max_tokens`",
        ),
    ] {
        let (status, _, v) = post_json(&run_url(M2M100), &body).await;
        assert_refused(status, &v, needle);
    }
}
