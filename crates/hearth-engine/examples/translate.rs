//! Translates each argument with a Bergamot model folder:
//!   cargo run -p hearth-engine --example translate -- DIR TEXT...
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, texts)) = args.split_first() else {
        eprintln!("usage: translate DIR TEXT...");
        std::process::exit(2);
    };
    let model = match hearth_engine::translate::Translator::load(std::path::Path::new(dir)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for text in texts {
        let started = std::time::Instant::now();
        match model.translate(text) {
            Ok(out) => println!(
                "{text} => {} ({:.3}s)",
                out.text,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => println!("{text}: {e}"),
        }
    }
}
