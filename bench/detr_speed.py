"""DETR speed: Hearth against transformers on the real detr-resnet-50 architecture.

No genuine DETR weights ship in a registry package, but speed does not depend
on the weights' values: this builds `facebook/detr-resnet-50`'s exact
architecture (timm ResNet-50 backbone, d_model 256, 6 + 6 layers, 100
queries, 91 COCO classes) with random weights via transformers, saves it,
and times one detection of the same photo (the processor's 800-pixel
shorter side) in transformers (torch, 2 threads, no grad) and in Hearth's
`detect_objects` example (release build, 2 threads), best of ROUNDS each.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers timm pillow safetensors
  cargo build --release -p hearth-engine --example detect_objects
  /tmp/t/bin/python bench/detr_speed.py $CARGO_TARGET_DIR/release/examples/detect_objects IMAGE [ROUNDS]
"""

import os
import subprocess
import sys
import tempfile
import time

import torch
from PIL import Image
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor


def main():
    binary, image_path = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        config = DetrConfig(use_timm_backbone=True, backbone="resnet50",
                            use_pretrained_backbone=False, num_labels=91)
        model = DetrForObjectDetection(config).eval()
        model.save_pretrained(folder, safe_serialization=True)
        processor = DetrImageProcessor()
        processor.save_pretrained(folder)
        image = Image.open(image_path).convert("RGB")
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            with torch.no_grad():
                inputs = processor(images=image, return_tensors="pt")
                out = model(pixel_values=inputs["pixel_values"])
                processor.post_process_object_detection(
                    out, threshold=0.5, target_sizes=[(image.height, image.width)])
            best = min(best, time.perf_counter() - started)
        shape = tuple(inputs["pixel_values"].shape[-2:])
        env = dict(os.environ, HEARTH_ROUNDS=str(rounds), RAYON_NUM_THREADS="2")
        run = subprocess.run([binary, folder, image_path], env=env, check=True,
                             capture_output=True, text=True)
        hearth = float(run.stderr.split("\t")[-1].split()[0])
        print(f"input {shape[1]}x{shape[0]}: transformers {best:.3f} s, Hearth {hearth:.3f} s, "
              f"speed ratio (transformers / Hearth) {best / hearth:.2f}x")


if __name__ == "__main__":
    main()
