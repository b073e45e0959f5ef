// model.c: Qwen2-Audio forward (training and KV-cache inference), target log-probs and backward, all
// through the ops interface. Each encoder and decoder layer has one forward and one backward function;
// with recompute, backward reruns a layer's forward from its saved input just before that layer's
// backward. Shapes: T packed tokens, D hidden, Q = heads*head_dim, KV = kv_heads*head_dim,
// FF ffn; audio: nA clips, F = 2P mel frames, P = a_max_pos encoder positions, A a_dim, Ta = nA*P rows,
// Tp = Ta/2 pooled rows.
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio_len.h"

#define AT(t, n) ops_at(m->ops, (t), (size_t)(n))
#define PW(i) AT(m->params, m->t.specs[(i)].offset)
#define GW(i) AT(grads, m->t.specs[(i)].offset)

typedef struct {
    Tensor *a1, *q, *k, *v, *att, *xmid, *a2, *f1, *f1g;
    float *mean1, *rstd1, *lse, *mean2, *rstd2;
} AudioLayerActs;

typedef struct {
    Tensor *ln1, *q, *k, *v, *att, *xmid, *ln2, *g, *u, *s;
    float *rstd1, *lse, *rstd2;
} TextLayerActs;

typedef struct {
    void **dst;
    size_t bytes;
    ActsPart part;
} ActSlot;

struct ModelActs {
    int max_tokens, max_audio, max_tgt, chunk;
    ActsMode mode;
    int n_ax, n_x, n_al, n_tl;  // stored residual inputs and layer activation sets (all, or scratch)
    ActSlot *slots;             // the size table
    int n_slots, cap_slots;
    size_t bytes;
    size_t act_size;  // bytes per Tensor element of the backend the table is for
    void *mem;        // one backend allocation carved by the slots
    // audio encoder
    Tensor *features;  // [nA, n_mels, F]
    Tensor *cols1;     // [nA*F, n_mels*3]
    Tensor *c1, *c1g;  // [nA*F, A] conv1 output before / after GELU
    Tensor *cols2;     // [Ta, 3A]
    Tensor *c2;        // [Ta, A] conv2 output before GELU
    Tensor **ax;       // [n_ax] residual stream [Ta, A], ax[l] = input of layer l
    AudioLayerActs *al;
    Tensor *pool, *af;         // [Tp, A]
    float *af_mean, *af_rstd;  // [Tp]
    Tensor *proj;              // [Tp, D]
    // decoder
    Tensor **x;  // [n_x] residual stream [T, D]
    TextLayerActs *tl;
    Tensor *lnf;               // [T, D]
    float *rstdf;              // [T]
    Tensor *hsel;              // [max_tgt, D] final hidden of target rows
    float *lp, *lse_lp, *dlp;  // [max_tgt]
    Tensor *logits;            // [chunk, V]
    Tensor *gsel;              // [chunk, D]
    int *ids, *pos, *kv_row, *emb_idx, *audio_pos, *audio_src, *tgt_row, *tgt_id, *rows;
    // gradients (training modes only)
    Tensor *dx, *dln, *datt, *dq, *dk, *dv, *dff1, *dff2, *dhsel;  // decoder
    Tensor *dxa, *dlna, *datta, *dqa, *dka, *dva, *dfa;            // audio layers
    Tensor *dproj, *daf, *dpool, *dcols2, *dc1;                    // audio ends
    // host state of the last batch
    AttnSeg *aseg;                               // [max_audio] encoder segments (host)
    int *h_emb_idx, *h_audio_pos, *h_audio_src;  // [max_tokens] host staging
    int T, nA, n_audio_tok, n_tgt;
    int inplace;    // this forward runs the fused layers, which update one residual buffer in place
    Tensor *fused;  // [T, max(Q + 2 KV, 2 FF)] their stacked projections' output (fused_infer backends)
};

const char *const acts_part_names[ACTS_PARTS] = {
    [ACTS_PART_INPUTS] = "layer inputs",   [ACTS_PART_LAYERS] = "layer activations",
    [ACTS_PART_AUDIO] = "audio conv/pool", [ACTS_PART_HEAD] = "final norm, targets, indices",
    [ACTS_PART_LOGITS] = "lm_head chunk",  [ACTS_PART_BACKWARD] = "backward scratch",
};

// ---------------------------------------------------------------- config and init

int model_config_check(const ModelConfig *c, Err *e) {
    if (c->a_heads <= 0 || c->a_dim % c->a_heads)
        return err_set(e, "a_dim %d not divisible by a_heads %d", c->a_dim, c->a_heads);
    if (c->heads <= 0 || c->kv_heads <= 0 || c->heads % c->kv_heads)
        return err_set(e, "heads %d not a multiple of kv_heads %d", c->heads, c->kv_heads);
    if (c->head_dim <= 0 || c->head_dim % 2)
        return err_set(e, "head_dim %d must be even and positive", c->head_dim);
    if (c->a_max_pos <= 0 || c->a_max_pos % 2)
        return err_set(e, "a_max_pos %d must be even and positive", c->a_max_pos);
    if (c->audio_token_id < 0 || c->audio_token_id >= c->vocab)
        return err_set(e, "audio_token_id %d outside vocab %d", c->audio_token_id, c->vocab);
    if (c->dim <= 0 || c->ffn <= 0 || c->a_ffn <= 0 || c->n_mels <= 0 || c->layers < 0 || c->a_layers < 0)
        return err_set(e, "non-positive model dimension");
    return 0;
}

void model_init_at(Model *m, const ModelConfig *cfg, Ops *ops, const float *host_params, Tensor *params) {
    Err e;
    if (model_config_check(cfg, &e)) fatal("model config: %s", e.msg);
    m->cfg = *cfg;
    m->ops = ops;
    m->grad_ready = NULL, m->grad_ctx = NULL;
    param_table_build(&m->t, cfg);
    m->params_borrowed = params != NULL;
    m->params = params ? params : ops->alloc(ops, m->t.numel * ops->act_size);
    if (host_params) ops->upload_act(ops, m->params, host_params, m->t.numel);
}

void model_init(Model *m, const ModelConfig *cfg, Ops *ops, const float *host_params) {
    model_init_at(m, cfg, ops, host_params, NULL);
}

void model_params_move(Model *m, Tensor *dst) {
    m->ops->copy(m->ops, dst, m->params, m->t.numel * m->ops->act_size);
    if (!m->params_borrowed) m->ops->free(m->ops, m->params);
    m->params = dst;
    m->params_borrowed = 1;
}

void model_free(Model *m) {
    if (!m->params_borrowed) m->ops->free(m->ops, m->params);
    param_table_free(&m->t);
    memset(m, 0, sizeof *m);
}

