#!/usr/bin/env bash
# AI Gateway: `hearth serve` vs LiteLLM's proxy (PyPI `litellm[proxy]`), both in
# front of the same local OpenAI-compatible upstream (nginx answering a fixed
# chat completion, so the upstream costs next to nothing), configured the same
# way: one provider, exact-match cache in memory. Hearth also logs every
# request (collect_logs: true, bodies included); LiteLLM, without a database,
# logs nothing.
#
# Per round, for each of upstream-direct / Hearth / LiteLLM:
#   miss:  oha at MISS_RPS (50) req/s for SECONDS with caching off -> p50/p99
#          (the latency the gateway adds = gateway - direct); 50 req/s is
#          within both gateways' capacity
#   hit:   oha at 1,000 req/s on one cached request -> p50/p99
#   max:   wrk, 1 thread, 32 connections, for SECONDS on cache hits -> req/s
#
# Tools: apt-get install nginx-light wrk; cargo install oha;
#        python3 -m venv $BENCH_VENV && $BENCH_VENV/bin/pip install 'litellm[proxy]'
#   bench/gateway.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="${BENCH_VENV:-$HOME/.cache/bench-venv}"
oha="${OHA:-$(command -v oha || echo "$HOME/.cache/tools/bin/oha")}"
rounds="${1:-2}"
secs="${2:-10}"
miss_rps="${MISS_RPS:-50}"
work="${GATEWAY_BENCH_DIR:-/tmp/hearth-gateway-bench}"
up=18090 hp=18091 lp=18092 lp_nocache=18093
acct=0123456789abcdef0123456789abcdef token=bench-token-0123456789
lkey=sk-bench-0123456789abcdef

rm -rf "$work" && mkdir -p "$work/data"
cargo build --release -q -p hearth
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

answer='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":8,"total_tokens":22}}'
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$up;
    location / { default_type application/json; return 200 '$answer'; }
  }
}
EOF
nginx -c "$work/nginx.conf" & pids+=($!)

cat >"$work/hearth.toml" <<EOF
listen = "127.0.0.1:$hp"
data_dir = "$work/data"
account_id = "$acct"
api_token = "$token"
[gateway.providers.up]
base_url = "http://127.0.0.1:$up/v1"
api_key = "sk-upstream"
EOF
RUST_LOG=warn "$target/release/hearth" serve --config "$work/hearth.toml" >"$work/hearth.log" 2>&1 & pids+=($!)

for port in $lp $lp_nocache; do
  cache=$([ "$port" = "$lp" ] && echo true || echo false)
  cat >"$work/litellm-$port.yaml" <<EOF
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$up/v1
      api_key: sk-upstream
general_settings:
  master_key: $lkey
litellm_settings:
  cache: $cache
  cache_params:
    type: local
    ttl: 3600
EOF
  # As many workers as Hearth has runtime threads (one per core).
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
    "$venv/bin/litellm" --config "$work/litellm-$port.yaml" --host 127.0.0.1 --port "$port" \
    --num_workers "$(nproc)" >"$work/litellm-$port.log" 2>&1 & pids+=($!)
done

wait_for() { for _ in $(seq 240); do curl -sf -o /dev/null "$1" && return 0; sleep 0.5; done; echo "no answer from $1" >&2; exit 1; }
wait_for "http://127.0.0.1:$up/"
wait_for "http://127.0.0.1:$hp/health"
wait_for "http://127.0.0.1:$lp/health/liveliness"
wait_for "http://127.0.0.1:$lp_nocache/health/liveliness"

auth="Authorization: Bearer $token"
gw="http://127.0.0.1:$hp/client/v4/accounts/$acct/ai-gateway/gateways"
curl -sf -H "$auth" "$gw" -d '{"id":"cached","cache_ttl":3600,"collect_logs":true,"cache_invalidate_on_update":false,"rate_limiting_interval":0,"rate_limiting_limit":0,"rate_limiting_technique":"fixed"}' >/dev/null
curl -sf -H "$auth" "$gw" -d '{"id":"uncached","cache_ttl":0,"collect_logs":true,"cache_invalidate_on_update":false,"rate_limiting_interval":0,"rate_limiting_limit":0,"rate_limiting_technique":"fixed"}' >/dev/null

body='{"model":"bench-model","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}'
printf '%s' "$body" >"$work/body.json"
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer __TOKEN__"
EOF
direct="http://127.0.0.1:$up/v1/chat/completions"
hearth_hit="http://127.0.0.1:$hp/v1/$acct/cached/up/chat/completions"
hearth_miss="http://127.0.0.1:$hp/v1/$acct/uncached/up/chat/completions"
litellm_hit="http://127.0.0.1:$lp/v1/chat/completions"
litellm_miss="http://127.0.0.1:$lp_nocache/v1/chat/completions"

# Fill both caches (LiteLLM's per worker) and check that hits are hits.
for _ in $(seq 50); do
  curl -sf -H "$auth" -H 'Content-Type: application/json' "$hearth_hit" -d "$body" -o /dev/null
  curl -sf -H "Authorization: Bearer $lkey" -H 'Content-Type: application/json' "$litellm_hit" -d "$body" -o /dev/null
done
curl -sf -D - -o /dev/null -H "$auth" -H 'Content-Type: application/json' "$hearth_hit" -d "$body" | grep -qi 'cf-aig-cache-status: HIT'

at_rate() { # NAME URL RPS TOKEN
  "$oha" --no-tui --output-format json -z "${secs}s" -q "$3" -c 64 --latency-correction \
    -m POST -H 'Content-Type: application/json' -H "Authorization: Bearer $4" -D "$work/body.json" "$2" \
    >"$work/$1-r$r.json"
}
max_rate() { # NAME URL TOKEN
  sed "s/__TOKEN__/$3/" "$work/post.lua" >"$work/post-$1.lua"
  wrk -t1 -c32 -d"${secs}s" --latency -s "$work/post-$1.lua" "$2" >"$work/$1-r$r.wrk"
}
for r in $(seq "$rounds"); do
  echo "== round $r"
  # An overloaded LiteLLM keeps working through its backlog after a run,
  # so Hearth goes first and every LiteLLM run is followed by a pause.
  at_rate direct-miss "$direct" "$miss_rps" none
  at_rate hearth-miss "$hearth_miss" "$miss_rps" "$token"
  at_rate hearth-hit "$hearth_hit" 1000 "$token"
  max_rate hearth-max "$hearth_hit" "$token"
  at_rate litellm-miss "$litellm_miss" "$miss_rps" "$lkey"; sleep 5
  at_rate litellm-hit "$litellm_hit" 1000 "$lkey"; sleep 5
  max_rate litellm-max "$litellm_hit" "$lkey"; sleep 5
done
"$venv/bin/python" bench/summarize_gateway.py "$work" "$rounds"
