// Starts a real `hearth serve` for the tests: the binary cargo built
// ($HEARTH_BIN, else $CARGO_TARGET_DIR/debug/hearth), the models
// scripts/fetch-test-models installed, MiniLM also served as the bge id.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ACCOUNT = "0123456789abcdef0123456789abcdef";
export const TOKEN = "binding-test-token-0123456789";
export const SMOLLM = "@cf/huggingfacetb/smollm2-135m-instruct";
export const BGE = "@cf/baai/bge-small-en-v1.5";
/** A catalog model that takes batch requests, served by SmolLM2. */
export const BATCH_LLM = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
/** Workers AI's image classifier id, served by the genuine EfficientNet-Lite0. */
export const RESNET = "@cf/microsoft/resnet-50";
export const WHISPER = "@cf/openai/whisper-tiny-en";
export const WHISPER_TURBO = "@cf/openai/whisper-large-v3-turbo";
/** Text-to-image ids, served by tiny random-weight models (`hearth models tiny`). */
export const STABLE_DIFFUSION = "@cf/runwayml/stable-diffusion-v1-5-img2img";
export const FLUX = "@cf/black-forest-labs/flux-1-schnell";

/** A scikit-image sample photo that scripts/fetch-test-models installed. */
export function photo(name) {
  const models = process.env.HEARTH_MODELS_DIR ?? join(homedir(), ".local/share/hearth/models");
  return readFileSync(join(models, "test-data/skimage-0.26.0", `${name}.png`));
}

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export async function startHearth() {
  const root = resolve(import.meta.dirname, "../../..");
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  const bin = process.env.HEARTH_BIN ?? join(target, "debug", "hearth");
  const models = process.env.HEARTH_MODELS_DIR ?? join(homedir(), ".local/share/hearth/models");
  const dir = mkdtempSync(join(tmpdir(), "hearth-binding-"));
  const port = await freePort();
  const config = join(dir, "hearth.toml");
  const tiny = { [STABLE_DIFFUSION]: "stable-diffusion", [FLUX]: "flux" };
  let tinyAliases = "";
  for (const [model, kind] of Object.entries(tiny)) {
    const folder = join(dir, `tiny-${kind}`);
    const made = spawnSync(bin, ["models", "tiny", kind, folder]);
    if (made.status !== 0) throw new Error(`hearth models tiny ${kind}: ${made.stderr}`);
    tinyAliases += `"${model}" = "${folder}"\n`;
  }
  writeFileSync(
    config,
    `listen = "127.0.0.1:${port}"\ndata_dir = "${join(dir, "data")}"\nmodels_dir = "${models}"\n` +
      `account_id = "${ACCOUNT}"\napi_token = "${TOKEN}"\nmax_body_bytes = 16777216\n[textgen]\nctx_per_seq = 1024\n` +
      `[aliases]\n"${BGE}" = "@cf/sentence-transformers/all-minilm-l6-v2"\n"${BATCH_LLM}" = "${SMOLLM}"\n"${RESNET}" = "@cf/google/efficientnet-lite0"\n"${WHISPER_TURBO}" = "${WHISPER}"\n` +
      tinyAliases,
  );
  const child = spawn(bin, ["serve", "--config", config], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  // The server never outlives the tests, and never keeps them waiting.
  child.unref();
  process.on("exit", () => child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) {
        return { url, dir, stop: () => child.kill("SIGKILL") };
      }
    } catch {}
    await new Promise((ok) => setTimeout(ok, 50));
  }
  child.kill("SIGKILL");
  throw new Error(`${bin} did not start`);
}

/** A call to the server's REST API (for set-up the bindings do not offer). */
export async function rest(url, method, path, body) {
  const res = await fetch(`${url}/client/v4/accounts/${ACCOUNT}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.json();
}
