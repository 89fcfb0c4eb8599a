"""FLUX against diffusers: the architecture check of issue 8's FLUX text-to-image.

No genuine FLUX weights ship in a registry package. This has Hearth write
its tiny random FLUX.1-schnell in the repository's layout (the Black Forest
Labs transformer and autoencoder files, CLIP and T5 in diffusers folders;
`cargo run -p hearth-engine --example draw -- --write-tiny-flux DIR`),
loads the same folder with diffusers (`from_single_file` converts the
Black Forest Labs files, as it does the real ones), and draws one prompt
from the same starting noise with `FluxPipeline(latents=...)` and with
Hearth's `draw` example, then compares the pixels.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers diffusers pillow safetensors
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/flux_reference.py $CARGO_TARGET_DIR/debug/examples/draw
"""

import inspect
import json
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                       FluxTransformer2DModel)
from PIL import Image
from diffusers.loaders import single_file_utils
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer, PreTrainedTokenizerFast, T5EncoderModel

PROMPT = "a red cat on the hill"


def transformer_from_bfl(folder):
    """diffusers' own Black Forest Labs -> diffusers conversion, with the
    width it hard-codes for the real model (3072) set to the tiny one."""
    with open(f"{folder}/transformer/config.json") as f:
        config = json.load(f)
    source = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    source = source.replace("inner_dim = 3072", f"inner_dim = {width}")
    scope = dict(vars(single_file_utils))
    exec(source, scope)
    weights = scope["convert_flux_transformer_checkpoint_to_diffusers"](
        load_file(f"{folder}/flux1-schnell.safetensors"))
    model = FluxTransformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    model.load_state_dict(weights, strict=True)
    return model.eval()


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([binary, "--write-tiny-flux", folder], check=True, capture_output=True)
        transformer = transformer_from_bfl(folder)
        vae = AutoencoderKL.from_single_file(f"{folder}/ae.safetensors", config=folder,
                                             subfolder="vae", torch_dtype=torch.float32)
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
            vae=vae, transformer=transformer,
            text_encoder=CLIPTextModel.from_pretrained(f"{folder}/text_encoder"),
            tokenizer=CLIPTokenizer(f"{folder}/tokenizer/vocab.json",
                                    f"{folder}/tokenizer/merges.txt", model_max_length=77),
            text_encoder_2=T5EncoderModel.from_pretrained(f"{folder}/text_encoder_2"),
            tokenizer_2=PreTrainedTokenizerFast(
                tokenizer_file=f"{folder}/tokenizer_2/tokenizer.json", pad_token="<pad>",
                eos_token="</s>", unk_token="<unk>", model_max_length=256))
        size, steps = 128, 2
        noise = torch.randn((1, 16, size // 8, size // 8), generator=torch.Generator().manual_seed(1))
        save_file({"latents": noise.contiguous()}, f"{folder}/latents.safetensors")
        packed = noise.view(1, 16, size // 16, 2, size // 16, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(1, (size // 16) ** 2, 64)
        want = pipe(PROMPT, height=size, width=size, num_inference_steps=steps,
                    guidance_scale=0.0, max_sequence_length=256, latents=packed,
                    output_type="np").images[0]
        want = (want * 255).round().astype(np.int16)
        subprocess.run([binary, folder, PROMPT, f"{folder}/hearth.png", "--steps", str(steps),
                        "--size", f"{size}x{size}", "--latents", f"{folder}/latents.safetensors"],
                       check=True, capture_output=True)
        got = np.asarray(Image.open(f"{folder}/hearth.png").convert("RGB")).astype(np.int16)
        difference = int(np.abs(got - want).max())
        print(f"FLUX schnell: {size}x{size}, {steps} steps, pixel values spread over "
              f"{int(want.max() - want.min())}, largest difference {difference}")
        sys.exit(0 if difference <= 2 else 1)


if __name__ == "__main__":
    main()
