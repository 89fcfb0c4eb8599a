// The example Worker tested as its author would, in workerd, through its
// fetch handler; the model answers are real (SmolLM2, MiniLM on Hearth).
import { SELF, env } from "cloudflare:test";
import { expect, it } from "vitest";

async function post(path, body) {
  return SELF.fetch(`http://example.local${path}`, { method: "POST", body: JSON.stringify(body) });
}

it("streams a chat answer", async () => {
  const res = await post("/chat", { prompt: "Name a colour." });
  expect(res.status).toBe(200);
  const text = await res.text();
  expect(text).toMatch(/^data: \{"response":/);
  expect(text).toMatch(/data: \[DONE\]/);
});

it("answers the same way twice (deterministic bindings)", async () => {
  const a = await (await post("/chat", { prompt: "Name an animal." })).text();
  const b = await (await post("/chat", { prompt: "Name an animal." })).text();
  expect(a).toBe(b);
});

it("remembers texts and finds the closest", async () => {
  let last;
  for (const [id, text] of [
    ["llama", "Llamas are camelids from the Andes."],
    ["tea", "Green tea comes from Camellia sinensis."],
  ]) {
    const res = await post("/remember", { id, text });
    expect(res.status).toBe(200);
    last = (await res.json()).mutationId;
  }
  for (let i = 0; i < 100; i++) {
    const info = await (await SELF.fetch("http://example.local/describe")).json();
    if (info.processedUpToMutation === last) break;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const found = await (await post("/ask", { question: "What do people brew from leaves?" })).json();
  expect(found.id).toBe("tea");
});

it("lists the text generation models", async () => {
  const models = await (await SELF.fetch("http://example.local/models")).json();
  expect(models).toContain("@cf/huggingfacetb/smollm2-135m-instruct");
});

it("says what a photo shows", async () => {
  // The photo comes in as a binding (tests in workerd have no files).
  const png = Uint8Array.from(atob(env.COFFEE_PNG_BASE64), (c) => c.charCodeAt(0));
  const res = await SELF.fetch("http://example.local/classify", { method: "POST", body: png });
  expect(res.status).toBe(200);
  const labels = await res.json();
  expect(labels[0].label).toBe("espresso");
});