// ---------------------------------------------------------------- activations

static void slot(ModelActs *a, void *dst, size_t bytes, ActsPart part) {
    if (a->n_slots == a->cap_slots) {
        a->cap_slots = a->cap_slots ? 2 * a->cap_slots : 256;
        a->slots = reallocCheck(a->slots, (size_t)a->cap_slots * sizeof(ActSlot));
    }
    a->slots[a->n_slots++] = (ActSlot){(void **)dst, (bytes + 63) & ~(size_t)63, part};
}
#define ACT(dst, n) slot(a, &(dst), (size_t)(n) * a->act_size, part)
#define F32(dst, n) slot(a, &(dst), (size_t)(n) * sizeof(float), part)
#define I32(dst, n) slot(a, &(dst), (size_t)(n) * sizeof(int), part)

// The size table: every buffer of the activations with its size and part; a->bytes gets the total.
// Recompute keeps what ACTS_TRAIN keeps except the per-layer activations, of which one layer of scratch
// serves the forward and each layer's rerun in backward.
static ModelActs *acts_table(const ModelConfig *c, size_t act_size, int max_tokens, int max_audio, int max_tgt,
                             ActsMode mode) {
    ModelActs *a = callocCheck(1, sizeof *a);
    a->max_tokens = max_tokens, a->max_audio = max_audio, a->max_tgt = max_tgt, a->mode = mode;
    a->act_size = act_size;
    const int train = mode != ACTS_INFER;
    const size_t T = (size_t)max_tokens, D = c->dim, Q = (size_t)c->heads * c->head_dim;
    const size_t KV = (size_t)c->kv_heads * c->head_dim, FF = c->ffn, V = c->vocab;
    const size_t A = c->a_dim, AF = c->a_ffn, P = c->a_max_pos, F = 2 * P, nA = max_audio;
    const size_t Ta = nA * P, Tp = Ta / 2, Tl = T > (size_t)max_tgt ? T : (size_t)max_tgt;
    // lm_head rows per chunk: a 128 MiB logits workspace bounds memory for any vocabulary, and is large
    // enough that a group's targets (8 x 32 at the 7B vocabulary) fit one chunk: every chunk's weight
    // gradient streams the whole [V, D] lm_head gradient (1.1 GB at 7B), so small chunks cost ~1 ms each
    a->chunk = (int)(((size_t)128 << 20) / (V * act_size));
    if (a->chunk < 1) a->chunk = 1;
    if ((size_t)a->chunk > Tl) a->chunk = (int)(Tl ? Tl : 1);
    a->n_ax = train ? c->a_layers + 1 : 2;
    a->n_x = train ? c->layers + 1 : 2;
    a->n_al = mode == ACTS_TRAIN ? c->a_layers : 1;
    a->n_tl = mode == ACTS_TRAIN ? c->layers : 1;
    a->ax = callocCheck((size_t)a->n_ax, sizeof(Tensor *));
    a->x = callocCheck((size_t)a->n_x, sizeof(Tensor *));
    a->al = callocCheck((size_t)a->n_al, sizeof(AudioLayerActs));
    a->tl = callocCheck((size_t)a->n_tl, sizeof(TextLayerActs));

    ActsPart part;
    if (nA) {
        part = ACTS_PART_AUDIO;
        ACT(a->features, nA * c->n_mels * F);
        ACT(a->cols1, nA * F * c->n_mels * 3);
        ACT(a->c1, nA * F * A);
        ACT(a->c1g, nA * F * A);
        ACT(a->cols2, Ta * 3 * A);
        ACT(a->c2, Ta * A);
        ACT(a->pool, Tp * A), ACT(a->af, Tp * A), F32(a->af_mean, Tp), F32(a->af_rstd, Tp);
        ACT(a->proj, Tp * D);
        part = ACTS_PART_INPUTS;
        for (int l = 0; l < a->n_ax; l++) ACT(a->ax[l], Ta * A);
        part = ACTS_PART_LAYERS;
        for (int l = 0; l < a->n_al; l++) {
            AudioLayerActs *s = &a->al[l];
            ACT(s->a1, Ta * A), F32(s->mean1, Ta), F32(s->rstd1, Ta);
            ACT(s->q, Ta * A), ACT(s->k, Ta * A), ACT(s->v, Ta * A), ACT(s->att, Ta * A);
            F32(s->lse, Ta * c->a_heads), ACT(s->xmid, Ta * A);
            ACT(s->a2, Ta * A), F32(s->mean2, Ta), F32(s->rstd2, Ta), ACT(s->f1, Ta * AF), ACT(s->f1g, Ta * AF);
        }
    }
    part = ACTS_PART_INPUTS;
    for (int l = 0; l < a->n_x; l++) ACT(a->x[l], T * D);
    part = ACTS_PART_LAYERS;
    for (int l = 0; l < a->n_tl; l++) {
        TextLayerActs *s = &a->tl[l];
        ACT(s->ln1, T * D), F32(s->rstd1, T), ACT(s->q, T * Q), ACT(s->k, T * KV), ACT(s->v, T * KV);
        ACT(s->att, T * Q), F32(s->lse, T * c->heads), ACT(s->xmid, T * D), ACT(s->ln2, T * D);
        F32(s->rstd2, T), ACT(s->g, T * FF), ACT(s->u, T * FF), ACT(s->s, T * FF);
    }
    part = ACTS_PART_HEAD;
    ACT(a->lnf, T * D), F32(a->rstdf, T), ACT(a->hsel, (size_t)max_tgt * D);
    F32(a->lp, max_tgt), F32(a->lse_lp, max_tgt), F32(a->dlp, max_tgt);
    I32(a->ids, T), I32(a->pos, T), I32(a->kv_row, T), I32(a->emb_idx, T), I32(a->audio_pos, T);
    I32(a->audio_src, T), I32(a->tgt_row, max_tgt), I32(a->tgt_id, max_tgt), I32(a->rows, Tl);
    part = ACTS_PART_LOGITS;
    ACT(a->logits, (size_t)a->chunk * V), ACT(a->gsel, (size_t)a->chunk * D);
    if (train) {
        part = ACTS_PART_BACKWARD;
        ACT(a->dx, T * D), ACT(a->dln, T * D), ACT(a->datt, T * Q), ACT(a->dq, T * Q);
        ACT(a->dk, T * KV), ACT(a->dv, T * KV), ACT(a->dff1, T * FF), ACT(a->dff2, T * FF);
        ACT(a->dhsel, (size_t)max_tgt * D);
        if (nA) {
            ACT(a->dxa, Ta * A), ACT(a->dlna, Ta * A), ACT(a->datta, Ta * A), ACT(a->dqa, Ta * A);
            ACT(a->dka, Ta * A), ACT(a->dva, Ta * A), ACT(a->dfa, Ta * AF);
            ACT(a->dproj, Tp * D), ACT(a->daf, Tp * A), ACT(a->dpool, Tp * A);
            ACT(a->dcols2, Ta * 3 * A), ACT(a->dc1, nA * F * A);
        }
    }
    for (int i = 0; i < a->n_slots; i++) a->bytes += a->slots[i].bytes;
    return a;
}
#undef ACT
#undef F32
#undef I32

