// The whole model on a tiny random Qwen2-Audio: gradients of every trainable tensor against finite
// differences, KV-cache decode against the full forward, shared-prefix groups against the naive
// per-sequence computation (log-probs and every parameter gradient), recompute against stored
// activations (bit for bit), the size-only activation table, and bad batches.
#include "test.h"
#include "model_testutil.h"

static ModelConfig C;
static Model M;
static float *FEAT;           // [n_mels, frames], one random clip
static const int VALID = 13;  // mel frames -> L1 = 7 encoder keys, N = 3 audio tokens

enum { AU = 37 };  // audio token id of tiny_config
static const int SEQ1[] = {38, 1, AU, AU, AU, 2, 5, 6, 7, 8, 9};
static const int SEQ2[] = {38, 3, 4, 11, 12, 13};
enum { N1 = 11, N2 = 6 };

static void setup(void) {
    C = tiny_config();
    ParamTable t;
    param_table_build(&t, &C);
    float *p = tiny_params(&t, 7);
    model_init(&M, &C, ops_cpu_create(), p);
    free(p);
    param_table_free(&t);
    Rng r;
    rng_init(&r, 99, 1);
    FEAT = mallocCheck((size_t)C.n_mels * 2 * C.a_max_pos * sizeof(float));
    fill_normal(FEAT, (size_t)C.n_mels * 2 * C.a_max_pos, 1.0f, &r);
}

// ---------------------------------------------------------------- gradients vs finite differences

typedef struct {
    ModelBatch *b;
    ModelActs *a;
    float *lp, *w;
} LossCtx;

static double model_loss(void *p) {
    LossCtx *c = p;
    Err e;
    if (model_forward(&M, c->b, c->a, c->lp, &e)) fatal("%s", e.msg);
    double s = 0;
    for (int i = 0; i < c->b->n_tgt; i++) s += (double)c->w[i] * c->lp[i];
    return s;
}

static void test_gradients_fd(void) {
    ModelBatch b;
    mbatch_init(&b, &C);
    mbatch_add_seq(&b, SEQ1, N1, 6);
    mbatch_add_seq(&b, SEQ2, N2, 2);
    mbatch_add_audio(&b, FEAT, VALID);
    ModelActs *a = model_acts_create(&M, b.n_tokens, 1, b.n_tgt, 1);
    float *lp = mallocCheck(b.n_tgt * sizeof(float)), *w = mallocCheck(b.n_tgt * sizeof(float));
    Rng r;
    rng_init(&r, 5, 0);
    fill_normal(w, b.n_tgt, 1.0f, &r);
    LossCtx ctx = {&b, a, lp, w};
    model_loss(&ctx);
    float *g = M.ops->alloc(M.ops, M.t.numel * sizeof(float));
    model_backward(&M, &b, a, w, g);
    float *params = M.params;  // CPU backend: Tensor storage is fp32 host memory
    double worst = 0;
    int worst_i = 0, checked = 0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamSpec *s = &M.t.specs[i];
        if (!s->trainable) {
            int zero = 1;
            for (size_t j = 0; j < s->numel; j++) zero &= g[s->offset + j] == 0.0f;
            CHECKF(zero, "frozen %s got a gradient", s->name);
            continue;
        }
        for (int k = 0; k < 3; k++) {
            size_t j = s->offset + rng_below(&r, s->numel);
            double num = fd_deriv(model_loss, &ctx, &params[j], 3e-2);
            double err = cmp_rel_diff(num, g[j], 1e-2);
            if (err > worst) worst = err, worst_i = i;
            checked++;
        }
    }
    printf("model: fd rel error over %d entries of %d tensors: max %.2e (%s)\n", checked, M.t.n, worst,
           M.t.specs[worst_i].name);
    CHECK(worst < 5e-3);
    // rows replaced by audio send nothing to the embedding table
    const float *ga = g + M.t.specs[M.t.embed].offset + (size_t)AU * C.dim;
    int zero = 1;
    for (int j = 0; j < C.dim; j++) zero &= ga[j] == 0.0f;
    CHECK(zero);
    // a second backward accumulates
    float *g2 = mallocCheck(M.t.numel * sizeof(float));
    memcpy(g2, g, M.t.numel * sizeof(float));
    model_loss(&ctx);
    model_backward(&M, &b, a, w, g);
    double d = 0;
    for (size_t j = 0; j < M.t.numel; j++) d = fmax(d, cmp_diff(g[j], 2 * g2[j]));
    CHECK(d < 1e-5);
    free(g2);
    M.ops->free(M.ops, g);
    free(lp), free(w);
    model_acts_free(&M, a);
    mbatch_free(&b);
}

