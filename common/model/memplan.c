// memplan.c: see memplan.h.
#include "model/memplan.h"

#include <limits.h>
#include <math.h>

#include "audio/audio_len.h"

// the largest micro-batch / rollout batch the fit searches try
enum { MP_SEARCH_MAX = 256 };

MemPlanOptions memplan_defaults(void) {
    return (MemPlanOptions){.learners = 8,
                            .gpu_gib = 81559.0 / 1024,
                            .prompt_tokens = 846,
                            .audio_tokens = 750,
                            .G = 8,
                            .completion_tokens = 32,
                            .groups = 1,
                            .max_new_tokens = 256,
                            .questions = 1,
                            .act_size = 2,
                            .nccl_gib = 1.0,
                            .runtime_gib = 1.5,
                            .bucket_mb = 256,
                            .ring_slots = 2,
                            .host_other_gib = 2.0};
}

static int options_check(const ModelConfig *c, const MemPlanOptions *o, Err *e) {
    if (o->learners < 1) return err_set(e, "learners %d: need at least 1", o->learners);
    if (!(o->gpu_gib > 0)) return err_set(e, "gpu_gib %g: must be positive", o->gpu_gib);
    if (o->prompt_tokens < 1) return err_set(e, "prompt_tokens %d: must be positive", o->prompt_tokens);
    const int max_audio = audio_token_count(2 * c->a_max_pos);
    if (o->audio_tokens < 0 || o->audio_tokens > max_audio || o->audio_tokens > o->prompt_tokens)
        return err_set(e, "audio_tokens %d: one clip gives 0..%d tokens, within the %d-token prompt", o->audio_tokens,
                       max_audio, o->prompt_tokens);
    if (o->G < 1) return err_set(e, "G %d: need at least 1 completion", o->G);
    if (o->completion_tokens < 1) return err_set(e, "completion_tokens %d: must be positive", o->completion_tokens);
    if (o->groups < 1) return err_set(e, "groups %d: need at least 1 per micro-batch", o->groups);
    if (o->max_new_tokens < 1) return err_set(e, "max_new_tokens %d: must be positive", o->max_new_tokens);
    if (o->questions < 1) return err_set(e, "questions %d: need at least 1", o->questions);
    if (o->act_size != 2 && o->act_size != 4) return err_set(e, "act_size %d: 2 (bf16) or 4 (fp32)", o->act_size);
    if (o->nccl_gib < 0 || o->runtime_gib < 0) return err_set(e, "nccl_gib / runtime_gib: must not be negative");
    if ((unsigned)o->colocated > 1 || (unsigned)o->offload > 1) return err_set(e, "colocated / offload: 0 or 1");
    if (o->bucket_mb < 1) return err_set(e, "bucket_mb %d: must be positive", o->bucket_mb);
    if (o->ring_slots < 1) return err_set(e, "ring_slots %d: must be positive", o->ring_slots);
    if (!(o->host_other_gib >= 0)) return err_set(e, "host_other_gib %g: must not be negative", o->host_other_gib);
    // every size below is an int token count of at most MP_SEARCH_MAX questions of the naive layout
    long long worst = (long long)MP_SEARCH_MAX * o->G * (o->prompt_tokens + o->max_new_tokens + o->completion_tokens);
    if (worst > INT_MAX / 2) return err_set(e, "prompt and completion lengths too large to plan (%lld tokens)", worst);
    return 0;
}

// Training activations of k micro-batch units of one layout: a shared-prefix group (prompt once, G
// completions after it) or G full sequences each with its own clip.
static ActsSize learner_acts(const ModelConfig *c, const MemPlanOptions *o, int layout, int k, ActsMode mode,
                             int *tokens, int *clips, int *targets) {
    const int P = o->prompt_tokens, G = o->G, C = o->completion_tokens, has_audio = o->audio_tokens > 0;
    *tokens = k * (layout == MP_GROUP ? P + G * C : G * (P + C));
    *clips = k * has_audio * (layout == MP_GROUP ? 1 : G);
    *targets = k * G * C;
    return model_acts_size(c, (size_t)o->act_size, *tokens, *clips, *targets, mode);
}