static void acts_table_free(ModelActs *a) {
    free(a->slots);
    free(a->ax);
    free(a->x);
    free(a->al);
    free(a->tl);
    free(a->aseg);
    free(a->h_emb_idx);
    free(a->h_audio_pos);
    free(a->h_audio_src);
    free(a);
}

ActsSize model_acts_size(const ModelConfig *c, size_t act_size, int max_tokens, int max_audio, int max_tgt,
                         ActsMode mode) {
    ModelActs *a = acts_table(c, act_size, max_tokens, max_audio, max_tgt, mode);
    ActsSize z = {.bytes = a->bytes, .chunk = a->chunk};
    for (int i = 0; i < a->n_slots; i++) z.part[a->slots[i].part] += a->slots[i].bytes;
    acts_table_free(a);
    return z;
}

// Inference on a backend with the fused decoder ops (ops.h) runs one GEMM over the stacked q/k/v and
// one over gate/up; training keeps the separate projections its backward reads.
static int fused_infer(const Ops *o, const ModelActs *a) {
    return a->mode == ACTS_INFER && o->swiglu && o->qkv_rope_cache;
}

ModelActs *model_acts_create(Model *m, int max_tokens, int max_audio, int max_tgt, ActsMode mode) {
    ModelActs *a = acts_table(&m->cfg, m->ops->act_size, max_tokens, max_audio, max_tgt, mode);
    a->mem = m->ops->alloc(m->ops, a->bytes);
    size_t off = 0;
    for (int i = 0; i < a->n_slots; i++) {
        *a->slots[i].dst = (char *)a->mem + off;
        off += a->slots[i].bytes;
    }
    const size_t T = (size_t)max_tokens;
    a->aseg = callocCheck(max_audio ? (size_t)max_audio : 1, sizeof(AttnSeg));
    a->h_emb_idx = callocCheck(T ? T : 1, sizeof(int));
    a->h_audio_pos = callocCheck(T ? T : 1, sizeof(int));
    a->h_audio_src = callocCheck(T ? T : 1, sizeof(int));
    // backend-specific, so outside the size table (model_acts_size describes any backend)
    if (fused_infer(m->ops, a)) {
        const ModelConfig *c = &m->cfg;
        const size_t qkv = (size_t)(c->heads + 2 * c->kv_heads) * c->head_dim, gu = 2 * (size_t)c->ffn;
        a->fused = m->ops->alloc(m->ops, T * (qkv > gu ? qkv : gu) * m->ops->act_size);
    }
    return a;
}

void model_acts_free(Model *m, ModelActs *a) {
    if (!a) return;
    m->ops->free(m->ops, a->mem);
    if (a->fused) m->ops->free(m->ops, a->fused);
    acts_table_free(a);
}

size_t model_acts_bytes(const ModelActs *a) { return a->bytes; }

// Residual stream inputs: every layer's in training, two alternating buffers in inference, one updated in
// place by the fused layers.
static Tensor *ax_at(ModelActs *a, int l) { return a->ax[a->mode != ACTS_INFER ? l : l % 2]; }
static Tensor *x_at(ModelActs *a, int l) { return a->x[a->mode != ACTS_INFER ? l : a->inplace ? 0 : l % 2]; }
// Layer activations: each layer's own with ACTS_TRAIN, else the one scratch set.
static AudioLayerActs *al_at(ModelActs *a, int l) { return &a->al[a->mode == ACTS_TRAIN ? l : 0]; }
static TextLayerActs *tl_at(ModelActs *a, int l) { return &a->tl[a->mode == ACTS_TRAIN ? l : 0]; }

// ---------------------------------------------------------------- validation

static int segs_check(const ModelBatch *b, int key_rows, Err *e) {
    unsigned char *seen = callocCheck((size_t)b->n_tokens, 1);
    int rc = 0;
    for (int i = 0; i < b->n_segs && !rc; i++) {
        const AttnSeg *s = &b->segs[i];
        if (s->q_len < 1 || s->q_start < 0 || s->q_start + s->q_len > b->n_tokens)
            rc = err_set(e, "segment %d: query rows [%d, %d) outside the batch's %d tokens", i, s->q_start,
                         s->q_start + s->q_len, b->n_tokens);
        else if (s->pre_len < 0 || s->pre_start < 0 || s->pre_start + s->pre_len > key_rows || s->k_start < 0 ||
                 s->k_len < 0 || s->k_start + s->k_len > key_rows)
            rc = err_set(e, "segment %d: key rows outside [0, %d)", i, key_rows);
        else if (s->causal && s->k_len < s->q_len)
            rc = err_set(e, "segment %d: causal with %d own keys for %d queries", i, s->k_len, s->q_len);
        else if (!s->causal && s->k_len + s->pre_len < 1)
            rc = err_set(e, "segment %d: no visible keys", i);
        for (int j = 0; j < s->q_len && !rc; j++) {
            if (seen[s->q_start + j])
                rc = err_set(e, "segment %d: row %d already in another segment", i, s->q_start + j);
            seen[s->q_start + j] = 1;
        }
    }
    for (int r = 0; r < b->n_tokens && !rc; r++)
        if (!seen[r]) rc = err_set(e, "row %d is in no attention segment", r);
    free(seen);
    return rc;
}

