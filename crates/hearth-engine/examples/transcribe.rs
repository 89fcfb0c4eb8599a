//! Transcribe audio files with a Whisper model folder:
//!   cargo run -p hearth-engine --example transcribe -- DIR AUDIO...
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, files)) = args.split_first() else {
        eprintln!("usage: transcribe DIR AUDIO...");
        std::process::exit(2);
    };
    let model = match hearth_engine::speech::SpeechRecognizer::load(std::path::Path::new(dir)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for file in files {
        let started = std::time::Instant::now();
        let result = std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                hearth_engine::speech::audio::decode(&bytes, 7200.0).map_err(|e| e.to_string())
            })
            .and_then(|pcm| {
                model
                    .transcribe(&pcm, &Default::default())
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(t) => {
                println!(
                    "{file}: {:.2}s of audio in {:.2}s: {}",
                    t.duration,
                    started.elapsed().as_secs_f64(),
                    t.text()
                );
                for s in &t.segments {
                    println!("  [{:.2} - {:.2}] {}", s.start, s.end, s.text);
                    for w in &s.words {
                        println!("      {:.2} - {:.2} {}", w.start, w.end, w.word);
                    }
                }
            }
            Err(e) => eprintln!("{file}: {e}"),
        }
    }
}
