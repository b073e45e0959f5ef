// bench_learner: the learner's GRPO step on one group (model_forward + model_backward into a bf16
// gradient buffer) on the CUDA backend at a model config's shape (default configs/model-7b.json) with
// random bf16 weights drawn on the GPU. The group: an 846-token prompt holding one 30 s clip's 750 audio
// tokens (3000 mel frames), G = 8 completions of 32 tokens, and a GRPO-shaped d loss / d lp on the 256
// completion tokens. The same work in two layouts: shared prefix (mbatch_add_group: prompt and clip
// once, 1102 tokens) and naive (8 separate 878-token sequences, each with its own clip: 7024 tokens).
// One warm-up then timed repeats, median seconds; model FLOPs (bench_flops), achieved TFLOP/s against
// the card's dense bf16 peak; activation bytes and peak device memory; with --components, where the
// time goes (every GEMM shape and attention alone, TFLOP/s each). --layers / --audio-layers cut
// the depth (full width) where a card cannot hold the whole model. --json writes the numbers for
// tests/bench/hf_learner.py, which runs transformers on the naive workload and prints the ratios.
// Usage: bench_learner [config.json] [--layers N] [--audio-layers N] [--reps R] [--peak-tflops X]
//                      [--forward-only] [--components] [--json OUT]
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio_len.h"
#include "model/cuda/ops_cuda.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "util/fileio.h"
#include "util/rng.h"

#include "bench_common.h"

enum { G = 8, NEW = 32 };

static const char *USAGE =
    "usage: bench_learner [config.json] [--layers N] [--audio-layers N] [--reps R] [--peak-tflops X]\n"
    "                     [--forward-only] [--components] [--json OUT]\n";

typedef struct {
    const char *config, *json;
    int layers, audio_layers;  // 0: the config's
    int reps, forward_only, components;
    double peak_tflops;  // dense bf16 peak of the card: H100/H200 SXM nominal by default
} BenchArgs;

static int args_parse(int argc, char **argv, BenchArgs *a, Err *e) {
    *a = (BenchArgs){.config = "configs/model-7b.json", .reps = 5, .peak_tflops = 989.4};
    int have_config = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--layers")) {
            if (bench_parse_int(f, v, 1, 1 << 20, &a->layers, e)) return -1;
            i++;
        } else if (!strcmp(f, "--audio-layers")) {
            if (bench_parse_int(f, v, 1, 1 << 20, &a->audio_layers, e)) return -1;
            i++;
        } else if (!strcmp(f, "--reps")) {
            if (bench_parse_int(f, v, 1, 1000, &a->reps, e)) return -1;
            i++;
        } else if (!strcmp(f, "--peak-tflops")) {
            if (bench_parse_pos(f, v, &a->peak_tflops, e)) return -1;
            i++;
        } else if (!strcmp(f, "--json")) {
            if (!v) return err_set(e, "--json needs an output path");
            a->json = v, i++;
        } else if (!strcmp(f, "--forward-only")) {
            a->forward_only = 1;
        } else if (!strcmp(f, "--components")) {
            a->components = 1;
        } else if (f[0] == '-') {
            return err_set(e, "unknown option %s", f);
        } else if (have_config) {
            return err_set(e, "second config path %s (already %s)", f, a->config);
        } else {
            a->config = f, have_config = 1;
        }
    }
    return 0;
}

// Cuts the config's depth to the requested layer counts (never deeper than the config); the clip is 30 s.
static int args_apply(const BenchArgs *a, ModelConfig *c, Err *e) {
    if (a->layers > c->layers) return err_set(e, "--layers %d: %s has %d decoder layers", a->layers, a->config, c->layers);
    if (a->audio_layers > c->a_layers)
        return err_set(e, "--audio-layers %d: %s has %d encoder layers", a->audio_layers, a->config, c->a_layers);
    if (2 * c->a_max_pos != BENCH_FRAMES)
        return err_set(e, "%s: max_source_positions %d, the benchmark's clip needs %d", a->config, c->a_max_pos,
                       BENCH_FRAMES / 2);
    if (a->layers) c->layers = a->layers;
    if (a->audio_layers) c->a_layers = a->audio_layers;
    return 0;
}

#ifdef AQA_CUDA
typedef struct {
    const char *name;
    int tokens, clips, targets;
    double fwd_s, bwd_s, step_s;  // medians; step = forward + backward (forward alone with --forward-only)
    double flops;                 // model FLOPs of what was timed
    double acts_gib, peak_gib;
    float *lp;  // [G * NEW] target log-probs of the last repeat
} LayoutResult;

