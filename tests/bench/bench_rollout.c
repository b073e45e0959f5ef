// bench_rollout: the R1-AQA rollout on the CUDA backend at a model config's shape with random bf16
// weights drawn on the GPU (default configs/model-7b.json): one 30 s clip (3000 frames -> 750 audio
// tokens) + 96 text tokens, G = 8 samples of 32 new tokens (EOS ignored), temperature-1 sampling, all
// through the library's model_generate (the rollout binary's path: GPU sampler, only ids and log-probs
// leave the GPU). Times it with decode steps replayed as CUDA graphs and launched op by op, with the
// recipe's top-k 50, with the host sampler, and Q = 4 questions generated together against one at a
// time; then the prefill split into encoder and decoder, and the reference-model forward over the
// 8 x 878 sequences, both as 8 separate sequences and as one shared-prefix group. Prints seconds,
// phases, tokens/s and peak device memory; --json writes them for tests/bench/hf_rollout.py, which runs
// transformers on the same workload and prints the ratios.
// The roofline cases: Q = 1, 4 and 16 questions x G 8 x 32 new tokens, and Q = 1 x 256 forced new tokens,
// each printed next to its weight-read roofline, prefill + n_new x W / BW: W the bytes a decode step must
// read of the weights (decoder layers, final norm, lm_head; the embedding only by rows), BW the device's
// copy bandwidth measured here (a device-to-device memcpy, read + written bytes over its time), prefill
// the case's own measured prefill. A second figure adds the K/V rows a step reads (each question's
// prefix once, each sample's own rows) to the bytes.
// Usage: bench_rollout [config.json] [--json OUT]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/ops_cuda.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "util/rng.h"

#include "bench_common.h"

#ifdef AQA_CUDA
enum { G = 8, NEW = 32, FRAMES = BENCH_FRAMES, REPS = 3 };

// Bytes of the weights one decode step reads: every decoder layer, the final norm and lm_head.
static double decode_weight_bytes(const Model *m) {
    const ParamTable *t = &m->t;
    size_t n = t->specs[t->norm].numel + t->specs[t->lm_head].numel;
    for (int l = 0; l < m->cfg.layers; l++) {
        const TextLayerParams *p = &t->tlayer[l];
        const int idx[] = {p->in_norm, p->q_w, p->q_b, p->k_w, p->k_b, p->v_w, p->v_b, p->o_w, p->post_norm,
                           p->gate_w, p->up_w, p->down_w};
        for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) n += idx[i] >= 0 ? t->specs[idx[i]].numel : 0;
    }
    return (double)n * m->ops->act_size;
}

// Device memory bandwidth as a device-to-device copy sees it: (read + written bytes) / time, 1 GiB.
static double copy_bandwidth(Ops *o) {
    const size_t bytes = (size_t)1 << 30;
    void *a = o->alloc(o, bytes), *b = o->alloc(o, bytes);
    const double t = BENCH_TIME(o, 10, o->copy(o, b, a, bytes));
    o->free(o, a), o->free(o, b);
    return 2.0 * bytes / t;
}

typedef struct {
    int q, n_new;
    double s, prefill_s, roof_s, roof_kv_s;
} RoofCase;

