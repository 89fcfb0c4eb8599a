//! Text embeddings through the HTTP API on the real all-MiniLM-L6-v2.

use serde_json::{Value, json};

use crate::support::*;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    rows(&v["result"]["data"])
}

/// The largest absolute difference between two vectors' entries.
fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A JSON array of arrays of numbers.
fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

async fn embed(model: &str, body: Value) -> Value {
    let (status, _, v) = post_json(&run_url(model), &body).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn minilm_similarity_matches_the_reference_figure() {
    let v = embed(
        MINILM,
        json!({"text": ["A man is eating food.", "A man is eating a piece of bread.", "The quarterly report shows revenue grew by twelve percent."]}),
    )
    .await;
    assert_eq!(v["result"]["shape"], json!([3, 384]));
    assert_eq!(v["result"]["pooling"], "mean");
    let d = vectors(&v);
    let close = cosine(&d[0], &d[1]);
    assert!((close - 0.755).abs() <= 0.005, "cos = {close}");
    let unrelated = cosine(&d[0], &d[2]);
    assert!(unrelated.abs() < 0.15, "unrelated cos = {unrelated}");
    for row in &d {
        let norm: f64 = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[tokio::test]
async fn minilm_matches_sentence_transformers_on_every_dimension() {
    let fixture: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/minilm_reference.json"
    ))
    .unwrap();
    let sentences = fixture["sentences"].clone();
    let v = embed(MINILM, json!({"text": sentences})).await;
    let got = vectors(&v);
    let want = rows(&fixture["vectors"]);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let worst = largest_difference(g, w);
        assert!(worst <= 1e-4, "sentence {i}: max |diff| = {worst}");
    }
}

#[tokio::test]
async fn concurrent_requests_are_batched_without_changing_results() {
    let texts = [
        "short",
        "A somewhat longer sentence about a quiet harbour town at dawn.",
        "Vector databases index embeddings.",
        "How do I reset my password?",
    ];
    let mut alone = Vec::new();
    for t in texts {
        alone.push(vectors(&embed(MINILM, json!({"text": t})).await).remove(0));
    }
    let together = futures::future::join_all((0..16).map(|i| {
        let t = texts[i % texts.len()];
        async move { vectors(&embed(MINILM, json!({"text": t})).await).remove(0) }
    }))
    .await;
    for (i, v) in together.iter().enumerate() {
        let worst = v
            .iter()
            .zip(&alone[i % texts.len()])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "request {i}: batched result differs by {worst}"
        );
    }
}

#[tokio::test]
async fn a_bge_id_is_served_through_an_alias_with_cls_pooling() {
    let mean = embed(
        BGE_ALIAS,
        json!({"text": "Paris is the capital of France."}),
    )
    .await;
    let cls = embed(
        BGE_ALIAS,
        json!({"text": "Paris is the capital of France.", "pooling": "cls"}),
    )
    .await;
    assert_eq!(cls["result"]["pooling"], "cls");
    assert_eq!(cls["result"]["shape"], json!([1, 384]));
    let (a, b) = (vectors(&mean).remove(0), vectors(&cls).remove(0));
    assert!(
        cosine(&a, &b) < 0.999,
        "cls pooling must differ from mean pooling"
    );
}

