//! Embedding models in their hub layouts against the vectors a reference
//! implementation computed for the committed tiny fixtures:
//! - `tests/fixtures/tiny-xlmr-pth`: an XLM-RoBERTa model in BAAI/bge-m3's
//!   layout (PyTorch's `pytorch_model.bin`, CLS pooling, Normalize), written
//!   by `tests/fixtures/make_tiny_xlmr_pth.py` with torch.save; transformers'
//!   vectors.
//! - `tests/fixtures/tiny-embeddinggemma`: EmbeddingGemma (a Gemma 3 encoder
//!   with bidirectional attention, mean pooling, two Dense projections,
//!   Normalize), saved by sentence-transformers with
//!   `tests/fixtures/make_tiny_embeddinggemma.py`; `SentenceTransformer.encode`'s
//!   vectors, including sentences longer than its sliding window.

use std::path::PathBuf;

use hearth_engine::{EmbedOptions, Embedder, Pooling};

/// The fixture folder `name`, its loaded model and its `reference.json`.
fn fixture(name: &str) -> (Embedder, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let reference = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap())
        .expect("reference.json");
    (
        Embedder::load(&dir, EmbedOptions::default()).unwrap(),
        reference,
    )
}

/// Embeds the reference's sentences and compares every dimension.
async fn matches_reference(embedder: &Embedder, reference: &serde_json::Value, pooling: Pooling) {
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let got = embedder.embed(sentences, pooling).await.unwrap();
    let want = reference["vectors"].as_array().unwrap();
    assert_eq!(got.vectors.len(), want.len());
    for (i, (g, w)) in got.vectors.iter().zip(want).enumerate() {
        let w: Vec<f32> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(g.len(), w.len());
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "sentence {i}: max |diff| {worst}");
    }
}

#[tokio::test]
async fn a_pytorch_checkpoint_with_cls_pooling_matches_transformers() {
    let (embedder, reference) = fixture("tiny-xlmr-pth");
    assert_eq!(embedder.info().native_pooling, Pooling::Cls);
    assert!(embedder.info().normalize);
    matches_reference(&embedder, &reference, Pooling::Cls).await;
}

#[tokio::test]
async fn embeddinggemma_matches_sentence_transformers() {
    let (embedder, reference) = fixture("tiny-embeddinggemma");
    let info = embedder.info();
    assert_eq!(info.native_pooling, Pooling::Mean);
    assert!(info.normalize);
    // The second Dense module's output, not the transformer's 16.
    assert_eq!(info.dimensions, 12);
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
    matches_reference(&embedder, &reference, Pooling::Mean).await;
}
