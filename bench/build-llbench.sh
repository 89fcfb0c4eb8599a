#!/usr/bin/env bash
# Build bench/llbench against the llama.cpp static libraries that
# llama-cpp-sys-2 compiled for Hearth's release build: same sources, same
# flags, so the comparison measures Hearth's engine, not two llama.cpp builds.
#   bench/build-llbench.sh [OUT]   (default: $CARGO_TARGET_DIR/release/llbench)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p hearth-engine --example textgen_bench >/dev/null
out_dir=$(ls -td "$target"/release/build/llama-cpp-sys-2-*/out 2>/dev/null | while read -r d; do [ -f "$d/lib/libllama.a" ] && echo "$d" && break; done)
[ -n "$out_dir" ] || { echo "no llama.cpp build found under $target/release/build" >&2; exit 1; }
g++ -O2 -std=c++17 -march=native bench/llbench.cpp -I"$out_dir/include" \
  -L"$out_dir/lib" -lllama -lggml -lggml-cpu -lggml-base -fopenmp -lpthread -ldl \
  -o "${1:-$target/release/llbench}"
echo "${1:-$target/release/llbench}"
