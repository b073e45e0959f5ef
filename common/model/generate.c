// generate.c: see generate.h. Cache layout per question q: its prompt rows [base_q, base_q + P_q), then
// G blocks of max_new rows, one per sample. A decode step is one batch with a token per running sample;
// its segment sees the question's prompt rows as a prefix and its own block causally. When the backend
// samples (Ops.sample_rows) the logits stay on the device and only the chosen ids and log-probs come back,
// and a backend with graphs (Ops.graph_*) replays each decode step's forward as one launch: steps differ
// only in host inputs (ids, positions, cache rows, attention lengths), so one capture serves every step
// until a sample ends and the batch shrinks.
#include "model/generate.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

void gen_result_init(GenResult *r, int G, int max_new) {
    r->G = G;
    r->max_new = max_new;
    r->tokens = mallocCheck((size_t)G * max_new * sizeof(int));
    r->lp = callocCheck((size_t)G * max_new, sizeof(float));
    r->len = callocCheck((size_t)G, sizeof(int));
    r->eos = callocCheck((size_t)G, sizeof(int));
    for (size_t i = 0; i < (size_t)G * max_new; i++) r->tokens[i] = -1;
}

void gen_result_free(GenResult *r) {
    free(r->tokens);
    free(r->lp);
    free(r->len);
    free(r->eos);
    memset(r, 0, sizeof *r);
}

typedef struct {
    int q, g;  // question, sample
    int done;
    int *hist;  // prompt + generated ids, for the repetition penalty
    int n_hist;
} Sample;

// Host sampling: each running sample's logits row (row k of `logits` for the k-th entry of act) through
// sampler_pick.
static void pick_host(const SamplerParams *sp, const GenPrompt *prompts, Sample *s, const int *act, int n,
                      const float *logits, int V, int t, float *row, int *ids, float *lps) {
    for (int k = 0; k < n; k++) {
        Sample *x = &s[act[k]];
        memcpy(row, logits + (size_t)k * V, (size_t)V * sizeof(float));
        ids[k] = sampler_pick(sp, row, V, x->hist, x->n_hist, prompts[x->q].question, (uint32_t)x->g, (uint32_t)t,
                              &lps[k]);
    }
}

// Backend sampling: the logits of act's rows (lrow[k]) never leave the device; only ids and log-probs
// come back, and the backend appends each id to the sample's device history (row i at i * stride).
static void pick_device(Model *m, ModelActs *a, const SamplerParams *sp, const GenPrompt *prompts, Sample *s,
                        const int *act, const int *lrow, int n, int *dhist, int stride, int t, SampleRow *meta,
                        int *ids, float *lps) {
    const int chunk = model_logits_chunk(a);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        const int R = n - r0 < chunk ? n - r0 : chunk;
        for (int k = 0; k < R; k++) {
            const Sample *x = &s[act[r0 + k]];
            meta[k] = (SampleRow){.hist_off = act[r0 + k] * stride,
                                  .n_hist = x->n_hist,
                                  .question = prompts[x->q].question,
                                  .sample = (uint32_t)x->g};
        }
        const Tensor *lg = model_logits_device(m, a, lrow + r0, R);
        m->ops->sample_rows(m->ops, ids + r0, lps + r0, lg, R, m->cfg.vocab, sp, dhist, meta, (uint32_t)t);
    }
}

// One decode step's forward (logits of the n rows lrow to the host unless the backend samples).
static int decode_step(Model *m, const ModelBatch *b, ModelActs *a, KVCache *kv, void *graph, const int *lrow, int n,
                       float *logits, Err *e) {
    Ops *o = m->ops;
    if (!graph) return model_infer(m, b, a, kv, lrow, n, logits, e);
    int rc;
    do {  // a pass whose shape differs from the captured one is repeated, capturing the new shape
        o->graph_begin(o, graph);
        rc = model_infer(m, b, a, kv, NULL, 0, NULL, e);
    } while (o->graph_end(o, graph, !rc) && !rc);
    return rc;
}

