// The Workers AI binding (`env.AI`), its AI Gateway and AutoRAG handles,
// and the Vectorize binding (`env.VECTORIZE`), backed by a Hearth server.
//
// Everything goes through a `Fetcher` (as the real bindings do), with
// paths on a fixed origin: `/account/...` for the account's REST API and
// `/gateway/...` for AI Gateway's data plane. The transport (`node.ts`
// for Node, a service binding under miniflare) maps them onto a server
// and may record or replay them. This file uses only what both workerd
// and Node provide.

export interface Fetcher {
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
}

/** The origin the bindings address; the transport replaces it. */
export const BINDING_ORIGIN = "https://hearth.binding";

/** Thrown by `run` when the model call fails, as the real binding throws. */
export class InferenceUpstreamError extends Error {
  constructor(message: string, name = "InferenceUpstreamError") {
    super(message);
    this.name = name;
  }
}

/** Thrown by `models`, `toMarkdown` and bad binding use. */
export class AiInternalError extends Error {
  constructor(message: string, name = "AiInternalError") {
    super(message);
    this.name = name;
  }
}

export class AutoRAGNotFoundError extends Error {
  constructor(message = "Not Found") {
    super(message);
    this.name = "AutoRAGNotFoundError";
  }
}

export class AutoRAGUnauthorizedError extends Error {
  constructor(message = "Unauthorized") {
    super(message);
    this.name = "AutoRAGUnauthorizedError";
  }
}

export class AutoRAGInternalError extends Error {
  constructor(message = "Internal Error") {
    super(message);
    this.name = "AutoRAGInternalError";
  }
}

export class AutoRAGNameNotSetError extends Error {
  constructor() {
    super("AutoRAG name is not set");
    this.name = "AutoRAGNameNotSetError";
  }
}

type Json = Record<string, unknown>;

interface Envelope {
  result?: unknown;
  success?: boolean;
  errors?: Array<{ code: number; message: string }>;
}

async function envelopeOf(res: Response): Promise<Envelope | null> {
  const text = await res.text();
  try {
    return JSON.parse(text) as Envelope;
  } catch {
    return { errors: [{ code: res.status, message: text }] };
  }
}

function firstError(envelope: Envelope | null, status: number): { code: number; message: string } {
  return envelope?.errors?.[0] ?? { code: status, message: `HTTP ${status}` };
}

function isJson(res: Response): boolean {
  return (res.headers.get("content-type") ?? "").startsWith("application/json");
}

function isReadableStream(value: unknown): value is ReadableStream {
  return (
    typeof value === "object" &&
    value !== null &&
    "getReader" in value &&
    typeof (value as { getReader: unknown }).getReader === "function"
  );
}

export interface GatewayOptions {
  id: string;
  cacheKey?: string;
  cacheTtl?: number;
  skipCache?: boolean;
  metadata?: Record<string, number | string | boolean | null | bigint>;
  collectLog?: boolean;
  eventId?: string;
  requestTimeoutMs?: number;
  retries?: { maxAttempts?: number; retryDelayMs?: number; backoff?: "constant" | "linear" | "exponential" };
}

export interface AiOptions {
  gateway?: GatewayOptions;
  returnRawResponse?: boolean;
  queueRequest?: boolean;
  prefix?: string;
  extraHeaders?: Record<string, string>;
}

/**
 * Fixed sampling for tests: text generation gets this `seed` and
 * `temperature: 0` unless the inputs set their own, so the same inputs
 * give the same outputs on every run.
 */
export interface Determinism {
  seed?: number;
}

export interface HearthAiOptions {
  deterministic?: boolean | Determinism;
  /** Where `gateway(id).getUrl()` points: the server's address. */
  serverUrl?: string;
  accountId?: string;
}

export class Ai {
  lastRequestId: string | null = null;
  aiGatewayLogId: string | null = null;
  lastRequestHttpStatusCode: number | null = null;
  lastRequestInternalStatusCode: number | null = null;
  readonly #fetcher: Fetcher;
  readonly #options: HearthAiOptions;

  constructor(fetcher: Fetcher, options: HearthAiOptions = {}) {
    this.#fetcher = fetcher;
    this.#options = options;
  }

