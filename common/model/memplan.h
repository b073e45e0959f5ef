// memplan.h: the GPU memory plan of GRPO training for a model shape, from the code's own size tables.
// Per learner GPU: bf16 weights and gradients, fp32 master weights, AdamW moments and the reduced
// gradient sharded ZeRO-1 over the learners, and one micro-batch's activations (model_acts_size, the
// table model_acts_create allocates) for a shared-prefix group and for the naive per-sequence layout,
// stored and recomputed. Per rollout GPU: policy and reference weights, the KV cache of Q questions x G
// samples (kv_cache_bytes, as model_generate sizes it) and the prefill and reference-scoring activations.
// NCCL buffers and CUDA runtime memory are assumed reserves (options), not derived.
// Placements (train.placement of issue 15): disaggregated, a GPU per learner and per rollout rank; or
// colocated, each rollout rank on its learner's GPU, reading the learner's bf16 weights in place (no
// policy copy, no weight NCCL buffers) and holding the reference model and the KV cache; the two
// processes each have their own CUDA runtime. With offload (optim.offload=host) the fp32 master weights
// and moments of the shard live in pinned host memory, the reduced gradient and the updated weights pass
// through pinned rings of a few bucket pieces (zero_cuda.h).
// Host memory of a GPU learner process (what its VmHWM measures), per phase: loading (the model's files
// mapped while the weights go to the GPU; bf16 files assumed, 2 bytes per parameter), init (the master
// shard filled from the files before anything else of the optimizer state exists), step (the pinned
// state and the two rings) and checkpoint / resume (without offload, host
// copies of the shard's master and moments; the model directory is written from the GPU in chunks).
#pragma once
#include <stdio.h>

#include "model/model.h"

#define MEMPLAN_GIB 1073741824.0  // the plan's GiB (2^30 bytes)

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
    int colocated;             // 1: learner k and rollout k share GPU k (see above)
    int offload;               // 1: optim.offload=host
    int bucket_mb;             // train.grad_bucket_mb: with offload the GPU keeps one bucket's pieces only
    int ring_slots;            // pinned host slots of one piece in each ring (zero.h ZERO_RING)
    double host_other_gib;     // assumed host memory of a learner process besides the plan's items (CUDA
                               // and NCCL host side, MPI, tokenizer, dataset, code)
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
    double policy, reference, kv, prefill, scoring, rollout_nccl, rollout_total;
    int kv_rows, prefill_tokens, scoring_tokens;
    int max_questions;  // questions generated at once that fit (0: not even one)
    // learner process host memory, bytes: pinned fp32 master and moments and the reduced-gradient ring
    // (offload), the updated-weights ring, the assumed rest; the model's files mapped while loading, and the
    // peaks of the phases (see above)
    double host_master, host_moments, host_grad, host_ring, host_other, host_files;
    double host_load, host_init, host_step, host_ckpt, host_peak;
    double colocated_total;  // colocated: the shared GPU, learner (one stored group) + rollout peak
    double gpu;         // bytes of one GPU
} MemPlan;

// The learner's GPU need: the fixed part plus one micro-batch of the options' shared-prefix groups
// (activations stored, or recomputed when recompute).
double memplan_learner_need(const MemPlan *p, int recompute);
// Refuses (-1, Err naming the plan's numbers and the card's) when the learner's need of p does not fit
// in free_bytes of a GPU of total_bytes, or (colocated) the learner's need and its rollout's peak
// together exceed total_bytes.
int memplan_learner_fits(const MemPlan *p, int recompute, double free_bytes, double total_bytes, Err *e);

// Fills p for model c; bad options are errors naming the option.
int memplan_build(const ModelConfig *c, const MemPlanOptions *o, MemPlan *p, Err *e);
// The plan as Markdown tables (GiB = 2^30 bytes).
void memplan_print(FILE *f, const MemPlanOptions *o, const MemPlan *p);
