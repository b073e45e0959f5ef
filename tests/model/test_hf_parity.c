// Parity with Hugging Face transformers: loads the tiny random Qwen2-Audio written by
// tests/reference/hf_model.py (tests/fixtures/model/tiny-hf) with model_load_dir, runs the same inputs
// (features, mask, ids, weighted targets) and compares logits, the loss and EVERY parameter gradient
// with expected.safetensors (HF fp32, eager attention).
#include "test.h"
#include "model_testutil.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

static void test_parity(void) {
    Err e;
    ModelConfig cfg;
    ParamTable t;
    float *host;
    const char *dir = SRC_PATH("tests/fixtures/model/tiny-hf");
    int rc = model_load_dir(dir, &cfg, &t, &host, &e);
    CHECKF(rc == 0, "%s\n     (the fixture comes from tests/reference/hf_model.py, run on the GPU machine)",
           e.msg);
    if (rc) return;
    StReader r;
    rc = st_open(&r, SRC_PATH("tests/fixtures/model/expected.safetensors"), &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc) return;
    Model m;
    model_init(&m, &cfg, ops_cpu_create(), host);
    size_t n_ids, n_mask, n_feat, n_tgt, n_tid, n_w, n_logits, n_loss;
    int *ids = read_i32(&r, "input_ids", &n_ids), *mask = read_i32(&r, "feature_attention_mask", &n_mask);
    int *tgt_row = read_i32(&r, "tgt_row", &n_tgt), *tgt_id = read_i32(&r, "tgt_id", &n_tid);
    float *feat = read_f32(&r, "input_features", &n_feat), *w = read_f32(&r, "tgt_w", &n_w);
    float *logits_ref = read_f32(&r, "logits", &n_logits), *loss_ref = read_f32(&r, "loss", &n_loss);
    if (ids && mask && tgt_row && tgt_id && feat && w && logits_ref && loss_ref) {
        const int T = (int)n_ids, V = cfg.vocab;
        CHECK_INT(n_feat, (size_t)cfg.n_mels * 2 * cfg.a_max_pos);
        CHECK_INT(n_logits, (size_t)T * V);
        int valid = 0;
        for (size_t i = 0; i < n_mask; i++) valid += mask[i];
        ModelBatch b;
        mbatch_init(&b, &cfg);
        mbatch_add_seq(&b, ids, T, T);
        for (size_t i = 0; i < n_tgt; i++) mbatch_add_target(&b, tgt_row[i], tgt_id[i]);
        mbatch_add_audio(&b, feat, valid);
        ModelActs *a = model_acts_create(&m, T, 1, (int)n_tgt, 1);
        float *lp = mallocCheck(n_tgt * sizeof(float));
        rc = model_forward(&m, &b, a, lp, &e);
        CHECKF(rc == 0, "%s", e.msg);
        if (rc == 0) {
            int *rows = mallocCheck(T * sizeof(int));
            for (int i = 0; i < T; i++) rows[i] = i;
            float *logits = mallocCheck((size_t)T * V * sizeof(float));
            model_logits(&m, a, rows, T, logits);
            double el = cmp_rel_err(logits, logits_ref, (size_t)T * V);
            double loss = 0;
            for (size_t i = 0; i < n_tgt; i++) loss += (double)w[i] * lp[i];
            printf("hf parity: T=%d, logits max rel error %.2e, loss %.6f vs %.6f\n", T, el, loss, loss_ref[0]);
            CHECK(el < 1e-4);
            CHECK_NEAR(loss, loss_ref[0], 1e-4 * (fabs(loss_ref[0]) + 1));
            float *g = m.ops->alloc(m.ops, m.t.numel * sizeof(float));
            model_backward(&m, &b, a, w, g);
            double worst = 0;
            const char *worst_name = "";
            for (int i = 0; i < m.t.n; i++) {
                const ParamSpec *s = &m.t.specs[i];
                if (!s->trainable) continue;
                char name[128];
                snprintf(name, sizeof name, "grad.%s", s->name);
                size_t n;
                float *ref = read_f32(&r, name, &n);
                if (!ref) continue;
                CHECK_INT(n, s->numel);
                double ei = n == s->numel ? cmp_rel_err(g + s->offset, ref, n) : 1;
                CHECKF(ei < 1e-3, "%s: grad max rel error %.2e", s->name, ei);
                if (ei > worst) worst = ei, worst_name = s->name;
                free(ref);
            }
            printf("hf parity: worst gradient max rel error %.2e (%s)\n", worst, worst_name);
            m.ops->free(m.ops, g);
            free(rows);
            free(logits);
        }
        free(lp);
        model_acts_free(&m, a);
        mbatch_free(&b);
    }
    free(ids), free(mask), free(tgt_row), free(tgt_id), free(feat), free(w), free(logits_ref), free(loss_ref);
    st_close(&r);
    Ops *o = m.ops;
    model_free(&m);
    ops_destroy(o);
    param_table_free(&t);
    free(host);
}

int main(void) {
    RUN(test_parity);
    return test_summary("test_hf_parity");
}