// The rollout GPU's peak for q questions: weights and reserves, then generation (KV cache + prefill
// activations, freed when model_generate returns) or reference scoring of one group, whichever is larger.
static double rollout_peak(const ModelConfig *c, const MemPlanOptions *o, const MemPlan *p, int q, double *kv,
                           double *prefill, int *kv_rows, int *prefill_tokens) {
    const int P = o->prompt_tokens, G = o->G, N = o->max_new_tokens;
    *kv_rows = q * (P + G * N);  // model_generate: each question's prompt rows, then G x N sample rows
    *kv = (double)kv_cache_bytes(c, (size_t)o->act_size, *kv_rows);
    *prefill_tokens = q * P > q * G ? q * P : q * G;
    *prefill = (double)model_acts_size(c, (size_t)o->act_size, *prefill_tokens, q * (o->audio_tokens > 0), 0,
                                       ACTS_INFER)
                   .bytes;
    double gen = *kv + *prefill;
    return p->policy + p->reference + p->rollout_nccl + p->runtime + (gen > p->scoring ? gen : p->scoring);
}

// The learner process's host memory (memplan.h); bucket: elements of the largest gradient bucket.
static void host_plan(const MemPlanOptions *o, double N, double bucket, MemPlan *p) {
    const double L = o->learners, piece = ceil(bucket / L);
    p->host_master = o->offload ? N * 4 / L : 0;
    p->host_moments = o->offload ? 2 * N * 4 / L : 0;
    p->host_grad = o->offload ? o->ring_slots * piece * 2 : 0;
    p->host_ring = o->ring_slots * piece * 2;
    p->host_other = o->host_other_gib * MEMPLAN_GIB;
    p->host_files = N * 2;  // bf16 files
    // loading: every tensor's file pages pass through the mapping (unmapped when the load ends)
    p->host_load = p->host_files + p->host_other;
    // init: the master shard filled from its part of the files; then the rest of the state
    p->host_init = p->host_master + p->host_files / L + p->host_other;
    p->host_step = p->host_master + p->host_moments + p->host_grad + p->host_ring + p->host_other;
    // checkpoint / resume: without offload the shard's master and moments pass through host copies
    p->host_ckpt = p->host_step + (o->offload ? 0 : N * 12 / L);
    p->host_peak = fmax(fmax(p->host_load, p->host_init), fmax(p->host_step, p->host_ckpt));
}

int memplan_build(const ModelConfig *c, const MemPlanOptions *o, MemPlan *p, Err *e) {
    if (model_config_check(c, e) || options_check(c, o, e)) return -1;
    *p = (MemPlan){0};
    ParamTable t;
    param_table_build(&t, c);
    p->params = t.numel;
    param_table_free(&t);
    const double N = (double)p->params, L = o->learners, a = o->act_size;
    p->gpu = o->gpu_gib * MEMPLAN_GIB;
    // learner: full bf16 weights and gradients on every rank (ZeRO-1 shards optimizer state only)
    p->weights = N * a;
    p->grads = N * a;
    p->master = o->offload ? 0 : N * 4 / L;
    p->moments = o->offload ? 0 : 2 * N * 4 / L;
    // the reduce-scatter's bf16 output and the updated bf16 weights to all-gather: the shard of each, or
    // with offload one bucket's piece of each (zero_cuda.h)
    double bucket = fmin(N, (double)o->bucket_mb * 524288);
    p->grad_shard = (o->offload ? bucket : N) * 4 / L;
    host_plan(o, N, bucket, p);
    p->nccl = o->nccl_gib * MEMPLAN_GIB;
    p->runtime = o->runtime_gib * MEMPLAN_GIB;
    p->learner_fixed = p->weights + p->grads + p->master + p->moments + p->grad_shard + p->nccl + p->runtime;
    for (int l = 0; l < MP_LAYOUTS; l++)
        for (int m = 0; m < MP_MODES; m++)
            p->acts[l][m] = learner_acts(c, o, l, o->groups, m == MP_STORED ? ACTS_TRAIN : ACTS_RECOMPUTE,
                                         &p->tokens[l], &p->clips[l], &p->targets[l]);
    // rollout: the frozen reference for the KL term; its own policy copy (refreshed by the NCCL weight
    // broadcast) unless colocated, where it reads the learner's weights
    p->policy = o->colocated ? 0 : N * a;
    p->reference = N * a;
    p->rollout_nccl = o->colocated ? 0 : p->nccl;
    p->scoring_tokens = o->prompt_tokens + o->G * o->max_new_tokens;
    p->scoring = (double)model_acts_size(c, (size_t)o->act_size, p->scoring_tokens, o->audio_tokens > 0,
                                         o->G * o->max_new_tokens, ACTS_INFER)
                     .bytes;
    p->rollout_total = rollout_peak(c, o, p, o->questions, &p->kv, &p->prefill, &p->kv_rows, &p->prefill_tokens);
    // colocated: what the other process on the GPU holds while each side searches its largest batch
    const double beside_learner = o->colocated ? p->rollout_total : 0;
    const double beside_rollout = o->colocated ? memplan_learner_need(p, 0) : 0;
    p->colocated_total = o->colocated ? memplan_learner_need(p, 0) + p->rollout_total : 0;
    for (int m = 0; m < MP_MODES; m++)
        for (int k = 1; k <= MP_SEARCH_MAX; k++) {
            int tk, ck, gk;
            ActsMode mode = m == MP_STORED ? ACTS_TRAIN : ACTS_RECOMPUTE;
            ActsSize z = learner_acts(c, o, MP_GROUP, k, mode, &tk, &ck, &gk);
            if (p->learner_fixed + (double)z.bytes + beside_learner > p->gpu) break;
            p->max_groups[m] = k;
        }
    for (int q = 1; q <= MP_SEARCH_MAX; q++) {
        double kv, pre;
        int rows, toks;
        if (rollout_peak(c, o, p, q, &kv, &pre, &rows, &toks) + beside_rollout > p->gpu) break;
        p->max_questions = q;
    }
    return 0;
}

