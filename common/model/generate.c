// generate.c: see generate.h. Cache layout per question q: its prompt rows [base_q, base_q + P_q), then
// G blocks of max_new rows, one per sample. A decode step is one batch with a token per running sample;
// its segment sees the question's prompt rows as a prefix and its own block causally.
#include "model/generate.h"

#include <stdlib.h>
#include <string.h>

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

int model_generate(Model *m, const GenPrompt *prompts, int n_q, int G, const SamplerParams *sp, GenResult *out,
                   Err *e) {
    const int V = m->cfg.vocab, N = sp->max_new_tokens;
    char msg[256];
    if (sampler_check(sp, V, msg, sizeof msg)) return err_set(e, "%s", msg);
    if (n_q < 1 || G < 1) return err_set(e, "generate: need at least one question and one sample");
    int *base = mallocCheck((size_t)n_q * sizeof(int));
    int rows = 0, n_prompt = 0, n_audio = 0;
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
    }
    const int n_s = n_q * G;
    KVCache kv;
    kv_cache_init(&kv, m, rows);
    ModelActs *a = model_acts_create(m, n_prompt > n_s ? n_prompt : n_s, n_audio, 0, 0);
    ModelBatch b;
    mbatch_init(&b, &m->cfg);
    float *logits = mallocCheck((size_t)(n_q > n_s ? n_q : n_s) * V * sizeof(float));
    float *row = mallocCheck((size_t)V * sizeof(float));
    int *lrows = mallocCheck((size_t)(n_q > n_s ? n_q : n_s) * sizeof(int));
    Sample *s = callocCheck((size_t)n_s, sizeof(Sample));
    int *step_rows = mallocCheck((size_t)n_s * sizeof(int));  // a decode step's logits: all its rows
    for (int i = 0; i < n_s; i++) step_rows[i] = i;

    // prefill every prompt once
    for (int q = 0; q < n_q; q++) {
        const GenPrompt *p = &prompts[q];
        int r0 = b.n_tokens;
        for (int i = 0; i < p->n_ids; i++) mbatch_add_token(&b, p->ids[i], i, base[q] + i);
        mbatch_add_seg(
            &b, (AttnSeg){.q_start = r0, .q_len = p->n_ids, .k_start = base[q], .k_len = p->n_ids, .causal = 1});
        if (p->features) mbatch_add_audio(&b, p->features, p->valid_frames);
        lrows[q] = r0 + p->n_ids - 1;
    }
    int rc = model_infer(m, &b, a, &kv, lrows, n_q, logits, e);
    for (int q = 0; q < n_q && !rc; q++)
        for (int g = 0; g < G; g++) {
            Sample *x = &s[q * G + g];
            x->q = q, x->g = g;
            x->hist = mallocCheck((size_t)(prompts[q].n_ids + N) * sizeof(int));
            memcpy(x->hist, prompts[q].ids, (size_t)prompts[q].n_ids * sizeof(int));
            x->n_hist = prompts[q].n_ids;
        }

    // step t: choose token t of every running sample from its logits, then feed it
    for (int t = 0; t < N && !rc; t++) {
        int n = 0;
        for (int i = 0; i < n_s; i++) {
            Sample *x = &s[i];
            if (x->done) continue;
            const float *src = t == 0 ? logits + (size_t)x->q * V : logits + (size_t)lrows[i] * V;
            memcpy(row, src, (size_t)V * sizeof(float));
            GenResult *r = &out[x->q];
            float lp;
            int id = sampler_pick(sp, row, V, x->hist, x->n_hist, prompts[x->q].question, (uint32_t)x->g,
                                  (uint32_t)t, &lp);
            r->tokens[x->g * N + t] = id;
            r->lp[x->g * N + t] = lp;
            r->len[x->g] = t + 1;
            x->hist[x->n_hist++] = id;
            if (sampler_is_eos(sp, id)) r->eos[x->g] = 1;
            x->done = r->eos[x->g] || t + 1 == N;
        }
        mbatch_clear(&b);
        for (int i = 0; i < n_s; i++) {
            Sample *x = &s[i];
            if (x->done) continue;
            const int P = prompts[x->q].n_ids, blk = base[x->q] + P + x->g * N;
            mbatch_add_token(&b, x->hist[x->n_hist - 1], P + t, blk + t);
            mbatch_add_seg(&b, (AttnSeg){.q_start = n,
                                         .q_len = 1,
                                         .pre_start = base[x->q],
                                         .pre_len = P,
                                         .k_start = blk,
                                         .k_len = t + 1,
                                         .causal = 1});
            lrows[i] = n++;
        }
        if (n == 0) break;
        rc = model_infer(m, &b, a, &kv, step_rows, n, logits, e);
    }
    for (int i = 0; i < n_s; i++) free(s[i].hist);
    free(s);
    free(step_rows);
    free(lrows);
    free(row);
    free(logits);
    free(base);
    mbatch_free(&b);
    model_acts_free(m, a);
    kv_cache_free(&kv, m);
    return rc;
}
