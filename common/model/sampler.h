// sampler.h: next-token choice from one row of logits, in Hugging Face's order: repetition penalty over
// every id already in the sequence (s * p if s < 0 else s / p), temperature, top-k, top-p (sorted
// ascending, drop tokens whose cumulative probability <= 1 - p, always keep the most likely), softmax,
// multinomial draw. The draw's uniform number is Philox keyed by (seed, question, sample, step), so a
// sample never depends on which other sequences shared its batch or how many ranks ran.
#pragma once
#include <stdint.h>

enum { SAMPLER_MAX_EOS = 8, SAMPLER_MAX_SUPPRESS = 8 };

typedef struct {
    int greedy;                // argmax after the repetition penalty (temperature/top-k/top-p unused)
    float temperature;         // > 0
    int top_k;                 // 0: off
    float top_p;               // 1: off
    float repetition_penalty;  // 1: off
    int max_new_tokens;
    int n_eos;
    int eos[SAMPLER_MAX_EOS];  // any of these ends a sample (it is kept, and counted in the mask)
    int n_suppress;
    int suppress[SAMPLER_MAX_SUPPRESS];  // never sampled (e.g. <|AUDIO|>: a completion holding it could not
                                         // be trained on, its count would not match the clip)
    uint64_t seed;
} SamplerParams;

// Defaults: sampling at temperature 1, no filtering, no penalty, one EOS id.
SamplerParams sampler_defaults(int eos_id, int max_new_tokens, uint64_t seed);
// Checks value ranges; returns -1 with a message naming the field.
int sampler_check(const SamplerParams *p, int vocab, char *msg, int msg_size);

// log_softmax(x)[tgt] of one row x[V]; *lse (may be NULL) gets its log-sum-exp. The CPU backend's fused
// log-prob (Ops.logprob) is this function, so a CPU rollout's sampling log-probs and the learner's
// recomputation of the same logits agree bit for bit.
float sampler_logprob(const float *x, int V, int tgt, float *lse);

// Applies suppression, penalty, temperature, top-k and top-p to logits[V] in place (filtered entries
// become -inf).
// hist[n_hist]: the ids of the sequence so far (prompt and generated).
void sampler_process(const SamplerParams *p, float *logits, int V, const int *hist, int n_hist);
// Chooses the next id from logits[V] (overwritten by sampler_process). *lp_model (may be NULL) gets the
// chosen id's log-probability under the UNPROCESSED logits, the policy's own log-prob.
int sampler_pick(const SamplerParams *p, float *logits, int V, const int *hist, int n_hist, uint32_t question,
                 uint32_t sample, uint32_t step, float *lp_model);
int sampler_is_eos(const SamplerParams *p, int id);
