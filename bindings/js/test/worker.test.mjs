// The example Worker (examples/worker) runs unchanged in real workerd
// through miniflare, with env.AI and env.VECTORIZE from hearthMiniflare():
// live against a server (recording a cassette), then replayed from the
// cassette with no server at all.

import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { Miniflare } from "miniflare";

import { hearthMiniflare } from "../dist/node.js";
import { ACCOUNT, TOKEN, photo, rest, startHearth } from "../support/server.mjs";

const WORKER = resolve(import.meta.dirname, "../../../examples/worker/src/index.js");
const cassette = join(mkdtempSync(join(tmpdir(), "hearth-cassette-")), "worker.json");
let server;

before(async () => {
  server = await startHearth();
  await rest(server.url, "POST", "/vectorize/v2/indexes", { name: "memory", config: { dimensions: 384, metric: "cosine" } });
});
after(() => server?.stop());

function worker(transport) {
  const hearth = hearthMiniflare({
    ...transport,
    bindings: { AI: { ai: { deterministic: true } }, VECTORIZE: { vectorize: "memory" } },
  });
  return new Miniflare({
    workers: [
      {
        name: "app",
        modules: true,
        scriptPath: WORKER,
        modulesRoot: dirname(WORKER),
        compatibilityDate: "2026-07-01",
        wrappedBindings: hearth.wrappedBindings,
      },
      hearth.worker,
    ],
  });
}

async function post(mf, path, body) {
  const res = await mf.dispatchFetch(`http://app.local${path}`, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, text: await res.text() };
}

async function scenario(mf, waitForIndex) {
  const chat = await post(mf, "/chat", { prompt: "Name a colour." });
  assert.equal(chat.status, 200, chat.text);
  assert.match(chat.text, /^data: \{"response":/);
  assert.match(chat.text, /data: \[DONE\]/);
  const remembered = [];
  for (const [id, text] of [
    ["llama", "Llamas are camelids from the Andes."],
    ["tea", "Green tea comes from Camellia sinensis."],
  ]) {
    const r = await post(mf, "/remember", { id, text });
    assert.equal(r.status, 200, r.text);
    remembered.push(JSON.parse(r.text).mutationId);
  }
  await waitForIndex(remembered.at(-1));
  const ask = await post(mf, "/ask", { question: "Where do llamas come from?" });
  assert.equal(ask.status, 200, ask.text);
  const models = await (await mf.dispatchFetch("http://app.local/models")).json();
  const classified = await mf.dispatchFetch("http://app.local/classify", { method: "POST", body: photo("coffee") });
  assert.equal(classified.status, 200);
  const labels = await classified.json();
  return { chat: chat.text, ask: JSON.parse(ask.text), models, labels };
}

let live;

test("the example Worker runs in workerd against a live Hearth (recording)", async () => {
  const mf = worker({ url: server.url, accountId: ACCOUNT, apiToken: TOKEN, cassette: { mode: "record", path: cassette } });
  try {
    live = await scenario(mf, async (mutation) => {
      for (let i = 0; i < 100; i++) {
        const info = await (await mf.dispatchFetch("http://app.local/describe")).json();
        if (info.processedUpToMutation === mutation) return;
        await new Promise((ok) => setTimeout(ok, 50));
      }
    });
    assert.equal(live.ask.id, "llama");
    assert.equal(live.labels[0].label, "espresso", JSON.stringify(live.labels));
    assert.ok(live.models.includes("@cf/huggingfacetb/smollm2-135m-instruct"), JSON.stringify(live.models));
  } finally {
    await mf.dispose();
  }
});

test("replayed from the cassette with no server, the Worker answers the same", async () => {
  server.stop();
  const mf = worker({ url: "http://127.0.0.1:9", cassette: { mode: "replay", path: cassette } });
  try {
    const replayed = await scenario(mf, async () => {});
    assert.deepEqual(replayed, live);
    // A call the cassette does not hold fails saying so.
    const missing = await post(mf, "/ask", { question: "Something never asked" });
    assert.equal(missing.status, 500);
    assert.match(missing.text, /not in the cassette/);
  } finally {
    await mf.dispose();
  }
});
