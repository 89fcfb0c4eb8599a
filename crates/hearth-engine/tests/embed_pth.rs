//! An XLM-RoBERTa embedding model in BAAI/bge-m3's hub layout (PyTorch's
//! `pytorch_model.bin`, CLS pooling, Normalize): the committed tiny fixture,
//! written by `tests/fixtures/make_tiny_xlmr_pth.py` with torch.save, must
//! give transformers' vectors.

use std::path::PathBuf;

use hearth_engine::{EmbedOptions, Embedder, Pooling};

#[tokio::test]
async fn a_pytorch_checkpoint_with_cls_pooling_matches_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr-pth");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let embedder = Embedder::load(&dir, EmbedOptions::default()).unwrap();
    assert_eq!(embedder.info().native_pooling, Pooling::Cls);
    assert!(embedder.info().normalize);
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let got = embedder.embed(sentences, Pooling::Cls).await.unwrap();
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
