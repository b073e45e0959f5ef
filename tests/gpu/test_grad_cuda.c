// test_grad_cuda: whole-model gradients (model_backward) on the CUDA backend (bf16 storage, fp32
// accumulation) against the CPU backend (fp32) and transformers (fp32 autograd): (1) the tiny random model
// with audio, GQA and a shared-prefix group, GPU vs CPU; (2) on the GPU, the shared-prefix group's
// gradients equal the naive per-sequence batch's (every completion a full sequence with its own audio
// clip); (3) the transformers fixture (tests/fixtures/model): every trainable gradient against HF fp32
// (65 of the file's 66; audio_tower.embed_positions is frozen here); (4) the small config
// (configs/model-small.json, 188M) on one short group, GPU vs CPU, and its GPU time on a full-size group.
// Every trainable tensor's gradient is compared by ||g - ref|| / ||ref|| (bf16 noise is relative to the
// tensor's scale; single entries near zero would dominate an element-wise metric) and by
// max |g - ref| / max |ref|, both printed. Exits 77 (skipped) without a GPU, a CUDA build, or until the
// backend has attention_bwd.
#include <time.h>

#include "gpu_testutil.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "../model/model_testutil.h"
#include "audio/audio_len.h"

#ifdef AQA_CUDA
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Forward and backward of b with d loss / d lp = dlp: host gradients [t.numel] (fp32) and, when lp is
// not NULL, the target log-probs. Returns the seconds both took (backend synchronised), or -1.
static double grads_of(Model *m, const ModelBatch *b, const float *dlp, float *grads, float *lp) {
    Err e;
    Ops *o = m->ops;
    ModelActs *a = model_acts_create(m, b->n_tokens, b->n_audio, b->n_tgt, 1);
    Tensor *g = o->alloc(o, m->t.numel * o->act_size);
    float *lph = mallocCheck(((size_t)b->n_tgt + 1) * sizeof(float));
    const double t0 = now_s();
    int rc = model_forward(m, b, a, lph, &e);
    CHECKF(rc == 0, "%s", e.msg);
    double dt = -1;
    if (rc == 0) {
        model_backward(m, b, a, dlp, g);
        o->sync(o);
        dt = now_s() - t0;
        o->download_act(o, grads, g, m->t.numel);
        if (lp) memcpy(lp, lph, (size_t)b->n_tgt * sizeof(float));
    }
    free(lph);
    o->free(o, g);
    model_acts_free(m, a);
    return dt;
}

// Compares every trainable tensor of g with ref (both [t.numel]); prints one line per tensor when
// verbose, and the worst; checks each against tol (norm-relative). Returns the worst norm-relative error.
static double grads_compare(const char *what, const ParamTable *t, const float *g, const float *ref, double tol,
                            int verbose) {
    double worst = 0, worst_max = 0;
    const char *wn = "";
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        if (!s->trainable) continue;
        const double e = cmp_norm_rel(g + s->offset, ref + s->offset, s->numel, 1e-20);
        const double em = cmp_rel_err(g + s->offset, ref + s->offset, s->numel);
        if (verbose) printf("    %-56s norm rel %.2e  max rel %.2e\n", s->name, e, em);
        CHECKF(e < tol, "%s: %s gradient norm rel error %.3e (tolerance %.1e)", what, s->name, e, tol);
        if (e > worst) worst = e, wn = s->name;
        worst_max = fmax(worst_max, em);
        n++;
    }
    printf("  %s: %d trainable tensors, worst norm rel %.2e (%s), worst max rel %.2e\n", what, n, worst, wn,
           worst_max);
    return worst;
}

// The tiny model's inputs: prompt (BOS, audio tokens of one clip, text) and G completions; dlp random.
typedef struct {
    ModelConfig cfg;
    ParamTable t;
    float *host, *feat;
    int prompt[64], P, valid;
    int cids[3][6], lens[3];
} Tiny;