// The group in one of the two layouts: shared prefix, or G separate prompt + completion sequences.
static void layout_batch(ModelBatch *b, const ModelConfig *c, int shared, const int *prompt, int P,
                         const float *feat, int valid, int comp[G][NEW]) {
    mbatch_init(b, c);
    if (shared) {
        const int *rows[G];
        int lens[G];
        for (int g = 0; g < G; g++) rows[g] = comp[g], lens[g] = NEW;
        mbatch_add_group(b, prompt, P, rows, lens, G, 1, NULL);
        mbatch_add_audio(b, feat, valid);
        return;
    }
    int *seq = mallocCheck((size_t)(P + NEW) * sizeof(int));
    memcpy(seq, prompt, (size_t)P * sizeof(int));
    for (int g = 0; g < G; g++) {
        memcpy(seq + P, comp[g], NEW * sizeof(int));
        mbatch_add_seq(b, seq, P + NEW, P);
        mbatch_add_audio(b, feat, valid);
    }
    free(seq);
}

// ---- where a step's time goes: every GEMM shape of the step (forward, input gradient, weight gradient
// of each projection) and attention forward + backward, each timed alone at the layout's shapes and
// multiplied by how often the step runs it; what the measured step has beyond their sum is norms,
// element-wise ops, copies and launch gaps.

typedef struct {
    Ops *o;
    Tensor *x, *y, *w;  // scratch operands: [rows, max width] activations, [max out, max in] weights
} Comp;


// A Linear of in -> out over M rows, run `count` times per step: forward y = x W^T, input gradient
// dx = dy W (unless no_dgrad: the first layer sees fixed inputs), weight gradient dW += dy^T x.
static double comp_linear(Comp *cp, const char *name, int M, int out, int in, double count, int no_dgrad) {
    Ops *o = cp->o;
    const double fl = 2.0 * M * out * in;
    double t[3];
    t[0] = BENCH_TIME(o, 10, o->matmul(o, cp->y, cp->x, cp->w, NULL, M, out, in, 0, 1, 0));
    t[1] = no_dgrad ? 0 : BENCH_TIME(o, 10, o->matmul(o, cp->x, cp->y, cp->w, NULL, M, in, out, 0, 0, 0));
    t[2] = BENCH_TIME(o, 10, o->matmul(o, cp->w, cp->y, cp->x, NULL, out, in, M, 1, 0, 1));
    printf("      %-12s [%5d x %5d x %5d] x %-4g fwd %7.1f us %4.0f TF/s | dgrad %7.1f us %4.0f TF/s | wgrad %7.1f us "
           "%4.0f TF/s\n", name, M, out, in, count, t[0] * 1e6, fl / t[0] / 1e12, t[1] * 1e6,
           t[1] > 0 ? fl / t[1] / 1e12 : 0.0, t[2] * 1e6, fl / t[2] / 1e12);
    return (t[0] + t[1] + t[2]) * count;
}

// Attention forward + backward over segs, run `count` times per step; pairs = visible (query, key) pairs.
static double comp_attention(Comp *cp, const char *name, const AttnSeg *segs, int nseg, int rows, int H, int KVH,
                             int hd, double count, double pairs, Tensor *const buf[8], float *lse) {
    Ops *o = cp->o;
    const float scale = 1.0f / sqrtf((float)hd);
    Tensor *q = buf[0], *k = buf[1], *v = buf[2], *out = buf[3], *dout = buf[4], *dq = buf[5], *dk = buf[6];
    Tensor *dv = buf[7];
    ops_cuda_fill(o, q, (size_t)rows * H * hd, 1.0f, 0.0f, 7, 1);
    ops_cuda_fill(o, k, (size_t)rows * KVH * hd, 1.0f, 0.0f, 7, 2);
    ops_cuda_fill(o, v, (size_t)rows * KVH * hd, 1.0f, 0.0f, 7, 3);
    ops_cuda_fill(o, dout, (size_t)rows * H * hd, 1.0f, 0.0f, 7, 4);
    const double tf = BENCH_TIME(o, 5, o->attention(o, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale));
    const double tb =
        BENCH_TIME(o, 5, o->attention_bwd(o, dq, dk, dv, dout, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale));
    const double fl = 4.0 * pairs * H * hd;
    printf("      %-12s %d segments, %.0f pairs x %-4g fwd %7.1f us %4.0f TF/s | bwd %7.1f us %4.0f TF/s\n", name, nseg,
           pairs, count, tf * 1e6, fl / tf / 1e12, tb * 1e6, 2 * fl / tb / 1e12);
    return (tf + tb) * count;
}