// Checks the batch against the model and the activation capacity; fills the host merge tables.
static int batch_check(Model *m, const ModelBatch *b, ModelActs *a, const KVCache *kv, Err *e) {
    const ModelConfig *c = &m->cfg;
    if (b->n_tokens < 1 || b->n_tokens > a->max_tokens)
        return err_set(e, "batch has %d tokens; activations hold 1..%d", b->n_tokens, a->max_tokens);
    if (b->n_audio > a->max_audio)
        return err_set(e, "batch has %d audio clips; activations hold %d", b->n_audio, a->max_audio);
    if (b->n_tgt > a->max_tgt)
        return err_set(e, "batch has %d targets; activations hold %d", b->n_tgt, a->max_tgt);
    if (b->n_audio && (b->audio_frames != 2 * c->a_max_pos || b->n_mels != c->n_mels))
        return err_set(e, "audio features are [%d, %d]; the model takes [%d, %d]", b->n_mels, b->audio_frames,
                       c->n_mels, 2 * c->a_max_pos);
    int n_audio_tok = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->ids[i] < 0 || b->ids[i] >= c->vocab)
            return err_set(e, "token %d: id %d outside vocab [0, %d)", i, b->ids[i], c->vocab);
        if (b->pos[i] < 0) return err_set(e, "token %d: negative position %d", i, b->pos[i]);
        if (kv && (b->kv_row[i] < 0 || b->kv_row[i] >= kv->rows))
            return err_set(e, "token %d: cache row %d outside [0, %d)", i, b->kv_row[i], kv->rows);
        // without clips (decode steps, text-only batches) <|AUDIO|> is a plain embedding, as in HF when
        // input_features is None
        int is_audio = b->n_audio > 0 && b->ids[i] == c->audio_token_id;
        if (is_audio) a->h_audio_pos[n_audio_tok++] = i;
        a->h_emb_idx[i] = is_audio ? -1 : b->ids[i];
    }
    int total = 0;
    for (int i = 0; i < b->n_audio; i++) {
        int L = b->valid[i];
        if (L < 1 || L > b->audio_frames)
            return err_set(e, "audio %d: %d valid frames outside [1, %d]", i, L, b->audio_frames);
        total += audio_token_count(L);
    }
    if (total != n_audio_tok)
        return err_set(e,
                       "audio features and audio tokens do not match: %d <|AUDIO|> tokens, %d rows from %d clips",
                       n_audio_tok, total, b->n_audio);
    const int half = c->a_max_pos / 2;
    int kept = 0;
    for (int i = 0; i < b->n_audio; i++) {
        a->aseg[i] = (AttnSeg){.q_start = i * c->a_max_pos,
                               .q_len = c->a_max_pos,
                               .k_start = i * c->a_max_pos,
                               .k_len = audio_encoder_len(b->valid[i]),
                               .causal = 0};
        for (int r = 0; r < audio_token_count(b->valid[i]); r++) a->h_audio_src[kept++] = i * half + r;
    }
    for (int i = 0; i < b->n_tgt; i++) {
        if (b->tgt_row[i] < 0 || b->tgt_row[i] >= b->n_tokens)
            return err_set(e, "target %d: row %d outside the batch's %d tokens", i, b->tgt_row[i], b->n_tokens);
        if (b->tgt_id[i] < 0 || b->tgt_id[i] >= c->vocab)
            return err_set(e, "target %d: id %d outside vocab [0, %d)", i, b->tgt_id[i], c->vocab);
    }
    if (segs_check(b, kv ? kv->rows : b->n_tokens, e)) return -1;
    a->n_audio_tok = n_audio_tok;
    return 0;
}

// ---------------------------------------------------------------- forward

// One encoder layer on Ta rows: ax_at(l) -> xn. xn = NULL (the rerun before its backward) stops after
// the last activation backward reads, skipping the output projection nobody needs again.
static void audio_layer_forward(Model *m, ModelActs *a, int l, Tensor *xn) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const AudioLayerParams *p = &m->t.alayer[l];
    AudioLayerActs *s = al_at(a, l);
    const int A = c->a_dim, Ta = a->nA * c->a_max_pos, H = c->a_heads, hd = A / H;
    Tensor *x = ax_at(a, l);
    o->layernorm(o, s->a1, s->mean1, s->rstd1, x, PW(p->ln1_w), PW(p->ln1_b), Ta, A, c->a_ln_eps);
    o->matmul(o, s->q, s->a1, PW(p->q_w), PW(p->q_b), Ta, A, A, 0, 1, 0);
    o->matmul(o, s->k, s->a1, PW(p->k_w), NULL, Ta, A, A, 0, 1, 0);
    o->matmul(o, s->v, s->a1, PW(p->v_w), PW(p->v_b), Ta, A, A, 0, 1, 0);
    o->attention(o, s->att, s->lse, s->q, s->k, s->v, a->aseg, a->nA, H, H, hd, 1.0f / sqrtf((float)hd));
    o->copy(o, s->xmid, x, (size_t)Ta * A * o->act_size);
    o->matmul(o, s->xmid, s->att, PW(p->o_w), PW(p->o_b), Ta, A, A, 0, 1, 1);
    o->layernorm(o, s->a2, s->mean2, s->rstd2, s->xmid, PW(p->ln2_w), PW(p->ln2_b), Ta, A, c->a_ln_eps);
    o->matmul(o, s->f1, s->a2, PW(p->fc1_w), PW(p->fc1_b), Ta, c->a_ffn, A, 0, 1, 0);
    o->gelu(o, s->f1g, s->f1, (size_t)Ta * c->a_ffn);
    if (!xn) return;
    o->copy(o, xn, s->xmid, (size_t)Ta * A * o->act_size);
    o->matmul(o, xn, s->f1g, PW(p->fc2_w), PW(p->fc2_b), Ta, A, c->a_ffn, 0, 1, 1);
}

// Conv front end, 32 encoder blocks, pooling, final LayerNorm and projector -> a->proj [Tp, D].
static void audio_forward(Model *m, ModelActs *a, int nA) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const ParamTable *t = &m->t;
    const int A = c->a_dim, P = c->a_max_pos, F = 2 * P, M3 = c->n_mels * 3, Ta = nA * P, Tp = Ta / 2;
    for (int i = 0; i < nA; i++)  // features [n_mels, F] are channel-major
        o->im2col(o, AT(a->cols1, (size_t)i * F * M3), AT(a->features, (size_t)i * c->n_mels * F), c->n_mels, F, F,
                  1, 3, 1, 1, F);
    o->matmul(o, a->c1, a->cols1, PW(t->conv1_w), PW(t->conv1_b), nA * F, A, M3, 0, 1, 0);
    o->gelu(o, a->c1g, a->c1, (size_t)nA * F * A);
    for (int i = 0; i < nA; i++)  // conv1 output [F, A] is time-major
        o->im2col(o, AT(a->cols2, (size_t)i * P * 3 * A), AT(a->c1g, (size_t)i * F * A), A, F, 1, A, 3, 2, 1, P);
    o->matmul(o, a->c2, a->cols2, PW(t->conv2_w), PW(t->conv2_b), Ta, A, 3 * A, 0, 1, 0);
    Tensor *x0 = ax_at(a, 0);
    o->gelu(o, x0, a->c2, (size_t)Ta * A);
    for (int i = 0; i < nA; i++) {
        Tensor *xi = AT(x0, (size_t)i * P * A);
        o->add(o, xi, xi, PW(t->embed_pos), (size_t)P * A);
    }

    for (int l = 0; l < c->a_layers; l++) audio_layer_forward(m, a, l, ax_at(a, l + 1));
    o->avgpool2(o, a->pool, ax_at(a, c->a_layers), Tp, A);
    o->layernorm(o, a->af, a->af_mean, a->af_rstd, a->pool, PW(t->a_norm_w), PW(t->a_norm_b), Tp, A, c->a_ln_eps);
    o->matmul(o, a->proj, a->af, PW(t->proj_w), PW(t->proj_b), Tp, c->dim, A, 0, 1, 0);
}

