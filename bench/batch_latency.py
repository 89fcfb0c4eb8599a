"""Interactive latency alone vs while a 1,000-item batch runs on the same model.

Starts `hearth serve` (release build) with a batch-capable Llama id aliased to
SmolLM2-135M, measures N sequential interactive requests alone, then queues a
1,000-item batch on the same model and measures N more while it runs.
    python bench/batch_latency.py [N]
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
ACCOUNT, TOKEN = "0123456789abcdef0123456789abcdef", "bench-token-0123456789"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    data = tempfile.mkdtemp(prefix="hearth-batch-bench-")
    (Path(data) / "hearth.toml").write_text(f'[aliases]\n"{MODEL}" = "@cf/huggingfacetb/smollm2-135m-instruct"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HEARTH_ACCOUNT_ID=ACCOUNT, HEARTH_API_TOKEN=TOKEN, RUST_LOG="warn",
               HEARTH_RATE_LIMITS="false")
    env.setdefault("HEARTH_MODELS_DIR", str(Path.home() / ".local/share/hearth/models"))
    proc = subprocess.Popen([str(TARGET / "release" / "hearth"), "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", data], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/client/v4/accounts/{ACCOUNT}/ai/run/{MODEL}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    client = httpx.Client(timeout=300)
    try:
        for _ in range(300):
            try:
                if client.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"prompt": "Write one sentence about the sea.", "max_tokens": 16, "temperature": 0}
        client.post(url, json=body, headers=headers).raise_for_status()  # load the model

        def measure():
            out = []
            for _ in range(N):
                t = time.perf_counter()
                client.post(url, json=body, headers=headers).raise_for_status()
                out.append((time.perf_counter() - t) * 1000)
            return out

        alone = measure()
        items = [{"prompt": f"Item {i}: write one sentence about the sea.", "max_tokens": 16, "temperature": 0}
                 for i in range(1000)]
        q = client.post(url + "?queueRequest=true", json={"requests": items}, headers=headers).json()
        rid = q["result"]["request_id"]
        time.sleep(1.0)
        during = measure()
        status = client.post(url + "?queueRequest=true", json={"request_id": rid}, headers=headers).json()
        still_running = "responses" not in status["result"]
        result = {
            "n": N,
            "alone_ms": {"p50": statistics.median(alone), "p99": pct(alone, 99)},
            "during_batch_ms": {"p50": statistics.median(during), "p99": pct(during, 99)},
            "batch_still_running_at_end": still_running,
        }
        result["p99_growth"] = result["during_batch_ms"]["p99"] / result["alone_ms"]["p99"] - 1
        print(json.dumps(result, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
