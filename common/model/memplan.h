// memplan.h: the GPU memory plan of GRPO training for a model shape, from the code's own size tables.
// Per learner GPU: bf16 weights and gradients, fp32 master weights, AdamW moments and the reduced
// gradient sharded ZeRO-1 over the learners, and one micro-batch's activations (model_acts_size, the
// table model_acts_create allocates) for a shared-prefix group and for the naive per-sequence layout,
// stored and recomputed. Per rollout GPU: policy and reference weights, the KV cache of Q questions x G
// samples (kv_cache_bytes, as model_generate sizes it) and the prefill and reference-scoring activations.
// NCCL buffers and CUDA runtime memory are assumed reserves (options), not derived.
#pragma once
#include <stdio.h>

#include "model/model.h"

typedef struct {
    int learners;              // learner GPUs: ZeRO-1 shards of master weights, moments, reduced gradient
    double gpu_gib;            // memory of one GPU
    int prompt_tokens;         // one question's prompt, audio tokens included
    int audio_tokens;          // <|AUDIO|> tokens of the prompt (one clip; 0: text only)
    int G;                     // completions per question
    int completion_tokens;     // completion length in the learner micro-batch
    int groups;                // groups (questions) per learner micro-batch
    int max_new_tokens;        // rollout: KV rows per sample beyond the prompt, worst-case completion
    int questions;             // rollout: questions one GPU generates at once
    int act_size;              // bytes per weight / activation element on the GPU (bf16: 2)
    double nccl_gib;           // assumed NCCL buffers per GPU
    double runtime_gib;        // assumed CUDA context, cuBLAS workspace and allocator slack per GPU
} MemPlanOptions;

// 8 learners of 80 GB H100s (81559 MiB), the R1-AQA shapes: 846-token prompts with 750 audio tokens,
// G = 8 completions of 32 tokens, 256 new tokens at most, bf16.
MemPlanOptions memplan_defaults(void);

enum { MP_GROUP, MP_NAIVE, MP_LAYOUTS };       // learner micro-batch layouts
enum { MP_STORED, MP_RECOMPUTE, MP_MODES };    // activation modes (ACTS_TRAIN, ACTS_RECOMPUTE)

typedef struct {
    size_t params;  // elements of the ParamTable
    // learner GPU, bytes
    double weights, grads, master, moments, grad_shard, nccl, runtime;
    double learner_fixed;                                 // the above summed: all but activations
    int tokens[MP_LAYOUTS], clips[MP_LAYOUTS], targets[MP_LAYOUTS];  // micro-batch shape per layout
    ActsSize acts[MP_LAYOUTS][MP_MODES];
    int max_groups[MP_MODES];  // shared-prefix groups per micro-batch that fit (0: not even one)
    // rollout GPU, bytes
    double policy, reference, kv, prefill, scoring, rollout_total;
    int kv_rows, prefill_tokens, scoring_tokens;
    int max_questions;  // questions generated at once that fit (0: not even one)
    double gpu;         // bytes of one GPU
} MemPlan;

// Fills p for model c; bad options are errors naming the option.
int memplan_build(const ModelConfig *c, const MemPlanOptions *o, MemPlan *p, Err *e);
// The plan as Markdown tables (GiB = 2^30 bytes).
void memplan_print(FILE *f, const MemPlanOptions *o, const MemPlan *p);
