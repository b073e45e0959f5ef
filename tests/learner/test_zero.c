// Host logic of the GPU learners: the model's gradient ranges (they tile the buffer from the top down,
// and model_backward reports each one in order, only once nothing more is added to it, with and
// without audio, tied and untied, stored and recomputed activations), the ZeRO-1 bucket and shard layout for 1-4 ranks and several bucket
// caps (buckets tile the buffer, pieces partition each bucket, shards round-trip, readiness), bad
// layouts, and the config keys of the GPU learner.
#include "config/config.h"
#include "model/memplan.h"
#include "model/model_testutil.h"
#include "test.h"
#include "zero.h"

static void ranges_tile(const Model *m) {
    int n = model_grad_range_count(&m->cfg);
    GradRange *r = mallocCheck((size_t)n * sizeof *r);
    model_grad_ranges(m, r);
    size_t top = m->t.numel;
    for (int i = 0; i < n; i++) {
        CHECKF(r[i].hi == top && r[i].lo <= r[i].hi, "range %d [%zu, %zu), expected to end at %zu", i, r[i].lo,
               r[i].hi, top);
        top = r[i].lo;
    }
    CHECK(top == 0);
    free(r);
}

static void test_ranges_tile(void) {
    for (int tied = 0; tied < 2; tied++)
        for (int a_layers = 0; a_layers < 3; a_layers += 2) {
            ModelConfig c = tiny_config();
            c.tie_embeddings = tied, c.a_layers = a_layers;
            Model m = {.cfg = c};
            param_table_build(&m.t, &c);
            ranges_tile(&m);
            param_table_free(&m.t);
        }
}

// ---------------------------------------------------------------- the backward hook

typedef struct {
    Model *m;
    Tensor *grads;
    GradRange *r;
    float *snap;  // [numel] each range's gradient when it was reported
    int next;     // the range expected next
    int out_of_order;
} HookCtx;

static void record(void *p, int i) {
    HookCtx *h = p;
    if (i != h->next) h->out_of_order++;
    h->next = i + 1;
    size_t n = h->r[i].hi - h->r[i].lo;
    if (n) h->m->ops->download_act(h->m->ops, h->snap + h->r[i].lo, ops_at(h->m->ops, h->grads, h->r[i].lo), n);
}

enum { AU = 37 };
static const int SEQ_AUDIO[] = {38, 1, AU, AU, AU, 2, 5, 6, 7, 8, 9};
static const int SEQ_TEXT[] = {38, 3, 4, 11, 12, 13};

// One backward with the hook on (gradients accumulated on top of an earlier backward, as the last
// micro-batch does): every range reported once, in order, holding its final value.
static void hook_case(int tied, int with_audio, ActsMode mode) {
    ModelConfig c = tiny_config();
    c.tie_embeddings = tied;
    ParamTable t;
    param_table_build(&t, &c);
    float *p = tiny_params(&t, 7);
    Model m;
    model_init(&m, &c, ops_cpu_create(), p);
    ModelBatch b;
    mbatch_init(&b, &c);
    float *feat = NULL;
    if (with_audio) {
        Rng rng;
        rng_init(&rng, 99, 1);
        size_t nf = (size_t)c.n_mels * 2 * c.a_max_pos;
        feat = mallocCheck(nf * sizeof(float));
        fill_normal(feat, nf, 1.0f, &rng);
        mbatch_add_seq(&b, SEQ_AUDIO, 11, 6);
        mbatch_add_audio(&b, feat, 13);
    } else {
        mbatch_add_seq(&b, SEQ_TEXT, 6, 2);
    }
    ModelActs *a = model_acts_create(&m, b.n_tokens, b.n_audio, b.n_tgt, mode);
    float lp[16], dlp[16];
    for (int i = 0; i < b.n_tgt; i++) dlp[i] = 0.25f * (float)(i + 1);
    Err e;
    Tensor *grads = m.ops->alloc(m.ops, t.numel * m.ops->act_size);
    CHECKF(model_forward(&m, &b, a, lp, &e) == 0, "%s", e.msg);
    model_backward(&m, &b, a, dlp, grads);  // an earlier micro-batch: no hook
    int n = model_grad_range_count(&c);
    HookCtx h = {.m = &m, .grads = grads, .r = mallocCheck((size_t)n * sizeof(GradRange)),
                 .snap = callocCheck(t.numel, sizeof(float))};
    model_grad_ranges(&m, h.r);
    m.grad_ready = record, m.grad_ctx = &h;
    CHECKF(model_forward(&m, &b, a, lp, &e) == 0, "%s", e.msg);
    model_backward(&m, &b, a, dlp, grads);
    CHECKF(h.out_of_order == 0 && h.next == n, "tied %d audio %d mode %d: %d ranges out of order, last %d of %d",
           tied, with_audio, (int)mode, h.out_of_order, h.next, n);
    float *fin = mallocCheck(t.numel * sizeof(float));
    m.ops->download_act(m.ops, fin, grads, t.numel);
    size_t differ = 0, nonzero = 0;
    for (size_t i = 0; i < t.numel; i++) differ += fin[i] != h.snap[i], nonzero += fin[i] != 0;
    CHECKF(differ == 0, "tied %d audio %d mode %d: %zu gradient entries changed after their range was reported",
           tied, with_audio, (int)mode, differ);
    CHECK(nonzero > 0);
    m.grad_ready = NULL;
    free(fin);
    free(h.r);
    free(h.snap);
    free(feat);
    m.ops->free(m.ops, grads);
    model_acts_free(&m, a);
    mbatch_free(&b);
    Ops *o = m.ops;
    model_free(&m);
    ops_destroy(o);
    param_table_free(&t);
    free(p);
}

