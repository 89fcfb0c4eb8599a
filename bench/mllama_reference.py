"""Llama 3.2 Vision answers against transformers: the architecture check of issue 8's mllama.

No genuine Llama 3.2 Vision weights ship in a registry package, so this
builds a tiny random MllamaForConditionalGeneration with transformers itself
(28-pixel tiles of 14-pixel patches, up to 4 tiles, a local and a gated
global vision encoder with two intermediate layers, two gated
cross-attention layers in a four-layer text decoder, Llama 3 rope scaling)
and saves it with `save_pretrained` beside a word-level `tokenizer.json`
with Llama 3's header tokens and `<|image|>` and an MllamaImageProcessor
`preprocessor_config.json`. For images that take one, two, three and four
tiles (some resized onto the canvas, some padded) and a few prompts it
generates greedily with `model.generate` on the processor's inputs (the
chat template's text, `add_special_tokens=False`, as the model card does)
and with Hearth's `describe_image` example on the same folder, and compares
the texts, then the same for the prompts alone (no image: the template's
system turn, no cross-attention). The special tokens' rows of the output table are zeroed so that
every answer runs its full length in words.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers pillow
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/mllama_reference.py $CARGO_TARGET_DIR/debug/examples/describe_image
"""

import json
import subprocess
import sys
import tempfile

import torch
from PIL import Image
from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor,
                          PreTrainedTokenizerFast)
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

WORDS = ["user", ":", "assistant", "describe", "the", "image", ".", "a", "cat", "on", "red",
         "mat", "what", "is", "this", "?", "it", "small", "photo", "of"]
SPECIALS = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
PROMPTS = ["describe the image .", "what is this ?"]
# (width, height): one tile as is, two side by side, resized onto three
# stacked, resized and padded onto four.
SCALE = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
SIZES = [(28, 28), (56, 28), (20, 70), (50, 47)]


def tokenizer(folder):
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    image = len(vocab)
    vocab["<|image|>"] = image
    added = lambda i, t: {"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
    bos = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}
    seq = lambda s: {"Sequence": {"id": s, "type_id": 0}}
    spec = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(i, t) for i, t in enumerate(SPECIALS)] +
                        [added(image, "<|image|>")],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing", "single": [bos, seq("A")],
                           "pair": [bos, seq("A"), seq("B")],
                           "special_tokens": {"<|begin_of_text|>": {
                               "id": "<|begin_of_text|>", "ids": [1],
                               "tokens": ["<|begin_of_text|>"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    with open(f"{folder}/tokenizer.json", "w") as f:
        json.dump(spec, f)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json",
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  unk_token="<unk>", pad_token="<unk>")
    tok.image_token = "<|image|>"
    tok.image_token_id = image
    return tok, image


def chat(prompt, image=True):
    """The model's chat template as transformers renders it (with an image
    no system turn; without one, the template's own, dated as it is when
    no clock is given)."""
    if image:
        head = "<|begin_of_text|>"
        turn = f"<|image|>{prompt}"
    else:
        head = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>")
        turn = prompt
    return (f"{head}<|start_header_id|>user<|end_header_id|>\n\n{turn}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def picture(width, height):
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 9 + 3) % 256, (y * 7) % 256, (x * y + 3) % 256)
                 for y in range(height) for x in range(width)])
    return img


def main():
    binary = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        tok, image_token = tokenizer(folder)
        vocab = image_token
        config = MllamaConfig(
            vision_config=dict(hidden_size=32, attention_heads=4, intermediate_size=64,
                               num_hidden_layers=4, num_global_layers=2, image_size=28,
                               patch_size=14, max_num_tiles=4, intermediate_layers_indices=[1, 3],
                               vision_output_dim=96, norm_eps=1e-5),
            text_config=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=64, num_hidden_layers=4,
                             cross_attention_layers=[1, 3], vocab_size=vocab,
                             max_position_embeddings=256, rms_norm_eps=1e-5,
                             rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                              "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 64},
                             bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0),
            image_token_index=image_token)
        model = MllamaForConditionalGeneration(config).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name and "weight" in name:
                    p.normal_(1.0, 0.2)
                elif "gate" in name:
                    p.normal_(0, 1.0)
                else:
                    p.normal_(0, SCALE)
            model.lm_head.weight[:len(SPECIALS)] = 0.0
        model.save_pretrained(folder, safe_serialization=True)
        images = MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=4)
        images.save_pretrained(folder)
        processor = MllamaProcessor(image_processor=images, tokenizer=tok)
        same = total = 0
        for width, height in SIZES:
            img = picture(width, height)
            path = f"{folder}/image-{width}x{height}.png"
            img.save(path)
            for prompt in PROMPTS:
                inputs = processor(images=img, text=chat(prompt), add_special_tokens=False,
                                   return_tensors="pt")
                inputs.pop("num_tiles", None)
                length = inputs["input_ids"].shape[1]
                out = model.generate(**inputs, max_new_tokens=10, do_sample=False,
                                     eos_token_id=[2, 5], pad_token_id=0)
                want = tok.decode(out[0][length:], skip_special_tokens=True).strip()
                got = subprocess.run([binary, folder, path, prompt, "10"], check=True,
                                     capture_output=True, text=True).stdout.strip()
                total += 1
                same += got == want
                tiles = int(inputs["aspect_ratio_mask"].sum())
                print(("same " if got == want else "DIFF ") +
                      f"{width}x{height} ({tiles} tiles) {prompt!r}: {want!r} / {got!r}")
        # Text alone: no pixels, the cross-attention layers skipped.
        for prompt in PROMPTS:
            ids = tok(chat(prompt, image=False), add_special_tokens=False,
                      return_tensors="pt")
            length = ids["input_ids"].shape[1]
            out = model.generate(**ids, max_new_tokens=10, do_sample=False,
                                 eos_token_id=[2, 5], pad_token_id=0)
            want = tok.decode(out[0][length:], skip_special_tokens=True).strip()
            got = subprocess.run([binary, folder, "-", prompt, "10"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            total += 1
            same += got == want
            print(("same " if got == want else "DIFF ") + f"no image {prompt!r}: {want!r} / {got!r}")
        print(f"{same}/{total} answers identical")
        sys.exit(0 if same == total else 1)


if __name__ == "__main__":
    main()
