//! `@cf/meta/m2m100-1.2b`'s contract. With `[translation] llm_fallback`
//! the default instruct model (SmolLM2) translates and a header says so;
//! without it a pair no installed model covers is refused with the pair
//! named. Bad inputs are refused by field either way.

use serde_json::json;

use crate::support::*;

const M2M100: &str = "@cf/meta/m2m100-1.2b";

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