  async fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    return this.#fetcher.fetch(input, init);
  }

  #fixed(inputs: Json): Json {
    const d = this.#options.deterministic;
    if (!d || !("prompt" in inputs || "messages" in inputs)) {
      return inputs;
    }
    const seed = typeof d === "object" && d.seed !== undefined ? d.seed : 0;
    return { seed, temperature: 0, ...inputs };
  }

  async run(model: string, inputs: Json, options: AiOptions = {}): Promise<unknown> {
    this.lastRequestId = null;
    const headers: Record<string, string> = { ...(options.extraHeaders ?? {}) };
    const query = options.queueRequest ? "?queueRequest=true" : "";
    const streams = Object.entries(inputs).filter(
      ([, v]) =>
        isReadableStream(v) ||
        (typeof v === "object" && v !== null && "body" in v && isReadableStream((v as { body: unknown }).body)),
    );
    let body: RequestInit["body"];
    if (streams.length > 1) {
      throw new AiInternalError(
        `Multiple ReadableStreams are not supported. Found streams in keys: [${streams.map(([k]) => k).join(", ")}]`,
      );
    } else if (streams.length === 1) {
      // A binary input (audio, image) travels as the raw request body.
      const [key, value] = streams[0] as [string, unknown];
      const stream = isReadableStream(value) ? value : (value as { body: ReadableStream }).body;
      const contentType = isReadableStream(value) ? undefined : (value as { contentType?: string }).contentType;
      if (options.gateway?.id) {
        throw new AiInternalError("AI Gateway does not support ReadableStreams yet.");
      }
      if (!contentType) {
        throw new AiInternalError("Content-Type is required with ReadableStream inputs");
      }
      const rest = Object.keys(inputs).filter((k) => k !== key);
      if (rest.length > 0) {
        throw new AiInternalError(
          `With a ReadableStream input, other inputs are not supported here yet: [${rest.join(", ")}]`,
        );
      }
      headers["content-type"] = contentType;
      body = await new Response(stream).arrayBuffer();
    } else {
      headers["content-type"] = "application/json";
      const sent: Json = this.#fixed(inputs);
      body = JSON.stringify(options.gateway ? { ...sent, gateway: options.gateway } : sent);
    }
    const id = options.prefix ? `${options.prefix}:${model}` : model;
    const res = await this.#fetcher.fetch(`${BINDING_ORIGIN}/account/ai/run/${id}${query}`, {
      method: "POST",
      headers,
      body,
    });
    this.lastRequestId = res.headers.get("cf-ai-req-id");
    this.aiGatewayLogId = res.headers.get("cf-aig-log-id");
    this.lastRequestHttpStatusCode = res.status;
    if (!res.ok) {
      if (options.returnRawResponse) {
        return res;
      }
      const e = firstError(await envelopeOf(res), res.status);
      this.lastRequestInternalStatusCode = e.code;
      throw new InferenceUpstreamError(`${e.code}: ${e.message}`);
    }
    if (isJson(res)) {
      // The REST envelope's `result` is what the binding returns.
      const envelope = await envelopeOf(res);
      const result = envelope?.result ?? null;
      if (options.returnRawResponse) {
        const h = new Headers(res.headers);
        return new Response(JSON.stringify(result), { status: res.status, headers: h });
      }
      return result;
    }
    if (options.returnRawResponse) {
      return res;
    }
    if (!res.body) {
      throw new InferenceUpstreamError(`${res.status}: empty response`);
    }
    // Streams (SSE) and binary outputs (images) come back as their bytes.
    return res.body;
  }

  async models(params: Record<string, string | number | boolean> = {}): Promise<unknown[]> {
    const url = new URL(`${BINDING_ORIGIN}/account/ai/models/search`);
    for (const [k, v] of Object.entries(params)) {
      url.searchParams.set(k, String(v));
    }
    const res = await this.#fetcher.fetch(url.toString(), { method: "GET" });
    const envelope = await envelopeOf(res);
    if (!res.ok) {
      throw new AiInternalError(firstError(envelope, res.status).message || "Internal Error");
    }
    return (envelope?.result as unknown[]) ?? [];
  }

  async toMarkdown(
    files: { name: string; blob: Blob } | Array<{ name: string; blob: Blob }>,
  ): Promise<unknown> {
    const list = Array.isArray(files) ? files : [files];
    const form = new FormData();
    for (const f of list) {
      form.append("files", f.blob, f.name);
    }
    const res = await this.#fetcher.fetch(`${BINDING_ORIGIN}/account/ai/tomarkdown`, {
      method: "POST",
      body: form,
    });
    const envelope = await envelopeOf(res);
    if (!res.ok) {
      throw new AiInternalError(firstError(envelope, res.status).message || "Internal Error");
    }
    const result = (envelope?.result as unknown[]) ?? [];
    if (result.length === 0) {
      throw new AiInternalError("Internal Error Converting files into Markdown");
    }
    return Array.isArray(files) ? result : result[0];
  }

  gateway(gatewayId: string): AiGateway {
    return new AiGateway(this.#fetcher, gatewayId, this.#options);
  }

  autorag(autoragId?: string): AutoRAG {
    return new AutoRAG(this.#fetcher, autoragId);
  }
}

/** `env.AI.gateway(id)`: logs of a gateway, its URL, the universal endpoint. */
export class AiGateway {
  readonly #fetcher: Fetcher;
  readonly #id: string;
  readonly #options: HearthAiOptions;

  constructor(fetcher: Fetcher, id: string, options: HearthAiOptions) {
    this.#fetcher = fetcher;
    this.#id = id;
    this.#options = options;
  }

  async #call(path: string, init: RequestInit): Promise<unknown> {
    const res = await this.#fetcher.fetch(`${BINDING_ORIGIN}/account/ai-gateway/gateways/${this.#id}${path}`, init);
    const envelope = await envelopeOf(res);
    if (!res.ok) {
      const e = firstError(envelope, res.status);
      throw new AiInternalError(`${e.code}: ${e.message}`);
    }
    return envelope?.result;
  }

  async getLog(logId: string): Promise<unknown> {
    return this.#call(`/logs/${logId}`, { method: "GET" });
  }

  async patchLog(logId: string, data: { score?: number | null; feedback?: -1 | 1 | null; metadata?: Json | null }): Promise<void> {
    await this.#call(`/logs/${logId}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(data),
    });
  }

  async getUrl(provider?: string): Promise<string> {
    const base = this.#options.serverUrl ?? BINDING_ORIGIN;
    const url = `${base.replace(/\/$/, "")}/v1/${this.#options.accountId ?? "account"}/${this.#id}`;
    return provider ? `${url}/${provider}` : `${url}/`;
  }

  /** The universal endpoint: steps tried in order until one answers. */
  async run(data: Json | Json[], options: { extraHeaders?: Record<string, string> } = {}): Promise<Response> {
    return this.#fetcher.fetch(`${BINDING_ORIGIN}/gateway/${this.#id}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(options.extraHeaders ?? {}) },
      body: JSON.stringify(data),
    });
  }
}

