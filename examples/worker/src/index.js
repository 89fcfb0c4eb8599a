// An ordinary Worker: nothing in it knows about Hearth. Its bindings are
// `env.AI` (Workers AI) and `env.VECTORIZE` (a 384-dimension index).
//   POST /chat     {prompt}          -> the model's answer, streamed (SSE)
//   POST /remember {id, text}        -> embeds the text, upserts it
//   POST /ask      {question}        -> the closest remembered text
//   POST /classify (an image)        -> what the picture shows
//   GET  /models                     -> text generation models

const CHAT_MODEL = "@cf/huggingfacetb/smollm2-135m-instruct";
const EMBEDDING_MODEL = "@cf/baai/bge-small-en-v1.5";
const IMAGE_MODEL = "@cf/microsoft/resnet-50";

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method === "POST" && url.pathname === "/chat") {
      const { prompt } = await request.json();
      const stream = await env.AI.run(CHAT_MODEL, { prompt, stream: true, max_tokens: 32 });
      return new Response(stream, { headers: { "content-type": "text/event-stream" } });
    }
    if (request.method === "POST" && url.pathname === "/remember") {
      const { id, text } = await request.json();
      const { data } = await env.AI.run(EMBEDDING_MODEL, { text: [text] });
      const mutation = await env.VECTORIZE.upsert([{ id, values: data[0], metadata: { text } }]);
      return Response.json(mutation);
    }
    if (request.method === "POST" && url.pathname === "/ask") {
      const { question } = await request.json();
      const { data } = await env.AI.run(EMBEDDING_MODEL, { text: [question] });
      const found = await env.VECTORIZE.query(data[0], { topK: 1, returnMetadata: "all" });
      const best = found.matches[0];
      return Response.json(best ? { id: best.id, text: best.metadata.text, score: best.score } : null);
    }
    if (request.method === "POST" && url.pathname === "/classify") {
      const image = [...new Uint8Array(await request.arrayBuffer())];
      const labels = await env.AI.run(IMAGE_MODEL, { image });
      return Response.json(labels);
    }
    if (url.pathname === "/models") {
      const models = await env.AI.models({ task: "Text Generation" });
      return Response.json(models.map((m) => m.name));
    }
    if (url.pathname === "/describe") {
      return Response.json(await env.VECTORIZE.describe());
    }
    return new Response("not found", { status: 404 });
  },
};