static void test_backward_hook(void) {
    for (int tied = 0; tied < 2; tied++)
        for (int audio = 0; audio < 2; audio++) {
            hook_case(tied, audio, ACTS_TRAIN);
            hook_case(tied, audio, ACTS_RECOMPUTE);  // layers rerun their forward between the reports
        }
}

// ---------------------------------------------------------------- layout

static void layout_case(const Model *m, int L, size_t cap) {
    int nr = model_grad_range_count(&m->cfg);
    GradRange *r = mallocCheck((size_t)nr * sizeof *r);
    model_grad_ranges(m, r);
    ZeroLayout z;
    Err e;
    CHECKF(zero_layout_build(&z, r, nr, m->t.numel, cap, L, &e) == 0, "%s", e.msg);
    size_t top = m->t.numel, shard = 0, max_padded = 0;
    int ready = -1, bad = 0;
    for (int b = 0; b < z.n_buckets; b++) {
        const ZeroBucket *k = &z.b[b];
        bad += k->lo + k->n != top || k->n == 0 || k->n > cap || k->shard_off != shard;
        bad += k->piece != (k->n + (size_t)L - 1) / (size_t)L;
        // final after the last range that overlaps it, and that is never earlier than the bucket before
        int last = -1;
        for (int i = 0; i < nr; i++)
            if (r[i].lo < k->lo + k->n && r[i].hi > k->lo) last = i;
        bad += k->ready_at != last || k->ready_at < ready;
        ready = k->ready_at;
        size_t covered = k->lo;
        for (int q = 0; q < L; q++) {  // pieces in rank order partition the bucket
            size_t lo, n;
            zero_piece(&z, b, q, &lo, &n);
            bad += (n && lo != covered) || n > k->piece;
            covered += n;
        }
        bad += covered != k->lo + k->n;
        top = k->lo;
        shard += k->piece;
        if (k->piece * (size_t)L > max_padded) max_padded = k->piece * (size_t)L;
    }
    CHECKF(bad == 0 && top == 0 && z.shard_n == shard && z.max_padded == max_padded,
           "L %d cap %zu: %d bad buckets (of %d), bottom %zu", L, cap, bad, z.n_buckets, top);
    // Shards: full -> every rank's shard -> full again; padding is zero.
    size_t N = m->t.numel;
    float *full = mallocCheck(N * sizeof(float)), *back = callocCheck(N, sizeof(float));
    float *sh = mallocCheck((z.shard_n + 1) * sizeof(float));
    for (size_t i = 0; i < N; i++) full[i] = (float)i + 0.5f;
    size_t pad_nonzero = 0, owned = 0;
    for (int q = 0; q < L; q++) {
        zero_shard_gather(&z, q, full, sh);
        for (int b = 0; b < z.n_buckets; b++) {
            size_t lo, n;
            zero_piece(&z, b, q, &lo, &n);
            owned += n;
            for (size_t j = n; j < z.b[b].piece; j++) pad_nonzero += sh[z.b[b].shard_off + j] != 0;
        }
        zero_shard_scatter(&z, q, sh, back);
    }
    CHECK(owned == N && pad_nonzero == 0);
    CHECK(memcmp(full, back, N * sizeof(float)) == 0);
    free(full);
    free(back);
    free(sh);
    zero_layout_free(&z);
    free(r);
}