// chunk: rows per lm_head chunk (model_logits_chunk of the layout's activations).
static void components(Model *m, const ModelBatch *b, double step_s, int chunk) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const int T = b->n_tokens, D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, FF = c->ffn;
    const int A = c->a_dim, AF = c->a_ffn, P = c->a_max_pos, nA = b->n_audio, Ta = nA * P, F = 2 * P;
    const int R = b->n_tgt < chunk ? b->n_tgt : chunk;
    const size_t rows = (size_t)(T > nA * F ? T : nA * F), width = (size_t)(FF > 3 * A ? FF : 3 * A);
    const size_t wmax = (size_t)c->vocab * D > (size_t)FF * D ? (size_t)c->vocab * D : (size_t)FF * D;
    Comp cp = {.o = o};
    cp.x = o->alloc(o, rows * width * o->act_size);
    cp.y = o->alloc(o, rows * width * o->act_size);
    cp.w = o->alloc(o, wmax * o->act_size);
    ops_cuda_fill(o, cp.x, rows * width, 1.0f, 0.0f, 5, 1);
    ops_cuda_fill(o, cp.y, rows * width, 1.0f, 0.0f, 5, 2);
    ops_cuda_fill(o, cp.w, wmax, 0.02f, 0.0f, 5, 3);
    const double L = c->layers, AL = c->a_layers;
    printf("    components (each alone, x per-step count):\n");
    double dec = comp_linear(&cp, "q_proj", T, Q, D, L, 0);
    dec += comp_linear(&cp, "k_proj", T, KV, D, L, 0);
    dec += comp_linear(&cp, "v_proj", T, KV, D, L, 0);
    dec += comp_linear(&cp, "o_proj", T, D, Q, L, 0);
    dec += comp_linear(&cp, "gate_proj", T, FF, D, L, 0);
    dec += comp_linear(&cp, "up_proj", T, FF, D, L, 0);
    dec += comp_linear(&cp, "down_proj", T, D, FF, L, 0);
    // the lm_head runs on chunks of target rows, twice forward (the backward recomputes the logits)
    const double lm = comp_linear(&cp, "lm_head", R, c->vocab, D, (double)b->n_tgt / R, 0) +
                      BENCH_TIME(o, 10, o->matmul(o, cp.y, cp.x, cp.w, NULL, R, c->vocab, D, 0, 1, 0)) * b->n_tgt / R;
    double enc = 0;
    if (nA) {
        enc += comp_linear(&cp, "a.q/k/v/o", Ta, A, A, 4 * AL, 0);
        enc += comp_linear(&cp, "a.fc1", Ta, AF, A, AL, 0);
        enc += comp_linear(&cp, "a.fc2", Ta, A, AF, AL, 0);
        enc += comp_linear(&cp, "a.conv1", nA * F, A, c->n_mels * 3, 1, 1);
        enc += comp_linear(&cp, "a.conv2", Ta, A, 3 * A, 1, 0);
        enc += comp_linear(&cp, "projector", Ta / 2, D, A, 1, 0);
    }
    const size_t abuf = (size_t)(T * Q > Ta * A ? T * Q : Ta * A);
    Tensor *buf[8];  // q, k, v, out, dout, dq, dk, dv
    for (int i = 0; i < 8; i++) buf[i] = o->alloc(o, abuf * o->act_size);
    float *lse = o->alloc(o, (size_t)(T * c->heads > Ta * c->a_heads ? T * c->heads : Ta * c->a_heads) * sizeof(float));
    const BenchFlops f = bench_flops(c, b, b->n_tgt);
    const double dattn = comp_attention(&cp, "attention", b->segs, b->n_segs, T, c->heads, c->kv_heads, c->head_dim, L,
                                        f.dec_attn / (4.0 * Q * L), buf, lse);
    double aattn = 0;
    if (nA) {
        AttnSeg *aseg = mallocCheck((size_t)nA * sizeof(AttnSeg));
        for (int i = 0; i < nA; i++)
            aseg[i] = (AttnSeg){.q_start = i * P, .q_len = P, .k_start = i * P, .k_len = audio_encoder_len(b->valid[i])};
        aattn = comp_attention(&cp, "a.attention", aseg, nA, Ta, c->a_heads, c->a_heads, A / c->a_heads, AL,
                               f.audio_attn / (4.0 * A * AL), buf, lse);
        free(aseg);
    }
    const double sum = dec + lm + enc + dattn + aattn, rest = step_s - sum;
    printf("    sum: decoder GEMMs %.4f s, lm_head %.4f s, encoder GEMMs %.4f s, decoder attention %.4f s, encoder "
           "attention %.4f s = %.4f s of the %.4f s step; the other %.4f s (%.0f%%): norms, element-wise ops, "
           "copies, gaps\n", dec, lm, enc, dattn, aattn, sum, step_s, rest, 100 * rest / step_s);
    for (int i = 0; i < 8; i++) o->free(o, buf[i]);
    o->free(o, lse), o->free(o, cp.x), o->free(o, cp.y), o->free(o, cp.w);
}