// ---------------------------------------------------------------- decode == full forward

// Logits [n, V] of every row of ids (one causal sequence, with the clip when it holds audio tokens).
static float *full_logits(const int *ids, int n) {
    ModelBatch b;
    mbatch_init(&b, &C);
    mbatch_add_seq(&b, ids, n, n);
    for (int i = 0; i < n; i++)
        if (ids[i] == AU) {
            mbatch_add_audio(&b, FEAT, VALID);
            break;
        }
    ModelActs *a = model_acts_create(&M, n, 1, 1, 1);
    Err e;
    float lp;
    if (model_forward(&M, &b, a, &lp, &e)) fatal("%s", e.msg);
    int *rows = mallocCheck(n * sizeof(int));
    for (int i = 0; i < n; i++) rows[i] = i;
    float *out = mallocCheck((size_t)n * C.vocab * sizeof(float));
    model_logits(&M, a, rows, n, out);
    free(rows);
    model_acts_free(&M, a);
    mbatch_free(&b);
    return out;
}

static void test_decode_matches_forward(void) {
    float *full1 = full_logits(SEQ1, N1), *full2 = full_logits(SEQ2, N2);
    const int V = C.vocab, base2 = 16, p1 = 6, p2 = 3;  // cache rows: seq1 at 0, seq2 at 16
    KVCache kv;
    kv_cache_init(&kv, &M, 32);
    ModelActs *a = model_acts_create(&M, 16, 1, 0, 0);
    ModelBatch b;
    mbatch_init(&b, &C);
    // prefill both prompts in one packed batch: seq1[0..6) (with the audio) and seq2[0..3)
    for (int i = 0; i < p1; i++) mbatch_add_token(&b, SEQ1[i], i, i);
    for (int i = 0; i < p2; i++) mbatch_add_token(&b, SEQ2[i], i, base2 + i);
    mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = p1, .k_start = 0, .k_len = p1, .causal = 1});
    mbatch_add_seg(&b, (AttnSeg){.q_start = p1, .q_len = p2, .k_start = base2, .k_len = p2, .causal = 1});
    mbatch_add_audio(&b, FEAT, VALID);
    float lg[2 * 40];
    Err e;
    int rows[2] = {p1 - 1, p1 + p2 - 1};
    CHECK(model_infer(&M, &b, a, &kv, rows, 2, lg, &e) == 0);
    double worst = fmax(cmp_rel_err(lg, full1 + (p1 - 1) * V, V), cmp_rel_err(lg + V, full2 + (p2 - 1) * V, V));
    // decode one token per running sequence per step; seq2 ends first
    for (int t1 = p1, t2 = p2; t1 < N1; t1++, t2++) {
        mbatch_clear(&b);
        mbatch_add_token(&b, SEQ1[t1], t1, t1);
        mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = 1, .k_start = 0, .k_len = t1 + 1, .causal = 1});
        int n = 1;
        if (t2 < N2) {
            mbatch_add_token(&b, SEQ2[t2], t2, base2 + t2);
            mbatch_add_seg(&b,
                           (AttnSeg){.q_start = 1, .q_len = 1, .k_start = base2, .k_len = t2 + 1, .causal = 1});
            n = 2;
        }
        int r2[2] = {0, 1};
        CHECK(model_infer(&M, &b, a, &kv, r2, n, lg, &e) == 0);
        worst = fmax(worst, cmp_rel_err(lg, full1 + (size_t)t1 * V, V));
        if (n == 2) worst = fmax(worst, cmp_rel_err(lg + V, full2 + (size_t)t2 * V, V));
    }
    printf("decode vs full forward: max rel logits error %.2e\n", worst);
    CHECK(worst < 1e-5);
    mbatch_free(&b);
    model_acts_free(&M, a);
    kv_cache_free(&kv, &M);
    free(full1), free(full2);
}

