// The Node side: the transport that carries the bindings' calls to a
// Hearth server (and records them to a cassette, or replays them from one
// with no server at all), bindings for Node tests, and the miniflare
// options that give a Worker in workerd `env.AI` and `env.VECTORIZE`.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Ai, BINDING_ORIGIN, type Fetcher, type HearthAiOptions, VectorizeIndex } from "./index.js";

export * from "./index.js";

export interface TransportOptions {
  /** The server (default `$HEARTH_URL`, else `http://127.0.0.1:8787`). */
  url?: string;
  /** Default `$HEARTH_ACCOUNT_ID`. */
  accountId?: string;
  /** Default `$HEARTH_API_TOKEN`. */
  apiToken?: string;
  /**
   * `record`: every call goes to the server and is written to `path`;
   * `replay`: every call is answered from `path` and none reaches a
   * server; a call the cassette does not hold fails saying which.
   */
  cassette?: { mode: "record" | "replay"; path: string };
}

const HOP_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"];

interface Recording {
  key: string;
  method: string;
  path: string;
  status: number;
  headers: Array<[string, string]>;
  body: string;
}

/** Where a `/account/...` or `/gateway/...` binding path goes on the server. */
function serverPath(path: string, accountId: string): string {
  if (path.startsWith("/account/")) {
    return `/client/v4/accounts/${accountId}/${path.slice("/account/".length)}`;
  }
  if (path.startsWith("/gateway/")) {
    return `/v1/${accountId}/${path.slice("/gateway/".length)}`;
  }
  throw new Error(`the Hearth transport does not route ${path}`);
}

export class Transport implements Fetcher {
  readonly url: string;
  readonly accountId: string;
  readonly #token: string;
  readonly #cassette: TransportOptions["cassette"];
  readonly #recordings: Recording[];

