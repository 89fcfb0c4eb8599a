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
    for path in images {
        let bytes = std::fs::read(path).unwrap_or_default();
        match model.classify(&bytes, 5) {
            Ok(top) => println!("{path}: {top:?}"),
            Err(e) => println!("{path}: {e}"),
        }
    }
}
