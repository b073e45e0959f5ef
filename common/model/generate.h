// generate.h: sampling G completions per question over a shared prompt. Every question's prompt (audio
// + text) is prefilled ONCE into the KV cache; its G samples then decode together, each attending to that
// single cached prefix plus its own cache rows (no per-sample copy of the prefix). Several questions run
// in one batch. A sample stops at the first EOS (kept) or after max_new_tokens.
#pragma once
#include <stdint.h>

#include "model/model.h"
#include "model/sampler.h"

typedef struct {
    const int *ids;  // prompt ids, <|AUDIO|> already expanded
    int n_ids;
    const float *features;  // [n_mels, 2 * a_max_pos] or NULL when the prompt has no audio tokens
    int valid_frames;       // feature mask sum
    uint32_t question;      // RNG key of this question (its global index)
} GenPrompt;

typedef struct {
    int G, max_new;
    int *tokens;  // [G, max_new]; after a sample's end: -1
    float *lp;    // [G, max_new] log-prob of each token under the model's unprocessed distribution
    int *len;     // [G] tokens generated, the first EOS included (the completion mask length)
    int *eos;     // [G] 1 when the sample ended with an EOS
    double prefill_s, decode_s;  // wall time of the call's prefill and decode phases (shared by its questions)
} GenResult;

void gen_result_init(GenResult *r, int G, int max_new);
void gen_result_free(GenResult *r);

// Samples G completions for each of the n_q prompts into out[n_q] (initialised with gen_result_init).
int model_generate(Model *m, const GenPrompt *prompts, int n_q, int G, const SamplerParams *sp, GenResult *out,
                   Err *e);
