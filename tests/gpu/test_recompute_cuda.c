// test_recompute_cuda: activation recompute on the CUDA backend. (1) Tiny random model, audio + a
// shared-prefix group: ACTS_RECOMPUTE gives the same log-probs bits as ACTS_TRAIN, and (where the backend
// has backward ops) the same gradients (bits, or the difference printed). (2) The 7B shape with random
// bf16 weights drawn on the GPU, one R1-AQA group (846-token prompt with a 30 s clip, 8 x 32 completion
// tokens): activation bytes against the plan (model_acts_size), device memory of the CUDA context and
// of the workspaces beyond the plan, forward/backward times stored vs recomputed. Exits 77 (skipped)
// without a GPU or a CUDA build.
#include "gpu_testutil.h"
#include "../model/model_testutil.h"
#include "audio/audio_len.h"
#include "model/hf_config.h"

#ifdef AQA_CUDA
#include <cuda_runtime.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double gib(double b) { return b / 1073741824.0; }

static int has_backward(const Ops *o) {
    return o->bias_grad && o->col2im && o->layernorm_bwd && o->rmsnorm_bwd && o->attention_bwd && o->gelu_bwd &&
           o->silu_mul_bwd && o->avgpool2_bwd && o->logprob_bwd;
}

// A group of G completions of C tokens after a prompt of P tokens that starts with one clip's audio
// tokens (valid mel frames `valid`), with every completion token a target.
static void group_batch(ModelBatch *b, const ModelConfig *c, int P, int G, int C, int valid, const float *feat) {
    int *prompt = mallocCheck((size_t)P * sizeof(int)), *cids = mallocCheck((size_t)G * C * sizeof(int));
    const int **comp = mallocCheck((size_t)G * sizeof(int *)), na = audio_token_count(valid);
    int *len = mallocCheck((size_t)G * sizeof(int));
    for (int i = 0; i < P; i++) prompt[i] = i == 0 ? c->bos_id : i <= na ? c->audio_token_id : 3 + i % 29;
    for (int g = 0; g < G; g++) {
        for (int j = 0; j < C; j++) cids[g * C + j] = 5 + (g * 7 + j * 3) % 31;
        comp[g] = cids + g * C, len[g] = C;
    }
    mbatch_init(b, c);
    mbatch_add_group(b, prompt, P, comp, len, G, 1, NULL);
    mbatch_add_audio(b, feat, valid);
    free(prompt), free(cids), free(comp), free(len);
}

// Forward (and backward into grads when non-NULL) with activations of `mode`; lp gets the log-probs.
// Returns the seconds of the last of `reps` forward and backward passes (fwd, bwd).
static void step(Model *m, ModelBatch *b, ActsMode mode, float *lp, const float *dlp, Tensor *grads, int reps,
                 double *fwd, double *bwd, size_t *acts_bytes) {
    Ops *o = m->ops;
    ModelActs *a = model_acts_create(m, b->n_tokens, b->n_audio, b->n_tgt, mode);
    *acts_bytes = model_acts_bytes(a);
    Err e;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        int rc = model_forward(m, b, a, lp, &e);
        CHECKF(rc == 0, "%s", e.msg);
        if (rc) break;
        o->sync(o);
        double t1 = now();
        if (grads) model_backward(m, b, a, dlp, grads);
        o->sync(o);
        *fwd = t1 - t0, *bwd = now() - t1;
    }
    model_acts_free(m, a);
}

static void test_tiny(void) {
    ModelConfig c = tiny_config();
    ParamTable t;
    param_table_build(&t, &c);
    float *host = tiny_params(&t, 3);
    Model m;
    model_init(&m, &c, ops_cuda_create(), host);
    Rng r;
    rng_init(&r, 8, 0);
    const int F = 2 * c.a_max_pos;
    float *feat = mallocCheck((size_t)c.n_mels * F * sizeof(float));
    fill_normal(feat, (size_t)c.n_mels * F, 1, &r);
    ModelBatch b;
    group_batch(&b, &c, 9, 3, 4, F - 3, feat);
    float *dlp = mallocCheck(b.n_tgt * sizeof(float)), *lp_s = mallocCheck(b.n_tgt * sizeof(float));
    float *lp_r = mallocCheck(b.n_tgt * sizeof(float));
    fill_normal(dlp, b.n_tgt, 1, &r);
    const int bwd = has_backward(m.ops);
    Tensor *gs = bwd ? m.ops->alloc(m.ops, t.numel * m.ops->act_size) : NULL;
    Tensor *gr = bwd ? m.ops->alloc(m.ops, t.numel * m.ops->act_size) : NULL;
    double tf, tb;
    size_t bs, br;
    step(&m, &b, ACTS_TRAIN, lp_s, dlp, gs, 1, &tf, &tb, &bs);
    step(&m, &b, ACTS_RECOMPUTE, lp_r, dlp, gr, 1, &tf, &tb, &br);
    CHECK(memcmp(lp_s, lp_r, b.n_tgt * sizeof(float)) == 0);
    CHECK(br < bs);
    if (bwd) {
        float *hs = mallocCheck(t.numel * sizeof(float)), *hr = mallocCheck(t.numel * sizeof(float));
        m.ops->download_act(m.ops, hs, gs, t.numel);
        m.ops->download_act(m.ops, hr, gr, t.numel);
        int same = memcmp(hs, hr, t.numel * sizeof(float)) == 0;
        printf("tiny: recompute gradients %s\n", same ? "bit-identical" : "differ");
        // ops with atomics (attention backward) may sum in another order on a rerun: bf16 noise at most
        if (!same) CHECK(err_report("tiny: recompute vs stored grads", hr, hs, t.numel) < 2e-2);
        free(hs), free(hr);
        m.ops->free(m.ops, gs), m.ops->free(m.ops, gr);
    } else {
        printf("tiny: the %s backend has no backward ops: log-probs only\n", m.ops->name);
    }
    free(dlp), free(lp_s), free(lp_r), free(feat), free(host);
    mbatch_free(&b);
    param_table_free(&t);
    Ops *o = m.ops;
    model_free(&m);
    ops_destroy(o);
}

