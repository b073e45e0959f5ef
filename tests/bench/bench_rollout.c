// bench_rollout: the R1-AQA rollout on the CUDA backend at a model config's shape with random bf16
// weights drawn on the GPU (default configs/model-7b.json): one 30 s clip (3000 frames -> 750 audio
// tokens) + 96 text tokens, G = 8 samples of 32 new tokens (EOS ignored), temperature-1 sampling on the
// GPU (Gumbel-max, no host copy of the logits). Also times the library's model_generate (GPU sampler with
// and without top-k 50, and the host sampler)
// and the reference-model forward over the 8 x 878 sequences, both as 8 separate sequences and as one
// shared-prefix group. Prints seconds, tokens/s and peak device memory; --json writes them for
// tests/bench/hf_rollout.py, which runs transformers on the same workload and prints the ratio.
// Usage: bench_rollout [config.json] [--json OUT]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio_len.h"
#include "model/cuda/ops_cuda.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "util/rng.h"

#include "bench_common.h"

#ifdef AQA_CUDA
enum { G = 8, NEW = 32, FRAMES = BENCH_FRAMES, REPS = 3 };

typedef struct {
    KVCache kv;
    ModelActs *a;
    ModelBatch b;
    Tensor *logits;  // [G, V]
    int *ids_dev, *last_dev;
    int tokens[G][NEW];
    double t_prefill;  // seconds of the last run's prefill (audio encoder + prompt)
    double t_enqueue;  // host seconds inside the decode steps' model_infer calls (launching, not waiting)
} Rollout;

// Prefill once, then G samples decode together over the shared cached prompt.
static void rollout_run(Model *m, Rollout *r, const int *prompt, int P, const float *feat) {
    Ops *o = m->ops;
    const int V = m->cfg.vocab, D = m->cfg.dim;
    Err e;
    uint32_t keys[G];
    for (int g = 0; g < G; g++) keys[g] = (uint32_t)g;
    const double t0 = bench_now();
    mbatch_clear(&r->b);
    for (int i = 0; i < P; i++) mbatch_add_token(&r->b, prompt[i], i, i);
    mbatch_add_seg(&r->b, (AttnSeg){.q_start = 0, .q_len = P, .k_start = 0, .k_len = P, .causal = 1});
    mbatch_add_audio(&r->b, feat, FRAMES);
    if (model_infer(m, &r->b, r->a, &r->kv, NULL, 0, NULL, &e)) fatal("%s", e.msg);
    // every sample starts from the prompt's last row
    Tensor *x = (Tensor *)model_final_hidden(r->a);
    o->matmul(o, r->logits, ops_at(o, x, (size_t)(P - 1) * D), ops_at(o, m->params, m->t.specs[m->t.lm_head].offset),
              NULL, 1, V, D, 0, 1, 0);
    o->copy_rows(o, r->logits, NULL, r->logits, r->last_dev, G, V, 0);
    o->sync(o);
    r->t_prefill = bench_now() - t0;
    r->t_enqueue = 0;
    for (int t = 0; t < NEW; t++) {
        ops_cuda_sample(o, r->ids_dev, r->logits, G, V, 1.0f, 42, keys, (uint32_t)t);
        int ids[G];
        o->download(o, ids, r->ids_dev, sizeof ids);
        for (int g = 0; g < G; g++) r->tokens[g][t] = ids[g];
        if (t == NEW - 1) break;
        mbatch_clear(&r->b);
        for (int g = 0; g < G; g++) {
            const int blk = P + g * NEW;
            mbatch_add_token(&r->b, ids[g], P + t, blk + t);
            mbatch_add_seg(&r->b, (AttnSeg){.q_start = g, .q_len = 1, .pre_start = 0, .pre_len = P, .k_start = blk,
                                            .k_len = t + 1, .causal = 1});
        }
        const double te = bench_now();
        if (model_infer(m, &r->b, r->a, &r->kv, NULL, 0, NULL, &e)) fatal("%s", e.msg);
        r->t_enqueue += bench_now() - te;
        o->matmul(o, r->logits, model_final_hidden(r->a), ops_at(o, m->params, m->t.specs[m->t.lm_head].offset),
                  NULL, G, V, D, 0, 1, 0);
    }
}


