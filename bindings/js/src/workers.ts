// The bindings under the official types of `@cloudflare/workers-types`,
// so Worker code written against `env.AI: Ai` and `env.VECTORIZE:
// Vectorize` takes Hearth's without a cast of its own.

import { Ai as HearthAi, type Fetcher, type HearthAiOptions, VectorizeIndex } from "./index.js";

/** `env.AI` backed by Hearth through `fetcher`. */
export function aiBinding(fetcher: Fetcher, options: HearthAiOptions = {}): Ai {
  return new HearthAi(fetcher, options) as unknown as Ai;
}

/** `env.VECTORIZE` (one index) backed by Hearth through `fetcher`. */
export function vectorizeBinding(fetcher: Fetcher, indexName: string): Vectorize {
  return new VectorizeIndex(fetcher, indexName) as unknown as Vectorize;
}