static void test_7b(void) {
    ModelConfig c;
    Err e;
    int rc = hf_config_load(SRC_PATH("configs/model-7b.json"), &c, &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc) return;
    Ops *o = ops_cuda_create();
    size_t free_b, total_b;
    cudaMemGetInfo(&free_b, &total_b);
    const double ctx = (double)(total_b - free_b);  // context and backend state, before any buffer
    Model m = {.cfg = c, .ops = o};
    param_table_build(&m.t, &c);
    const size_t N = m.t.numel;
    m.params = o->alloc(o, N * o->act_size);
    ops_cuda_fill(o, m.params, N, 0.02f, 0, 1, 0);
    const int bwd = has_backward(o);
    Tensor *grads = bwd ? o->alloc(o, N * o->act_size) : NULL;
    const int F = 2 * c.a_max_pos;
    float *feat = mallocCheck((size_t)c.n_mels * F * sizeof(float));
    Rng r;
    rng_init(&r, 9, 0);
    fill_normal(feat, (size_t)c.n_mels * F, 1, &r);
    ModelBatch b;
    group_batch(&b, &c, 846, 8, 32, F, feat);  // 30 s: 750 audio tokens
    CHECK_INT(b.n_tokens, 1102);
    float *dlp = mallocCheck(b.n_tgt * sizeof(float)), *lp[2];
    for (int i = 0; i < b.n_tgt; i++) dlp[i] = 1.0f / b.n_tgt;
    static const ActsMode modes[2] = {ACTS_RECOMPUTE, ACTS_TRAIN};  // smaller first: the peak grows
    static const char *const names[2] = {"recompute", "stored"};
    for (int k = 0; k < 2; k++) {
        lp[k] = mallocCheck(b.n_tgt * sizeof(float));
        double tf = 0, tb = 0;
        size_t acts;
        step(&m, &b, modes[k], lp[k], dlp, grads, 3, &tf, &tb, &acts);
        ActsSize plan = model_acts_size(&c, o->act_size, b.n_tokens, b.n_audio, b.n_tgt, modes[k]);
        CHECK(acts == plan.bytes);
        double held = (double)N * o->act_size * (bwd ? 2 : 1) + (double)acts;
        double peak = (double)ops_cuda_peak_bytes(o);
        printf("7B group (1102 tokens, 256 targets), %s: activations %.2f GiB (plan %.2f), forward %.3f s%s",
               names[k], gib((double)acts), gib((double)plan.bytes), tf, bwd ? "" : "\n");
        if (bwd) printf(", backward %.3f s\n", tb);
        printf("  backend peak %.2f GiB = weights%s + activations + %.3f GiB of workspaces\n", gib(peak),
               bwd ? " + gradients" : "", gib(peak - held));
    }
    CHECK(memcmp(lp[0], lp[1], b.n_tgt * sizeof(float)) == 0);
    cudaMemGetInfo(&free_b, &total_b);
    printf("7B: CUDA context + backend before buffers %.2f GiB; device in use at the end %.2f GiB of %.2f GiB "
           "(backend peak %.2f GiB)\n",
           gib(ctx), gib((double)(total_b - free_b)), gib((double)total_b), gib((double)ops_cuda_peak_bytes(o)));
    free(lp[0]), free(lp[1]), free(dlp), free(feat);
    mbatch_free(&b);
    if (grads) o->free(o, grads);
    o->free(o, m.params);
    param_table_free(&m.t);
    ops_destroy(o);
}
#endif

int main(void) {
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("test_recompute_cuda: no CUDA device, skipped\n");
        return 77;
    }
    RUN(test_tiny);
    RUN(test_7b);
    return test_summary("test_recompute_cuda");
#else
    printf("test_recompute_cuda: built without CUDA, skipped\n");
    return 77;
#endif
}
