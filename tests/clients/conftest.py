"""Start one real `hearth serve` process for the client contract tests.

The binary is $HEARTH_BIN, else target/debug/hearth under $CARGO_TARGET_DIR
(or ./target). Models come from $HEARTH_MODELS_DIR or the default models dir,
installed by scripts/fetch-test-models.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ACCOUNT = "0123456789abcdef0123456789abcdef"
TOKEN = "client-test-token-0123456789"
SMOLLM = "@cf/huggingfacetb/smollm2-135m-instruct"
BATCH_LLM = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
ROOT = Path(__file__).resolve().parents[2]
# Workers AI ids served by tiny random-weight models, by `hearth models tiny` kind
# (LLaVA also as a vision chat model).
VISION_CHAT = "@cf/meta/llama-3.2-11b-vision-instruct"
LLAVA_CHAT = "@cf/meta/llama-4-scout-17b-16e-instruct"
TINY_MODELS = {
    "detr": ["@cf/facebook/detr-resnet-50"],
    "bart": ["@cf/facebook/bart-large-cnn"],
    "llava": ["@cf/llava-hf/llava-1.5-7b-hf", LLAVA_CHAT],
    "llama-vision": [VISION_CHAT],
    "stable-diffusion": ["@cf/runwayml/stable-diffusion-v1-5-img2img"],
    "flux": ["@cf/black-forest-labs/flux-1-schnell"],
}


def hearth_binary() -> str:
    if os.environ.get("HEARTH_BIN"):
        return os.environ["HEARTH_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "hearth")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def hearth():
    data = tempfile.mkdtemp(prefix="hearth-clients-")
    port = free_port()
    env = dict(os.environ)
    env.update(
        HEARTH_ACCOUNT_ID=ACCOUNT,
        HEARTH_API_TOKEN=TOKEN,
        HEARTH_PARALLEL="4",
        HEARTH_CTX_PER_SEQ="1024",
        RUST_LOG="warn",
    )
    # The temporary data dir has no weights: read them where fetch-test-models put them.
    env.setdefault("HEARTH_MODELS_DIR", str(Path.home() / ".local/share/hearth/models"))
    # Serve a bge id with the registry-shipped MiniLM, as a developer would.
    # and serve a batch-capable Llama id with SmolLM2 for the Batch API tests.
    # No genuine weights ship for these tasks: tiny random-weight models in
    # the real layouts (`hearth models tiny`) serve their contracts.
    tiny = {}
    for kind, models in TINY_MODELS.items():
        folder = Path(data) / f"tiny-{kind}"
        subprocess.run([hearth_binary(), "models", "tiny", kind, str(folder)], env=env, check=True,
                       capture_output=True)
        tiny.update({model: folder for model in models})
    (Path(data) / "hearth.toml").write_text(
        '[aliases]\n"@cf/baai/bge-small-en-v1.5" = "@cf/sentence-transformers/all-minilm-l6-v2"\n'
        f'"{BATCH_LLM}" = "{SMOLLM}"\n'
        # EmbeddingGemma's contract on the committed tiny fixture (no genuine weights ship).
        f'"@cf/google/embeddinggemma-300m" = "{ROOT / "tests/fixtures/tiny-embeddinggemma"}"\n'
        + "".join(f'"{model}" = "{folder}"\n' for model, folder in tiny.items()))
    log = open(Path(data) / "server.log", "w")
    proc = subprocess.Popen(
        [hearth_binary(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.flush()
            raise RuntimeError("hearth serve did not start:\n" + (Path(data) / "server.log").read_text())
        time.sleep(0.2)
    yield {"base": base, "account": ACCOUNT, "token": TOKEN}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(data, ignore_errors=True)