// The rest of text_layer_forward with the fused ops (inference with a cache): one GEMM over the stacked
// q/k/v weights (the table keeps them and their biases adjacent), RoPE and the cache writes in one kernel,
// one GEMM over gate/up stacked (both into the one a->fused buffer, used in turn), and both residual
// adds accumulated straight into the residual buffer x (x_at keeps one buffer for such a forward, so
// nothing is copied).
static void text_layer_fused(Model *m, ModelActs *a, const ModelBatch *b, KVCache *kv, int l, Tensor *x) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const TextLayerParams *p = &m->t.tlayer[l];
    TextLayerActs *s = tl_at(a, l);
    const int T = b->n_tokens, D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
    const int FF = c->ffn;
    Tensor *kc = AT(kv->k, (size_t)l * kv->rows * KV), *vc = AT(kv->v, (size_t)l * kv->rows * KV);
    o->matmul(o, a->fused, s->ln1, PW(p->q_w), PW(p->q_b), T, Q + 2 * KV, D, 0, 1, 0);
    o->qkv_rope_cache(o, s->q, kc, vc, a->fused, a->pos, a->kv_row, T, c->heads, c->kv_heads, c->head_dim,
                      c->rope_theta);
    o->attention(o, s->att, s->lse, s->q, kc, vc, b->segs, b->n_segs, c->heads, c->kv_heads, c->head_dim,
                 1.0f / sqrtf((float)c->head_dim));
    o->matmul(o, x, s->att, PW(p->o_w), NULL, T, D, Q, 0, 1, 1);
    o->rmsnorm(o, s->ln2, s->rstd2, x, PW(p->post_norm), T, D, c->rms_eps);
    o->matmul(o, a->fused, s->ln2, PW(p->gate_w), NULL, T, 2 * FF, D, 0, 1, 0);
    o->swiglu(o, s->s, a->fused, T, FF);
    o->matmul(o, x, s->s, PW(p->down_w), NULL, T, D, FF, 0, 1, 1);
}

// One decoder layer on T rows: x_at(l) -> xn. With a cache, keys/values go to cache rows and attention
// reads the cache; otherwise it reads this batch's keys. xn = NULL (the rerun before its backward) stops
// after the last activation backward reads, skipping the down projection.
static void text_layer_forward(Model *m, ModelActs *a, const ModelBatch *b, KVCache *kv, int l, Tensor *xn) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const TextLayerParams *p = &m->t.tlayer[l];
    TextLayerActs *s = tl_at(a, l);
    const int T = b->n_tokens, D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
    const int FF = c->ffn;
    Tensor *x = x_at(a, l);
    o->rmsnorm(o, s->ln1, s->rstd1, x, PW(p->in_norm), T, D, c->rms_eps);
    if (a->inplace) {
        text_layer_fused(m, a, b, kv, l, x);
        return;
    }
    o->matmul(o, s->q, s->ln1, PW(p->q_w), PW(p->q_b), T, Q, D, 0, 1, 0);
    o->matmul(o, s->k, s->ln1, PW(p->k_w), PW(p->k_b), T, KV, D, 0, 1, 0);
    o->matmul(o, s->v, s->ln1, PW(p->v_w), PW(p->v_b), T, KV, D, 0, 1, 0);
    o->rope(o, s->q, a->pos, T, c->heads, c->head_dim, c->rope_theta, 0);
    o->rope(o, s->k, a->pos, T, c->kv_heads, c->head_dim, c->rope_theta, 0);
    const Tensor *K = s->k, *V = s->v;
    if (kv) {
        Tensor *kc = AT(kv->k, (size_t)l * kv->rows * KV), *vc = AT(kv->v, (size_t)l * kv->rows * KV);
        o->copy_rows(o, kc, a->kv_row, s->k, NULL, T, KV, 0);
        o->copy_rows(o, vc, a->kv_row, s->v, NULL, T, KV, 0);
        K = kc, V = vc;
    }
    o->attention(o, s->att, s->lse, s->q, K, V, b->segs, b->n_segs, c->heads, c->kv_heads, c->head_dim,
                 1.0f / sqrtf((float)c->head_dim));
    o->copy(o, s->xmid, x, (size_t)T * D * o->act_size);
    o->matmul(o, s->xmid, s->att, PW(p->o_w), NULL, T, D, Q, 0, 1, 1);
    o->rmsnorm(o, s->ln2, s->rstd2, s->xmid, PW(p->post_norm), T, D, c->rms_eps);
    o->matmul(o, s->g, s->ln2, PW(p->gate_w), NULL, T, FF, D, 0, 1, 0);
    o->matmul(o, s->u, s->ln2, PW(p->up_w), NULL, T, FF, D, 0, 1, 0);
    o->silu_mul(o, s->s, s->g, s->u, (size_t)T * FF);
    if (!xn) return;
    o->copy(o, xn, s->xmid, (size_t)T * D * o->act_size);
    o->matmul(o, xn, s->s, PW(p->down_w), NULL, T, D, FF, 0, 1, 1);
}

// Embeddings, audio merge, decoder layers, final norm -> a->lnf.
static int forward_impl(Model *m, const ModelBatch *b, ModelActs *a, KVCache *kv, Err *e) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    if (batch_check(m, b, a, kv, e)) return -1;
    const int T = b->n_tokens, D = c->dim, nA = b->n_audio;
    a->T = T, a->nA = nA, a->n_tgt = b->n_tgt;
    a->inplace = kv && fused_infer(o, a);
    o->upload(o, a->ids, b->ids, (size_t)T * sizeof(int));
    o->upload(o, a->pos, b->pos, (size_t)T * sizeof(int));
    o->upload(o, a->kv_row, b->kv_row, (size_t)T * sizeof(int));
    o->upload(o, a->emb_idx, a->h_emb_idx, (size_t)T * sizeof(int));
    o->upload(o, a->audio_pos, a->h_audio_pos, (size_t)a->n_audio_tok * sizeof(int));
    o->upload(o, a->audio_src, a->h_audio_src, (size_t)a->n_audio_tok * sizeof(int));
    o->upload(o, a->tgt_row, b->tgt_row, (size_t)b->n_tgt * sizeof(int));
    o->upload(o, a->tgt_id, b->tgt_id, (size_t)b->n_tgt * sizeof(int));

    Tensor *x0 = x_at(a, 0);  // [T, D]
    o->copy_rows(o, x0, NULL, PW(m->t.embed), a->ids, T, D, 0);
    if (nA) {
        o->upload_act(o, a->features, b->features, (size_t)nA * c->n_mels * b->audio_frames);
        audio_forward(m, a, nA);
        o->copy_rows(o, x0, a->audio_pos, a->proj, a->audio_src, a->n_audio_tok, D, 0);
    }
    for (int l = 0; l < c->layers; l++) text_layer_forward(m, a, b, kv, l, x_at(a, l + 1));
    o->rmsnorm(o, a->lnf, a->rstdf, x_at(a, c->layers), PW(m->t.norm), T, D, c->rms_eps);
    return 0;
}