static double gib(double bytes) { return bytes / MEMPLAN_GIB; }

double memplan_learner_need(const MemPlan *p, int recompute) {
    return p->learner_fixed + (double)p->acts[MP_GROUP][recompute ? MP_RECOMPUTE : MP_STORED].bytes;
}

int memplan_learner_fits(const MemPlan *p, int recompute, double free_bytes, double total_bytes, Err *e) {
    double need = memplan_learner_need(p, recompute);
    if (p->colocated_total > 0 && need + p->rollout_total > total_bytes)
        return err_set(e,
                       "the GPU has %.2f GiB, the colocated memory plan needs %.2f GiB: learner %.2f (weights %.2f + "
                       "gradients %.2f + master %.2f + moments %.2f + gradient shard %.2f + NCCL %.2f + runtime %.2f "
                       "+ one micro-batch's activations %.2f) + rollout %.2f (reference %.2f + KV cache and "
                       "activations %.2f + runtime %.2f) (aqa-memplan prints the plan; "
                       "optim.offload=host, model.recompute=true, fewer rollout.batch_questions or "
                       "rollout.max_new_tokens shrink it)",
                       gib(total_bytes), gib(need + p->rollout_total), gib(need), gib(p->weights), gib(p->grads),
                       gib(p->master), gib(p->moments), gib(p->grad_shard), gib(p->nccl), gib(p->runtime),
                       gib(need - p->learner_fixed), gib(p->rollout_total), gib(p->reference),
                       gib(p->rollout_total - p->reference - p->runtime), gib(p->runtime));
    if (need <= free_bytes) return 0;
    return err_set(e,
                   "the GPU has %.2f GiB free of %.2f GiB, the learner's memory plan needs %.2f GiB: weights %.2f + "
                   "gradients %.2f + master %.2f + moments %.2f + gradient shard %.2f + NCCL %.2f + runtime %.2f + "
                   "one micro-batch's activations %.2f (aqa-memplan prints the plan; optim.offload=host moves the "
                   "master weights and moments to the host, model.recompute=true cuts the activations, more "
                   "learners shrink the shard)",
                   gib(free_bytes), gib(total_bytes), gib(need), gib(p->weights), gib(p->grads), gib(p->master),
                   gib(p->moments), gib(p->grad_shard), gib(p->nccl), gib(p->runtime),
                   gib(need - p->learner_fixed));
}