// n_q questions (prompt P with its clip) x G samples x n_new forced tokens through model_generate: mean
// time over reps after a warm-up, against the rooflines (see the header comment).
static RoofCase roof_case(Model *m, const int *prompt, int P, const float *feat, int n_q, int n_new, int reps,
                          double w_bytes, double bw) {
    GenPrompt *qs = mallocCheck((size_t)n_q * sizeof *qs);
    GenResult *res = mallocCheck((size_t)n_q * sizeof *res);
    for (int i = 0; i < n_q; i++) {
        qs[i] = (GenPrompt){prompt, P, feat, FRAMES, (uint32_t)i};
        gen_result_init(&res[i], G, n_new);
    }
    SamplerParams sp = sampler_defaults(m->cfg.eos_id, n_new, 5);
    sp.n_eos = 0;  // n_new tokens, EOS or not
    Err e;
    if (model_generate(m, qs, n_q, G, &sp, res, &e)) fatal("%s", e.msg);  // warm-up
    RoofCase r = {.q = n_q, .n_new = n_new};
    for (int i = 0; i < reps; i++) {
        const double t0 = bench_now();
        if (model_generate(m, qs, n_q, G, &sp, res, &e)) fatal("%s", e.msg);
        r.s += (bench_now() - t0) / reps, r.prefill_s += res[0].prefill_s / reps;
    }
    // K/V bytes of step j (0-based; it attends to P prefix rows once per question and j + 1 own rows per
    // sample): layers x 2 (K, V) x kv_heads x head_dim x act_size per row
    const ModelConfig *c = &m->cfg;
    const double row = (double)c->layers * 2 * c->kv_heads * c->head_dim * m->ops->act_size;
    double kv = 0;
    for (int j = 0; j < n_new; j++) kv += (double)n_q * (P + (double)G * (j + 1)) * row;
    r.roof_s = r.prefill_s + n_new * w_bytes / bw;
    r.roof_kv_s = r.roof_s + kv / bw;
    printf("  roofline case %2d question(s) x %d x %3d new: %.4f s (%.4f s per question), %6.0f new tokens/s; "
           "roofline %.4f s (prefill %.4f + %d x %.2f ms) -> %.2fx of it; with K/V reads %.4f s -> %.2fx\n",
           n_q, G, n_new, r.s, r.s / n_q, (double)n_q * G * n_new / r.s, r.roof_s, r.prefill_s, n_new,
           w_bytes / bw * 1e3, r.s / r.roof_s, r.roof_kv_s, r.s / r.roof_kv_s);
    for (int i = 0; i < n_q; i++) gen_result_free(&res[i]);
    free(qs), free(res);
    return r;
}


// Where a rollout's time goes: the decode-step GEMMs (M = G rows) against the weight-streaming bound,
// a prefill GEMM, and attention at the decode, decoder-prefill and encoder shapes.
static void components(Model *m, int P) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const int D = c->dim, FF = c->ffn, V = c->vocab, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
    const TextLayerParams *lp = &m->t.tlayer[0];
