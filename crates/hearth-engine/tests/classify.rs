//! The classifier on a tiny random-weight DistilBERT written in the real
//! Hugging Face layout (architecture and contract, not quality).

use hearth_engine::classify::write_tiny_model;
use hearth_engine::{Classifier, Precision};

#[test]
fn tiny_distilbert_gives_a_probability_per_label() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path()).unwrap();
    let classifier = Classifier::load(dir.path(), Precision::F32).unwrap();
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

/// The `-int8` variant runs on int8 weights: the same contract, and
/// probabilities within quantization error of the f32 model's (but not the
/// identical numbers, so the int8 path really ran).
#[test]
fn int8_weights_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path()).unwrap();
    let full = Classifier::load(dir.path(), Precision::F32).unwrap();
    let int8 = Classifier::load(dir.path(), Precision::Int8).unwrap();
    for text in ["I love this movie", "awful film", "great great great"] {
        let (a, b) = (full.classify(text).unwrap(), int8.classify(text).unwrap());
        assert_eq!(b.len(), 2);
        let score = |out: &[(String, f32)], label: &str| {
            out.iter()
                .find(|(l, _)| l == label)
                .map(|(_, s)| *s)
                .unwrap()
        };
        let diff = (score(&a, "POSITIVE") - score(&b, "POSITIVE")).abs();
        assert!(diff < 0.02, "{text}: {a:?} vs {b:?}");
        assert!(diff > 0.0, "{text}: int8 gave the f32 numbers exactly");
    }
}
