// bench_mismatch: the rollout/learner log-prob mismatch of the CUDA backend. One R1-AQA question (a 30 s
// clip's features + 96 text tokens) on a model with random bf16 weights drawn on the GPU: G = 8 samples of
// NEW tokens through model_generate as the rollout rank runs it (decode steps replayed as CUDA graphs, GPU
// sampler at temperature 1 with the recipe's top-k 50, EOS ignored; the sampling log-probs are those of
// the unprocessed distribution), then the learner's recomputation of the same completions: model_forward
// over the shared-prefix group with training activations (the flash-attention path whose saved state
// model_backward uses). Both use the same bf16 weights, as a learner and its rollouts do after a weight
// broadcast, so what differs is only the arithmetic: decode (one query row, KV cache, graph kernels) against
// the training forward. The learner's own metric code (grpo_mismatch) prints per-token |d| mean, p50,
// p99, max, the k3 KL estimate, the ratio pi_learner / pi_sample (mean, min, max), the tokens outside
// [1/2, 2] (grpo.mismatch_bound 2) and the samples whose sequence-level ratio lies outside it.
// Usage: bench_mismatch [--new N] [model config.json]...   (default: configs/model-7b.json and
// configs/model-tiny.json; run from the repository root on the GPU machine)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpo.h"
#include "model/cuda/ops_cuda.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "util/rng.h"

#include "bench_common.h"

#ifdef AQA_CUDA
enum { G = 8 };

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void mismatch_one(Ops *o, const char *path, int new_tokens) {
    ModelConfig c;
    Err e;
    if (hf_config_load(path, &c, &e)) fatal("%s: %s", path, e.msg);
    Model m;
    bench_model_random_gpu(&m, &c, o);
    Rng rng;
    rng_init(&rng, 3, 0);
    int P;
    float *feat = bench_features(&c, &rng);
    int *prompt = bench_prompt(&c, &rng, &P);

    // The rollout: one question, G samples.
    GenPrompt q = {prompt, P, feat, BENCH_FRAMES, 0};
    GenResult res;
    gen_result_init(&res, G, new_tokens);
    SamplerParams sp = sampler_defaults(c.eos_id, new_tokens, 11);
    sp.top_k = 50;
    sp.n_eos = 0;  // every sample runs to new_tokens
    if (model_generate(&m, &q, 1, G, &sp, &res, &e)) fatal("%s: model_generate: %s", path, e.msg);

    // The learner: the group's completions over the shared prefix, training activations.
    ModelBatch b;
    mbatch_init(&b, &c);
    const int *rows[G];
    int offset[G], len[G], n_tok = 0;
    for (int g = 0; g < G; g++) {
        rows[g] = res.tokens + (size_t)g * new_tokens;
        len[g] = res.len[g];
        offset[g] = n_tok;
        n_tok += len[g];
    }
    mbatch_add_group(&b, prompt, P, rows, len, G, 1, NULL);
    mbatch_add_audio(&b, feat, BENCH_FRAMES);
    ModelActs *acts = model_acts_create(&m, b.n_tokens, b.n_audio, b.n_tgt, ACTS_TRAIN);
    float *lp = mallocCheck((size_t)n_tok * sizeof(float)), *sample = mallocCheck((size_t)n_tok * sizeof(float));
    if (b.n_tgt != n_tok) fatal("%s: %d targets for %d sampled tokens", path, b.n_tgt, n_tok);
    if (model_forward(&m, &b, acts, lp, &e)) fatal("%s: model_forward: %s", path, e.msg);
    for (int g = 0; g < G; g++)
        memcpy(sample + offset[g], res.lp + (size_t)g * new_tokens, (size_t)len[g] * sizeof(float));

    uint8_t *mask = mallocCheck((size_t)n_tok);
    memset(mask, 1, (size_t)n_tok);
    const float adv[G] = {0};
    GrpoBatch gb = {.n_seq = G, .n_tokens = n_tok, .offset = offset, .len = len, .mask = mask, .lp = lp, .adv = adv};
    GrpoMismatchConfig mc = {.bound = 2};
    GrpoMismatch st;
    if (grpo_mismatch(&mc, &gb, sample, NULL, NULL, &st, &e)) fatal("%s: %s", path, e.msg);
    double *ad = mallocCheck((size_t)n_tok * sizeof(double)), lp_mean = 0;
    for (int t = 0; t < n_tok; t++) ad[t] = fabs((double)lp[t] - sample[t]), lp_mean += lp[t] / n_tok;
    qsort(ad, (size_t)n_tok, sizeof *ad, cmp_double);
    const double T = (double)st.tokens;
    printf("bench_mismatch: %s: %zu params, prompt %d tokens, %d x %d sampled tokens, mean log-prob %.3f\n", path,
           m.t.numel, P, G, new_tokens, lp_mean);
    printf("  |lp_learner - lp_sample| per token: mean %.3e, p50 %.3e, p99 %.3e, max %.3e\n", st.abs_sum / T,
           ad[n_tok / 2], ad[(size_t)(0.99 * (n_tok - 1))], st.abs_max);
    printf("  k3 KL(pi_sample || pi_learner) %.3e; ratio mean %.6f, min %.6f, max %.6f\n", st.k3_sum / T,
           st.ratio_sum / T, st.ratio_min, st.ratio_max);
    printf("  tokens outside [1/2, 2]: %.4f; samples whose sequence ratio is outside: %d of %d\n", st.out / T,
           st.seq_out, st.n_seq);
    free(ad);
    free(mask);
    free(lp);
    free(sample);
    model_acts_free(&m, acts);
    mbatch_free(&b);
    gen_result_free(&res);
    free(feat);
    free(prompt);
    model_free(&m);
}

int main(int argc, char **argv) {
    if (ops_cuda_device_count() < 1) {
        printf("bench_mismatch: no CUDA device\n");
        return 77;
    }
    int new_tokens = 64, n_paths = 0;
    const char *paths[16];
    Err e;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--new") && i + 1 < argc) {
            if (bench_parse_int("--new", argv[++i], 1, 4096, &new_tokens, &e)) fatal("%s", e.msg);
        } else if (n_paths < 16) {
            paths[n_paths++] = argv[i];
        } else {
            fatal("bench_mismatch: at most 16 model configs");
        }
    }
    if (n_paths == 0) paths[n_paths++] = "configs/model-7b.json", paths[n_paths++] = "configs/model-tiny.json";
    Ops *o = ops_cuda_create();
    for (int i = 0; i < n_paths; i++) mismatch_one(o, paths[i], new_tokens);
    ops_destroy(o);
    return 0;
}
#else
int main(void) {
    printf("bench_mismatch: built without CUDA (meson setup -Dcuda=enabled)\n");
    return 77;
}
#endif
