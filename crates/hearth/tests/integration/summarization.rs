//! `@cf/facebook/bart-large-cnn`'s contract, written by the default
//! instruct model (SmolLM2) and labelled so in a header and the catalog.

use serde_json::{Value, json};

use crate::support::*;

const ARTICLE: &str = "The Danube is Europe's second-longest river. It rises in the Black Forest in \
Germany and flows for about 2,850 kilometres through ten countries, including Austria, Hungary, \
Serbia and Romania, before it reaches the Black Sea. Four capital cities lie on its banks: Vienna, \
Bratislava, Budapest and Belgrade. For centuries it has carried trade between central Europe and \
the east, and today it is a busy waterway for barges and cruise ships.";

#[tokio::test]
async fn summaries_keep_the_contract_and_say_who_wrote_them() {
    let (status, headers, v) = post_json(
        &run_url(BART),
        &json!({"input_text": ARTICLE, "max_length": 40}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let summary = v["result"]["summary"].as_str().unwrap_or("");
    assert!(!summary.is_empty(), "{v}");
    // At most 40 tokens: far fewer words than the article's 80.
    assert!(summary.split_whitespace().count() <= 40, "{summary}");
    assert_eq!(headers["x-hearth-summarizer"], SMOLLM);
    assert_eq!(
        v["result"].as_object().map(|o| o.len()),
        Some(1),
        "only `summary`: {v}"
    );

    let models = client()
        .get(account_url("/ai/models/search?search=bart-large-cnn"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("search")
        .json::<Value>()
        .await
        .expect("json");
    let props = models["result"][0]["properties"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        props.iter().any(|p| p["property_id"] == "hearth_served_by"),
        "{models}"
    );

    for (body, needle) in [
        (json!({}), "`input_text` is required"),
        (json!({"input_text": ""}), "`input_text`"),
        (json!({"input_text": 5}), "`input_text`"),
        (json!({"input_text": "x", "max_length": 0}), "`max_length`"),
        (json!({"input_text": "x", "prompt": "y"}), "`prompt`"),
    ] {
        let (status, _, v) = post_json(&run_url(BART), &body).await;
        assert_refused(status, &v, needle);
    }
}

/// With BART's weights (here a tiny random-weight BART in the Hugging Face
/// layout, aliased on the media server), BART itself writes the summary:
/// no summarizer header, the summary within `max_length` tokens of the
/// model's vocabulary, the same summary twice.
#[tokio::test]
async fn installed_bart_writes_the_summary_itself() {
    let url = format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{BART}",
        media_server().base
    );
    let text = "the river flows through ten countries and four capitals lie on its banks";
    let (status, headers, v) = post_json(&url, &json!({"input_text": text})).await;
    assert_eq!(status, 200, "{v}");
    assert!(headers.get("x-hearth-summarizer").is_none(), "{headers:?}");
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .contains("tiny-bart")
    );
    let summary = v["result"]["summary"].as_str().unwrap_or("").to_string();
    assert!(!summary.is_empty(), "{v}");
    let (_, _, again) = post_json(&url, &json!({"input_text": text})).await;
    assert_eq!(again["result"]["summary"], summary.as_str());
    let (status, _, short) = post_json(&url, &json!({"input_text": text, "max_length": 3})).await;
    assert_eq!(status, 200, "{short}");
    let words = short["result"]["summary"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .count();
    assert!(words <= 3, "{short}");
    let (status, _, v) = post_json(&url, &json!({"input_text": ""})).await;
    assert_refused(status, &v, "`input_text`");
}
