#include "model/cuda/model_load_device.h"

#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/safetensors.h"
#include "util/fileio.h"

static int shape_matches(const StTensor *x, const ParamSpec *s) {
    if (x->ndim != s->ndim) return 0;
    for (int d = 0; d < s->ndim; d++)
        if (x->shape[d] != s->shape[d]) return 0;
    return 1;
}

// Every file tensor must be a table tensor (a tied checkpoint may carry lm_head, a copy of embed_tokens).
static int check_unexpected(const StReader *r, const ParamTable *t, Err *e) {
    const ParamSpec *emb = &t->specs[t->embed];
    for (int i = 0; i < r->n; i++) {
        const StTensor *x = &r->tensors[i];
        if (param_find(t, x->name) >= 0) continue;
        if (t->lm_head == t->embed && strcmp(x->name, "language_model.lm_head.weight") == 0) {
            if (!shape_matches(x, emb))
                return err_set(e, "%s: tensor '%s' does not have embed_tokens' shape [%lld, %lld]",
                               st_tensor_file(r, x), x->name, (long long)emb->shape[0], (long long)emb->shape[1]);
            continue;
        }
        return err_set(e, "%s: unexpected tensor '%s' (not part of the model this config.json describes)",
                       st_tensor_file(r, x), x->name);
    }
    return 0;
}

int model_load_device(Model *m, const char *dir, Ops *o, Err *e) {
    ModelConfig c;
    char cfg_path[4096];
    if (hf_config_load(path_join(cfg_path, sizeof cfg_path, dir, "config.json"), &c, e)) return -1;
    if (model_config_check(&c, e)) return err_prefix(e, "%s", cfg_path);
    StReader r;
    if (checkpoint_open(&r, dir, e)) return -1;
    ParamTable t;
    param_table_build(&t, &c);
    int rc = check_unexpected(&r, &t, e);
    for (int i = 0; i < t.n && !rc; i++) {
        const ParamSpec *s = &t.specs[i];
        const StTensor *x = st_find(&r, s->name);
        if (!x) rc = err_set(e, "%s: missing tensor '%s'", r.source, s->name);
        else if (!shape_matches(x, s))
            rc = err_set(e, "%s: tensor '%s' has %d dims [%lld, ...], the config wants %d [%lld, ...]",
                         st_tensor_file(&r, x), s->name, x->ndim, (long long)x->shape[0], s->ndim,
                         (long long)s->shape[0]);
    }
    if (rc) {
        st_close(&r);
        param_table_free(&t);
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->cfg = c, m->t = t, m->ops = o;
    m->params = o->alloc(o, t.numel * o->act_size);
    float *tmp = NULL;  // fp32 staging of one tensor (non-bf16 files or non-bf16 backends)
    size_t tmp_n = 0;
    for (int i = 0; i < t.n && !rc; i++) {
        const ParamSpec *s = &t.specs[i];
        const StTensor *x = st_find(&r, s->name);
        Tensor *dst = ops_at(o, m->params, s->offset);
        if (x->dtype == ST_BF16 && o->act_size == 2) {
            o->upload(o, dst, x->data, x->nbytes);  // bf16 storage: the file's bytes as they are
            continue;
        }
        if (s->numel > tmp_n) {
            tmp_n = s->numel;
            tmp = reallocCheck(tmp, tmp_n * sizeof(float));
        }
        rc = st_to_f32(&r, x, tmp, e);
        if (!rc) o->upload_act(o, dst, tmp, s->numel);
    }
    o->sync(o);
    free(tmp);
    st_close(&r);
    if (rc) model_free(m);
    return rc;
}