static void row(FILE *f, const char *what, double bytes, const char *how) {
    fprintf(f, "| %s | %.2f | %s |\n", what, gib(bytes), how);
}

static void host_print(FILE *f, const MemPlanOptions *o, const MemPlan *p) {
    char how[160];
    fprintf(f, "\n### Learner host memory (each learner process; compare with its VmHWM)\n\n| item | GiB | how |\n"
               "|---|---:|---|\n");
    snprintf(how, sizeof how, "pinned fp32, 1/%d%s", o->learners, o->offload ? "" : " (none: on the GPU)");
    row(f, "master weights", p->host_master, how);
    snprintf(how, sizeof how, "pinned fp32 m and v, 1/%d%s", o->learners, o->offload ? "" : " (none: on the GPU)");
    row(f, "AdamW moments", p->host_moments, how);
    snprintf(how, sizeof how, "pinned bf16, %d slots of one %d MB bucket's 1/%d%s", o->ring_slots, o->bucket_mb,
             o->learners, o->offload ? "" : " (none: on the GPU)");
    row(f, "reduced-gradient ring", p->host_grad, how);
    snprintf(how, sizeof how, "pinned bf16, %d slots of one %d MB bucket's 1/%d", o->ring_slots, o->bucket_mb,
             o->learners);
    row(f, "updated-weights ring", p->host_ring, how);
    row(f, "other", p->host_other, "assumed: CUDA/NCCL host side, MPI, tokenizer, dataset");
    row(f, "model files mapped while loading", p->host_files, "bf16 files; transient, at load");
    fprintf(f, "\n| phase | GiB | what is held |\n|---|---:|---|\n");
    row(f, "load", p->host_load, "the model's files pass through the mapping to the GPU; other");
    snprintf(how, sizeof how, "master shard + its 1/%d of the files while it is filled; other", o->learners);
    row(f, "init", p->host_init, how);
    row(f, "step", p->host_step, "master + moments + the two rings + other");
    row(f, "checkpoint / resume", p->host_ckpt,
        o->offload ? "the step's (the pinned state is written and read in place; model/ from the GPU in chunks)"
                   : "the step's + host copies of the shard's master and moments");
    row(f, "**peak**", p->host_peak, "");
}