/** `env.AI.autorag(name)`: search and aiSearch over an AI Search instance. */
export class AutoRAG {
  readonly #fetcher: Fetcher;
  readonly #id: string | undefined;

  constructor(fetcher: Fetcher, id?: string) {
    this.#fetcher = fetcher;
    this.#id = id;
  }

  async #post(path: string, params: Json): Promise<Response> {
    if (!this.#id) {
      throw new AutoRAGNameNotSetError();
    }
    const res = await this.#fetcher.fetch(`${BINDING_ORIGIN}/account/autorag/rags/${this.#id}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(params),
    });
    if (res.ok) {
      return res;
    }
    const message = firstError(await envelopeOf(res), res.status).message;
    if (res.status === 404) {
      throw new AutoRAGNotFoundError(message);
    }
    if (res.status === 401 || res.status === 403) {
      throw new AutoRAGUnauthorizedError(message);
    }
    throw new AutoRAGInternalError(message);
  }

  async list(): Promise<unknown[]> {
    const res = await this.#fetcher.fetch(`${BINDING_ORIGIN}/account/ai-search/instances`, { method: "GET" });
    const envelope = await envelopeOf(res);
    if (!res.ok) {
      throw new AutoRAGInternalError(firstError(envelope, res.status).message);
    }
    return (envelope?.result as unknown[]) ?? [];
  }

  async search(params: Json): Promise<unknown> {
    const res = await this.#post("/search", params);
    return (await envelopeOf(res))?.result;
  }

  /** With `stream: true`, the SSE `Response` of the generated text. */
  async aiSearch(params: Json): Promise<unknown> {
    const res = await this.#post("/ai-search", params);
    if (params.stream === true) {
      return res;
    }
    return (await envelopeOf(res))?.result;
  }
}

function ndjson(vectors: unknown[]): string {
  return vectors.map((v) => JSON.stringify(v)).join("\n");
}

