"""BART summaries against transformers: the architecture check of issue 8's summarization.

No genuine BART weights ship in a registry package, so this builds a tiny
random BART with transformers itself (bart-large-cnn's architecture and
generation settings at toy sizes: 4 beams, length penalty 2, min length,
no-repeat trigrams, forced BOS/EOS, early stopping), saves it with
`save_pretrained` beside a word-level `tokenizer.json`, summarizes a few
texts with `model.generate` and with Hearth's `summarize` example on the
same folder, and compares the summaries.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/bart_reference.py $CARGO_TARGET_DIR/debug/examples/summarize
"""

import json
import subprocess
import sys
import tempfile

import torch
from transformers import (BartConfig, BartForConditionalGeneration, GenerationConfig,
                          PreTrainedTokenizerFast)

WORDS = ("the river flows through ten countries and four capitals lie on its banks "
         "barges carry trade to sea a long old city bridge boats").split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
TEXTS = [
    "the river flows through ten countries and four capitals lie on its banks",
    "barges carry trade to the sea and boats carry the old city to a long bridge",
    "a long river and a long bridge",
    "four capitals lie on the banks of a long old river that flows to the sea through ten countries",
]


def tokenizer(folder):
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    special = lambda t: {"SpecialToken": {"id": t, "type_id": 0}}
    spec = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, t in enumerate(SPECIALS)],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [special("<s>"), {"Sequence": {"id": "A", "type_id": 0}},
                                      special("</s>")],
                           "pair": [special("<s>"), {"Sequence": {"id": "A", "type_id": 0}},
                                    special("</s>"), {"Sequence": {"id": "B", "type_id": 0}},
                                    special("</s>")],
                           "special_tokens": {
                               "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    with open(f"{folder}/tokenizer.json", "w") as f:
        json.dump(spec, f)
    return PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def main():
    binary = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        tok = tokenizer(folder)
        config = BartConfig(vocab_size=len(SPECIALS) + len(WORDS), d_model=32, encoder_layers=2,
                            decoder_layers=2, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0,
                            forced_eos_token_id=2)
        model = BartForConditionalGeneration(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 1.0)
        model.generation_config = GenerationConfig(
            num_beams=4, length_penalty=2.0, max_length=20, min_length=5,
            no_repeat_ngram_size=3, early_stopping=True, decoder_start_token_id=2,
            bos_token_id=0, eos_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
            pad_token_id=1)
        model.save_pretrained(folder, safe_serialization=True)
        same = 0
        for max_length in [None, 8]:
            want = []
            for text in TEXTS:
                ids = tok(text, return_tensors="pt").input_ids
                kwargs = {} if max_length is None else {"max_length": max_length + 1}
                out = model.generate(ids, **kwargs)
                want.append(tok.decode(out[0], skip_special_tokens=True).strip())
            args = [binary, folder] + ([] if max_length is None else [str(max_length)])
            got = subprocess.run(args, input="\n".join(TEXTS) + "\n", check=True,
                                 capture_output=True, text=True).stdout.splitlines()
            for g, w in zip(got, want):
                same += g == w
                print(("same " if g == w else "DIFF ") + f"max_length={max_length}: {w!r} / {g!r}")
        print(f"{same}/{2 * len(TEXTS)} summaries identical")
        sys.exit(0 if same == 2 * len(TEXTS) else 1)


if __name__ == "__main__":
    main()
