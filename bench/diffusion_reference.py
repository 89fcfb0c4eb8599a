"""Stable Diffusion against diffusers: the architecture check of issue 8's text-to-image.

No genuine diffusion weights ship in a registry package, so this builds
tiny random pipelines with diffusers and transformers themselves and saves
them with `save_pretrained` (the diffusers folder layout): Stable Diffusion
1.x (CLIP text encoder, CLIP BPE tokenizer, UNet with cross attention,
4-block VAE) for each deterministic sampler (DDIM, Euler), and SDXL (a
second, `gelu` CLIP text encoder with projection and a tokenizer padding
with "!", a UNet with SDXL's block layout, linear projections, two
transformer layers and the `text_time` added conditioning), drawn without
a negative prompt (zeroed) and with one. Each draws the same prompt from the
same starting latents twice: with diffusers' pipeline (`latents=...`) and
with Hearth's `draw` example (`--latents`). It prints the largest pixel
difference of the two PNGs.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers diffusers pillow safetensors
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/diffusion_reference.py $CARGO_TARGET_DIR/debug/examples/draw
"""

import json
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler,
                       StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                          CLIPTokenizer)

WORDS = ["a", "red", "house", "on", "the", "hill", "cat"]
PROMPT = "a red house on the hill"


def tokenizer(folder, **kwargs):
    vocab, merges = {}, ["#version: 0.2"]
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for word in WORDS:
        built = word[0]
        for i, c in enumerate(word[1:], 1):
            piece = c + "</w>" if i == len(word) - 1 else c
            merges.append(f"{built} {piece}")
            built += piece
            vocab.setdefault(built, len(vocab))
    vocab["!"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(f"{folder}/vocab.json", "w") as f:
        json.dump(vocab, f)
    with open(f"{folder}/merges.txt", "w") as f:
        f.write("\n".join(merges) + "\n")
    return CLIPTokenizer(f"{folder}/vocab.json", f"{folder}/merges.txt",
                         model_max_length=77, **kwargs), len(vocab)


def text_config(vocab_size, **kwargs):
    return CLIPTextConfig(
        vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, **kwargs)


def pipeline(folder, scheduler, xl=False):
    torch.manual_seed(0)
    tok, vocab_size = tokenizer(folder)
    text = CLIPTextModel(text_config(
        vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, hidden_act="quick_gelu", projection_dim=32))
    if xl:
        tok2, _ = tokenizer(folder, pad_token="!")
        text2 = CLIPTextModelWithProjection(text_config(
            vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, hidden_act="gelu", projection_dim=40))
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=80,
            attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=40 + 6 * 8,
            norm_num_groups=32)
    else:
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=2, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256)
    # Weights larger than PyTorch's defaults, so that every layer moves the
    # picture.
    with torch.no_grad():
        for model in (text, unet, vae) + ((text2,) if xl else ()):
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(1.5)
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  num_train_timesteps=1000, steps_offset=1)
    sched = (DDIMScheduler(**common, set_alpha_to_one=False, clip_sample=False)
             if scheduler == "ddim" else
             EulerDiscreteScheduler(**common, timestep_spacing="trailing"))
    if xl:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text2,
                                         tokenizer=tok, tokenizer_2=tok2, unet=unet,
                                         scheduler=sched, force_zeros_for_empty_prompt=True)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                       scheduler=sched, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def main():
    binary = sys.argv[1]
    worst = 0
    cases = [("ddim", False, None), ("euler", False, None), ("euler", True, None),
             ("euler", True, "a cat on the hill")]
    for scheduler, xl, negative in cases:
        with tempfile.TemporaryDirectory() as folder:
            pipe = pipeline(folder, scheduler, xl)
            width, height, steps = 96, 64, 4
            latents = torch.randn((1, 4, height // 8, width // 8),
                                  generator=torch.Generator().manual_seed(1))
            save_file({"latents": latents.contiguous()}, f"{folder}/latents.safetensors")
            # diffusers scales given latents by the sampler's initial sigma,
            # as Hearth does with its own noise.
            want = pipe(PROMPT, negative_prompt=negative, height=height, width=width,
                        num_inference_steps=steps, guidance_scale=7.5, latents=latents,
                        output_type="np").images[0]
            want = (want * 255).round().astype(np.int16)
            subprocess.run([binary, folder, PROMPT, f"{folder}/hearth.png", "--steps", str(steps),
                            "--guidance", "7.5", "--size", f"{width}x{height}",
                            "--latents", f"{folder}/latents.safetensors"]
                           + (["--negative", negative] if negative else []),
                           check=True, capture_output=True)
            got = np.asarray(Image.open(f"{folder}/hearth.png").convert("RGB")).astype(np.int16)
            difference = int(np.abs(got - want).max())
            spread = int(want.max() - want.min())
            name = ("sdxl " if xl else "") + scheduler + (" with a negative prompt" if negative else "")
            print(f"{name}: {width}x{height}, {steps} steps, pixel values spread over "
                  f"{spread}, largest difference {difference}")
            worst = max(worst, difference)
    sys.exit(0 if worst <= 2 else 1)


if __name__ == "__main__":
    main()