// The lm_head runs on target rows only, a chunk of rows at a time, so [tokens, vocab] never exists.
int model_forward(Model *m, const ModelBatch *b, ModelActs *a, float *lp, Err *e) {
    if (forward_impl(m, b, a, NULL, e)) return -1;
    Ops *o = m->ops;
    const int D = m->cfg.dim, V = m->cfg.vocab;
    o->copy_rows(o, a->hsel, NULL, a->lnf, a->tgt_row, b->n_tgt, D, 0);
    for (int r0 = 0; r0 < b->n_tgt; r0 += a->chunk) {
        int R = b->n_tgt - r0 < a->chunk ? b->n_tgt - r0 : a->chunk;
        o->matmul(o, a->logits, AT(a->hsel, (size_t)r0 * D), PW(m->t.lm_head), NULL, R, V, D, 0, 1, 0);
        o->logprob(o, a->lp + r0, a->lse_lp + r0, a->logits, a->tgt_id + r0, R, V);
    }
    o->download(o, lp, a->lp, (size_t)b->n_tgt * sizeof(float));
    return 0;
}

int model_logits_chunk(const ModelActs *a) { return a->chunk; }

const Tensor *model_logits_device(Model *m, ModelActs *a, const int *rows, int n) {
    Ops *o = m->ops;
    const int D = m->cfg.dim, V = m->cfg.vocab;
    if (n < 1 || n > a->chunk) fatal("model_logits_device: %d rows, the workspace holds 1..%d", n, a->chunk);
    for (int i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= a->T)
            fatal("model_logits: row %d outside the last batch's %d tokens", rows[i], a->T);
    o->upload(o, a->rows, rows, (size_t)n * sizeof(int));
    o->copy_rows(o, a->gsel, NULL, a->lnf, a->rows, n, D, 0);
    o->matmul(o, a->logits, a->gsel, PW(m->t.lm_head), NULL, n, V, D, 0, 1, 0);
    return a->logits;
}

void model_logits(Model *m, ModelActs *a, const int *rows, int n, float *logits) {
    const int V = m->cfg.vocab;
    for (int r0 = 0; r0 < n; r0 += a->chunk) {
        int R = n - r0 < a->chunk ? n - r0 : a->chunk;
        const Tensor *l = model_logits_device(m, a, rows + r0, R);
        m->ops->download_act(m->ops, logits + (size_t)r0 * V, l, (size_t)R * V);
    }
}

const Tensor *model_final_hidden(const ModelActs *a) { return a->lnf; }

// ---------------------------------------------------------------- KV-cache inference

size_t kv_cache_bytes(const ModelConfig *c, size_t act_size, int rows) {
    return 2 * (size_t)c->layers * rows * c->kv_heads * c->head_dim * act_size;
}

void kv_cache_init(KVCache *kv, Model *m, int rows) {
    kv->layers = m->cfg.layers;
    kv->rows = rows;
    kv->kv_dim = m->cfg.kv_heads * m->cfg.head_dim;
    size_t bytes = kv_cache_bytes(&m->cfg, m->ops->act_size, rows) / 2;  // k and v apart
    kv->k = m->ops->alloc(m->ops, bytes);
    kv->v = m->ops->alloc(m->ops, bytes);
}

void kv_cache_free(KVCache *kv, Model *m) {
    m->ops->free(m->ops, kv->k);
    m->ops->free(m->ops, kv->v);
    memset(kv, 0, sizeof *kv);
}

int model_infer(Model *m, const ModelBatch *b, ModelActs *a, KVCache *kv, const int *rows, int n, float *logits,
                Err *e) {
    if (forward_impl(m, b, a, kv, e)) return -1;
    model_logits(m, a, rows, n, logits);
    return 0;
}

// ---------------------------------------------------------------- backward

int model_grad_range_count(const ModelConfig *cfg) { return cfg->layers + cfg->a_layers + 4; }

void model_grad_ranges(const Model *m, GradRange *out) {
    const ParamTable *t = &m->t;
    const ModelConfig *c = &m->cfg;
#define OFF(i) (t->specs[(i)].offset)
    int k = 0;
    out[k++] = (GradRange){OFF(t->norm), t->numel};  // lm_head follows the norm when untied
    for (int l = c->layers - 1; l >= 0; l--)
        out[k++] = (GradRange){OFF(t->tlayer[l].q_w), l + 1 < c->layers ? OFF(t->tlayer[l + 1].q_w) : OFF(t->norm)};
    out[k++] = (GradRange){OFF(t->embed), c->layers ? OFF(t->tlayer[0].q_w) : OFF(t->norm)};
    out[k++] = (GradRange){OFF(t->a_norm_w), OFF(t->embed)};
    for (int l = c->a_layers - 1; l >= 0; l--)
        out[k++] = (GradRange){OFF(t->alayer[l].q_w),
                               l + 1 < c->a_layers ? OFF(t->alayer[l + 1].q_w) : OFF(t->a_norm_w)};
    out[k++] = (GradRange){0, c->a_layers ? OFF(t->alayer[0].q_w) : OFF(t->a_norm_w)};
#undef OFF
}

// Range i (model_grad_ranges order) is final.
static void grad_done(Model *m, int i) {
    if (m->grad_ready) m->grad_ready(m->grad_ctx, i);
}