#define W(i) ops_at(o, m->params, m->t.specs[(i)].offset)
    Tensor *x = o->alloc(o, (size_t)P * (FF > V / 8 ? FF : V / 8) * 4 * o->act_size);
    Tensor *y = o->alloc(o, (size_t)P * (FF > V / 8 ? FF : V / 8) * 4 * o->act_size);
    struct {
        const char *name;
        int M, N, K, w, b;
    } g[] = {{"q_proj +bias", G, Q, D, lp->q_w, lp->q_b},
             {"q/k/v stacked +bias", G, Q + 2 * KV, D, lp->q_w, lp->q_b},
             {"gate_proj", G, FF, D, lp->gate_w, -1},
             {"gate/up stacked", G, 2 * FF, D, lp->gate_w, -1},
             {"down_proj", G, D, FF, lp->down_w, -1},
             {"lm_head", G, V, D, m->t.lm_head, -1},
             {"q/k/v stacked (prefill)", P, Q + 2 * KV, D, lp->q_w, lp->q_b},
             {"gate/up stacked (prefill)", P, 2 * FF, D, lp->gate_w, -1}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        double t = BENCH_TIME(o, 20, o->matmul(o, y, x, W(g[i].w), g[i].b >= 0 ? W(g[i].b) : NULL, g[i].M, g[i].N,
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
    double t = BENCH_TIME(o, 20, o->attention(o, y, lse, x, x, x, dec, G, c->heads, c->kv_heads, c->head_dim, 0.088f));
    printf("    attention decode (%d samples, prefix %d): %.1f us per layer\n", G, P, t * 1e6);
    AttnSeg pre = {.q_start = 0, .q_len = P, .k_start = 0, .k_len = P, .causal = 1};
    t = BENCH_TIME(o, 5, o->attention(o, y, lse, x, x, x, &pre, 1, c->heads, c->kv_heads, c->head_dim, 0.088f));
    printf("    attention prefill causal %d: %.1f us per layer\n", P, t * 1e6);
    const int Pa = c->a_max_pos, ah = c->a_heads, ahd = c->a_dim / c->a_heads;
    AttnSeg enc = {.q_start = 0, .q_len = Pa, .k_start = 0, .k_len = Pa, .causal = 0};
    if ((size_t)Pa * c->a_dim <= (size_t)P * FF) {
        t = BENCH_TIME(o, 5, o->attention(o, y, lse, x, x, x, &enc, 1, ah, ah, ahd, 0.125f));
        printf("    attention encoder %d bidirectional (%d heads x %d): %.1f us per layer\n", Pa, ah, ahd, t * 1e6);
    }
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
    int P;
    float *feat = bench_features(&c, &rng);
    int *prompt = bench_prompt(&c, &rng, &P);
    const int L = P + NEW;

    // ---- model_generate: graphs / op by op / top-k 50 / host sampler, then Q questions together
    enum { MODES = 4, Q = 4 };
    static const char *mode_name[MODES] = {"GPU sampler, decode graphs", "GPU sampler, op by op",
                                           "GPU sampler, graphs, top-k 50", "host sampler, op by op"};
    double t_gen[MODES], best_gen[MODES], pre[MODES], dec[MODES];
    GenPrompt qs[Q];
    for (int i = 0; i < Q; i++) qs[i] = (GenPrompt){prompt, P, feat, FRAMES, (uint32_t)i};
    GenResult res[Q];
    for (int i = 0; i < Q; i++) gen_result_init(&res[i], G, NEW);
    SamplerParams sp = sampler_defaults(c.eos_id, NEW, 5);
    sp.n_eos = 0;  // 32 tokens, EOS or not
    int tokens[G][NEW];
    void *(*graph_create)(Ops *) = o->graph_create;
    void (*dev_sampler)(Ops *, int *, float *, const Tensor *, int, int, const SamplerParams *, int *,
                        const SampleRow *, uint32_t) = o->sample_rows;
    for (int mode = 0; mode < MODES; mode++) {
        sp.top_k = mode == 2 ? 50 : 0;
        if (mode == 1 || mode == 3) o->graph_create = NULL;
        if (mode == 3) o->sample_rows = NULL;
        const int reps = mode == 3 ? 1 : REPS;
        if (model_generate(&m, qs, 1, G, &sp, res, &e)) fatal("%s", e.msg);  // warm-up: plans, graph shapes
        best_gen[mode] = 1e30, t_gen[mode] = pre[mode] = dec[mode] = 0;
        for (int i = 0; i < reps; i++) {
            t0 = bench_now();
            if (model_generate(&m, qs, 1, G, &sp, res, &e)) fatal("%s", e.msg);
            const double t = bench_now() - t0;
            t_gen[mode] += t / reps, pre[mode] += res[0].prefill_s / reps, dec[mode] += res[0].decode_s / reps;
            best_gen[mode] = t < best_gen[mode] ? t : best_gen[mode];
        }
        o->graph_create = graph_create, o->sample_rows = dev_sampler;
        printf("  model_generate (%s): mean %.4f s (best %.4f), %.0f new tokens/s; prefill %.4f s, decode %.2f ms "
               "per step\n",
               mode_name[mode], t_gen[mode], best_gen[mode], G * NEW / t_gen[mode], pre[mode],
               dec[mode] / (NEW - 1) * 1e3);
        if (mode == 0)
            for (int g = 0; g < G; g++) memcpy(tokens[g], res[0].tokens + g * NEW, sizeof tokens[g]);
    }
    printf("    sample 0 tokens 0..7:");
    for (int j = 0; j < 8; j++) printf(" %d", tokens[0][j]);
    printf("\n");
    // Q questions (same clip and prompt, other sampling keys) in one call against Q calls
    sp.top_k = 0;
    if (model_generate(&m, qs, Q, G, &sp, res, &e)) fatal("%s", e.msg);  // warm-up
    double t_batch = 0, t_seq = 0, pre_b = 0, dec_b = 0;
    for (int i = 0; i < REPS; i++) {
        t0 = bench_now();
        if (model_generate(&m, qs, Q, G, &sp, res, &e)) fatal("%s", e.msg);
        t_batch += (bench_now() - t0) / REPS, pre_b += res[0].prefill_s / REPS, dec_b += res[0].decode_s / REPS;
    }
    int same = 0;  // batched tokens equal to question 0's alone (a bf16 rounding tie may differ)
    for (int g = 0; g < G; g++) same += !memcmp(tokens[g], res[0].tokens + g * NEW, sizeof tokens[g]);
    for (int i = 0; i < REPS; i++) {
        t0 = bench_now();
        for (int q = 0; q < Q; q++)
            if (model_generate(&m, &qs[q], 1, G, &sp, &res[q], &e)) fatal("%s", e.msg);
        t_seq += (bench_now() - t0) / REPS;
    }
    printf("  model_generate, %d questions x %d samples together: %.4f s (prefill %.4f s, decode %.2f ms per "
           "step), %.0f new tokens/s; one at a time %.4f s -> %.2fx; question 0's samples equal to alone: %d of "
           "%d\n",
           Q, G, t_batch, pre_b, dec_b / (NEW - 1) * 1e3, Q * G * NEW / t_batch, t_seq, t_seq / t_batch, same, G);
    for (int i = 0; i < Q; i++) gen_result_free(&res[i]);
    const double t_roll = t_gen[0], best = best_gen[0];

    // ---- where the prefill goes: the whole prompt with its clip, and the same tokens without the clip
    // (<|AUDIO|> embedded as a token: no encoder)
    double t_pre[2];
    for (int mode = 0; mode < 2; mode++) {
        KVCache kv;
        kv_cache_init(&kv, &m, P);
        ModelActs *a = model_acts_create(&m, P, 1, 0, 0);
        ModelBatch b;
        mbatch_init(&b, &c);
        for (int i = 0; i < P; i++) mbatch_add_token(&b, prompt[i], i, i);
        mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = P, .k_start = 0, .k_len = P, .causal = 1});
        if (mode == 0) mbatch_add_audio(&b, feat, FRAMES);
        t_pre[mode] = BENCH_TIME(o, REPS, if (model_infer(&m, &b, a, &kv, NULL, 0, NULL, &e)) fatal("%s", e.msg));
        mbatch_free(&b);
        model_acts_free(&m, a);
        kv_cache_free(&kv, &m);
    }
    printf("  prefill %.4f s = audio encoder + projector %.4f s + decoder over %d tokens %.4f s\n", t_pre[0],
           t_pre[0] - t_pre[1], P, t_pre[1]);

    // ---- reference-model forward: 8 separate 878-token sequences, and one shared-prefix group
    int *seq = mallocCheck((size_t)L * sizeof(int));
    memcpy(seq, prompt, (size_t)P * sizeof(int));
    int comp_ids[G][NEW], lens[G];
    const int *comp[G];
    for (int g = 0; g < G; g++) {
        for (int j = 0; j < NEW; j++) comp_ids[g][j] = tokens[g][j];
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

    // ---- the roofline cases
    const double w_bytes = decode_weight_bytes(&m), bw = copy_bandwidth(o);
    printf("  roofline: a decode step reads %.2f GB of weights (of %.2f GB in all); copy bandwidth %.0f GB/s "
           "-> %.2f ms a step\n",
           w_bytes * 1e-9, m.t.numel * (double)o->act_size * 1e-9, bw * 1e-9, w_bytes / bw * 1e3);
    enum { N_ROOF = 4 };
    const int roof_q[N_ROOF] = {1, 4, 16, 1}, roof_new[N_ROOF] = {NEW, NEW, NEW, 256};
    RoofCase roof[N_ROOF];
    for (int i = 0; i < N_ROOF; i++)
        roof[i] = roof_case(&m, prompt, P, feat, roof_q[i], roof_new[i],
                            roof_q[i] * roof_new[i] > 4 * NEW ? 2 : REPS, w_bytes, bw);
    if (json) {
        FILE *f = fopenCheck(json, "w");
        fprintf(f,
                "{\"rollout_s\": %.5f, \"rollout_best_s\": %.5f, \"prefill_s\": %.5f, \"decode_step_s\": %.6f, "
                "\"nograph_s\": %.5f, \"nograph_decode_step_s\": %.6f, \"generate_topk_s\": %.5f, "
                "\"generate_host_s\": %.5f, \"batch_q\": %d, \"batch_s\": %.5f, \"batch_seq_s\": %.5f, "
                "\"encoder_s\": %.5f, \"ref_separate_s\": %.5f, \"ref_shared_s\": %.5f, \"peak_gib\": %.3f, "
                "\"new_tokens\": %d, \"prompt\": %d, \"weight_bytes\": %.0f, \"copy_bw\": %.0f, \"cases\": [",
                t_roll, best, pre[0], dec[0] / (NEW - 1), t_gen[1], dec[1] / (NEW - 1), t_gen[2], t_gen[3], Q,
                t_batch, t_seq, t_pre[0] - t_pre[1], t_ref[0], t_ref[1], peak, G * NEW, P, w_bytes, bw);
        for (int i = 0; i < N_ROOF; i++)
            fprintf(f, "%s{\"q\": %d, \"new\": %d, \"s\": %.5f, \"prefill_s\": %.5f, \"roofline_s\": %.5f, "
                    "\"roofline_kv_s\": %.5f}",
                    i ? ", " : "", roof[i].q, roof[i].n_new, roof[i].s, roof[i].prefill_s, roof[i].roof_s,
                    roof[i].roof_kv_s);
        fprintf(f, "]}\n");
        fcloseCheck(f);
    }
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
