#!/usr/bin/env bash
# Vector search: Hearth's index vs faiss IndexHNSWFlat and hnswlib on the
# peers' data set (100,000 x 384, 100 clusters, cosine; 1,000 queries,
# k = 10, M = 16, efConstruction = 200), one query thread, interleaved rounds.
# The peers run through ../shared/bench/vectors_peers.py (pip install
# faiss-cpu hnswlib numpy psutil into the venv); it also writes the data set
# that Hearth's side (crates/hearth-vector/examples/vector_bench.rs) loads.
#   bench/vectors.sh [ROUNDS] [BUILD_THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
py="${HEARTH_VENV:-$HOME/.cache/hearth/venv}/bin/python"
shared_bench="${SHARED_BENCH:-../shared/bench}"
rounds="${1:-2}"
threads="${2:-1}"
data="${VECTOR_BENCH_DATA:-/tmp/hearth-vector-bench}"
mkdir -p "$data"
cargo build --release -q -p hearth-vector --example vector_bench
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS=1
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
for r in $(seq "$rounds"); do
  if [ ! -f "$data/gt.npy" ]; then
    "$py" "$shared_bench/vectors_peers.py" --libs none --dump-dir "$data" >/dev/null
  fi
  echo "== round $r: hearth (build threads $threads, 1 query thread)"
  "$target/release/examples/vector_bench" "$data" "$threads" 10,20,40,80,160,320 | tee "$data/hearth-$r.jsonl"
  echo "== round $r: peers (build threads $threads, 1 query thread)"
  "$py" "$shared_bench/vectors_peers.py" --threads "$threads" --build-reps 1 \
    --libs hnswlib,faiss_hnsw,filtered --dump-dir "$data" --json "$data/peers-$r.json" \
    | grep -E "build|ef=|subset|filtered:"
done
"$py" bench/summarize_vectors.py "$data" "$rounds"