static void tiny_setup(Tiny *w) {
    w->cfg = tiny_config();
    param_table_build(&w->t, &w->cfg);
    w->host = tiny_params(&w->t, 3);
    Rng r;
    rng_init(&r, 5, 0);
    const int F = 2 * w->cfg.a_max_pos, na = audio_token_count(F - 3);
    w->valid = F - 3;
    w->feat = mallocCheck((size_t)w->cfg.n_mels * F * sizeof(float));
    fill_normal(w->feat, (size_t)w->cfg.n_mels * F, 1, &r);
    w->P = 0;
    w->prompt[w->P++] = w->cfg.bos_id;
    for (int i = 0; i < na; i++) w->prompt[w->P++] = w->cfg.audio_token_id;
    for (int i = 0; i < 5; i++) w->prompt[w->P++] = 3 + i;
    const int lens[3] = {6, 4, 5};
    for (int g = 0; g < 3; g++) {
        w->lens[g] = lens[g];
        for (int j = 0; j < 6; j++) w->cids[g][j] = (int)rng_below(&r, 30);
    }
    w->cids[1][2] = w->cids[1][0];  // a repeated token: the embedding's scatter-add sees duplicates
}

static void tiny_free(Tiny *w) {
    free(w->host), free(w->feat);
    param_table_free(&w->t);
}

// The group batch (prefix once) or the naive one (G full sequences, each with its own clip).
static void tiny_batch(const Tiny *w, ModelBatch *b, int naive) {
    mbatch_init(b, &w->cfg);
    const int *comp[3] = {w->cids[0], w->cids[1], w->cids[2]};
    if (!naive) {
        mbatch_add_group(b, w->prompt, w->P, comp, w->lens, 3, 1, NULL);
        mbatch_add_audio(b, w->feat, w->valid);
        return;
    }
    for (int g = 0; g < 3; g++) {
        int seq[64];
        memcpy(seq, w->prompt, (size_t)w->P * sizeof(int));
        memcpy(seq + w->P, comp[g], (size_t)w->lens[g] * sizeof(int));
        mbatch_add_seq(b, seq, w->P + w->lens[g], w->P);
        mbatch_add_audio(b, w->feat, w->valid);
    }
}

static float *random_dlp(int n, uint64_t seed) {
    Rng r;
    rng_init(&r, seed, 0);
    float *d = mallocCheck(((size_t)n + 1) * sizeof(float));
    for (int i = 0; i < n; i++) d[i] = (float)rng_normal(&r);
    return d;
}

static void test_tiny_gpu_vs_cpu(void) {
    Tiny w;
    tiny_setup(&w);
    Model mc, mg;
    model_init(&mc, &w.cfg, ops_cpu_create(), w.host);
    model_init(&mg, &w.cfg, ops_cuda_create(), w.host);
    ModelBatch b;
    tiny_batch(&w, &b, 0);
    float *dlp = random_dlp(b.n_tgt, 11);
    float *gc = mallocCheck(mc.t.numel * sizeof(float)), *gg = mallocCheck(mc.t.numel * sizeof(float));
    if (grads_of(&mc, &b, dlp, gc, NULL) >= 0 && grads_of(&mg, &b, dlp, gg, NULL) >= 0)
        // weights of std 0.3 grow bf16 rounding through the layers (the forward's logits differ by ~3e-2)
        grads_compare("tiny random group (audio, GQA): GPU vs CPU", &mc.t, gg, gc, 1e-1, 1);
    free(gc), free(gg), free(dlp);
    mbatch_free(&b);
    Ops *oc = mc.ops, *og = mg.ops;
    model_free(&mc), model_free(&mg);
    ops_destroy(oc), ops_destroy(og);
    tiny_free(&w);
}

static void test_prefix_vs_naive(void) {
    Tiny w;
    tiny_setup(&w);
    Model m;
    model_init(&m, &w.cfg, ops_cuda_create(), w.host);
    ModelBatch bg, bn;
    tiny_batch(&w, &bg, 0);
    tiny_batch(&w, &bn, 1);
    CHECK_INT(bg.n_tgt, bn.n_tgt);  // the same targets in the same order
    float *dlp = random_dlp(bg.n_tgt, 12);
    float *gp = mallocCheck(m.t.numel * sizeof(float)), *gn = mallocCheck(m.t.numel * sizeof(float));
    float *lpp = mallocCheck((size_t)bg.n_tgt * 4), *lpn = mallocCheck((size_t)bn.n_tgt * 4);
    if (bg.n_tgt == bn.n_tgt && grads_of(&m, &bg, dlp, gp, lpp) >= 0 && grads_of(&m, &bn, dlp, gn, lpn) >= 0) {
        printf("  shared prefix: %d tokens, naive: %d tokens, %d targets\n", bg.n_tokens, bn.n_tokens, bg.n_tgt);
        CHECK(err_report("prefix vs naive target log-probs (GPU)", lpp, lpn, bg.n_tgt) < 1e-2);
        // the same sums in another order and grouping: bf16 rounding of the accumulated gradients only
        grads_compare("shared-prefix vs naive backward (GPU)", &m.t, gp, gn, 3e-2, 0);
    }
    free(gp), free(gn), free(lpp), free(lpn), free(dlp);
    mbatch_free(&bg), mbatch_free(&bn);
    Ops *o = m.ops;
    model_free(&m);
    ops_destroy(o);
    tiny_free(&w);
}

