//! Summarizes texts (one per line of standard input) with a BART folder in
//! the Hugging Face layout, one summary per output line:
//!   cargo run -p hearth-engine --example summarize -- DIR [MAX_LENGTH] < texts.txt
//! `bench/bart_reference.py` compares the summaries with transformers'.
use std::io::BufRead;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: summarize DIR [MAX_LENGTH] < texts.txt");
        std::process::exit(2);
    };
    let max_length = args.get(1).and_then(|m| m.parse().ok());
    let model = match hearth_engine::bart::Summarizer::load(std::path::Path::new(dir)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match model.summarize(&line, max_length) {
            Ok((summary, _, _)) => println!("{summary}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
}
