// The example Worker's own tests, run inside workerd by
// @cloudflare/vitest-pool-workers, with env.AI and env.VECTORIZE from a
// Hearth server this config starts (the binary cargo built, the models
// scripts/fetch-test-models installed).
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { hearthMiniflare } from "@hearth/ai-binding";
import { defineConfig } from "vitest/config";

import { ACCOUNT, TOKEN, photo, rest, startHearth } from "../../bindings/js/support/server.mjs";

const server = await startHearth();
await rest(server.url, "POST", "/vectorize/v2/indexes", { name: "memory", config: { dimensions: 384, metric: "cosine" } });

const hearth = hearthMiniflare({
  url: server.url,
  accountId: ACCOUNT,
  apiToken: TOKEN,
  bindings: { AI: { ai: { deterministic: true } }, VECTORIZE: { vectorize: "memory" } },
});

export default defineConfig({
  plugins: [
    cloudflareTest({
      main: "./src/index.js",
      miniflare: {
        compatibilityDate: "2026-07-01",
        bindings: { COFFEE_PNG_BASE64: photo("coffee").toString("base64") },
        wrappedBindings: hearth.wrappedBindings,
        workers: [hearth.worker],
      },
    }),
  ],
});
