//! Detects objects in image files with a DETR folder (Hugging Face layout),
//! one JSON array per image, best first:
//!   cargo run -p hearth-engine --example detect_objects -- DIR [--threshold T] IMAGE...
//! `bench/detr_reference.py` compares the answer with transformers';
//! `HEARTH_ROUNDS=N` also prints the best time of N runs per image to
//! stderr (`bench/detr_speed.py`).
fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threshold = hearth_engine::detect::THRESHOLD;
    if let Some(at) = args.iter().position(|a| a == "--threshold") {
        threshold = args
            .get(at + 1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(threshold);
        args.drain(at..(at + 2).min(args.len()));
    }
    let Some((dir, images)) = args.split_first() else {
        eprintln!("usage: detect_objects DIR [--threshold T] IMAGE...");
        std::process::exit(2);
    };
    let model = match hearth_engine::detect::ObjectDetector::load(std::path::Path::new(dir)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let rounds: usize = std::env::var("HEARTH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    for path in images {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut best = f64::MAX;
        for _ in 1..rounds {
            let started = std::time::Instant::now();
            let _ = model.detect(&bytes, threshold);
            best = best.min(started.elapsed().as_secs_f64());
        }
        let started = std::time::Instant::now();
        let answer = model.detect(&bytes, threshold);
        best = best.min(started.elapsed().as_secs_f64());
        if rounds > 1 {
            eprintln!("{path}\t{best:.3} s");
        }
        match answer {
            Ok(found) => {
                let objects: Vec<serde_json::Value> = found
                    .iter()
                    .map(|d| {
                        serde_json::json!({"label": d.label, "score": d.score,
                            "box": [d.xmin, d.ymin, d.xmax, d.ymax]})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(objects));
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
