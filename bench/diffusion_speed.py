"""Stable Diffusion 1.5 speed: Hearth against diffusers on the real architecture.

No genuine weights ship in a registry package, but speed does not depend on
the weights' values: this builds Stable Diffusion 1.5's exact UNet (320-640-
1280-1280 channels, 8 heads, 768-wide cross attention), VAE and CLIP text
encoder (12 layers, 768 wide) with random weights via diffusers and
transformers (a small word-level vocabulary: the embedding table's size does
not change the speed), saves them in the diffusers layout, and times one
512x512 image, STEPS DDIM steps with guidance (batch 2), the same starting
latents, in diffusers (torch, 2 threads) and in Hearth's `draw` example.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers diffusers pillow safetensors
  cargo build -p hearth-engine --example draw
  /tmp/t/bin/python bench/diffusion_speed.py $CARGO_TARGET_DIR/debug/examples/draw [STEPS]
"""

import os
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from diffusion_reference import PROMPT, tokenizer  # noqa: E402


def main():
    binary = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    torch.set_num_threads(2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        tok, vocab_size = tokenizer(folder)
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
            projection_dim=768, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1))
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                            latent_channels=4, sample_size=512)
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, steps_offset=1, set_alpha_to_one=False,
                                  clip_sample=False)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                       scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(folder, safe_serialization=True)
        latents = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(1))
        save_file({"latents": latents.contiguous()}, f"{folder}/latents.safetensors")
        started = time.perf_counter()
        with torch.no_grad():
            pipe(PROMPT, height=512, width=512, num_inference_steps=steps, guidance_scale=7.5,
                 latents=latents, output_type="np")
        reference = time.perf_counter() - started
        env = dict(os.environ, RAYON_NUM_THREADS="2")
        run = subprocess.run([binary, folder, PROMPT, f"{folder}/hearth.png", "--steps", str(steps),
                              "--guidance", "7.5", "--size", "512x512", "--latents",
                              f"{folder}/latents.safetensors"],
                             env=env, check=True, capture_output=True, text=True)
        hearth = float(run.stdout.split("\t")[-1].split()[0])
        print(f"512x512, {steps} DDIM steps with guidance: diffusers {reference:.1f} s, "
              f"Hearth {hearth:.1f} s, speed ratio (diffusers / Hearth) {reference / hearth:.2f}x")


if __name__ == "__main__":
    main()
