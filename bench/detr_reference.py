"""DETR against transformers: the architecture check of issue 8's object detection.

No genuine DETR weights ship in a registry package, so this builds random
DETRs with transformers itself (a timm ResNet-50 backbone, the hub
checkpoint's layout, and a small Hugging Face ResNet backbone), with
non-trivial batch-norm statistics, saves each with `save_pretrained` (the
real file layout), runs transformers' model and `post_process_object_detection`
on an image, runs Hearth's detector on the same folder
(`crates/hearth-engine/examples/detect_objects.rs`) and compares labels,
scores and boxes query by query.

  python3 -m venv /tmp/t && /tmp/t/bin/pip install torch transformers timm pillow safetensors
  cargo build -p hearth-engine --examples
  /tmp/t/bin/python bench/detr_reference.py $CARGO_TARGET_DIR/debug/examples/detect_objects

The image is 128x96 and the processor's shortest edge 96, so no resizing
happens (PIL's and the image crate's bilinear filters differ slightly on
downscaling); the network and post-processing are what is compared.
"""

import json
import subprocess
import sys
import tempfile

import torch
from PIL import Image
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

LABELS = {0: "N/A", 1: "cat", 2: "dog"}


def build(folder, backbone):
    torch.manual_seed(0)
    common = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                  num_queries=10, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    if backbone == "timm":
        config = DetrConfig(use_timm_backbone=True, backbone="resnet50",
                            use_pretrained_backbone=False, **common)
    else:
        resnet = ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 2],
                              layer_type="bottleneck", out_features=["stage2"])
        config = DetrConfig(use_timm_backbone=False, backbone=None, backbone_config=resnet,
                            use_pretrained_backbone=False, **common)
    model = DetrForObjectDetection(config).eval()
    # DETR's own initialisation makes every query nearly the same; these
    # weights make them differ, and the frozen batch norms non-trivial.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, (2.0 / p[0].numel()) ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                b.normal_(0, 0.1)
            elif name.endswith(".weight"):
                b.normal_(1, 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    processor = DetrImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    processor.save_pretrained(folder)
    return model, processor


def reference(model, processor, image):
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"])
    r = processor.post_process_object_detection(
        out, threshold=-1.0, target_sizes=[(image.height, image.width)])[0]
    found = []
    for score, label, box in zip(r["scores"].tolist(), r["labels"].tolist(), r["boxes"].tolist()):
        # Hearth clamps boxes to the image; transformers does not.
        limits = [image.width, image.height, image.width, image.height]
        box = [min(max(v, 0.0), m) for v, m in zip(box, limits)]
        found.append({"label": LABELS[label], "score": score, "box": box})
    return sorted(found, key=lambda d: -d["score"])


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        image = Image.new("RGB", (128, 96))
        image.putdata([((x * 7 + y) % 256, (y * 5) % 256, (x * y) % 256)
                       for y in range(96) for x in range(128)])
        path = f"{tmp}/image.png"
        image.save(path)
        worst = 0.0
        for backbone in ["timm", "hf"]:
            folder = f"{tmp}/detr-{backbone}"
            want = reference(*build(folder, backbone), image)
            got = json.loads(subprocess.run([binary, folder, "--threshold", "-1", path],
                                            check=True, capture_output=True, text=True).stdout)
            assert len(got) == len(want), (len(got), len(want))
            labels = all(g["label"] == w["label"] for g, w in zip(got, want))
            score = max(abs(g["score"] - w["score"]) for g, w in zip(got, want))
            box = max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g["box"], w["box"]))
            print(f"{backbone} backbone: {len(got)} queries, labels equal {labels}, "
                  f"max score difference {score:.2e}, max box difference {box:.2e} px")
            worst = max(worst, score, box / 128)
            if not labels:
                sys.exit(1)
        sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