// The fixture's batch and target weights, as tests/model/test_hf_parity.c feeds the CPU model.
static void test_hf_fixture_grads(void) {
    Err e;
    ModelConfig cfg;
    ParamTable t;
    float *host;
    if (model_load_dir(SRC_PATH("tests/fixtures/model/tiny-hf"), &cfg, &t, &host, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    StReader r;
    if (st_open(&r, SRC_PATH("tests/fixtures/model/expected.safetensors"), &e)) {
        CHECKF(0, "%s", e.msg);
        free(host), param_table_free(&t);
        return;
    }
    size_t n_ids, n_mask, n_feat, n_tgt, n_tid, n_w;
    int *ids = read_i32(&r, "input_ids", &n_ids), *mask = read_i32(&r, "feature_attention_mask", &n_mask);
    int *tgt_row = read_i32(&r, "tgt_row", &n_tgt), *tgt_id = read_i32(&r, "tgt_id", &n_tid);
    float *feat = read_f32(&r, "input_features", &n_feat), *w = read_f32(&r, "tgt_w", &n_w);
    float *ref = mallocCheck(t.numel * sizeof(float)), *g = mallocCheck(t.numel * sizeof(float));
    int have = ids && mask && tgt_row && tgt_id && feat && w;
    for (int i = 0; have && i < t.n; i++) {  // the reference gradients in ParamTable layout
        const ParamSpec *s = &t.specs[i];
        if (!s->trainable) continue;
        char name[128];
        snprintf(name, sizeof name, "grad.%s", s->name);
        size_t n = 0;
        float *x = read_f32(&r, name, &n);
        have = x && n == s->numel;
        CHECKF(!x || n == s->numel, "%s: %zu elements, the model has %zu", name, n, s->numel);
        if (have) memcpy(ref + s->offset, x, n * sizeof(float));
        free(x);
    }
    if (have) {
        Model m;
        model_init(&m, &cfg, ops_cuda_create(), host);
        int valid = 0;
        for (size_t i = 0; i < n_mask; i++) valid += mask[i];
        ModelBatch b;
        mbatch_init(&b, &cfg);
        mbatch_add_seq(&b, ids, (int)n_ids, (int)n_ids);
        for (size_t i = 0; i < n_tgt; i++) mbatch_add_target(&b, tgt_row[i], tgt_id[i]);
        mbatch_add_audio(&b, feat, valid);
        if (grads_of(&m, &b, w, g, NULL) >= 0)
            // fixture weights have std 0.2: bf16 noise is larger than at trained-model scale
            grads_compare("HF fixture: GPU bf16 vs transformers fp32", &t, g, ref, 1e-1, 1);
        mbatch_free(&b);
        Ops *o = m.ops;
        model_free(&m);
        ops_destroy(o);
    }
    free(ids), free(mask), free(tgt_row), free(tgt_id), free(feat), free(w), free(ref), free(g), free(host);
    st_close(&r);
    param_table_free(&t);
}

// Small config (random init, std 0.02) on one short group: a 4 s clip (100 audio tokens), a prompt
// and G=4 completions of 12 tokens, random dlp; then the GPU's time on a full-size group.
static void test_small_grads(void) {
    Err e;
    ModelConfig cfg;
    if (hf_config_load(SRC_PATH("configs/model-small.json"), &cfg, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    ParamTable t;
    param_table_build(&t, &cfg);
    float *host = mallocCheck(t.numel * sizeof(float));
    param_init_random(&cfg, &t, host, 1);
    const int F = 2 * cfg.a_max_pos, valid = 400, na = audio_token_count(valid), G = 4, L = 12;
    Rng r;
    rng_init(&r, 21, 0);
    float *feat = mallocCheck((size_t)cfg.n_mels * F * sizeof(float));
    fill_normal(feat, (size_t)cfg.n_mels * F, 1, &r);
    int *prompt = mallocCheck(((size_t)na + 16) * sizeof(int)), P = 0;
    prompt[P++] = cfg.bos_id;
    for (int i = 0; i < na; i++) prompt[P++] = cfg.audio_token_id;
    for (int i = 0; i < 12; i++) prompt[P++] = 1000 + (int)rng_below(&r, 50000);
    int cids[4][12], lens[4];
    const int *comp[4];
    for (int g = 0; g < G; g++) {
        lens[g] = L - g;
        for (int j = 0; j < L; j++) cids[g][j] = 1000 + (int)rng_below(&r, 50000);
        comp[g] = cids[g];
    }
    ModelBatch b;
    mbatch_init(&b, &cfg);
    mbatch_add_group(&b, prompt, P, comp, lens, G, 1, NULL);
    mbatch_add_audio(&b, feat, valid);
    float *dlp = random_dlp(b.n_tgt, 13);
    Model mc, mg;
    model_init(&mc, &cfg, ops_cpu_create(), host);
    model_init(&mg, &cfg, ops_cuda_create(), host);
    float *gc = mallocCheck(t.numel * sizeof(float)), *gg = mallocCheck(t.numel * sizeof(float));
    const double tc = grads_of(&mc, &b, dlp, gc, NULL);
    grads_of(&mg, &b, dlp, gg, NULL);  // the first GPU pass plans its GEMMs: time the second
    const double tg = grads_of(&mg, &b, dlp, gg, NULL);
    if (tc >= 0 && tg >= 0) {
        printf("  small model group: %d tokens (%d audio), %d targets; forward+backward CPU %.2f s, GPU %.1f ms\n",
               b.n_tokens, na, b.n_tgt, tc, tg * 1e3);
        grads_compare("small config group: GPU bf16 vs CPU fp32", &t, gg, gc, 5e-2, 1);
    }
    // GPU time of a full-size group: a 30 s clip (750 audio tokens), G=8 completions of 128 tokens
    const int G8 = 8, L8 = 128, na30 = audio_token_count(F);
    int *p30 = mallocCheck(((size_t)na30 + 16) * sizeof(int)), P30 = 0;
    int *c8 = mallocCheck((size_t)G8 * L8 * sizeof(int));
    int lens8[8];
    const int *comp8[8];
    p30[P30++] = cfg.bos_id;
    for (int i = 0; i < na30; i++) p30[P30++] = cfg.audio_token_id;
    for (int i = 0; i < 12; i++) p30[P30++] = 1000 + (int)rng_below(&r, 50000);
    for (int g = 0; g < G8; g++) {
        for (int j = 0; j < L8; j++) c8[g * L8 + j] = 1000 + (int)rng_below(&r, 50000);
        comp8[g] = c8 + g * L8, lens8[g] = L8;
    }
    ModelBatch b8;
    mbatch_init(&b8, &cfg);
    mbatch_add_group(&b8, p30, P30, comp8, lens8, G8, 1, NULL);
    mbatch_add_audio(&b8, feat, F);
    float *dlp8 = random_dlp(b8.n_tgt, 14);
    grads_of(&mg, &b8, dlp8, gg, NULL);
    const double t8 = grads_of(&mg, &b8, dlp8, gg, NULL);
    int finite = 1;
    for (size_t i = 0; i < t.numel; i++) finite &= isfinite(gg[i]) != 0;
    CHECKF(finite, "small model, full group: non-finite gradient");
    printf("  small model, full group on the GPU: %d tokens (%d audio), %d targets, forward+backward %.1f ms\n",
           b8.n_tokens, na30, b8.n_tgt, t8 * 1e3);
    mbatch_free(&b8);
    free(p30), free(c8), free(dlp8);
    free(gc), free(gg), free(dlp), free(feat), free(prompt), free(host);
    mbatch_free(&b);
    Ops *oc = mc.ops, *og = mg.ops;
    model_free(&mc), model_free(&mg);
    ops_destroy(oc), ops_destroy(og);
    param_table_free(&t);
}
#endif

int main(void) {
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("test_grad_cuda: no CUDA device, skipped\n");
        return 77;
    }
    Ops *o = ops_cuda_create();
    const int ready = o->attention_bwd != NULL;
    ops_destroy(o);
    if (!ready) {
        printf("test_grad_cuda: the CUDA backend has no attention_bwd yet, skipped\n");
        return 77;
    }
    RUN(test_tiny_gpu_vs_cpu);
    RUN(test_prefix_vs_naive);
    RUN(test_hf_fixture_grads);
    RUN(test_small_grads);
    return test_summary("test_grad_cuda");
#else
    printf("test_grad_cuda: built without CUDA, skipped\n");
    return 77;
#endif
}
