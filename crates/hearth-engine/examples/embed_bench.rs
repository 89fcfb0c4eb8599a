//! Embedding throughput of Hearth's encoder (the Hearth side of
//! `bench/embeddings.sh`): sentences/second end to end (tokenize, forward,
//! pool, normalize) at batch 1 (one request after another) and batch 32 (one
//! request of 32 texts), over the sentences of a file, one per line, with
//! f32 or int8 weights.
//!
//! usage: embed_bench MODEL_DIR SENTENCES_FILE REPS [f32|int8]

use std::time::Instant;

use hearth_engine::{EmbedOptions, Embedder, Pooling, Precision};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: embed_bench MODEL_DIR SENTENCES_FILE REPS [f32|int8]");
        std::process::exit(2);
    }
    let (precision, engine) = match args.get(4).map(String::as_str) {
        Some("int8") => (Precision::Int8, "hearth-int8"),
        _ => (Precision::F32, "hearth"),
    };
    let sentences: Vec<String> = std::fs::read_to_string(&args[2])
        .expect("sentences file")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let reps: usize = args[3].parse().expect("REPS");
    let options = EmbedOptions {
        precision,
        ..EmbedOptions::default()
    };
    let embedder = Embedder::load(std::path::Path::new(&args[1]), options).expect("load");
    // Warm up (first-touch of the weights, allocator).
    embedder
        .embed(sentences[..32].to_vec(), Pooling::Mean)
        .await
        .expect("warm-up");
    for (batch, label) in [(1usize, "batch1"), (32, "batch32")] {
        let mut rates = Vec::new();
        for _ in 0..reps {
            let n = if batch == 1 {
                64
            } else {
                sentences.len() - sentences.len() % 32
            };
            let t = Instant::now();
            for chunk in sentences[..n].chunks(batch) {
                embedder
                    .embed(chunk.to_vec(), Pooling::Mean)
                    .await
                    .expect("embed");
            }
            rates.push(n as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "{{\"engine\":\"{engine}\",\"case\":\"{label}\",\"sentences_per_s\":{:.1}}}",
            median(rates)
        );
    }
}