// a->dx holds d loss / d x_at(l+1); leaves d loss / d x_at(l).
static void text_layer_backward(Model *m, ModelActs *a, const ModelBatch *b, int l, Tensor *grads) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const TextLayerParams *p = &m->t.tlayer[l];
    const TextLayerActs *s = tl_at(a, l);
    const int T = b->n_tokens, D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
    const int FF = c->ffn;
    // MLP: x_{l+1} = xmid + down(silu(gate(ln2)) * up(ln2))
    o->matmul(o, a->dff1, a->dx, PW(p->down_w), NULL, T, FF, D, 0, 0, 0);
    o->matmul(o, GW(p->down_w), a->dx, s->s, NULL, D, FF, T, 1, 0, 1);
    o->silu_mul_bwd(o, a->dff1, a->dff2, a->dff1, s->g, s->u, (size_t)T * FF);
    o->matmul(o, a->dln, a->dff1, PW(p->gate_w), NULL, T, D, FF, 0, 0, 0);
    o->matmul(o, a->dln, a->dff2, PW(p->up_w), NULL, T, D, FF, 0, 0, 1);
    o->matmul(o, GW(p->gate_w), a->dff1, s->ln2, NULL, FF, D, T, 1, 0, 1);
    o->matmul(o, GW(p->up_w), a->dff2, s->ln2, NULL, FF, D, T, 1, 0, 1);
    o->rmsnorm_bwd(o, a->dx, GW(p->post_norm), a->dln, s->xmid, PW(p->post_norm), s->rstd2, T, D);
    // attention: xmid = x + o_proj(attn(rope(q), rope(k), v))
    o->matmul(o, a->datt, a->dx, PW(p->o_w), NULL, T, Q, D, 0, 0, 0);
    o->matmul(o, GW(p->o_w), a->dx, s->att, NULL, D, Q, T, 1, 0, 1);
    o->zero(o, a->dq, (size_t)T * Q * o->act_size);
    o->zero(o, a->dk, (size_t)T * KV * o->act_size);
    o->zero(o, a->dv, (size_t)T * KV * o->act_size);
    o->attention_bwd(o, a->dq, a->dk, a->dv, a->datt, s->att, s->lse, s->q, s->k, s->v, b->segs, b->n_segs,
                     c->heads, c->kv_heads, c->head_dim, 1.0f / sqrtf((float)c->head_dim));
    o->rope(o, a->dq, a->pos, T, c->heads, c->head_dim, c->rope_theta, 1);
    o->rope(o, a->dk, a->pos, T, c->kv_heads, c->head_dim, c->rope_theta, 1);
    o->matmul(o, a->dln, a->dq, PW(p->q_w), NULL, T, D, Q, 0, 0, 0);
    o->matmul(o, a->dln, a->dk, PW(p->k_w), NULL, T, D, KV, 0, 0, 1);
    o->matmul(o, a->dln, a->dv, PW(p->v_w), NULL, T, D, KV, 0, 0, 1);
    o->matmul(o, GW(p->q_w), a->dq, s->ln1, NULL, Q, D, T, 1, 0, 1);
    o->matmul(o, GW(p->k_w), a->dk, s->ln1, NULL, KV, D, T, 1, 0, 1);
    o->matmul(o, GW(p->v_w), a->dv, s->ln1, NULL, KV, D, T, 1, 0, 1);
    o->bias_grad(o, GW(p->q_b), a->dq, T, Q);
    o->bias_grad(o, GW(p->k_b), a->dk, T, KV);
    o->bias_grad(o, GW(p->v_b), a->dv, T, KV);
    o->rmsnorm_bwd(o, a->dx, GW(p->in_norm), a->dln, x_at(a, l), PW(p->in_norm), s->rstd1, T, D);
}

// a->dxa holds d loss / d ax_at(l+1); leaves d loss / d ax_at(l).
static void audio_layer_backward(Model *m, ModelActs *a, int l, Tensor *grads) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const AudioLayerParams *p = &m->t.alayer[l];
    const AudioLayerActs *s = al_at(a, l);
    const int A = c->a_dim, AF = c->a_ffn, Ta = a->nA * c->a_max_pos, H = c->a_heads, hd = A / H;
    // MLP: x_{l+1} = xmid + fc2(gelu(fc1(ln2(xmid))))
    o->matmul(o, a->dfa, a->dxa, PW(p->fc2_w), NULL, Ta, AF, A, 0, 0, 0);
    o->matmul(o, GW(p->fc2_w), a->dxa, s->f1g, NULL, A, AF, Ta, 1, 0, 1);
    o->bias_grad(o, GW(p->fc2_b), a->dxa, Ta, A);
    o->gelu_bwd(o, a->dfa, a->dfa, s->f1, (size_t)Ta * AF);
    o->matmul(o, a->dlna, a->dfa, PW(p->fc1_w), NULL, Ta, A, AF, 0, 0, 0);
    o->matmul(o, GW(p->fc1_w), a->dfa, s->a2, NULL, AF, A, Ta, 1, 0, 1);
    o->bias_grad(o, GW(p->fc1_b), a->dfa, Ta, AF);
    o->layernorm_bwd(o, a->dxa, GW(p->ln2_w), GW(p->ln2_b), a->dlna, s->xmid, PW(p->ln2_w), s->mean2, s->rstd2, Ta,
                     A);
    // attention: xmid = x + out_proj(attn(q, k, v))
    o->matmul(o, a->datta, a->dxa, PW(p->o_w), NULL, Ta, A, A, 0, 0, 0);
    o->matmul(o, GW(p->o_w), a->dxa, s->att, NULL, A, A, Ta, 1, 0, 1);
    o->bias_grad(o, GW(p->o_b), a->dxa, Ta, A);
    o->zero(o, a->dqa, (size_t)Ta * A * o->act_size);
    o->zero(o, a->dka, (size_t)Ta * A * o->act_size);
    o->zero(o, a->dva, (size_t)Ta * A * o->act_size);
    o->attention_bwd(o, a->dqa, a->dka, a->dva, a->datta, s->att, s->lse, s->q, s->k, s->v, a->aseg, a->nA, H, H,
                     hd, 1.0f / sqrtf((float)hd));
    o->matmul(o, a->dlna, a->dqa, PW(p->q_w), NULL, Ta, A, A, 0, 0, 0);
    o->matmul(o, a->dlna, a->dka, PW(p->k_w), NULL, Ta, A, A, 0, 0, 1);
    o->matmul(o, a->dlna, a->dva, PW(p->v_w), NULL, Ta, A, A, 0, 0, 1);
    o->matmul(o, GW(p->q_w), a->dqa, s->a1, NULL, A, A, Ta, 1, 0, 1);
    o->matmul(o, GW(p->k_w), a->dka, s->a1, NULL, A, A, Ta, 1, 0, 1);
    o->matmul(o, GW(p->v_w), a->dva, s->a1, NULL, A, A, Ta, 1, 0, 1);
    o->bias_grad(o, GW(p->q_b), a->dqa, Ta, A);
    o->bias_grad(o, GW(p->v_b), a->dva, Ta, A);
    o->layernorm_bwd(o, a->dxa, GW(p->ln1_w), GW(p->ln1_b), a->dlna, ax_at(a, l), PW(p->ln1_w), s->mean1, s->rstd1,
                     Ta, A);
}

