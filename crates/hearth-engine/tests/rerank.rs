//! The reranker on a tiny XLM-RoBERTa with random weights, written by the test
//! in the real Hugging Face file layout (no registry package ships genuine
//! reranker weights): proves loading, pair encoding, padding and the score
//! contract, not ranking quality.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::xlm_roberta::{Config, XLMRobertaForSequenceClassification};
use hearth_engine::Reranker;
use serde_json::json;

const WORDS: &[&str] = &[
    "paris", "is", "the", "capital", "of", "france", "berlin", "germany", "what", "cheese", "bread",
];

fn write_tiny_model(dir: &std::path::Path) {
    let config = json!({
        "architectures": ["XLMRobertaForSequenceClassification"],
        "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 64,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "attention_probs_dropout_prob": 0.0,
        "hidden_dropout_prob": 0.0, "position_embedding_type": "absolute",
        "vocab_size": 4 + WORDS.len(), "max_position_embeddings": 64, "type_vocab_size": 1,
        "pad_token_id": 1, "id2label": {"0": "LABEL_0"}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    // Build the architecture through candle's own loader on a VarMap (random
    // init), then save: the tensor names are exactly what the loader reads.
    let cfg: Config = serde_json::from_value(config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    XLMRobertaForSequenceClassification::new(1, &cfg, vb).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();

    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert(t.to_string(), json!(i));
    }
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("<s>"), seq("A"), special("</s>")],
            "pair": [special("<s>"), seq("A"), special("</s>"), special("</s>"), seq("B"), special("</s>")],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

#[test]
fn tiny_xlm_roberta_scores_every_context_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    let reranker = Reranker::load(dir.path()).unwrap();
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
    write_tiny_model(dir.path());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = Reranker::load(dir.path()).err().expect("load must fail");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