int model_generate(Model *m, const GenPrompt *prompts, int n_q, int G, const SamplerParams *sp, GenResult *out,
                   Err *e) {
    const int V = m->cfg.vocab, N = sp->max_new_tokens;
    char msg[256];
    if (sampler_check(sp, V, msg, sizeof msg)) return err_set(e, "%s", msg);
    if (n_q < 1 || G < 1) return err_set(e, "generate: need at least one question and one sample");
    int *base = mallocCheck((size_t)n_q * sizeof(int));
    int rows = 0, n_prompt = 0, n_audio = 0, max_p = 0;
    for (int q = 0; q < n_q; q++) {
        if (prompts[q].n_ids < 1) {
            free(base);
            return err_set(e, "generate: question %d has an empty prompt", q);
        }
        if (out[q].G != G || out[q].max_new != N) {
            free(base);
            return err_set(e, "generate: result %d sized for G=%d, %d tokens", q, out[q].G, out[q].max_new);
        }
        int n_audio_tok = 0;
        for (int i = 0; i < prompts[q].n_ids; i++) n_audio_tok += prompts[q].ids[i] == m->cfg.audio_token_id;
        if (n_audio_tok && !prompts[q].features) {
            free(base);
            return err_set(e, "generate: question %d has %d <|AUDIO|> tokens but no audio features", q,
                           n_audio_tok);
        }
        base[q] = rows;
        rows += prompts[q].n_ids + G * N;
        n_prompt += prompts[q].n_ids;
        n_audio += prompts[q].features != NULL;
        if (prompts[q].n_ids > max_p) max_p = prompts[q].n_ids;
    }
    const int n_s = n_q * G, on_dev = m->ops->sample_rows != NULL;
    Ops *o = m->ops;
    KVCache kv;
    kv_cache_init(&kv, m, rows);
    ModelActs *a = model_acts_create(m, n_prompt > n_s ? n_prompt : n_s, n_audio, 0, ACTS_INFER);
    ModelBatch b;
    mbatch_init(&b, &m->cfg);
    Sample *s = callocCheck((size_t)n_s, sizeof(Sample));
    int *act = mallocCheck((size_t)n_s * sizeof(int));   // running samples of this step
    int *lrow = mallocCheck((size_t)n_s * sizeof(int));  // their logits rows in the last batch
    int *ids = mallocCheck((size_t)n_s * sizeof(int));
    float *lps = mallocCheck((size_t)n_s * sizeof(float));
    float *logits = on_dev ? NULL : mallocCheck((size_t)n_s * V * sizeof(float));
    float *row = on_dev ? NULL : mallocCheck((size_t)V * sizeof(float));
    SampleRow *meta = on_dev ? mallocCheck((size_t)n_s * sizeof(SampleRow)) : NULL;
    const int stride = max_p + N;  // device history row of a sample
    int *dhist = on_dev ? o->alloc(o, (size_t)n_s * stride * sizeof(int)) : NULL;
    void *graph = on_dev && o->graph_create ? o->graph_create(o) : NULL;

    // prefill every prompt once; sample (q, g) starts from its question's last prompt row
    int *last = mallocCheck((size_t)n_q * sizeof(int));
    for (int q = 0; q < n_q; q++) {
        const GenPrompt *p = &prompts[q];
        int r0 = b.n_tokens;
        for (int i = 0; i < p->n_ids; i++) mbatch_add_token(&b, p->ids[i], i, base[q] + i);
        mbatch_add_seg(
            &b, (AttnSeg){.q_start = r0, .q_len = p->n_ids, .k_start = base[q], .k_len = p->n_ids, .causal = 1});
        if (p->features) mbatch_add_audio(&b, p->features, p->valid_frames);
        last[q] = r0 + p->n_ids - 1;
    }
    for (int i = 0; i < n_s; i++) {
        Sample *x = &s[i];
        x->q = i / G, x->g = i % G;
        x->hist = mallocCheck((size_t)(prompts[x->q].n_ids + N) * sizeof(int));
        memcpy(x->hist, prompts[x->q].ids, (size_t)prompts[x->q].n_ids * sizeof(int));
        x->n_hist = prompts[x->q].n_ids;
        if (dhist) o->upload(o, dhist + (size_t)i * stride, x->hist, (size_t)x->n_hist * sizeof(int));
        act[i] = i, lrow[i] = last[x->q];
    }
    int n = n_s;
    double t0 = log_elapsed();
    int rc = model_infer(m, &b, a, &kv, lrow, on_dev ? 0 : n_s, logits, e);
    o->sync(o);  // a device prefill is asynchronous: finish it before reading the clock
    double t1 = log_elapsed();

    // step t: choose token t of every running sample from its logits, then feed it
    for (int t = 0; t < N && !rc && n > 0; t++) {
        if (on_dev)
            pick_device(m, a, sp, prompts, s, act, lrow, n, dhist, stride, t, meta, ids, lps);
        else
            pick_host(sp, prompts, s, act, n, logits, V, t, row, ids, lps);
        int next = 0;
        mbatch_clear(&b);
        for (int k = 0; k < n; k++) {
            Sample *x = &s[act[k]];
            GenResult *r = &out[x->q];
            r->tokens[x->g * N + t] = ids[k];
            r->lp[x->g * N + t] = lps[k];
            r->len[x->g] = t + 1;
            x->hist[x->n_hist++] = ids[k];
            if (sampler_is_eos(sp, ids[k])) r->eos[x->g] = 1;
            x->done = r->eos[x->g] || t + 1 == N;
            if (x->done) continue;
            const int P = prompts[x->q].n_ids, blk = base[x->q] + P + x->g * N;
            mbatch_add_token(&b, ids[k], P + t, blk + t);
            mbatch_add_seg(&b, (AttnSeg){.q_start = next,
                                         .q_len = 1,
                                         .pre_start = base[x->q],
                                         .pre_len = P,
                                         .k_start = blk,
                                         .k_len = t + 1,
                                         .causal = 1});
            act[next] = act[k], lrow[next] = next;
            next++;
        }
        n = next;
        // the first step runs op by op: a backend prepares (tunes) its kernels for the shape outside a capture
        if (n > 0) rc = decode_step(m, &b, a, &kv, t ? graph : NULL, lrow, on_dev ? 0 : n, logits, e);
    }
    double t2 = log_elapsed();
    for (int q = 0; q < n_q; q++) out[q].prefill_s = t1 - t0, out[q].decode_s = t2 - t1;
    for (int i = 0; i < n_s; i++) free(s[i].hist);
    free(s);
    free(act);
    free(lrow);
    free(ids);
    free(lps);
    free(logits);
    free(row);
    free(meta);
    free(last);
    if (graph) o->graph_free(o, graph);
    if (dhist) o->free(o, dhist);
    free(base);
    mbatch_free(&b);
    model_acts_free(m, a);
    kv_cache_free(&kv, m);
    return rc;
}
