//! Draws an image with a Stable Diffusion folder (diffusers layout):
//!   cargo run -p hearth-engine --example draw -- DIR "PROMPT" OUT.png \
//!       [--steps N] [--seed S] [--guidance G] [--size WxH] [--negative TEXT]
//!       [--latents FILE]
//! `--latents` reads the starting noise from a safetensors file (tensor
//! `latents`), so that `bench/diffusion_reference.py` and
//! `bench/flux_reference.py` can hand diffusers and Hearth the same start.
//! `draw --write-tiny-flux DIR` writes the tiny random FLUX the tests use.
use std::path::Path;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--write-tiny-flux"
    {
        if let Err(e) = hearth_engine::flux::write_tiny_model(Path::new(dir)) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let mut take = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        let value = args.get(at + 1).cloned();
        args.drain(at..(at + 2).min(args.len()));
        value
    };
    let steps = take("--steps").and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed = take("--seed").and_then(|v| v.parse().ok()).unwrap_or(0);
    let guidance = take("--guidance")
        .and_then(|v| v.parse().ok())
        .unwrap_or(7.5);
    let size = take("--size").and_then(|v| {
        let (w, h) = v.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    });
    let latents = take("--latents");
    let negative_prompt = take("--negative").unwrap_or_default();
    let [dir, prompt, out] = args.as_slice() else {
        eprintln!(
            "usage: draw DIR PROMPT OUT.png [--steps N] [--seed S] [--guidance G] [--size WxH] [--negative TEXT] [--latents FILE]"
        );
        std::process::exit(2);
    };
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("{e}");
        std::process::exit(1)
    };
    let model =
        hearth_engine::diffusion::Diffuser::load(Path::new(dir)).unwrap_or_else(|e| fail(&e));
    let request = hearth_engine::diffusion::ImageRequest {
        prompt: prompt.clone(),
        negative_prompt,
        width: size.map(|s: (u32, u32)| s.0),
        height: size.map(|s| s.1),
        steps,
        guidance,
        seed,
        image: None,
        strength: 1.0,
        mask: None,
    };
    let start = latents.map(|file| {
        candle_core::safetensors::load(&file, &candle_core::Device::Cpu)
            .ok()
            .and_then(|mut t| t.remove("latents"))
            .unwrap_or_else(|| fail(&format!("{file} has no `latents` tensor")))
    });
    let started = std::time::Instant::now();
    let drawing = model
        .generate_from(&request, start)
        .unwrap_or_else(|e| fail(&e));
    let png = drawing.png().unwrap_or_else(|e| fail(&e));
    std::fs::write(out, png).unwrap_or_else(|e| fail(&e));
    println!("{out}\t{:.2} s", started.elapsed().as_secs_f64());
}
