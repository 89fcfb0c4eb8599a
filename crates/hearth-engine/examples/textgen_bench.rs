//! Single-stream timing of Hearth's text-generation engine: the Hearth side of
//! `bench/textgen.sh`, mirroring `bench/llbench.cpp` step for step (same
//! nonce-prefixed raw prompt, greedy, `N_GEN` tokens past EOS), but through
//! the real scheduler thread, sampler and reply channel.
//!
//! usage: textgen_bench MODEL PROMPT_FILE N_GEN REPS THREADS

use std::time::Instant;

use hearth_engine::{GenEvent, TextGenOptions, TextGenerator};
use hearth_types::textgen::GenerationParams;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: textgen_bench MODEL PROMPT_FILE N_GEN REPS THREADS");
        std::process::exit(2);
    }
    let n_gen: u32 = args[3].parse().expect("N_GEN");
    let reps: usize = args[4].parse().expect("REPS");
    let threads: usize = args[5].parse().expect("THREADS");
    let base = std::fs::read_to_string(&args[2]).expect("prompt file");
    let generator = TextGenerator::load(
        std::path::Path::new(&args[1]),
        TextGenOptions {
            threads,
            ..TextGenOptions::default()
        },
    )
    .expect("load");
    for rep in 0..reps {
        let tokens = generator.tokenize(&format!("[{rep}] {base}"));
        let n_prompt = tokens.len();
        let params = GenerationParams {
            max_tokens: n_gen + 1,
            temperature: 0.0,
            ignore_eos: true,
            ..GenerationParams::default()
        };
        let t0 = Instant::now();
        let mut stream = generator.submit(tokens, params, false).expect("submit");
        let mut first = None;
        loop {
            match stream.blocking_next() {
                Some(GenEvent::Text(_)) if first.is_none() => first = Some(Instant::now()),
                Some(GenEvent::Text(_)) => {}
                Some(GenEvent::Done { .. }) | None => break,
                Some(GenEvent::Failed(e)) => panic!("{e}"),
            }
        }
        let done = Instant::now();
        let first = first.expect("at least one token");
        let ttft = (first - t0).as_secs_f64();
        let tg = (done - first).as_secs_f64();
        println!(
            "{{\"engine\":\"hearth\",\"rep\":{rep},\"n_prompt\":{n_prompt},\"ttft_s\":{ttft:.4},\"pp_tps\":{:.1},\"tg_tps\":{:.1}}}",
            n_prompt as f64 / ttft,
            f64::from(n_gen) / tg
        );
    }
}
