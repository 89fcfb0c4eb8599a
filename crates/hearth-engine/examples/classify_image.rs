//! Classifies image files with EfficientNet-Lite0 from its folder:
//!   cargo run -p hearth-engine --example classify_image -- DIR IMAGE...
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, images)) = args.split_first() else {
        eprintln!("usage: classify_image DIR IMAGE...");
        std::process::exit(2);
    };
    let model = match hearth_engine::vision::ImageClassifier::load(std::path::Path::new(dir)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    // HEARTH_ROUNDS=N: also the best time of N runs per image (bench/images.sh).
    let rounds: usize = std::env::var("HEARTH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    for path in images {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut best = f64::MAX;
        let mut answer = None;
        for _ in 0..rounds.max(1) {
            let started = std::time::Instant::now();
            answer = Some(model.classify(&bytes, 5));
            best = best.min(started.elapsed().as_secs_f64());
        }
        match answer {
            Some(Ok(top)) => println!("{path}\t{best:.4}\t{top:?}"),
            Some(Err(e)) => println!("{path}: {e}"),
            None => {}
        }
    }
}
