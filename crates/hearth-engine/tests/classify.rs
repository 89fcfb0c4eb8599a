//! The classifier on a tiny random-weight DistilBERT written in the real
//! Hugging Face layout (architecture and contract, not quality).

use hearth_engine::Classifier;
use hearth_engine::classify::write_tiny_model;

#[test]
fn tiny_distilbert_gives_a_probability_per_label() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path()).unwrap();
    let classifier = Classifier::load(dir.path()).unwrap();
    let out = classifier.classify("I love this movie").unwrap();
    assert_eq!(out.len(), 2);
    let mut labels: Vec<&str> = out.iter().map(|(l, _)| l.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(labels, ["NEGATIVE", "POSITIVE"]);
    let total: f32 = out.iter().map(|(_, s)| s).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    assert!(out[0].1 >= out[1].1);
    assert_eq!(out, classifier.classify("I love this movie").unwrap());
}
