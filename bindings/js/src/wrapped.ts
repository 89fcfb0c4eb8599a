// The module miniflare runs as a wrapped binding (`wrappedBindings`): it
// builds `env.AI` or a Vectorize index from its own bindings, `HEARTH` (a
// service binding to the Node-side transport) and the settings
// `hearthMiniflare()` puts beside it.

import { type Fetcher, type HearthAiOptions } from "./index.js";
import { aiBinding, vectorizeBinding } from "./workers.js";

interface WrappedEnv {
  HEARTH: Fetcher;
  kind: "ai" | "vectorize";
  indexName?: string;
  deterministic?: boolean | { seed?: number };
  serverUrl?: string;
  accountId?: string;
}

export default function makeBinding(env: WrappedEnv): Ai | Vectorize {
  if (env.kind === "vectorize") {
    if (!env.indexName) {
      throw new Error("a Vectorize binding needs `indexName`");
    }
    return vectorizeBinding(env.HEARTH, env.indexName);
  }
  const options: HearthAiOptions = {
    deterministic: env.deterministic ?? false,
    serverUrl: env.serverUrl,
    accountId: env.accountId,
  };
  return aiBinding(env.HEARTH, options);
}
