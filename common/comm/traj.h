// traj.h: the trajectory group, the pipeline's central type: one question's G completions with their
// rewards and log-probs (rollout/worker.c makes it, the learner trains on it: learner/grpo_step.c), or a
// FAILED group saying why the question could not be used, so the learner's count of groups per step never
// depends on the data being good. Beside it its GROUP message codec (the header and protocol version are
// msg.h's). Limits: G <= CFG_MAX_GENERATIONS (config.h), the same bound as rollout.num_generations.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "comm/msg.h"
#include "config/config.h"
#include "util/check.h"

// Seconds one group spent in each rollout phase (for the step metrics).
typedef struct {
    double data;       // audio load + features + prompt
    double prefill;    // prompt (audio + text) through the policy, once per question
    double decode;     // sampling the G completions
    double reward;     // reward service round trip
    double reference;  // reference-model forward (0 when beta = 0)
} TrajTimes;

// One question's completions, packed: sample i owns tokens [offset[i], offset[i] + len[i]) of the flat
// arrays (the GrpoBatch layout). A failed group (failed = 1) has G = 0, no prompt, no functions, and a
// reason; question, slot, version, audio_path and the timings are still set.
typedef struct {
    int64_t question;       // global question index (the dataset index)
    int64_t slot;           // global slot, step * questions_per_step + s: decides the learner, orders groups
    int64_t version;        // weights version the completions were sampled with
    int failed;             // 1: the question could not be prepared (audio or prompt); see reason
    char *reason;           // why it failed (NULL unless failed)
    TrajTimes time;
    int G;                  // completions
    int n_prompt;
    int32_t *prompt_ids;    // [n_prompt] shared prompt (chat template, audio pads included)
    int64_t audio_samples;  // audio handle: 16 kHz samples and the path the learner reloads
    char *audio_path;
    int n_funcs;
    char **func_names;      // [n_funcs] reward function names
    float *func_rewards;    // [G, n_funcs] per-function rewards (NaN: function not applicable)
    float *rewards;         // [G] total reward
    int *offset, *len;      // [G]
    int n_tokens;           // sum of len
    int32_t *ids;           // [n_tokens] completion token ids
    uint8_t *mask;          // [n_tokens] 1 up to and including the first EOS, then 0
    float *sample_lp;       // [n_tokens] log-probs under the sampling policy
    float *ref_lp;          // [n_tokens] reference model log-probs, or NULL (beta = 0)
} TrajGroup;

// Allocates every array of g for G samples of len[i] tokens (zeroed; offsets set; strings NULL,
// func_names zeroed pointers). Sets question/slot/version/timings to 0; the caller fills the rest.
void traj_group_alloc(TrajGroup *g, int G, const int *len, int n_prompt, int n_funcs, int with_ref);
// A failed group for (question, slot): G = 0, audio_path and reason copied; version and timings 0.
void traj_group_init_failed(TrajGroup *g, int64_t question, int64_t slot, const char *audio_path, const char *reason);
void traj_group_free(TrajGroup *g);
// Semantic checks shared by encoder and decoder: counts, ids >= 0, mask 0/1 and prefix-shaped, finite
// rewards and log-probs, names and path present without NUL, names unique, slot >= 0, timings finite and
// >= 0, a failed group empty with a reason and a good one without.
int traj_group_check(const TrajGroup *g, Err *e);

// Encodes g (checked first) into a malloc'd message; *out_bytes its size.
int msg_encode_group(const TrajGroup *g, uint8_t **out, size_t *out_bytes, Err *e);
// Decodes a whole GROUP message into g (allocated; traj_group_free it). On error g holds nothing.
int msg_decode_group(const uint8_t *buf, size_t n, TrajGroup *g, Err *e);
