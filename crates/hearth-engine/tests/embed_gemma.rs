//! EmbeddingGemma (a Gemma 3 encoder with bidirectional attention, mean
//! pooling, two Dense projections, Normalize): the committed tiny fixture,
//! saved by sentence-transformers with `tests/fixtures/make_tiny_embeddinggemma.py`,
//! must give `SentenceTransformer.encode`'s vectors, including sentences
//! longer than its sliding window.

use std::path::PathBuf;

use hearth_engine::{EmbedOptions, Embedder, Pooling};

fn fixture() -> (PathBuf, serde_json::Value) {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-embeddinggemma");
    let reference = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap())
        .expect("reference.json");
    (dir, reference)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn embeddinggemma_matches_sentence_transformers() {
    let (dir, reference) = fixture();
    let embedder = Embedder::load(&dir, EmbedOptions::default()).unwrap();
    let info = embedder.info();
    assert_eq!(info.native_pooling, Pooling::Mean);
    assert!(info.normalize);
    // The second Dense module's output, not the transformer's 16.
    assert_eq!(info.dimensions, 12);
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    // The fixture's sliding window sees 3 tokens either side: the longest
    // sentences must be longer for the window to matter.
    let longest = reference["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ids| ids.as_array().unwrap().len())
        .max()
        .unwrap();
    assert!(longest > 8, "{longest}");
    let got = embedder.embed(sentences, Pooling::Mean).await.unwrap();
    let want = reference["vectors"].as_array().unwrap();
    assert_eq!(got.vectors.len(), want.len());
    for (i, (g, w)) in got.vectors.iter().zip(want).enumerate() {
        let w = floats(w);
        assert_eq!(g.len(), w.len());
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "sentence {i}: max |diff| {worst}");
    }
}
