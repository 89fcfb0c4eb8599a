// env.AI, its gateway and autorag handles and env.VECTORIZE from Node,
// against a real Hearth serving the registry's SmolLM2 and MiniLM.

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { AutoRAGNotFoundError, InferenceUpstreamError, hearthAi, hearthVectorize, runWithTools } from "../dist/node.js";
import { ACCOUNT, BATCH_LLM, BGE, FLUX, RESNET, SMOLLM, STABLE_DIFFUSION, TOKEN, WHISPER, WHISPER_TURBO, photo, rest, startHearth } from "../support/server.mjs";

let server;
let ai;
before(async () => {
  server = await startHearth();
  ai = hearthAi({ url: server.url, accountId: ACCOUNT, apiToken: TOKEN });
});
after(() => server?.stop());

async function text(stream) {
  return new Response(stream).text();
}

test("run returns the result; deterministic mode gives the same text twice", async () => {
  const fixed = hearthAi({ url: server.url, accountId: ACCOUNT, apiToken: TOKEN, deterministic: { seed: 7 } });
  const a = await fixed.run(SMOLLM, { prompt: "Name a colour.", max_tokens: 12 });
  const b = await fixed.run(SMOLLM, { prompt: "Name a colour.", max_tokens: 12 });
  assert.equal(typeof a.response, "string");
  assert.ok(a.response.length > 0);
  assert.deepEqual(a, b);
  assert.equal(fixed.lastRequestHttpStatusCode, 200);
});

