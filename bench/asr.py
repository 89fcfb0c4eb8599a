#!/usr/bin/env python3
"""Speech recognition speed and accuracy: Hearth's engine against faster-whisper
on the same whisper-tiny-en CTranslate2 weights, the same audio and threads.

Usage (run by bench/asr.sh, which builds the example and the venv):
  asr.py HEARTH_TRANSCRIBE_BIN MODEL_DIR [ROUNDS]

espeak-ng speaks five sentences and a ~70 s passage; each engine loads the
model once, then the rounds alternate (faster-whisper, Hearth). Per file: the
best wall time of the rounds, real-time factor = seconds of compute per
second of audio, and the word error rate of each transcript.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

# The integration test's texts: five sentences and a ~70 s passage.
TEXTS = json.load(open(os.path.join(os.path.dirname(__file__), "..", "crates", "hearth", "tests",
                                    "integration", "speech_texts.json")))
SENTENCES, PASSAGE = TEXTS["sentences"], TEXTS["passage"]


def words(text):
    return [w for w in (re.sub(r"[^\w]", "", t) for t in text.lower().split()) if w]


def wer(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        nxt = [i + 1] + [0] * len(h)
        for j, hw in enumerate(h):
            nxt[j + 1] = min(row[j] + (rw != hw), row[j + 1] + 1, nxt[j] + 1)
        row = nxt
    return row[len(h)] / max(1, len(r))


def speak(directory, name, text):
    path = os.path.join(directory, f"{name}.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", path, text], check=True)
    return path


def main():
    hearth_bin, model_dir = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    threads = int(os.environ.get("THREADS", "2"))
    from faster_whisper import WhisperModel

    with tempfile.TemporaryDirectory() as tmp:
        clips = [(speak(tmp, f"s{i}", s), s) for i, s in enumerate(SENTENCES)]
        passage = " ".join(PASSAGE)
        clips.append((speak(tmp, "passage", passage), passage))
        files = [c[0] for c in clips]

        fw = WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=threads)
        best = {"faster-whisper": {}, "hearth": {}}
        texts = {"faster-whisper": {}, "hearth": {}}
        durations = {}
        for _ in range(rounds):
            for f in files:
                started = time.perf_counter()
                segments, info = fw.transcribe(f, beam_size=1, word_timestamps=True,
                                               language="en", vad_filter=False)
                text = " ".join(s.text.strip() for s in segments)
                elapsed = time.perf_counter() - started
                durations[f] = info.duration
                b = best["faster-whisper"]
                b[f] = min(b.get(f, 1e9), elapsed)
                texts["faster-whisper"][f] = text
            out = subprocess.run([hearth_bin, model_dir, *files], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "RAYON_NUM_THREADS": str(threads)}).stdout
            for line in out.splitlines():
                m = re.match(r"^(\S+): ([\d.]+)s of audio in ([\d.]+)s: (.*)$", line)
                if m:
                    f, elapsed, text = m.group(1), float(m.group(3)), m.group(4)
                    b = best["hearth"]
                    b[f] = min(b.get(f, 1e9), elapsed)
                    texts["hearth"][f] = text

        print(f"| clip | audio s | faster-whisper s | Hearth s | speed ratio (fw time / Hearth time) "
              f"| WER faster-whisper | WER Hearth |")
        print("|---|---|---|---|---|---|---|")
        totals = {"faster-whisper": 0.0, "hearth": 0.0}
        errors = {"faster-whisper": [], "hearth": []}
        for (f, reference) in clips:
            name = os.path.basename(f)
            row = [name, f"{durations[f]:.1f}"]
            for engine in ("faster-whisper", "hearth"):
                totals[engine] += best[engine][f]
                errors[engine].append(wer(reference, texts[engine].get(f, "")))
            ratio = best["faster-whisper"][f] / best["hearth"][f]
            row += [f"{best['faster-whisper'][f]:.2f}", f"{best['hearth'][f]:.2f}", f"{ratio:.2f}x",
                    f"{errors['faster-whisper'][-1]:.2f}", f"{errors['hearth'][-1]:.2f}"]
            print("| " + " | ".join(row) + " |")
        audio = sum(durations.values())
        print(f"\nTotal audio {audio:.1f} s; RTF faster-whisper {totals['faster-whisper'] / audio:.3f}, "
              f"Hearth {totals['hearth'] / audio:.3f}; speed ratio "
              f"{totals['faster-whisper'] / totals['hearth']:.2f}x; mean WER faster-whisper "
              f"{sum(errors['faster-whisper']) / len(clips):.3f}, Hearth "
              f"{sum(errors['hearth']) / len(clips):.3f}")
        for engine in texts:
            print(f"\n{engine} passage: {texts[engine].get(files[-1], '')[:300]}")


if __name__ == "__main__":
    main()
