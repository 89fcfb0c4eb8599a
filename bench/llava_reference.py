"""LLaVA 1.5 descriptions against transformers: the architecture check of issue 8's image-to-text.

No genuine image-to-text weights ship in a registry package, so this builds
a tiny random LLaVA 1.5 with transformers itself (CLIP vision tower,
two-layer GELU projector, llama language model; feature layer -2, class
token dropped) and saves it with `save_pretrained` beside a word-level
`tokenizer.json` holding `<image>` and a CLIP `preprocessor_config.json`.
For a few prompts it generates greedily with `model.generate` (the
`<image>` token expanded to one token per patch, as the processor does) and
with Hearth's `describe_image` example on the same folder, and compares the
texts. The image is 28x28, the model's input size, so no resizing happens.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers pillow
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/llava_reference.py $CARGO_TARGET_DIR/debug/examples/describe_image
"""

import json
import subprocess
import sys
import tempfile

import torch
from PIL import Image
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, PreTrainedTokenizerFast)

WORDS = ["user", ":", "assistant", "describe", "the", "image", ".", "a", "cat", "on", "red",
         "mat", "what", "is", "this", "?", "it", "small", "photo", "of"]
SPECIALS = ["<unk>", "<s>", "</s>"]
PROMPTS = ["describe the image .", "what is this ?", "a red cat on the mat"]


def tokenizer(folder):
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    image = len(vocab)
    vocab["<image>"] = image
    added = lambda i, t: {"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    seq = lambda s: {"Sequence": {"id": s, "type_id": 0}}
    spec = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(i, t) for i, t in enumerate(SPECIALS)] + [added(image, "<image>")],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing", "single": [bos, seq("A")],
                           "pair": [bos, seq("A"), seq("B")],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    with open(f"{folder}/tokenizer.json", "w") as f:
        json.dump(spec, f)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    return tok, image


def main():
    binary = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        tok, image_token = tokenizer(folder)
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4,
                                           image_size=28, patch_size=14, projection_dim=32),
            text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=4,
                                    vocab_size=image_token + 1, max_position_embeddings=128,
                                    rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2),
            image_token_index=image_token, vision_feature_layer=-2,
            vision_feature_select_strategy="default")
        model = LlavaForConditionalGeneration(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)
        model.save_pretrained(folder, safe_serialization=True)
        processor = CLIPImageProcessor(size={"shortest_edge": 28},
                                       crop_size={"height": 28, "width": 28})
        processor.save_pretrained(folder)
        picture = Image.new("RGB", (28, 28))
        picture.putdata([((x * 9 + 3) % 256, (y * 7) % 256, (x * y + 3) % 256)
                         for y in range(28) for x in range(28)])
        picture.save(f"{folder}/image.png")
        pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
        patches = (28 // 14) ** 2
        same = 0
        for prompt in PROMPTS:
            ids = tok(f"USER: <image>\n{prompt} ASSISTANT:").input_ids
            at = ids.index(image_token)
            ids = ids[:at] + [image_token] * patches + ids[at + 1:]
            out = model.generate(torch.tensor([ids]), pixel_values=pixels, max_new_tokens=12,
                                 do_sample=False, eos_token_id=2, pad_token_id=0)
            want = tok.decode(out[0][len(ids):], skip_special_tokens=True).strip()
            got = subprocess.run([binary, folder, f"{folder}/image.png", prompt, "12"],
                                 check=True, capture_output=True, text=True).stdout.strip()
            same += got == want
            print(("same " if got == want else "DIFF ") + f"{prompt!r}: {want!r} / {got!r}")
        print(f"{same}/{len(PROMPTS)} descriptions identical")
        sys.exit(0 if same == len(PROMPTS) else 1)


if __name__ == "__main__":
    main()
