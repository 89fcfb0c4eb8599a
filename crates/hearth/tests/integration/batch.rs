//! The async Batch API over HTTP: submit, poll, results in order with
//! external references, for text generation and embeddings.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn wait_done(model: &str, request_id: &str) -> Value {
    for _ in 0..600 {
        let (status, _, v) = post_json(
            &format!("{}?queueRequest=true", run_url(model)),
            &json!({"request_id": request_id}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let result = &v["result"];
        if result.get("responses").is_some() {
            return result.clone();
        }
        assert!(
            matches!(result["status"].as_str(), Some("queued" | "running")),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch {request_id} did not finish");
}

#[tokio::test]
async fn text_generation_batch_runs_every_item_with_its_reference() {
    let requests: Vec<Value> = (0..4)
        .map(|i| json!({"prompt": "The capital of France is", "raw": true, "max_tokens": 4, "temperature": 0, "external_reference": format!("ref-{i}")}))
        .chain([json!({"prompt": "", "external_reference": "empty"})])
        .collect();
    let (status, _, v) = post_json(
        &format!("{}?queueRequest=true", run_url(BATCH_LLM)),
        &json!({"requests": requests}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["status"], "queued");
    assert_eq!(v["result"]["model"], BATCH_LLM);
    let id = v["result"]["request_id"]
        .as_str()
        .expect("request id")
        .to_string();
    let done = wait_done(BATCH_LLM, &id).await;
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 5);
    for (i, r) in responses.iter().enumerate().take(4) {
        assert_eq!(r["id"], i);
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["external_reference"], format!("ref-{i}"));
        assert!(
            r["result"]["response"].as_str().unwrap().contains("Paris"),
            "{r}"
        );
    }
    assert_eq!(
        responses[4]["success"], false,
        "an invalid item fails alone"
    );
    assert_eq!(responses[4]["external_reference"], "empty");
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // The binding polls with a bare {request_id} body, no query flag.
    let (status, _, again) = post_json(&run_url(BATCH_LLM), &json!({"request_id": id})).await;
    assert_eq!(status, 200);
    assert_eq!(again["result"]["responses"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn embeddings_batch_matches_direct_calls() {
    let texts = ["a cat on a mat", "stock markets fell"];
    let (status, _, v) = post_json(
        &format!("{}?queueRequest=true", run_url(BGE_ALIAS)),
        &json!({"requests": [{"text": texts[0], "external_reference": "a"}, {"text": [texts[1]]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["result"]["request_id"].as_str().unwrap().to_string();
    let done = wait_done(BGE_ALIAS, &id).await;
    let responses = done["responses"].as_array().unwrap();
    assert_eq!(responses[0]["external_reference"], "a");
    assert_eq!(responses[1]["external_reference"], Value::Null);
    for (i, text) in texts.iter().enumerate() {
        let (_, _, direct) = post_json(&run_url(BGE_ALIAS), &json!({"text": text})).await;
        let a: Vec<f64> =
            serde_json::from_value(responses[i]["result"]["data"][0].clone()).unwrap();
        let b: Vec<f64> = serde_json::from_value(direct["result"]["data"][0].clone()).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}

#[tokio::test]
async fn batch_errors() {
    let queued = |model: &str| format!("{}?queueRequest=true", run_url(model));
    // A model without async batch support.
    let (status, _, v) = post_json(&queued(SMOLLM), &json!({"requests": [{"prompt": "x"}]})).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (400, Some(5006)),
        "{v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("async"),
        "{v}"
    );
    for (body, needle) in [
        (json!({"requests": []}), "must not be empty"),
        (json!({"requests": "x"}), "must be an array"),
        (json!({"requests": [1]}), "requests[0]"),
        (json!({"prompt": "x"}), "`requests`"),
        (json!({"request_id": "nope"}), "no queued request"),
    ] {
        let (status, _, v) = post_json(&queued(BATCH_LLM), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    // 10 MB and over is refused before anything is queued.
    let big = json!({"requests": [{"prompt": "x".repeat(10_000_000)}]});
    let (status, _, v) = post_json(&queued(BATCH_LLM), &big).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_u64()),
        (413, Some(3006)),
        "{v}"
    );
}
