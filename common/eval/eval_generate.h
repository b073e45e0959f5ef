// eval_generate.h: answering evaluation questions with a model, as R1-AQA's MMAU test script does.
// Each question gets the MMAU prompt (prompt style mmau: the question as is), one completion of up to
// max_new_tokens from the model's own generation_config.json (sampling, seeded per question so results
// do not depend on batching) or greedy, several questions per model_generate call. The result is the
// MMAU prediction file: every input item (MMAU items as they are; an R1-AQA line gets the MMAU keys
// question, choices and answer-as-text, its index kept as answer_index) plus model_output (the decoded
// completion, special tokens skipped) and model_prediction (the first <answer>(.*?)</answer>, else the
// whole output, stripped: reward_extract_answer). A question whose audio or prompt fails gets
// audio_error (the reason) and empty outputs; mmau_score counts it as wrong. The model runs on the CPU
// (fp32) or a GPU (bf16, the device sampler: only the chosen ids come back); scoring is the same.
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "config/config.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/sampler.h"
#include "pipeline/prepare.h"
#include "util/check.h"

typedef struct {
    int greedy;          // argmax instead of the generation config's sampling
    int max_new_tokens;  // longest completion (R1-AQA: 256)
    int batch;           // questions per model_generate call (R1-AQA: 32)
    uint64_t seed;       // sampling seed (with each question's index)
} EvalGenOptions;

// The model of model_dir on `backend` (CFG_BACKEND_CPU: fp32 on the host; CFG_BACKEND_CUDA: the current
// GPU, bf16 checkpoints as they are) with its own Ops; eval_model_free releases both. CUDA in a build
// without it, or on a machine without a GPU, is an error, as is any bad checkpoint (model_load_device).
int eval_model_load(Model *m, const char *model_dir, CfgBackend backend, Err *e);
void eval_model_free(Model *m);

// The sampler the model's generation_config.json asks for (do_sample, temperature, top_k, top_p,
// repetition_penalty, eos_token_id: one id or a list), keys it lacks taking transformers'
// GenerationConfig defaults (greedy, temperature 1, top_k 50, top_p 1, no penalty). No
// generation_config.json at all: those defaults, with default_eos (n_default_eos ids) as stop ids.
// opt->greedy forces argmax. A malformed file or value is an error naming the file and key.
int eval_sampler_load(const char *model_dir, const EvalGenOptions *opt, const int *default_eos,
                      int n_default_eos, SamplerParams *sp, Err *e);

// The input records of ds's file (path), one per question of ds, in MMAU form (see above); an array the
// caller releases with json_decref. MMAU items are matched to the loaded questions in order by "id"
// (records the loader skipped are left out), R1-AQA lines by line number.
json_t *eval_input_items(const Dataset *ds, const char *path, Err *e);

typedef struct {
    int64_t questions, audio_errors;
    int64_t tokens;   // completion tokens generated
    double seconds;   // preparation + generation
} EvalGenStats;

// Answers every question of ds and adds model_output / model_prediction (and audio_error) to
// items[i] (from eval_input_items). A failing question is reported (warning) and flagged, never fatal;
// a model error is (-1 with e set).
int eval_generate(Model *m, PrepContext *prep, const Dataset *ds, const SamplerParams *sp, int batch,
                  json_t *items, EvalGenStats *stats, Err *e);

// Writes items to path as indented JSON, atomically.
int eval_write_items(const json_t *items, const char *path, Err *e);