test("stream: true gives a ReadableStream of the SSE bytes", async () => {
  const stream = await ai.run(SMOLLM, { prompt: "Say hi.", max_tokens: 6, stream: true });
  assert.equal(typeof stream.getReader, "function");
  const body = await text(stream);
  assert.match(body, /^data: \{"response":/);
  assert.match(body, /data: \[DONE\]/);
});

test("embeddings, returnRawResponse, models", async () => {
  const out = await ai.run(BGE, { text: ["a cat", "a dog"] });
  assert.deepEqual(out.shape, [2, 384]);
  const raw = await ai.run(BGE, { text: "a cat" }, { returnRawResponse: true });
  assert.ok(raw instanceof Response);
  const body = await raw.json();
  assert.deepEqual(body.shape, [1, 384], "the raw body is the result, as the binding's is");
  const models = await ai.models({ search: "smollm2" });
  assert.ok(models.some((m) => m.name === SMOLLM), JSON.stringify(models));
});

test("errors are thrown as the binding throws them", async () => {
  await assert.rejects(ai.run("@cf/nobody/no-such-model", { prompt: "x" }), (e) => {
    assert.ok(e instanceof InferenceUpstreamError);
    assert.equal(e.name, "InferenceUpstreamError");
    assert.match(e.message, /^\d+: /);
    return true;
  });
  await assert.rejects(ai.run(SMOLLM, { prompt: 5 }), /prompt/);
});

test("toMarkdown converts a file", async () => {
  const out = await ai.toMarkdown({ name: "note.html", blob: new Blob(["<h1>Tea</h1><p>Green.</p>"], { type: "text/html" }) });
  assert.equal(out.format, "markdown");
  assert.match(out.data, /# Tea/);
});

test("Vectorize: insert, query, queryById, getByIds, deleteByIds, describe", async () => {
  await rest(server.url, "POST", "/vectorize/v2/indexes", { name: "docs", config: { dimensions: 384, metric: "cosine" } });
  const index = hearthVectorize("docs", { url: server.url, accountId: ACCOUNT, apiToken: TOKEN });
  const texts = ["Llamas are camelids.", "Green tea comes from Camellia sinensis.", "The Danube flows through ten countries."];
  const { data } = await ai.run(BGE, { text: texts });
  const mutation = await index.upsert(data.map((values, i) => ({ id: `d${i}`, values, metadata: { text: texts[i] } })));
  assert.equal(typeof mutation.mutationId, "string");
  for (let i = 0; i < 100 && (await index.describe()).processedUpToMutation !== mutation.mutationId; i++) {
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const info = await index.describe();
  assert.equal(info.vectorCount, 3);
  assert.equal(info.dimensions, 384);
  const q = (await ai.run(BGE, { text: "Which river crosses many countries?" })).data[0];
  const found = await index.query(q, { topK: 2, returnMetadata: "all" });
  assert.equal(found.matches[0].id, "d2");
  assert.equal(found.matches[0].metadata.text, texts[2]);
  const byId = await index.queryById("d0", { topK: 1 });
  assert.equal(byId.matches[0].id, "d0");
  const got = await index.getByIds(["d1"]);
  assert.equal(got[0].id, "d1");
  await index.deleteByIds(["d1"]);
  await assert.rejects(hearthVectorize("nope", { url: server.url, accountId: ACCOUNT, apiToken: TOKEN }).describe(), /VECTOR_INFO_ERROR/);
});

test("autorag: search and aiSearch over an AI Search instance", async () => {
  const folder = mkdtempSync(join(tmpdir(), "hearth-rag-"));
  writeFileSync(join(folder, "llamas.md"), "# Llamas\n\nLlamas are South American camelids related to alpacas.\n");
  writeFileSync(join(folder, "tea.md"), "# Tea\n\nGreen tea comes from the leaves of Camellia sinensis.\n");
  await rest(server.url, "POST", "/ai-search/instances", { id: "kb", type: "local", source: folder, embedding_model: BGE, chunk_size: 128 });
  for (let i = 0; i < 600; i++) {
    const jobs = (await rest(server.url, "GET", "/ai-search/instances/kb/jobs")).result;
    if (jobs.length && jobs.every((j) => j.status !== "running" && j.status !== "queued")) break;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const rag = ai.autorag("kb");
  const found = await rag.search({ query: "What are llamas related to?", ranking_options: { score_threshold: 0 } });
  assert.equal(found.data[0].filename, "llamas.md");
  const answered = await rag.aiSearch({ query: "What are llamas related to?", max_tokens: 16 });
  assert.equal(typeof answered.response, "string");
  assert.equal(answered.data[0].filename, "llamas.md");
  const streamed = await rag.aiSearch({ query: "What are llamas related to?", stream: true, max_tokens: 8 });
  assert.ok(streamed instanceof Response);
  assert.match(await streamed.text(), /data: \[DONE\]/);
  await assert.rejects(ai.autorag("missing").search({ query: "x" }), AutoRAGNotFoundError);
  assert.ok((await rag.list()).some((r) => r.id === "kb"));
});

test("runWithTools calls the tool and answers with its result", async () => {
  const called = [];
  const tools = [
    {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      function: async ({ city }) => {
        called.push(city);
        return "sunny, 21 C";
      },
    },
  ];
  const out = await runWithTools(ai, SMOLLM, {
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools,
    tool_choice: "required",
    max_tokens: 48,
    seed: 1,
  });
  assert.equal(called.length >= 1, true, "the tool ran");
  assert.equal(typeof called[0], "string");
  assert.equal(typeof out.response, "string", JSON.stringify(out));
});

test("a run through a gateway reports its log id, and the gateway finds the entry", async () => {
  await rest(server.url, "POST", "/ai-gateway/gateways", { id: "gw", collect_logs: true, cache_ttl: 0, cache_invalidate_on_update: false, rate_limiting_interval: 0, rate_limiting_limit: 0, rate_limiting_technique: "fixed" });
  const out = await ai.run(BGE, { text: "a cat" }, { gateway: { id: "gw" } });
  assert.deepEqual(out.shape, [1, 384]);
  assert.ok(ai.aiGatewayLogId, "cf-aig-log-id was read");
  let entry;
  for (let i = 0; i < 100 && !entry; i++) {
    try {
      entry = await ai.gateway("gw").getLog(ai.aiGatewayLogId);
    } catch {
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }
  assert.equal(entry.id, ai.aiGatewayLogId);
  assert.match(await ai.gateway("gw").getUrl("workers-ai"), /\/v1\/0123456789abcdef0123456789abcdef\/gw\/workers-ai$/);
});

test("queueRequest queues a batch; polling with its request_id returns the answers", async () => {
  const queued = await ai.run(
    BATCH_LLM,
    { requests: [{ prompt: "Say one word.", max_tokens: 4 }, { prompt: "Say two words.", max_tokens: 4 }] },
    { queueRequest: true },
  );
  assert.equal(queued.status, "queued", JSON.stringify(queued));
  let done;
  for (let i = 0; i < 600; i++) {
    done = await ai.run(BATCH_LLM, { request_id: queued.request_id }, { queueRequest: true });
    if (done.status !== "queued" && done.status !== "running") break;
    await new Promise((ok) => setTimeout(ok, 100));
  }
  assert.equal(done.responses.length, 2, JSON.stringify(done));
  assert.equal(typeof done.responses[0].result.response, "string", JSON.stringify(done));
});

test("an image goes as a byte array or as a ReadableStream input, with the same labels", async () => {
  const bytes = photo("chelsea");
  const byArray = await ai.run(RESNET, { image: [...bytes] });
  assert.equal(byArray.length, 5);
  assert.ok(byArray.slice(0, 3).some((l) => /cat|tabby/.test(l.label)), JSON.stringify(byArray));
  const stream = new Blob([bytes]).stream();
  const byStream = await ai.run(RESNET, { image: { body: stream, contentType: "image/png" } });
  assert.deepEqual(byStream, byArray);
  await assert.rejects(ai.run(RESNET, { image: new Blob(["x"]).stream() }), /Content-Type is required/);
});

test("speech: whisper-tiny-en transcribes a byte array; turbo's id takes base64 and answers with segments", async () => {
  const { spawnSync } = await import("node:child_process");
  const { readFileSync } = await import("node:fs");
  const wav = join(mkdtempSync(join(tmpdir(), "hearth-speech-")), "speech.wav");
  const spoken = spawnSync("espeak-ng", ["-v", "en-us", "-s", "150", "-w", wav, "Open the window and let the fresh air into the room."]);
  assert.equal(spoken.status, 0, "espeak-ng (scripts/setup-system installs it)");
  const bytes = readFileSync(wav);
  const tiny = await ai.run(WHISPER, { audio: [...bytes] });
  assert.match(tiny.text.toLowerCase(), /window.*fresh air.*room/, JSON.stringify(tiny));
  assert.equal(tiny.word_count, tiny.text.split(/\s+/).filter(Boolean).length);
  assert.ok(tiny.words.length > 0 && tiny.vtt.startsWith("WEBVTT"));
  const turbo = await ai.run(WHISPER_TURBO, { audio: bytes.toString("base64"), language: "en" });
  assert.equal(turbo.text, tiny.text);
  assert.equal(turbo.transcription_info.language, "en");
  assert.ok(turbo.segments.length > 0 && turbo.segments[0].words.length > 0, JSON.stringify(turbo));
});

test("text-to-image: Stable Diffusion gives a ReadableStream of PNG bytes, FLUX base64; a seed repeats", async () => {
  const png = async (input) => new Uint8Array(await new Response(await ai.run(STABLE_DIFFUSION, input)).arrayBuffer());
  const input = { prompt: "a red cat on the hill", num_steps: 2, seed: 7, width: 320, height: 256 };
  const first = await png(input);
  assert.deepEqual([...first.slice(1, 4)], [0x50, 0x4e, 0x47], "PNG magic");
  const view = new DataView(first.buffer);
  assert.deepEqual([view.getUint32(16), view.getUint32(20)], [320, 256]);
  assert.deepEqual(await png(input), first);
  // img2img from the first picture, as a byte array.
  const redrawn = await png({ prompt: "a dog", image: [...first], strength: 0.5, num_steps: 2, seed: 1, width: 320, height: 256 });
  assert.notDeepEqual(redrawn, first);
  const flux = await ai.run(FLUX, { prompt: "a red cat", steps: 2 });
  assert.deepEqual([...Buffer.from(flux.image, "base64").subarray(0, 2)], [0xff, 0xd8]);
});