// G samples decode over ONE cached copy of the prefix and match full forwards of prefix + completion.
static void test_shared_prefix_decode(void) {
    const int P = 6, G = 3, V = C.vocab;
    const int comp[3][4] = {{5, 6, 7, 8}, {9, 10, 0, 0}, {11, 12, 13, 0}}, len[3] = {4, 2, 3};
    KVCache kv;
    kv_cache_init(&kv, &M, 8 + 8 * G);
    ModelActs *a = model_acts_create(&M, 8, 1, 0, 0);
    ModelBatch b;
    mbatch_init(&b, &C);
    mbatch_add_seq(&b, SEQ1, P, P);  // cache rows 0..P-1 = batch rows
    mbatch_add_audio(&b, FEAT, VALID);
    float lg[3 * 40];
    Err e;
    int last = P - 1;
    CHECK(model_infer(&M, &b, a, &kv, &last, 1, lg, &e) == 0);
    double worst = 0;
    float *full[3];
    for (int g = 0; g < G; g++) {
        int ids[12];
        memcpy(ids, SEQ1, P * sizeof(int));
        memcpy(ids + P, comp[g], len[g] * sizeof(int));
        full[g] = full_logits(ids, P + len[g]);
        worst = fmax(worst, cmp_rel_err(lg, full[g] + (P - 1) * V, V));
    }
    for (int j = 0; j < 4; j++) {
        mbatch_clear(&b);
        int rows[3], n = 0, who[3];
        for (int g = 0; g < G; g++) {
            if (j >= len[g]) continue;
            mbatch_add_token(&b, comp[g][j], P + j, 8 + 8 * g + j);
            mbatch_add_seg(&b, (AttnSeg){.q_start = n,
                                         .q_len = 1,
                                         .pre_start = 0,
                                         .pre_len = P,
                                         .k_start = 8 + 8 * g,
                                         .k_len = j + 1,
                                         .causal = 1});
            rows[n] = n, who[n++] = g;
        }
        CHECK(model_infer(&M, &b, a, &kv, rows, n, lg, &e) == 0);
        for (int i = 0; i < n; i++)
            worst = fmax(worst, cmp_rel_err(lg + i * V, full[who[i]] + (size_t)(P + j) * V, V));
    }
    printf("shared-prefix decode vs full forward: max rel logits error %.2e\n", worst);
    CHECK(worst < 1e-5);
    for (int g = 0; g < G; g++) free(full[g]);
    mbatch_free(&b);
    model_acts_free(&M, a);
    kv_cache_free(&kv, &M);
}

// ---------------------------------------------------------------- shared prefix == naive

static void test_shared_prefix_training(void) {
    const int P = 6, G = 3;
    const int c0[] = {5, 6, 7, 8}, c1[] = {9, 10}, c2[] = {11, 12, 13};
    const int *comp[3] = {c0, c1, c2}, len[3] = {4, 2, 3};
    // grouped: prefix once
    ModelBatch gb, nb;
    mbatch_init(&gb, &C);
    mbatch_add_group(&gb, SEQ1, P, comp, len, G, 1, NULL);
    mbatch_add_audio(&gb, FEAT, VALID);
    // naive: G full sequences, each with its own copy of the clip
    mbatch_init(&nb, &C);
    for (int g = 0; g < G; g++) {
        int ids[12];
        memcpy(ids, SEQ1, P * sizeof(int));
        memcpy(ids + P, comp[g], len[g] * sizeof(int));
        mbatch_add_seq(&nb, ids, P + len[g], P);
        mbatch_add_audio(&nb, FEAT, VALID);
    }
    CHECK_INT(gb.n_tgt, 9);
    CHECK_INT(nb.n_tgt, 9);
    float lpg[9], lpn[9], w[9];
    Rng r;
    rng_init(&r, 11, 0);
    fill_normal(w, 9, 1.0f, &r);
    ModelActs *ag = model_acts_create(&M, gb.n_tokens, 1, 9, 1), *an = model_acts_create(&M, nb.n_tokens, G, 9, 1);
    Err e;
    CHECK(model_forward(&M, &gb, ag, lpg, &e) == 0);
    CHECK(model_forward(&M, &nb, an, lpn, &e) == 0);
    float *gg = M.ops->alloc(M.ops, M.t.numel * sizeof(float)),
          *gn = M.ops->alloc(M.ops, M.t.numel * sizeof(float));
    model_backward(&M, &gb, ag, w, gg);
    model_backward(&M, &nb, an, w, gn);
    double elp = cmp_rel_err(lpg, lpn, 9), eg = 0;
    const char *worst = "";
    for (int i = 0; i < M.t.n; i++) {
        const ParamSpec *s = &M.t.specs[i];
        double ei = cmp_rel_err(gg + s->offset, gn + s->offset, s->numel);
        if (ei > eg) eg = ei, worst = s->name;
    }
    printf(
        "shared prefix (G=3, %d tokens) vs naive (%d tokens): lp rel error %.2e, worst grad rel error %.2e (%s)\n",
        gb.n_tokens, nb.n_tokens, elp, eg, worst);
    CHECK(elp < 1e-5);
    CHECK(eg < 1e-4);
    // scoring only (train=0 activations, as for reference log-probs) gives the same log-probs
    ModelActs *as = model_acts_create(&M, gb.n_tokens, 1, 9, 0);
    float lps[9];
    CHECK(model_forward(&M, &gb, as, lps, &e) == 0);
    CHECK(cmp_rel_err(lps, lpg, 9) < 1e-6);
    CHECK(model_acts_bytes(as) < model_acts_bytes(ag));
    model_acts_free(&M, as);
    M.ops->free(M.ops, gg);
    M.ops->free(M.ops, gn);
    model_acts_free(&M, ag);
    model_acts_free(&M, an);
    mbatch_free(&gb);
    mbatch_free(&nb);
}

