"""sentence-transformers (PyTorch, f32) on the same model, sentences and thread
count as bench/embeddings.sh: sentences/second at batch 1 (one call per
sentence) and batch 32 (one call per 32), end to end (tokenize, forward,
pool, normalize), median of REPS passes after a warm-up.

    python bench/embeddings_st.py --model DIR --sentences-file FILE [--threads 2] [--reps 3]

Needs torch and sentence-transformers (not part of CI: the CPU torch wheel
from PyPI brings ~3 GB of CUDA libraries).
"""

import argparse
import statistics
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--sentences-file", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    sentences = [s for s in open(a.sentences_file).read().splitlines() if s]
    model = SentenceTransformer(a.model, device="cpu")
    probe = model.encode(["A man is eating food.", "A man is eating a piece of bread."], normalize_embeddings=True)
    print(f"sentence-transformers: cos(s0,s1)={float(probe[0] @ probe[1]):.6f}", flush=True)
    for batch in (1, 32):
        n = 64 if batch == 1 else len(sentences) - len(sentences) % 32
        model.encode(sentences[:batch], batch_size=batch)  # warm-up
        rates = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                model.encode(sentences[i:i + batch], batch_size=batch, normalize_embeddings=True)
            rates.append(n / (time.perf_counter() - t0))
        print(f"sentence-transformers dynamic  batch={batch:<3d} {statistics.median(rates):.1f} "
              f"[{min(rates):.1f}-{max(rates):.1f}] sentences/s", flush=True)


if __name__ == "__main__":
    main()