// Warm-up then a->reps timed steps of one layout; grads accumulate over the repeats as over micro-batches.
static void layout_run(Model *m, const BenchArgs *args, const ModelBatch *b, const float *dlp, Tensor *grads,
                       LayoutResult *r) {
    Ops *o = m->ops;
    Err e;
    ModelActs *acts = model_acts_create(m, b->n_tokens, b->n_audio, b->n_tgt, 1);
    r->tokens = b->n_tokens, r->clips = b->n_audio, r->targets = b->n_tgt;
    r->acts_gib = model_acts_bytes(acts) / 1073741824.0;
    r->lp = mallocCheck((size_t)b->n_tgt * sizeof(float));
    double *tf = mallocCheck((size_t)args->reps * sizeof(double)), *tb = mallocCheck((size_t)args->reps * sizeof(double));
    double *ts = mallocCheck((size_t)args->reps * sizeof(double));
    for (int i = -1; i < args->reps; i++) {
        o->sync(o);
        const double t0 = bench_now();
        // model_forward ends by downloading the log-probs, so t1 is after the forward's kernels
        if (model_forward(m, b, acts, r->lp, &e)) fatal("bench_learner %s: %s", r->name, e.msg);
        const double t1 = bench_now();
        if (!args->forward_only) model_backward(m, b, acts, dlp, grads);
        o->sync(o);
        const double t2 = bench_now();
        if (i >= 0) tf[i] = t1 - t0, tb[i] = t2 - t1, ts[i] = t2 - t0;
    }
    r->fwd_s = bench_median(tf, args->reps);
    r->bwd_s = bench_median(tb, args->reps);
    r->step_s = bench_median(ts, args->reps);
    const BenchFlops f = bench_flops(&m->cfg, b, b->n_tgt);
    r->flops = args->forward_only ? bench_flops_forward(&f) : bench_flops_train(&f);
    r->peak_gib = ops_cuda_peak_bytes(o) / 1073741824.0;  // before the components' scratch
    if (args->components) components(m, b, r->step_s, model_logits_chunk(acts));
    model_acts_free(m, acts);
    free(tf), free(tb), free(ts);
}

static void json_write(const BenchArgs *args, const ModelConfig *c, const Model *m, const LayoutResult *r, int n,
                       double lp_diff) {
    json_t *root = json_pack("{s:s, s:i, s:i, s:I, s:b, s:i, s:f, s:f}", "config", args->config, "layers", c->layers,
                             "audio_layers", c->a_layers, "params", (json_int_t)m->t.numel, "forward_only",
                             args->forward_only, "reps", args->reps, "peak_tflops", args->peak_tflops,
                             "lp_max_diff", lp_diff);
    for (int i = 0; i < n; i++)
        json_object_set_new(root, r[i].name,
                            json_pack("{s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "tokens", r[i].tokens,
                                      "clips", r[i].clips, "targets", r[i].targets, "fwd_s", r[i].fwd_s, "bwd_s",
                                      r[i].bwd_s, "step_s", r[i].step_s, "flops", r[i].flops, "tflops",
                                      r[i].flops / r[i].step_s / 1e12, "acts_gib", r[i].acts_gib, "peak_gib",
                                      r[i].peak_gib));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(7));
    if (!text) fatal("bench_learner: json_dumps failed");
    Err e;
    if (file_write_atomic(args->json, text, strlen(text), &e)) fatal("bench_learner: %s", e.msg);
    free(text);
    json_decref(root);
}