  constructor(options: TransportOptions = {}) {
    this.url = (options.url ?? process.env.HEARTH_URL ?? "http://127.0.0.1:8787").replace(/\/$/, "");
    this.accountId = options.accountId ?? process.env.HEARTH_ACCOUNT_ID ?? "";
    this.#token = options.apiToken ?? process.env.HEARTH_API_TOKEN ?? "";
    this.#cassette = options.cassette;
    if (this.#cassette?.mode === "replay") {
      if (!existsSync(this.#cassette.path)) {
        throw new Error(`cassette ${this.#cassette.path} does not exist: record it first (mode "record")`);
      }
      this.#recordings = JSON.parse(readFileSync(this.#cassette.path, "utf8")) as Recording[];
    } else {
      this.#recordings = [];
      if (!this.accountId || !this.#token) {
        throw new Error("the Hearth transport needs accountId and apiToken (or HEARTH_ACCOUNT_ID, HEARTH_API_TOKEN)");
      }
    }
  }

  async fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    // Miniflare hands over its own undici's Request, not this process's:
    // read it by its fields.
    const request: Request =
      typeof input === "object" && !(input instanceof URL) && init === undefined
        ? input
        : new Request(input, init);
    const url = new URL(request.url);
    const path = url.pathname + url.search;
    const body =
      request.method === "GET" || request.method === "HEAD"
        ? new Uint8Array()
        : new Uint8Array(await request.arrayBuffer());
    // Headers of the hop (and miniflare's own) do not travel on.
    const requestHeaders = new Headers(
      [...request.headers.entries()].filter(
        ([k]) => !HOP_HEADERS.includes(k.toLowerCase()) && !k.toLowerCase().startsWith("mf-"),
      ),
    );
    // Multipart boundaries are random: the key uses the parts, not them.
    const keyed = normalizedBody(requestHeaders.get("content-type") ?? "", body);
    const key = `${request.method} ${path} ${createHash("sha256").update(keyed).digest("hex")}`;
    if (this.#cassette?.mode === "replay") {
      const hit = this.#recordings.find((r) => r.key === key);
      if (!hit) {
        return Response.json(
          {
            success: false,
            result: null,
            messages: [],
            errors: [
              {
                code: 7099,
                message: `${request.method} ${path} is not in the cassette ${this.#cassette.path} (body sha256 ${key.split(" ")[2]}): record it again with mode "record"`,
              },
            ],
          },
          { status: 404 },
        );
      }
      return new Response(hit.status === 204 ? null : Buffer.from(hit.body, "base64"), {
        status: hit.status,
        headers: hit.headers,
      });
    }
    const headers = requestHeaders;
    if (path.startsWith("/gateway/")) {
      headers.set("cf-aig-authorization", `Bearer ${this.#token}`);
    } else {
      headers.set("authorization", `Bearer ${this.#token}`);
    }
    const res = await fetch(this.url + serverPath(path, this.accountId), {
      method: request.method,
      headers,
      body: body.length > 0 ? body : undefined,
    });
    if (this.#cassette?.mode !== "record") {
      return res;
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    const recording: Recording = {
      key,
      method: request.method,
      path,
      status: res.status,
      headers: [...res.headers.entries()].filter(([k]) => k !== "content-length" && k !== "transfer-encoding"),
      body: bytes.toString("base64"),
    };
    const same = this.#recordings.findIndex((r) => r.key === key);
    if (same >= 0) {
      this.#recordings[same] = recording;
    } else {
      this.#recordings.push(recording);
    }
    writeFileSync(this.#cassette.path, JSON.stringify(this.#recordings, null, 1));
    return new Response(res.status === 204 ? null : bytes, { status: res.status, headers: recording.headers });
  }
}

function normalizedBody(contentType: string, body: Uint8Array): Uint8Array {
  const boundary = /boundary=([^;]+)/.exec(contentType)?.[1];
  if (!boundary) {
    return body;
  }
  return Buffer.from(Buffer.from(body).toString("latin1").split(boundary).join("BOUNDARY"), "latin1");
}

/** `env.AI` for Node tests. */
export function hearthAi(options: TransportOptions & HearthAiOptions = {}): Ai {
  const transport = new Transport(options);
  return new Ai(transport, {
    deterministic: options.deterministic,
    serverUrl: transport.url,
    accountId: transport.accountId,
  });
}

/** A Vectorize index binding for Node tests. */
export function hearthVectorize(indexName: string, options: TransportOptions = {}): VectorizeIndex {
  return new VectorizeIndex(new Transport(options), indexName);
}

export interface MiniflareBindings {
  /** Binding name to the binding: `{ AI: { ai: {} }, VECTORIZE: { vectorize: "docs" } }`. */
  bindings: Record<string, { ai: { deterministic?: boolean | { seed?: number } } } | { vectorize: string }>;
}

/**
 * Miniflare options for Hearth's bindings: put `wrappedBindings` on the
 * Worker and add `worker` to miniflare's `workers`.
 */
export function hearthMiniflare(options: MiniflareBindings & TransportOptions): {
  wrappedBindings: Record<string, { scriptName: string; bindings: Record<string, unknown> }>;
  worker: Record<string, unknown>;
} {
  const transport = new Transport(options);
  const scriptName = "hearth-bindings";
  const wrappedBindings: Record<string, { scriptName: string; bindings: Record<string, unknown> }> = {};
  for (const [name, spec] of Object.entries(options.bindings)) {
    wrappedBindings[name] =
      "vectorize" in spec
        ? { scriptName, bindings: { kind: "vectorize", indexName: spec.vectorize } }
        : {
            scriptName,
            bindings: {
              kind: "ai",
              deterministic: spec.ai.deterministic ?? false,
              serverUrl: transport.url,
              accountId: transport.accountId,
            },
          };
  }
  return {
    wrappedBindings,
    worker: {
      name: scriptName,
      modules: true,
      // One module (the build bundles it): miniflare wraps only those.
      scriptPath: fileURLToPath(new URL("./wrapped.js", import.meta.url)),
      // Module names are relative to this; the default (the working
      // directory) fails when the package lives outside it.
      modulesRoot: fileURLToPath(new URL(".", import.meta.url)),
      serviceBindings: {
        HEARTH: (request: Request) => transport.fetch(request),
      },
    },
  };
}

export { BINDING_ORIGIN };
