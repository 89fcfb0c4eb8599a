//! The reranker contract through the HTTP API, on a tiny random-weight
//! XLM-RoBERTa (architecture and file layout verified, not ranking quality).

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
