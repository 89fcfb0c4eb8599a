//! The reranker on a tiny XLM-RoBERTa with random weights, written by the test
//! in the real Hugging Face file layout (no registry package ships genuine
//! reranker weights): proves loading, pair encoding, padding and the score
//! contract, not ranking quality.

use hearth_engine::rerank::write_tiny_model;
use hearth_engine::{Precision, Reranker};

#[test]
fn tiny_xlm_roberta_scores_every_context_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path()).unwrap();
    let reranker = Reranker::load(dir.path(), Precision::F32).unwrap();
    let contexts: Vec<String> = [
        "Paris is the capital of France",
        "Berlin is the capital of Germany",
        "cheese",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let scores = reranker
        .score("what is the capital of France", &contexts)
        .unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores.iter().all(|s| s.is_finite()));
    // Same input, same scores; and padding a short context inside a batch does
    // not change its score.
    assert_eq!(
        scores,
        reranker
            .score("what is the capital of France", &contexts)
            .unwrap()
    );
    let alone = reranker
        .score("what is the capital of France", &contexts[2..])
        .unwrap();
    assert!(
        (alone[0] - scores[2]).abs() < 1e-4,
        "{} vs {}",
        alone[0],
        scores[2]
    );
    assert!(reranker.score("q", &[]).unwrap().is_empty());
}

#[test]
fn a_folder_without_weights_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = Reranker::load(dir.path(), Precision::F32)
        .err()
        .expect("load must fail");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