void memplan_print(FILE *f, const MemPlanOptions *o, const MemPlan *p) {
    char how[160];
    fprintf(f,
            "Model: %zu parameters; %d-byte weights and activations; GPUs of %.2f GiB; %d learner GPUs; %s; "
            "optimizer state on the %s.\n\n",
            p->params, o->act_size, o->gpu_gib, o->learners,
            o->colocated ? "colocated (rollout k on learner k's GPU)" : "disaggregated (rollouts on GPUs of their own)",
            o->offload ? "host (optim.offload=host)" : "GPU");
    fprintf(f, "### Learner GPU (each of %d), all but activations\n\n| item | GiB | how |\n|---|---:|---|\n",
            o->learners);
    row(f, "weights", p->weights,
        o->colocated ? "every parameter, full copy; the rollout beside it reads them" : "every parameter, full copy");
    row(f, "gradients", p->grads, "every parameter, full copy (model_backward accumulates)");
    snprintf(how, sizeof how, o->offload ? "on the host (offload)" : "fp32, 1/%d (ZeRO-1)", o->learners);
    row(f, "master weights", p->master, how);
    snprintf(how, sizeof how, o->offload ? "on the host (offload)" : "fp32 m and v, 1/%d (ZeRO-1)", o->learners);
    row(f, "AdamW moments", p->moments, how);
    if (o->offload)
        snprintf(how, sizeof how, "bf16 reduce-scatter output and updated weights, one %d MB bucket's 1/%d each",
                 o->bucket_mb, o->learners);
    else
        snprintf(how, sizeof how, "bf16 reduce-scatter output and updated weights, 1/%d each", o->learners);
    row(f, "reduced gradient / weight shard", p->grad_shard, how);
    row(f, "NCCL buffers", p->nccl, "assumed reserve");
    row(f, "CUDA context, cuBLAS, slack", p->runtime, "assumed reserve");
    row(f, "**fixed total**", p->learner_fixed, "");
    host_print(f, o, p);

    fprintf(f,
            "\n### Learner activations, one micro-batch of %d group(s): %d-token prompt (%d audio), G = %d x %d "
            "completion tokens\n\n",
            o->groups, o->prompt_tokens, o->audio_tokens, o->G, o->completion_tokens);
    fprintf(f, "| layout | tokens | clips | mode |");
    for (int i = 0; i < ACTS_PARTS; i++) fprintf(f, " %s |", acts_part_names[i]);
    fprintf(f, " activations | learner total | headroom |\n|---|---:|---:|---|");
    for (int i = 0; i < ACTS_PARTS + 3; i++) fprintf(f, "---:|");
    fprintf(f, "\n");
    static const char *const layouts[] = {"shared prefix", "naive"}, *const modes[] = {"stored", "recompute"};
    for (int l = 0; l < MP_LAYOUTS; l++)
        for (int m = 0; m < MP_MODES; m++) {
            const ActsSize *z = &p->acts[l][m];
            fprintf(f, "| %s | %d | %d | %s |", layouts[l], p->tokens[l], p->clips[l], modes[m]);
            for (int i = 0; i < ACTS_PARTS; i++) fprintf(f, " %.3f |", gib((double)z->part[i]));
            double total = p->learner_fixed + (double)z->bytes;
            fprintf(f, " %.2f | %.2f | %.2f%s |\n", gib((double)z->bytes), gib(total), gib(p->gpu - total),
                    total > p->gpu ? " (does not fit)" : "");
        }
    fprintf(f, "\nlm_head chunk: %d rows of the vocabulary at a time. Shared-prefix groups per micro-batch that fit: "
            "%d stored, %d with recompute.\n",
            p->acts[MP_GROUP][MP_STORED].chunk, p->max_groups[MP_STORED], p->max_groups[MP_RECOMPUTE]);

    fprintf(f, "\n### Rollout GPU: %d question(s) at once, G = %d, up to %d new tokens\n\n", o->questions, o->G,
            o->max_new_tokens);
    fprintf(f, "| item | GiB | how |\n|---|---:|---|\n");
    row(f, "policy weights", p->policy,
        o->colocated ? "none: the learner's bf16 weights, read in place" : "sampling; updated by the weight broadcast");
    row(f, "reference weights", p->reference, "frozen, for the KL term's log-probs");
    snprintf(how, sizeof how, "%d rows (prompt once + G x new tokens per question), K and V of every layer",
             p->kv_rows);
    row(f, "KV cache", p->kv, how);
    snprintf(how, sizeof how, "inference activations, %d tokens (during generation, with the KV cache)",
             p->prefill_tokens);
    row(f, "prefill activations", p->prefill, how);
    snprintf(how, sizeof how, "one group of %d tokens (after generation; the larger phase counts)",
             p->scoring_tokens);
    row(f, "reference scoring activations", p->scoring, how);
    row(f, "NCCL buffers", p->rollout_nccl, o->colocated ? "none: no weight broadcast" : "assumed reserve");
    row(f, "CUDA context, cuBLAS, slack", p->runtime, "assumed reserve (its own process)");
    row(f, "**peak total**", p->rollout_total, "");
    if (!o->colocated) {
        fprintf(f, "\nRollout headroom %.2f GiB%s; questions generated at once that fit: %d.\n",
                gib(p->gpu - p->rollout_total), p->rollout_total > p->gpu ? " (does not fit)" : "", p->max_questions);
        return;
    }
    double learner = memplan_learner_need(p, 0);
    fprintf(f,
            "\n### The shared GPU (each of %d)\n\nlearner %.2f GiB (fixed + one stored shared-prefix micro-batch) + "
            "rollout peak %.2f GiB = **%.2f GiB** of %.2f: headroom %.2f GiB%s. With the other side at that size: "
            "questions generated at once that fit: %d; shared-prefix groups per micro-batch that fit: %d stored, "
            "%d with recompute.\n",
            o->learners, gib(learner), gib(p->rollout_total), gib(p->colocated_total), gib(p->gpu),
            gib(p->gpu - p->colocated_total), p->colocated_total > p->gpu ? " (does not fit)" : " (fits)",
            p->max_questions, p->max_groups[MP_STORED], p->max_groups[MP_RECOMPUTE]);
}