static void test_layout(void) {
    for (int tied = 0; tied < 2; tied++) {
        ModelConfig c = tiny_config();
        c.tie_embeddings = tied;
        Model m = {.cfg = c};
        param_table_build(&m.t, &c);
        // caps: smaller than most tensors (splits), a few layers per bucket, the whole model in one
        const size_t caps[] = {7, 100, 1000, (size_t)1 << 30};
        for (int L = 1; L <= 4; L++)
            for (int i = 0; i < 4; i++) layout_case(&m, L, caps[i]);
        param_table_free(&m.t);
    }
}

static void test_bad_layout(void) {
    GradRange r[3] = {{60, 100}, {20, 60}, {0, 20}};
    ZeroLayout z;
    Err e;
    CHECK(zero_layout_build(&z, r, 3, 100, 10, 2, &e) == 0);
    CHECK_INT(z.n_buckets, 10);
    zero_layout_free(&z);
    CHECK(zero_layout_build(&z, r, 3, 100, 10, 0, &e) == -1 && strstr(e.msg, "0 ranks"));
    CHECK(zero_layout_build(&z, r, 3, 100, 0, 2, &e) == -1 && strstr(e.msg, "buckets of 0"));
    CHECK(zero_layout_build(&z, r, 3, 120, 10, 2, &e) == -1 && strstr(e.msg, "range 0 is [60, 100)"));
    GradRange gap[3] = {{60, 100}, {20, 50}, {0, 20}};
    CHECK(zero_layout_build(&z, gap, 3, 100, 10, 2, &e) == -1 && strstr(e.msg, "expected one ending at 60"));
    CHECK(zero_layout_build(&z, r, 2, 100, 10, 2, &e) == -1 && strstr(e.msg, "[0, 20) uncovered"));
}

// ---------------------------------------------------------------- config

static void test_config_keys(void) {
    Config c;
    Err e;
    config_defaults(&c);
    CHECK_INT(c.train.grad_bucket_mb, 256);
    CHECK_NEAR(c.train.nccl_timeout_s, 600, 0);
    CHECK(config_set(&c, "train.grad_bucket_mb=0", &e) == -1 && strstr(e.msg, "train.grad_bucket_mb"));
    CHECK(config_set(&c, "train.nccl_timeout_s=0", &e) == -1 && strstr(e.msg, "train.nccl_timeout_s"));
    CHECK(config_set(&c, "train.nccl_timeout_s=30", &e) == 0 && c.train.nccl_timeout_s == 30);
    // the memory plan's defaults are the learner's: bucket size and the pinned ring of the weights
    MemPlanOptions o = memplan_defaults();
    CHECK_INT(o.bucket_mb, c.train.grad_bucket_mb);
    CHECK_INT(o.ring_slots, ZERO_RING);
}

// A source that fails on the range holding element 150 (a damaged file): its error comes back as it is.
static int failing_read(void *ctx, size_t lo, size_t n, float *out, Err *e) {
    if (lo <= 150 && 150 < lo + n) return err_set(e, "tensor 'x': damaged");
    for (size_t i = 0; i < n; i++) out[i] = (float)(lo + i);
    return 0;
}

// zero_piece_read: each rank's piece of a bucket from a source, padding zeroed even where out held
// something; a failing source's error returned.
static void test_piece_read(void) {
    GradRange r[1] = {{0, 201}};
    ZeroLayout z;
    Err e;
    CHECKF(zero_layout_build(&z, r, 1, 201, 100, 2, &e) == 0, "%s", e.msg);
    ZeroSource ok = {.read = failing_read};
    float out[64];
    size_t bad = 0;
    int hit = 0;
    for (int b = 0; b < z.n_buckets; b++)
        for (int q = 0; q < 2; q++) {
            size_t lo, n;
            zero_piece(&z, b, q, &lo, &n);
            for (size_t i = 0; i < 64; i++) out[i] = -1;
            int rc = zero_piece_read(&z, b, q, &ok, out, &e);
            if (lo <= 150 && 150 < lo + n) {
                CHECK(rc == -1 && strstr(e.msg, "damaged"));
                hit++;
                continue;
            }
            CHECK(rc == 0);
            for (size_t i = 0; i < z.b[b].piece; i++) bad += out[i] != (i < n ? (float)(lo + i) : 0.0f);
        }
    CHECK(bad == 0 && hit == 1);
    zero_layout_free(&z);
}

int main(void) {
    RUN(test_ranges_tile);
    RUN(test_backward_hook);
    RUN(test_layout);
    RUN(test_bad_layout);
    RUN(test_config_keys);
    RUN(test_piece_read);
    return test_summary("zero");
}