// a->dproj [Tp, D] holds d loss / d projector output; accumulates the whole tower's gradients.
static void audio_backward(Model *m, ModelActs *a, Tensor *grads) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const ParamTable *t = &m->t;
    const int nA = a->nA, A = c->a_dim, P = c->a_max_pos, F = 2 * P, M3 = c->n_mels * 3, Ta = nA * P, Tp = Ta / 2;
    o->matmul(o, GW(t->proj_w), a->dproj, a->af, NULL, c->dim, A, Tp, 1, 0, 1);
    o->bias_grad(o, GW(t->proj_b), a->dproj, Tp, c->dim);
    o->matmul(o, a->daf, a->dproj, PW(t->proj_w), NULL, Tp, A, c->dim, 0, 0, 0);
    o->zero(o, a->dpool, (size_t)Tp * A * o->act_size);
    o->layernorm_bwd(o, a->dpool, GW(t->a_norm_w), GW(t->a_norm_b), a->daf, a->pool, PW(t->a_norm_w), a->af_mean,
                     a->af_rstd, Tp, A);
    grad_done(m, c->layers + 2);
    o->avgpool2_bwd(o, a->dxa, a->dpool, Tp, A);
    // recompute: the last layer's activations are still in the scratch from the forward
    for (int l = c->a_layers - 1; l >= 0; l--) {
        if (a->mode == ACTS_RECOMPUTE && l < c->a_layers - 1) audio_layer_forward(m, a, l, NULL);
        audio_layer_backward(m, a, l, grads);
        grad_done(m, c->layers + 3 + (c->a_layers - 1 - l));
    }
    // x_0 = gelu(conv2) + embed_positions (frozen)
    o->gelu_bwd(o, a->dxa, a->dxa, a->c2, (size_t)Ta * A);
    o->matmul(o, GW(t->conv2_w), a->dxa, a->cols2, NULL, A, 3 * A, Ta, 1, 0, 1);
    o->bias_grad(o, GW(t->conv2_b), a->dxa, Ta, A);
    o->matmul(o, a->dcols2, a->dxa, PW(t->conv2_w), NULL, Ta, 3 * A, A, 0, 0, 0);
    o->zero(o, a->dc1, (size_t)nA * F * A * o->act_size);
    for (int i = 0; i < nA; i++)
        o->col2im(o, AT(a->dc1, (size_t)i * F * A), AT(a->dcols2, (size_t)i * P * 3 * A), A, F, 1, A, 3, 2, 1, P);
    o->gelu_bwd(o, a->dc1, a->dc1, a->c1, (size_t)nA * F * A);
    o->matmul(o, GW(t->conv1_w), a->dc1, a->cols1, NULL, A, M3, nA * F, 1, 0, 1);
    o->bias_grad(o, GW(t->conv1_b), a->dc1, nA * F, A);
    grad_done(m, c->layers + c->a_layers + 3);
}

void model_backward(Model *m, const ModelBatch *b, ModelActs *a, const float *dlp, Tensor *grads) {
    Ops *o = m->ops;
    const ModelConfig *c = &m->cfg;
    const int T = a->T, D = c->dim, V = c->vocab, n = a->n_tgt;
    if (a->mode == ACTS_INFER || b->n_tokens != T || b->n_tgt != n)
        fatal("model_backward: batch differs from the last model_forward");
    // a backend may lack a backward op (one built for inference only): name the first missing one
    const struct {
        const char *name;
        int present;
    } need[] = {{"bias_grad", !!o->bias_grad},         {"col2im", !!o->col2im},
                {"layernorm_bwd", !!o->layernorm_bwd}, {"rmsnorm_bwd", !!o->rmsnorm_bwd},
                {"attention_bwd", !!o->attention_bwd}, {"gelu_bwd", !!o->gelu_bwd},
                {"silu_mul_bwd", !!o->silu_mul_bwd},   {"avgpool2_bwd", !!o->avgpool2_bwd},
                {"logprob_bwd", !!o->logprob_bwd}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!need[i].present) fatal("model_backward: the %s backend has no %s op", o->name, need[i].name);
    o->upload(o, a->dlp, dlp, (size_t)n * sizeof(float));
    // lm_head and log-softmax, recomputing each chunk's logits
    for (int r0 = 0; r0 < n; r0 += a->chunk) {
        int R = n - r0 < a->chunk ? n - r0 : a->chunk;
        const Tensor *h = AT(a->hsel, (size_t)r0 * D);
        o->matmul(o, a->logits, h, PW(m->t.lm_head), NULL, R, V, D, 0, 1, 0);
        o->logprob_bwd(o, a->logits, a->lse_lp + r0, a->tgt_id + r0, a->dlp + r0, R, V);
        o->matmul(o, AT(a->dhsel, (size_t)r0 * D), a->logits, PW(m->t.lm_head), NULL, R, D, V, 0, 0, 0);
        o->matmul(o, GW(m->t.lm_head), a->logits, h, NULL, V, D, R, 1, 0, 1);
    }
    o->zero(o, a->dln, (size_t)T * D * o->act_size);
    o->copy_rows(o, a->dln, a->tgt_row, a->dhsel, NULL, n, D, 1);
    o->zero(o, a->dx, (size_t)T * D * o->act_size);
    o->rmsnorm_bwd(o, a->dx, GW(m->t.norm), a->dln, x_at(a, c->layers), PW(m->t.norm), a->rstdf, T, D);
    grad_done(m, 0);
    // recompute: the last layer's activations are still in the scratch from the forward
    for (int l = c->layers - 1; l >= 0; l--) {
        if (a->mode == ACTS_RECOMPUTE && l < c->layers - 1) text_layer_forward(m, a, b, NULL, l, NULL);
        text_layer_backward(m, a, b, l, grads);
        grad_done(m, c->layers - l);
    }
    // x_0 = embed[ids] with audio rows replaced: the replaced rows send no gradient to the table
    o->copy_rows(o, GW(m->t.embed), a->emb_idx, a->dx, NULL, T, D, 1);
    grad_done(m, c->layers + 1);
    if (a->nA) {
        o->zero(o, a->dproj, (size_t)a->nA * c->a_max_pos / 2 * D * o->act_size);
        o->copy_rows(o, a->dproj, a->audio_src, a->dx, a->audio_pos, a->n_audio_tok, D, 0);
        audio_backward(m, a, grads);
    } else {
        for (int i = c->layers + 2; i < model_grad_range_count(c); i++) grad_done(m, i);
    }
}