// ---------------------------------------------------------------- recompute == stored activations

// Forward + backward of batch b with activations of the given mode; lp [b->n_tgt] and grads (zeroed
// first, [t.numel]) get the results; returns the activations' size.
static size_t train_step(ModelBatch *b, ActsMode mode, const float *w, float *lp, float *grads) {
    ModelActs *a = model_acts_create(&M, b->n_tokens, b->n_audio, b->n_tgt, mode);
    Err e;
    if (model_forward(&M, b, a, lp, &e)) fatal("%s", e.msg);
    memset(grads, 0, M.t.numel * sizeof(float));
    model_backward(&M, b, a, w, grads);
    size_t bytes = model_acts_bytes(a);
    model_acts_free(&M, a);
    return bytes;
}

// Recompute reruns the same ops on the same saved inputs, so log-probs and every gradient must be the
// same bits as with stored activations: a shared-prefix group with audio plus a plain sequence with its
// own clip (two encoder segments).
static void test_recompute_bit_identical(void) {
    const int P = 6, G = 3;
    const int c0[] = {5, 6, 7, 8}, c1[] = {9, 10}, c2[] = {11, 12, 13};
    const int *comp[3] = {c0, c1, c2}, len[3] = {4, 2, 3};
    float *feat2 = mallocCheck((size_t)C.n_mels * 2 * C.a_max_pos * sizeof(float));
    Rng r;
    rng_init(&r, 21, 0);
    fill_normal(feat2, (size_t)C.n_mels * 2 * C.a_max_pos, 1.0f, &r);
    ModelBatch b;
    mbatch_init(&b, &C);
    mbatch_add_group(&b, SEQ1, P, comp, len, G, 1, NULL);
    mbatch_add_audio(&b, FEAT, VALID);
    mbatch_add_seq(&b, SEQ1, N1, 4);
    mbatch_add_audio(&b, feat2, VALID);
    float *w = mallocCheck(b.n_tgt * sizeof(float));
    fill_normal(w, b.n_tgt, 1.0f, &r);
    float *lp_s = mallocCheck(b.n_tgt * sizeof(float)), *lp_r = mallocCheck(b.n_tgt * sizeof(float));
    float *g_s = M.ops->alloc(M.ops, M.t.numel * sizeof(float));
    float *g_r = M.ops->alloc(M.ops, M.t.numel * sizeof(float));
    size_t stored = train_step(&b, ACTS_TRAIN, w, lp_s, g_s);
    size_t recomp = train_step(&b, ACTS_RECOMPUTE, w, lp_r, g_r);
    CHECK(memcmp(lp_s, lp_r, b.n_tgt * sizeof(float)) == 0);
    int differ = 0, nonzero = 0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamSpec *s = &M.t.specs[i];
        int same = memcmp(g_s + s->offset, g_r + s->offset, s->numel * sizeof(float)) == 0;
        CHECKF(same, "recompute changed the gradient of %s", s->name);
        differ += !same;
        for (size_t j = 0; j < s->numel && s->trainable; j++)
            if (g_r[s->offset + j] != 0.0f) {
                nonzero++;
                break;
            }
    }
    printf("recompute: %d tokens, %d clips, %d targets: activations %zu -> %zu bytes, %d of %d tensors differ, "
           "%d with a nonzero gradient\n",
           b.n_tokens, b.n_audio, b.n_tgt, stored, recomp, differ, M.t.n, nonzero);
    CHECK(nonzero == M.t.n - 1);  // every tensor but the frozen embed_positions
    CHECK(recomp < stored);
    M.ops->free(M.ops, g_s);
    M.ops->free(M.ops, g_r);
    free(lp_s), free(lp_r), free(w), free(feat2);
    mbatch_free(&b);
}