static int bench_run(const BenchArgs *args, const ModelConfig *full, const ModelConfig *c) {
    Ops *o = ops_cuda_create();
    Model m;
    double t0 = bench_now();
    bench_model_random_gpu(&m, c, o);
    size_t trainable = 0;
    for (int i = 0; i < m.t.n; i++) trainable += m.t.specs[i].trainable ? m.t.specs[i].numel : 0;
    printf("bench_learner: %s, decoder layers %d of %d, encoder layers %d of %d (full width), %zu params "
           "(%zu trainable), random bf16 weights drawn on the GPU in %.2f s\n",
           args->config, c->layers, full->layers, c->a_layers, full->a_layers, m.t.numel, trainable, bench_now() - t0);
    Tensor *grads = args->forward_only ? NULL : o->alloc(o, m.t.numel * o->act_size);  // [numel] bf16, += per step

    Rng rng;
    rng_init(&rng, 3, 0);
    float *feat = bench_features(c, &rng);
    int P;
    int *prompt = bench_prompt(c, &rng, &P);
    int comp[G][NEW];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < NEW; j++) comp[g][j] = (int)rng_below(&rng, 100000) + 100;
    // GRPO at ratio 1: loss = -1/G sum_g adv_g / len_g sum_j lp_gj, advantages +-1 (a half-right group)
    float dlp[G * NEW];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < NEW; j++) dlp[g * NEW + j] = (g % 2 ? 1.0f : -1.0f) / (G * NEW);
    const int valid = BENCH_FRAMES;
    printf("  group: prompt %d (%d audio) + %d x %d completion tokens; %s; %d timed repeats after 1 warm-up, "
           "median\n", P, audio_token_count(valid), G, NEW, args->forward_only ? "forward only" : "forward + backward",
           args->reps);

    LayoutResult r[2] = {{.name = "shared"}, {.name = "naive"}};
    for (int k = 0; k < 2; k++) {  // shared first: the peak after each layout is then that layout's own
        ModelBatch b;
        layout_batch(&b, c, k == 0, prompt, P, feat, valid, comp);
        layout_run(&m, args, &b, dlp, grads, &r[k]);
        mbatch_free(&b);
        printf("  %-6s %5d tokens, %d clip%s: forward %.4f s + backward %.4f s = %.4f s; %.1f TFLOP -> %.1f TFLOP/s "
               "(%.0f%% of %.0f peak); activations %.2f GiB, peak device memory %.2f GiB\n",
               r[k].name, r[k].tokens, r[k].clips, r[k].clips > 1 ? "s" : "", r[k].fwd_s, r[k].bwd_s, r[k].step_s,
               r[k].flops / 1e12, r[k].flops / r[k].step_s / 1e12, 100 * r[k].flops / r[k].step_s / 1e12 / args->peak_tflops,
               args->peak_tflops, r[k].acts_gib, r[k].peak_gib);
    }
    // the two layouts compute the same log-probs (up to bf16 rounding in different kernel shapes)
    double lp_diff = 0, lp_mean = 0;
    for (int i = 0; i < G * NEW; i++) {
        lp_diff = fmax(lp_diff, fabs((double)r[0].lp[i] - r[1].lp[i]));
        lp_mean += r[1].lp[i] / (G * NEW);
    }
    printf("  shared prefix vs naive: %.2fx faster; the naive FLOPs in the shared time: %.1f TFLOP/s; "
           "log-probs agree to %.4f (mean %.3f)\n",
           r[1].step_s / r[0].step_s, r[1].flops / r[0].step_s / 1e12, lp_diff, lp_mean);
    printf("  weights %.2f GiB + gradients %.2f GiB (bf16)\n", m.t.numel * o->act_size / 1073741824.0,
           grads ? m.t.numel * o->act_size / 1073741824.0 : 0.0);
    if (args->json) json_write(args, c, &m, r, 2, lp_diff);
    free(r[0].lp), free(r[1].lp), free(feat), free(prompt);
    if (grads) o->free(o, grads);
    model_free(&m);
    ops_destroy(o);
    return 0;
}
#endif

int main(int argc, char **argv) {
    BenchArgs args;
    ModelConfig full, c;
    Err e;
    if (args_parse(argc, argv, &args, &e)) {
        fprintf(stderr, "bench_learner: %s\n%s", e.msg, USAGE);
        return 2;
    }
    if (hf_config_load(args.config, &full, &e)) {
        fprintf(stderr, "bench_learner: %s\n", e.msg);
        return 2;
    }
    c = full;
    if (args_apply(&args, &c, &e)) {
        fprintf(stderr, "bench_learner: %s\n", e.msg);
        return 2;
    }
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("bench_learner: no CUDA device\n");
        return 77;
    }
    return bench_run(&args, &full, &c);
#else
    printf("bench_learner: built without CUDA\n");
    return 77;
#endif
}