/** `env.VECTORIZE`: one Vectorize index. */
export class VectorizeIndex {
  readonly #fetcher: Fetcher;
  readonly #name: string;

  constructor(fetcher: Fetcher, indexName: string) {
    this.#fetcher = fetcher;
    this.#name = indexName;
  }

  async #call(path: string, init: RequestInit): Promise<unknown> {
    const res = await this.#fetcher.fetch(
      `${BINDING_ORIGIN}/account/vectorize/v2/indexes/${this.#name}${path}`,
      init,
    );
    const envelope = await envelopeOf(res);
    if (!res.ok) {
      const e = firstError(envelope, res.status);
      throw new Error(`VECTOR_${path.replace(/^\//, "").toUpperCase()}_ERROR (code = ${e.code}): ${e.message}`);
    }
    return envelope?.result;
  }

  #json(path: string, body: unknown): Promise<unknown> {
    return this.#call(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  async describe(): Promise<unknown> {
    const info = (await this.#call("/info", { method: "GET" })) as Json;
    return {
      vectorCount: info.vectorCount,
      dimensions: info.dimensions,
      processedUpToDatetime: info.processedUpToDatetime,
      processedUpToMutation: info.processedUpToMutation,
    };
  }

  async insert(vectors: unknown[]): Promise<unknown> {
    return this.#call("/insert", {
      method: "POST",
      headers: { "content-type": "application/x-ndjson" },
      body: ndjson(vectors),
    });
  }

  async upsert(vectors: unknown[]): Promise<unknown> {
    return this.#call("/upsert", {
      method: "POST",
      headers: { "content-type": "application/x-ndjson" },
      body: ndjson(vectors),
    });
  }

  async query(vector: number[] | Float32Array | Float64Array, options: Json = {}): Promise<unknown> {
    return this.#json("/query", { ...options, vector: Array.from(vector) });
  }

  async queryById(vectorId: string, options: Json = {}): Promise<unknown> {
    const found = (await this.getByIds([vectorId])) as Array<{ values?: number[] }>;
    const values = found[0]?.values;
    if (!values) {
      throw new Error(`VECTOR_QUERY_ERROR (code = 40004): no vector with id \`${vectorId}\``);
    }
    return this.query(values, options);
  }

  async getByIds(ids: string[]): Promise<unknown> {
    return this.#json("/get_by_ids", { ids });
  }

  async deleteByIds(ids: string[]): Promise<unknown> {
    return this.#json("/delete_by_ids", { ids });
  }
}

interface ToolCall {
  name: string;
  arguments: Json | string;
}

export interface RunnableTool {
  name: string;
  description: string;
  parameters: Json;
  function?: (args: Json) => Promise<string> | string;
}

/**
 * `runWithTools` as `@cloudflare/ai-utils` runs it: the model may call
 * the tools; their results go back as `tool` messages until it answers
 * (at most `maxRecursiveToolRuns` rounds).
 */
export async function runWithTools(
  ai: Ai,
  model: string,
  input: { messages: Array<{ role: string; content: string }>; tools: RunnableTool[] } & Json,
  config: { maxRecursiveToolRuns?: number } = {},
): Promise<unknown> {
  // Other inputs (`tool_choice`, sampling) go with the first round only:
  // forcing a call again after the tools answered would never end.
  const { messages: given, tools: runnable, ...firstRound } = input;
  const messages = [...given];
  const tools = runnable.map(({ name, description, parameters }) => ({ name, description, parameters }));
  const rounds = config.maxRecursiveToolRuns ?? 3;
  for (let round = 0; ; round++) {
    const extra = round === 0 ? firstRound : {};
    const out = (await ai.run(model, { ...extra, messages, tools: round < rounds ? tools : [] })) as {
      response?: unknown;
      tool_calls?: ToolCall[];
    };
    const calls = out.tool_calls ?? [];
    if (calls.length === 0 || round >= rounds) {
      return out;
    }
    messages.push({ role: "assistant", content: JSON.stringify({ tool_calls: calls }) });
    for (const call of calls) {
      const tool = runnable.find((t) => t.name === call.name);
      const args = typeof call.arguments === "string" ? (JSON.parse(call.arguments) as Json) : call.arguments;
      const result = tool?.function ? await tool.function(args) : `no tool named ${call.name}`;
      messages.push({ role: "tool", content: typeof result === "string" ? result : JSON.stringify(result) });
    }
  }
}