#[tokio::test]
async fn openai_embeddings_float_and_base64_agree() {
    let url = account_url("/ai/v1/embeddings");
    let (status, _, f) = post_json(
        &url,
        &json!({"model": MINILM, "input": ["hello world", "bonjour"]}),
    )
    .await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["object"], "list");
    assert_eq!(f["data"][1]["index"], 1);
    assert!(f["usage"]["prompt_tokens"].as_u64().unwrap() > 2);
    let (status, _, b) = post_json(
        &url,
        &json!({"model": MINILM, "input": "hello world", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let raw = base64_decode(b["data"][0]["embedding"].as_str().unwrap());
    let floats: Vec<f64> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    let first: Vec<f64> = f["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(floats.len(), 384);
    let worst = largest_difference(&floats, &first);
    assert!(worst < 1e-6, "{worst}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        buf = (buf << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn bad_embedding_inputs_name_the_field() {
    let url = run_url(MINILM);
    let long = "x".repeat(40_000);
    let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    for (body, mentions) in [
        (
            json!({"text": []}),
            "`text` must NOT have fewer than 1 items",
        ),
        (json!({"text": ["ok", 3]}), "`text[1]` must be a string"),
        (json!({"text": many}), "more than 100 items"),
        (json!({"text": ""}), "fewer than 1 characters"),
        (json!({"text": long}), "more than 32768 characters"),
        (json!({"text": 12}), "`text` must be a string"),
        (json!({}), "`text` is required"),
        (json!({"text": "a", "pooling": "max"}), "`pooling`"),
        (json!({"text": "a", "prompt": "b"}), "prompt"),
    ] {
        let (status, _, v) = post_json(&url, &body).await;
        assert_eq!(status, 400, "{mentions}: {v}");
        assert_eq!(v["errors"][0]["code"], 5006, "{v}");
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
    }
    let (status, _, v) = post_json(
        &account_url("/ai/v1/embeddings"),
        &json!({"model": MINILM, "input": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("input")
    );
}

/// An `-int8` id runs MiniLM on int8 weights: the reference similarity still
/// holds, every vector stays within quantization error of the f32 one, and
/// the numbers are not the f32 ones (the int8 path really ran).
#[tokio::test]
async fn an_int8_id_runs_on_int8_weights_close_to_f32() {
    let texts = json!({"text": [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The quarterly report shows revenue grew by twelve percent.",
        "How do I reset my password?"
    ]});
    let (status, headers, v) = post_json(&run_url(MINILM_INT8), &texts).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        headers["x-hearth-weights"]
            .to_str()
            .unwrap()
            .ends_with("(int8)")
    );
    let int8 = vectors(&v);
    let full = vectors(&embed(MINILM, texts).await);
    let close = cosine(&int8[0], &int8[1]);
    assert!((close - 0.755).abs() <= 0.01, "cos = {close}");
    let mut largest = 0f64;
    for (a, b) in int8.iter().zip(&full) {
        let agreement = cosine(a, b);
        assert!(agreement > 0.995, "int8 vs f32 cos = {agreement}");
        largest = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(largest, f64::max);
    }
    assert!(largest > 1e-6, "int8 gave the f32 numbers exactly");
}

/// bge-m3's other forms: `contexts` with `query` ranks the contexts by
/// embedding similarity, `contexts` alone embeds them; other models and
/// mixed forms are refused by field.
#[tokio::test]
async fn bge_m3_ranks_contexts_against_a_query_and_embeds_contexts() {
    let contexts = json!([
        {"text": "The quarterly report shows revenue grew by twelve percent."},
        {"text": "A man is eating a piece of bread."}
    ]);
    let v = embed(
        BGE_M3_ALIAS,
        json!({"query": "A man is eating food.", "contexts": contexts}),
    )
    .await;
    let ranked = v["result"]["response"].as_array().unwrap();
    assert_eq!(ranked.len(), 2);
    assert_eq!(ranked[0]["id"], 1, "{v}");
    let best = ranked[0]["score"].as_f64().unwrap();
    assert!((best - 0.755).abs() <= 0.005, "score {best}");
    assert!(ranked[1]["score"].as_f64().unwrap() < 0.15);

    let v = embed(BGE_M3_ALIAS, json!({"contexts": contexts})).await;
    assert_eq!(v["result"]["shape"], json!([2, 384]));
    assert_eq!(v["result"]["pooling"], "mean");
    let plain = embed(
        BGE_M3_ALIAS,
        json!({"text": ["The quarterly report shows revenue grew by twelve percent.", "A man is eating a piece of bread."]}),
    )
    .await;
    assert_eq!(v["result"]["response"], plain["result"]["data"]);

    for (model, body, field) in [
        (
            BGE_M3_ALIAS,
            json!({"text": "a", "contexts": contexts}),
            "contexts",
        ),
        (BGE_M3_ALIAS, json!({"query": "a", "text": "b"}), "query"),
        (
            BGE_M3_ALIAS,
            json!({"query": "", "contexts": contexts}),
            "query",
        ),
        (BGE_M3_ALIAS, json!({"contexts": []}), "contexts"),
        (BGE_ALIAS, json!({"contexts": contexts}), "bge-m3"),
    ] {
        let (status, _, v) = post_json(&run_url(model), &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
}

/// EmbeddingGemma's contract (`{data, shape}`, no `pooling` either way) on
/// the tiny fixture sentence-transformers saved, whose vectors it must give.
#[tokio::test]
async fn embeddinggemma_answers_without_pooling_and_matches_sentence_transformers() {
    let reference: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/tiny-embeddinggemma/reference.json"
    ))
    .unwrap();
    let v = embed(EMBEDDINGGEMMA, json!({"text": reference["sentences"]})).await;
    let result = v["result"].as_object().unwrap();
    let mut keys: Vec<&str> = result.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "shape"], "{v}");
    assert_eq!(v["result"]["shape"], json!([6, 12]));
    for (g, w) in vectors(&v).iter().zip(rows(&reference["vectors"])) {
        let worst = largest_difference(g, &w);
        assert!(worst < 1e-4, "max |diff| {worst}");
    }

    let (status, _, v) = post_json(
        &run_url(EMBEDDINGGEMMA),
        &json!({"text": "cheese", "pooling": "cls"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`pooling`"), "{message}");
}