// Seconds per call of fn over reps calls (synchronised), after one warm-up call.
#define TIME_OP(o, reps, call)                    \
    ({                                            \
        call;                                     \
        (o)->sync(o);                             \
        double t0_ = bench_now();                 \
        for (int i_ = 0; i_ < (reps); i_++) call; \
        (o)->sync(o);                             \
        (bench_now() - t0_) / (reps);             \
    })

// Where a rollout's time goes: the decode-step GEMMs (M = G rows) against the weight-streaming bound,
// a prefill GEMM, and attention at the decode, decoder-prefill and encoder shapes.
static void components(Model *m, int P) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const int D = c->dim, FF = c->ffn, V = c->vocab, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
    const TextLayerParams *lp = &m->t.tlayer[0];
#define W(i) ops_at(o, m->params, m->t.specs[(i)].offset)
    Tensor *x = o->alloc(o, (size_t)P * (FF > V / 8 ? FF : V / 8) * 2 * o->act_size);
    Tensor *y = o->alloc(o, (size_t)P * (FF > V / 8 ? FF : V / 8) * 2 * o->act_size);
    struct {
        const char *name;
        int M, N, K, w, b;
    } g[] = {{"q_proj +bias", G, Q, D, lp->q_w, lp->q_b}, {"gate_proj", G, FF, D, lp->gate_w, -1},
             {"down_proj", G, D, FF, lp->down_w, -1},      {"lm_head", G, V, D, m->t.lm_head, -1},
             {"q_proj +bias (prefill)", P, Q, D, lp->q_w, lp->q_b}, {"gate_proj (prefill)", P, FF, D, lp->gate_w, -1}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        double t = TIME_OP(o, 20, o->matmul(o, y, x, W(g[i].w), g[i].b >= 0 ? W(g[i].b) : NULL, g[i].M, g[i].N,
                                             g[i].K, 0, 1, 0));
        printf("    gemm %-24s [%d x %d x %d]: %8.1f us, %6.0f GB/s weights, %6.1f TFLOP/s\n", g[i].name, g[i].M,
               g[i].N, g[i].K, t * 1e6, (double)g[i].N * g[i].K * 2 / t / 1e9,
               2.0 * g[i].M * g[i].N * g[i].K / t / 1e12);
    }
    float *lse = o->alloc(o, (size_t)P * c->heads * 2 * sizeof(float));
    AttnSeg dec[G];
    for (int s = 0; s < G; s++)
        dec[s] = (AttnSeg){.q_start = s, .q_len = 1, .pre_start = 0, .pre_len = P, .k_start = P + s * NEW,
                           .k_len = NEW / 2, .causal = 1};
    // keys/values of P + G * NEW rows fit in x / y
    double t = TIME_OP(o, 20, o->attention(o, y, lse, x, x, x, dec, G, c->heads, c->kv_heads, c->head_dim, 0.088f));
    printf("    attention decode (%d samples, prefix %d): %.1f us per layer\n", G, P, t * 1e6);
    AttnSeg pre = {.q_start = 0, .q_len = P, .k_start = 0, .k_len = P, .causal = 1};
    t = TIME_OP(o, 5, o->attention(o, y, lse, x, x, x, &pre, 1, c->heads, c->kv_heads, c->head_dim, 0.088f));
    printf("    attention prefill causal %d: %.1f us per layer\n", P, t * 1e6);
    const int Pa = c->a_max_pos, ah = c->a_heads, ahd = c->a_dim / c->a_heads;
    AttnSeg enc = {.q_start = 0, .q_len = Pa, .k_start = 0, .k_len = Pa, .causal = 0};
    if ((size_t)Pa * c->a_dim <= (size_t)P * FF) {
        t = TIME_OP(o, 5, o->attention(o, y, lse, x, x, x, &enc, 1, ah, ah, ahd, 0.125f));
        printf("    attention encoder %d bidirectional (%d heads x %d): %.1f us per layer\n", Pa, ah, ahd, t * 1e6);
    }
    (void)KV;
