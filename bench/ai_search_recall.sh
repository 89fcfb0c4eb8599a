#!/usr/bin/env bash
# AI Search retrieval quality: recall@5 of vector, keyword and hybrid search
# on the Python FAQ (Debian's python3.11-doc: each answer one file, its
# question the query), embedded with the registry's all-MiniLM-L6-v2 served
# as the bge-small id. See bench/ai_search_recall.py. Recall does not
# depend on the build profile: HEARTH_BIN may name any built binary.
#   bench/ai_search_recall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
models="${HEARTH_MODELS_DIR:-$HOME/.local/share/hearth/models}"
work="${RECALL_BENCH_DIR:-/tmp/hearth-recall-bench}"
port=18095 acct=0123456789abcdef0123456789abcdef token=bench-token-0123456789
rm -rf "$work" && mkdir -p "$work/data" "$work/deb"
(cd "$work/deb" && apt-get download -q python3.11-doc >/dev/null && dpkg-deb -x python3.11-doc_*.deb x)
faq="$work/deb/x/usr/share/doc/python3.11/html/_sources/faq"
bin="${HEARTH_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -q -p hearth
  bin="$target/release/hearth"
fi
cat >"$work/hearth.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
models_dir = "$models"
account_id = "$acct"
api_token = "$token"
[aliases]
"@cf/baai/bge-small-en-v1.5" = "@cf/sentence-transformers/all-minilm-l6-v2"
TOML
"$bin" serve --config "$work/hearth.toml" >"$work/hearth.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
python3 bench/ai_search_recall.py "http://127.0.0.1:$port" "$acct" "$token" "$faq" "$work"