// The size-only table is the one model_acts_create allocates, part by part, in every mode; recompute
// keeps every layer input and exactly one layer's activations (the inference scratch).
static void test_acts_size(void) {
    ActsSize z[3];
    for (int mode = ACTS_INFER; mode <= ACTS_RECOMPUTE; mode++) {
        ModelActs *a = model_acts_create(&M, 23, 2, 11, (ActsMode)mode);
        z[mode] = model_acts_size(&C, M.ops->act_size, 23, 2, 11, (ActsMode)mode);
        CHECK(z[mode].bytes == model_acts_bytes(a));
        CHECK_INT(z[mode].chunk, model_logits_chunk(a));
        size_t sum = 0;
        for (int p = 0; p < ACTS_PARTS; p++) sum += z[mode].part[p];
        CHECK(sum == z[mode].bytes);
        model_acts_free(&M, a);
    }
    const ActsSize *inf = &z[ACTS_INFER], *tr = &z[ACTS_TRAIN], *rc = &z[ACTS_RECOMPUTE];
    CHECK(rc->part[ACTS_PART_INPUTS] == tr->part[ACTS_PART_INPUTS]);
    CHECK(rc->part[ACTS_PART_LAYERS] == inf->part[ACTS_PART_LAYERS]);
    // tiny has as many encoder as decoder layers, so all layers are exactly `layers` scratch sets
    CHECK(tr->part[ACTS_PART_LAYERS] == (size_t)C.layers * rc->part[ACTS_PART_LAYERS]);
    CHECK(rc->part[ACTS_PART_BACKWARD] == tr->part[ACTS_PART_BACKWARD] && inf->part[ACTS_PART_BACKWARD] == 0);
    CHECK(rc->bytes < tr->bytes);
    printf("activations (23 tokens, 2 clips, 11 targets): infer %zu, train %zu, recompute %zu bytes\n", inf->bytes,
           tr->bytes, rc->bytes);
}

// ---------------------------------------------------------------- bad batches

static int forward_err(ModelBatch *b, int max_tokens, Err *e) {
    ModelActs *a = model_acts_create(&M, max_tokens, 2, 16, 1);
    float lp[16];
    int rc = model_forward(&M, b, a, lp, e);
    model_acts_free(&M, a);
    return rc;
}

static void test_errors(void) {
    ModelBatch b;
    Err e;
    mbatch_init(&b, &C);
    const int two_audio[] = {38, AU, AU, 5};
    mbatch_add_seq(&b, two_audio, 4, 4);
    mbatch_add_audio(&b, FEAT, VALID);  // gives 3 rows for 2 tokens
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "do not match") && strstr(e.msg, "2 <|AUDIO|>"));
    mbatch_clear(&b);
    mbatch_add_seq(&b, SEQ2, N2, N2);  // no clip for 0 tokens is fine; a clip with no tokens is not
    mbatch_add_audio(&b, FEAT, VALID);
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "do not match"));
    mbatch_clear(&b);
    mbatch_add_seq(&b, (const int[]){1, 40}, 2, 2);
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "id 40 outside vocab"));
    mbatch_clear(&b);
    mbatch_add_seq(&b, SEQ2, N2, N2);
    CHECK(forward_err(&b, 4, &e) == -1 && strstr(e.msg, "6 tokens"));
    mbatch_clear(&b);
    mbatch_add_seq(&b, two_audio, 4, 4);
    mbatch_add_audio(&b, FEAT, 0);
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "valid frames"));
    mbatch_clear(&b);
    mbatch_add_token(&b, 1, 0, 0);
    mbatch_add_token(&b, 2, 1, 1);
    mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = 1, .k_start = 0, .k_len = 1, .causal = 1});
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "row 1 is in no attention segment"));
    mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = 2, .k_start = 0, .k_len = 2, .causal = 1});
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "already in another segment"));
    mbatch_clear(&b);
    mbatch_add_token(&b, 1, 0, 0);
    mbatch_add_seg(&b, (AttnSeg){.q_start = 0, .q_len = 1, .k_start = 0, .k_len = 3, .causal = 1});
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "key rows outside"));
    mbatch_clear(&b);
    mbatch_add_seq(&b, SEQ2, N2, N2);
    mbatch_add_target(&b, 6, 1);
    CHECK(forward_err(&b, 16, &e) == -1 && strstr(e.msg, "target 0: row 6"));
    mbatch_free(&b);
    ModelConfig bad = C;
    bad.kv_heads = 3;
    CHECK(model_config_check(&bad, &e) == -1 && strstr(e.msg, "kv_heads"));
}

int main(void) {
    setup();
    RUN(test_gradients_fd);
    RUN(test_decode_matches_forward);
    RUN(test_shared_prefix_decode);
    RUN(test_shared_prefix_training);
    RUN(test_recompute_bit_identical);
    RUN(test_acts_size);
    RUN(test_errors);
    Ops *o = M.ops;
    model_free(&M);
    ops_destroy(o);
    free(FEAT);
    return test_summary("test_model");
}