#undef W
    o->free(o, x), o->free(o, y), o->free(o, lse);
}

int main(int argc, char **argv) {
    const char *path = "configs/model-7b.json", *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else path = argv[i];
    }
    if (ops_cuda_device_count() < 1) {
        printf("bench_rollout: no CUDA device\n");
        return 77;
    }
    ModelConfig c;
    Err e;
    if (hf_config_load(path, &c, &e)) fatal("%s", e.msg);
    Ops *o = ops_cuda_create();
    Model m;
    double t0 = bench_now();
    bench_model_random_gpu(&m, &c, o);
    printf("bench_rollout: %s, %zu params, random bf16 weights drawn on the GPU in %.2f s\n", path, m.t.numel,
           bench_now() - t0);
    Rng rng;
    rng_init(&rng, 3, 0);
    float *feat = bench_features(&c, &rng);
    int P;
    int *prompt = bench_prompt(&c, &rng, &P);
    const int na = audio_token_count(FRAMES), L = P + NEW, V = c.vocab;

    // ---- rollout, GPU sampling
    Rollout r;
    memset(&r, 0, sizeof r);
    kv_cache_init(&r.kv, &m, P + G * NEW);
    r.a = model_acts_create(&m, P, 1, 0, 0);
    mbatch_init(&r.b, &c);
    r.logits = o->alloc(o, (size_t)G * V * o->act_size);
    r.ids_dev = o->alloc(o, G * sizeof(int));
    r.last_dev = o->alloc(o, G * sizeof(int));  // zeros: row 0 of the logits, G times
    rollout_run(&m, &r, prompt, P, feat);        // warm-up: GEMM plans, attention lists
    double best = 1e30, sum = 0;
    for (int i = 0; i < REPS; i++) {
        o->sync(o);
        t0 = bench_now();
        rollout_run(&m, &r, prompt, P, feat);
        o->sync(o);
        double t = bench_now() - t0;
        sum += t, best = t < best ? t : best;
    }
    const double t_roll = sum / REPS;
    printf("  rollout (GPU sampling): prompt %d (%d audio) + %d x %d new tokens: mean %.4f s (best %.4f), "
           "%.0f new tokens/s\n", P, na, G, NEW, t_roll, best, G * NEW / t_roll);
    printf("    prefill (encoder + %d-token prompt) %.4f s, decode %.2f ms per step (host launch time inside "
           "model_infer %.2f ms per step)\n", P, r.t_prefill, (best - r.t_prefill) / (NEW - 1) * 1e3,
           r.t_enqueue / (NEW - 1) * 1e3);
    printf("    sample 0 tokens 0..7:");
    for (int j = 0; j < 8; j++) printf(" %d", r.tokens[0][j]);
    printf("\n");
    mbatch_free(&r.b);
    model_acts_free(&m, r.a);
    kv_cache_free(&r.kv, &m);

    // ---- the library's model_generate, the rollout binary's path: the backend sampler (only ids and
    // log-probs leave the GPU) at temperature 1 with and without the recipe's top-k 50, then the host
    // sampler over downloaded logits (sample_rows switched off) for comparison
    GenPrompt q = {prompt, P, feat, FRAMES, 0};
    double t_gen[3];
    for (int mode = 0; mode < 3; mode++) {
        SamplerParams sp = sampler_defaults(c.eos_id, NEW, 5);
        sp.n_eos = 0;
        sp.top_k = mode == 1 ? 50 : 0;
        GenResult res;
        gen_result_init(&res, G, NEW);
        void (*dev)(Ops *, int *, float *, const Tensor *, int, int, const SamplerParams *, int *, const SampleRow *,
                    uint32_t) = o->sample_rows;
        if (mode == 2) o->sample_rows = NULL;
        const int reps = mode == 2 ? 1 : REPS;
        if (mode < 2 && model_generate(&m, &q, 1, G, &sp, &res, &e)) fatal("%s", e.msg);  // warm-up
        t0 = bench_now();
        for (int i = 0; i < reps; i++)
            if (model_generate(&m, &q, 1, G, &sp, &res, &e)) fatal("%s", e.msg);
        t_gen[mode] = (bench_now() - t0) / reps;
        o->sample_rows = dev;
        printf("  model_generate (%s): %.4f s, %.0f new tokens/s\n",
               mode == 0 ? "GPU sampler, T=1" : mode == 1 ? "GPU sampler, T=1 top-k 50" : "host sampler, T=1",
               t_gen[mode], G * NEW / t_gen[mode]);
        gen_result_free(&res);
    }

    // ---- reference-model forward: 8 separate 878-token sequences, and one shared-prefix group
    int *seq = mallocCheck((size_t)L * sizeof(int));
    memcpy(seq, prompt, (size_t)P * sizeof(int));
    int comp_ids[G][NEW], lens[G];
    const int *comp[G];
    for (int g = 0; g < G; g++) {
        for (int j = 0; j < NEW; j++) comp_ids[g][j] = r.tokens[g][j];
        comp[g] = comp_ids[g], lens[g] = NEW;
    }
    double t_ref[2];
    for (int mode = 0; mode < 2; mode++) {
        ModelBatch b;
        mbatch_init(&b, &c);
        if (mode == 0)
            for (int g = 0; g < G; g++) {
                memcpy(seq + P, comp_ids[g], NEW * sizeof(int));
                mbatch_add_seq(&b, seq, L, P);
                mbatch_add_audio(&b, feat, FRAMES);
            }
        else {
            mbatch_add_group(&b, prompt, P, comp, lens, G, 1, NULL);
            mbatch_add_audio(&b, feat, FRAMES);
        }
        ModelActs *a = model_acts_create(&m, b.n_tokens, b.n_audio, b.n_tgt, 0);
        float *lp = mallocCheck((size_t)b.n_tgt * sizeof(float));
        if (model_forward(&m, &b, a, lp, &e)) fatal("%s", e.msg);  // warm-up
        t0 = bench_now();
        for (int i = 0; i < REPS; i++)
            if (model_forward(&m, &b, a, lp, &e)) fatal("%s", e.msg);
        t_ref[mode] = (bench_now() - t0) / REPS;
        double s = 0;
        for (int i = 0; i < b.n_tgt; i++) s += lp[i];
        printf("  reference forward, %s: %d tokens, %d targets: %.4f s (mean lp %.3f)\n",
               mode ? "shared-prefix group" : "8 separate sequences", b.n_tokens, b.n_tgt, t_ref[mode],
               s / b.n_tgt);
        free(lp);
        model_acts_free(&m, a);
        mbatch_free(&b);
    }
    const double peak = ops_cuda_peak_bytes(o) / 1073741824.0;
    printf("  peak device memory (backend allocations): %.2f GiB\n", peak);
    printf("  components:\n");
    components(&m, P);
    if (json) {
        FILE *f = fopenCheck(json, "w");
        fprintf(f,
                "{\"rollout_s\": %.5f, \"rollout_best_s\": %.5f, \"generate_s\": %.5f, \"generate_topk_s\": %.5f, "
                "\"generate_host_s\": %.5f, \"ref_separate_s\": "
                "%.5f, \"ref_shared_s\": %.5f, \"peak_gib\": %.3f, \"new_tokens\": %d, \"prompt\": %d}\n",
                t_roll, best, t_gen[0], t_gen[1], t_gen[2], t_ref[0], t_ref[1], peak, G * NEW, P);
        fcloseCheck(f);
    }
    o->free(o, r.logits), o->free(o, r.ids_dev), o->free(o, r.last_dev);
    free(seq), free(prompt), free(feat);
    model_free(&m);
    ops_destroy(o);
    return 0;
}
#else
int main(void) {
    printf("bench_rollout: built without CUDA\n");
    return 77;
}
#endif
