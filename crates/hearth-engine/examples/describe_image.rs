//! Describes an image with a LLaVA 1.5 or Llama 3.2 Vision folder (Hugging
//! Face layout), greedily:
//!   cargo run -p hearth-engine --example describe_image -- DIR IMAGE "PROMPT" [MAX_TOKENS]
//! (IMAGE `-`: the prompt alone, no image).
//! `bench/llava_reference.py` and `bench/mllama_reference.py` compare the
//! descriptions with transformers'.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, image, prompt, rest @ ..] = args.as_slice() else {
        eprintln!("usage: describe_image DIR IMAGE PROMPT [MAX_TOKENS]");
        std::process::exit(2);
    };
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("{e}");
        std::process::exit(1)
    };
    let model = hearth_engine::describe::ImageDescriber::load(std::path::Path::new(dir))
        .unwrap_or_else(|e| fail(&e));
    let bytes = (image != "-").then(|| std::fs::read(image).unwrap_or_else(|e| fail(&e)));
    let params = hearth_types::textgen::GenerationParams {
        max_tokens: rest.first().and_then(|m| m.parse().ok()).unwrap_or(32),
        temperature: 0.0,
        ..Default::default()
    };
    let out = model
        .describe(bytes.as_deref(), prompt, false, &params)
        .unwrap_or_else(|e| fail(&e));
    println!("{}", out.text);
}
