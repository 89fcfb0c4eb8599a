//! The reranker and classifier contracts through the HTTP API, on tiny
//! random-weight XLM-RoBERTa and DistilBERT models (architecture and file
//! layout verified, not quality).

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rerank_returns_every_context_best_first_and_honours_top_k() {
    let contexts = json!([{"text": "Paris is the capital of France"}, {"text": "Berlin is the capital of Germany"}, {"text": "cheese"}, {"text": "bread"}]);
    let (status, headers, v) = post_json(
        &run_url(RERANKER),
        &json!({"query": "what is the capital of France", "contexts": contexts}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .contains("tiny-reranker")
    );
    let ranked = v["result"]["response"].as_array().unwrap();
    assert_eq!(ranked.len(), 4);
    let mut ids: Vec<u64> = ranked.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let scores: Vec<f64> = ranked
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {scores:?}"
    );
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3]);

    let (status, _, top) = post_json(
        &run_url(RERANKER),
        &json!({"query": "what is the capital of France", "contexts": contexts, "top_k": 2}),
    )
    .await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(
        top["result"]["response"].as_array().unwrap().as_slice(),
        &ranked[..2]
    );
}

#[tokio::test]
async fn bad_rerank_inputs_name_the_field() {
    for (body, mentions) in [
        (json!({"contexts": [{"text": "a"}]}), "`query` is required"),
        (json!({"query": "", "contexts": [{"text": "a"}]}), "`query`"),
        (json!({"query": "q"}), "`contexts` is required"),
        (json!({"query": "q", "contexts": []}), "`contexts`"),
        (
            json!({"query": "q", "contexts": [{"text": ""}]}),
            "`contexts[0].text`",
        ),
        (
            json!({"query": "q", "contexts": ["plain string"]}),
            "contexts",
        ),
        (
            json!({"query": "q", "contexts": [{"text": "a"}], "top_k": 0}),
            "`top_k`",
        ),
    ] {
        let (status, _, v) = post_json(&run_url(RERANKER), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["errors"][0]["code"], 5006);
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
    }
}

#[tokio::test]
async fn classification_returns_both_labels_with_probabilities() {
    let (status, headers, v) =
        post_json(&run_url(CLASSIFIER), &json!({"text": "I love this movie"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .contains("tiny-classifier (int8)")
    );
    let labels = v["result"].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    let total: f64 = labels.iter().map(|l| l["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    let mut names: Vec<&str> = labels
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["NEGATIVE", "POSITIVE"]);
    for (body, mentions) in [
        (json!({}), "`text` is required"),
        (json!({"text": ""}), "`text`"),
        (json!({"text": ["a", "b"]}), "`text` must be a string"),
        (json!({"text": 5}), "`text` must be a string"),
    ] {
        let (status, _, v) = post_json(&run_url(CLASSIFIER), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{v}"
        );
    }
}
