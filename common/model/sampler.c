// sampler.c: see sampler.h. Works on host fp32 logits (one row per call). Top-k finds its threshold by
// selection and the sort for top-p is over the tokens top-k left, so the common top-k (+ top-p) case
// never sorts the whole vocabulary.
#include "model/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"
#include "util/rng.h"

SamplerParams sampler_defaults(int eos_id, int max_new_tokens, uint64_t seed) {
    SamplerParams p = {.temperature = 1.0f,
                       .top_p = 1.0f,
                       .repetition_penalty = 1.0f,
                       .max_new_tokens = max_new_tokens,
                       .n_eos = 1,
                       .eos = {eos_id},
                       .seed = seed};
    return p;
}

int sampler_check(const SamplerParams *p, int vocab, char *msg, int msg_size) {
    const char *bad = NULL;
    if (!p->greedy && !(p->temperature > 0))
        bad = "temperature must be > 0";
    else if (p->top_k < 0)
        bad = "top_k must be >= 0";
    else if (!(p->top_p > 0 && p->top_p <= 1))
        bad = "top_p must be in (0, 1]";
    else if (!(p->repetition_penalty > 0))
        bad = "repetition_penalty must be > 0";
    else if (p->max_new_tokens < 1)
        bad = "max_new_tokens must be >= 1";
    else if (p->n_eos < 0 || p->n_eos > SAMPLER_MAX_EOS)
        bad = "too many eos ids";
    else if (p->n_suppress < 0 || p->n_suppress > SAMPLER_MAX_SUPPRESS)
        bad = "too many suppressed ids";
    for (int i = 0; !bad && i < p->n_eos; i++)
        if (p->eos[i] < 0 || p->eos[i] >= vocab) bad = "eos id outside the vocabulary";
    for (int i = 0; !bad && i < p->n_suppress; i++)
        if (p->suppress[i] < 0 || p->suppress[i] >= vocab) bad = "suppressed id outside the vocabulary";
    if (!bad && p->n_suppress >= vocab) bad = "every id suppressed";
    if (bad) snprintf(msg, (size_t)msg_size, "sampler: %s", bad);
    return bad ? -1 : 0;
}

int sampler_is_eos(const SamplerParams *p, int id) {
    for (int i = 0; i < p->n_eos; i++)
        if (p->eos[i] == id) return 1;
    return 0;
}

typedef struct {
    float v;
    int id;
} Entry;

// Ascending by value, ties by id, so the order (and the draw) is deterministic.
static int entry_cmp(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->id - y->id;
}

static void penalize(float *logits, int V, const int *hist, int n_hist, float penalty) {
    // each distinct id once, from its original value (HF gathers then scatters)
    unsigned char *seen = callocCheck((size_t)V, 1);
    for (int i = 0; i < n_hist; i++) {
        int id = hist[i];
        if (id < 0 || id >= V || seen[id]) continue;
        seen[id] = 1;
        logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
    }
    free(seen);
}

// The k-th largest of v[0..n) (v is reordered): Hoare selection, O(n) on average, so top-k need not
// sort the whole vocabulary.
static float kth_largest(float *v, int n, int k) {
    int lo = 0, hi = n - 1, want = n - k;  // ascending position of the k-th largest
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;  // v[j+1 .. i-1] all equal the pivot
    }
    return v[want];
}

void sampler_process(const SamplerParams *p, float *logits, int V, const int *hist, int n_hist) {
    for (int i = 0; i < p->n_suppress; i++) logits[p->suppress[i]] = -INFINITY;
    if (p->repetition_penalty != 1.0f) penalize(logits, V, hist, n_hist, p->repetition_penalty);
    if (p->greedy) return;
    for (int i = 0; i < V; i++) logits[i] /= p->temperature;
    int use_k = p->top_k > 0 && p->top_k < V, use_p = p->top_p < 1.0f;
    if (!use_k && !use_p) return;
    // HF keeps every token >= the k-th largest value (ties at the threshold survive); only those
    // candidates are sorted for top-p.
    float thr = -INFINITY;
    if (use_k) {
        float *vals = mallocCheck((size_t)V * sizeof(float));
        memcpy(vals, logits, (size_t)V * sizeof(float));
        thr = kth_largest(vals, V, p->top_k);
        free(vals);
    }
    Entry *e = mallocCheck((size_t)V * sizeof(Entry));
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (logits[i] >= thr)
            e[n++] = (Entry){logits[i], i};
        else
            logits[i] = -INFINITY;
    }
    if (use_p) {
        qsort(e, (size_t)n, sizeof(Entry), entry_cmp);
        float m = e[n - 1].v;
        double z = 0;
        for (int i = 0; i < n; i++) z += exp((double)e[i].v - m);
        double cum = 0;
        int drop = 0;
        for (int i = 0; i < n - 1; i++) {  // the last (most likely) token always stays
            cum += exp((double)e[i].v - m) / z;
            if (cum <= 1.0 - p->top_p)
                drop = i + 1;
            else
                break;
        }
        for (int i = 0; i < drop; i++) logits[e[i].id] = -INFINITY;
    }
    free(e);
}

float sampler_logprob(const float *x, int V, int tgt, float *lse) {
    float m = -INFINITY;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)(x[i] - m));
    float L = m + (float)log(s);
    if (lse) *lse = L;
    return x[tgt] - L;
}

int sampler_pick(const SamplerParams *p, float *logits, int V, const int *hist, int n_hist, uint32_t question,
                 uint32_t sample, uint32_t step, float *lp_model) {
    // the policy's log-prob needs the raw row: keep its values before processing
    float *raw = lp_model ? mallocCheck((size_t)V * sizeof(float)) : NULL;
    if (raw) memcpy(raw, logits, (size_t)V * sizeof(float));

    sampler_process(p, logits, V, hist, n_hist);
    int pick = 0;
    if (p->greedy) {
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[pick]) pick = i;
    } else {
        float m = -INFINITY;
        for (int i = 0; i < V; i++) m = logits[i] > m ? logits[i] : m;
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((double)logits[i] - m);
        double u = rng_uniform_at(p->seed, question, sample, step, 0) * z, cum = 0;
        pick = -1;
        for (int i = 0; i < V; i++) {
            double w = exp((double)logits[i] - m);
            if (w == 0) continue;
            pick = i;  // the last id with mass, in case rounding leaves u beyond the total
            cum += w;
            if (u < cum) break;
        }
    }
    if (raw) {
        *lp_model = sampler_logprob(raw, V, pick, NULL);
        free(raw);
    }
    return pick;
}
