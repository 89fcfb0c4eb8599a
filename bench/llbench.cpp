// Single-stream timing harness over llama.h: the llama.cpp side of
// bench/textgen.sh. It does exactly what Hearth's engine does for one greedy
// request (one prompt batch, then one token per decode, argmax over the full
// vocabulary) with no server in between, so the ratio isolates Hearth's
// scheduler, sampler and channels.
//
// usage: llbench MODEL PROMPT_FILE N_GEN REPS THREADS
// prints one JSON line per rep: {"n_prompt", "ttft_s", "pp_tps", "tg_tps"}
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static llama_token argmax(llama_context * ctx, int n_vocab) {
    const float * logits = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int i = 1; i < n_vocab; i++) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL PROMPT_FILE N_GEN REPS THREADS\n", argv[0]);
        return 2;
    }
    const int n_gen = atoi(argv[3]);
    const int reps = atoi(argv[4]);
    const int threads = atoi(argv[5]);
    std::ifstream in(argv[2]);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string base_prompt = ss.str();

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create context\n"); return 1; }

    for (int rep = 0; rep < reps; rep++) {
        // The same nonce Hearth's side uses, so both see identical tokens.
        std::string prompt = "[" + std::to_string(rep) + "] " + base_prompt;
        std::vector<llama_token> tokens(prompt.size() + 8);
        int n = llama_tokenize(vocab, prompt.c_str(), prompt.size(), tokens.data(), tokens.size(), true, true);
        tokens.resize(n);
        llama_memory_clear(llama_get_memory(ctx), true);

        double t0 = now_s();
        if (llama_decode(ctx, llama_batch_get_one(tokens.data(), n)) != 0) return 1;
        llama_token next = argmax(ctx, n_vocab);
        double ttft = now_s() - t0;

        double t1 = now_s();
        for (int i = 0; i < n_gen; i++) {
            if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) return 1;
            next = argmax(ctx, n_vocab);
        }
        double tg = now_s() - t1;
        printf("{\"engine\":\"llama.cpp\",\"rep\":%d,\"n_prompt\":%d,\"ttft_s\":%.4f,\"pp_tps\":%.1f,\"tg_tps\":%.1f}\n",
               rep, n, ttft, n / ttft, n_gen / tg);
        fflush(stdout);
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
