// rollout: the rollout role of the GRPO job (`mpirun -np L learner ARGS : -np R rollout ARGS`, the same
// arguments for both: [--config F] [--set k=v]... [--resume]). Step protocol: the learner root first
// announces the start step (comm_next_step: the learners decide where a resumed run starts), then for
// steps k = start .. n_steps-1 (pipeline/schedule.h):
//   1. receive the weights versions up to schedule_version(k) from the learner root, in order, each
//      announced first (k itself in the synchronous schedule, grpo.max_staleness = 0; a version other
//      than the expected one is fatal; an announced stop, e.g. after SIGTERM, which a rollout itself only
//      notes, ends the loop);
//   2. take this rank's (slot, question) pairs of step k from the seeded order, and for each one produce
//      a TrajGroup (worker.h: prepare, generate G, reward, reference log-probs) and send it to the
//      learner that owns the slot (slot % L). Unusable questions go as failed groups.
// rollout.backend picks where each rank samples and scores the reference: the CPU, or one GPU per rank
// (the broadcast's fp32 weights are converted on upload; the reference loads straight into the GPU).
// The weights come over the transport weights.h decides for both roles: NCCL as bf16 straight into the
// policy's device memory when the learners run on GPUs too and every rank has its own GPU, else MPI; with
// train.placement=colocated the policy IS learner k's parameter buffer (rollout k on its node and GPU),
// acquired at version k before the step's generation and released after it.
// Rollouts keep no state between steps (sampling is keyed by seed, step, question, sample and position),
// so a resumed run samples exactly what the uninterrupted one did. Any error ends the whole job through
// comm_abort with the rank and the reason.
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "comm/weights.h"
#include "config/config.h"
#include "data/order.h"
#include "model/checkpoint.h"
#include "model/cuda/model_load_device.h"
#include "model/hf_config.h"
#include "pipeline/backend.h"
#include "pipeline/schedule.h"
#include "util/log.h"
#include "util/signals.h"
#include "worker.h"

typedef struct {
    Comm comm;
    Config cfg;
    Dataset ds;
    Order order;
    PrepContext prep;
    Ops *ops;
    Model policy, ref;
    float *weights;  // [policy.t.numel] host copy an MPI broadcast lands in (NULL over NCCL or shared)
    RewardClient *reward;
    RolloutWorker w;
    int64_t start, n_steps;
    VersionSchedule vs;  // the weights version of each step
    int64_t version;     // the newest weights version received (start - 1: none yet)
    WeightsLink wlink;   // the weight broadcast from the learner root
} Rollout;

// Config checks specific to this role; each failure names the key.
static void check_config(const Rollout *r) {
    const Config *cfg = &r->cfg;
    Err e;
    if (cfg->train.mode == CFG_MODE_SFT)
        comm_abort("train.mode=sft trains on the solutions without rollouts: launch it with learner ranks only");
    if (backend_check(cfg->rollout.backend, "rollout.backend", &e)) comm_abort("%s", e.msg);
    if (config_require(cfg, "model.path", &e) || config_require(cfg, "data.train", &e) ||
        config_check_world(cfg, r->comm.n_learners, r->comm.n_rollouts, &e))
        comm_abort("config: %s", e.msg);
}

// The frozen reference model into r->ref: on a GPU straight into device memory (bf16 files as raw
// bytes, no fp32 host copy of the 7B weights), on the CPU through one host copy.
static int ref_load(Rollout *r, const char *dir, Err *e) {
    if (r->cfg.rollout.backend == CFG_BACKEND_CUDA) return model_load_device(&r->ref, dir, r->ops, e);
    ModelConfig rc;
    ParamTable rt;
    float *host;
    if (model_load_dir(dir, &rc, &rt, &host, e)) return -1;
    model_init(&r->ref, &rc, r->ops, host);
    param_table_free(&rt);
    free(host);
    return 0;
}

// The policy's shape from model.path (its weights arrive with the first broadcast) and, with beta > 0,
// the frozen reference model, which must have the same parameter table.
static void load_models(Rollout *r) {
    const Config *cfg = &r->cfg;
    Err e;
    ModelConfig mc;
    if (hf_config_load(cfg->model.path, &mc, &e) || model_config_check(&mc, &e)) comm_abort("model.path: %s", e.msg);
    ParamTable t;
    param_table_build(&t, &mc);
    const size_t numel = t.numel;
    param_table_free(&t);
    // rollout.backend: the CPU, or this rank's GPU of its node (after the node's learners when those run
    // on GPUs; colocated: its learner's)
    r->ops = backend_create_rank(&r->comm, cfg, cfg->rollout.backend, "rollout.backend", &e);
    if (!r->ops) comm_abort("%s", e.msg);
    // colocated: the policy is the learner's parameter buffer, read in place; else a buffer of its own
    void *shared;
    if (weights_link_share_rollout(&r->wlink, &r->comm, cfg, numel * r->ops->act_size, &shared, &e))
        comm_abort("%s", e.msg);
    if (!shared) r->weights = callocCheck(numel, sizeof(float));
    model_init_at(&r->policy, &mc, r->ops, r->weights, shared);
    if (cfg->grpo.beta <= 0) return;
    const char *dir = config_ref_model_dir(cfg);
    if (ref_load(r, dir, &e)) comm_abort("reference model: %s", e.msg);
    if (r->ref.t.numel != r->policy.t.numel || r->ref.cfg.vocab != mc.vocab || r->ref.cfg.layers != mc.layers ||
        r->ref.cfg.dim != mc.dim)
        comm_abort("reference model %s (%zu parameters) does not have the policy's shape (%s, %zu parameters)", dir,
                   r->ref.t.numel, cfg->model.path, r->policy.t.numel);
}

static void setup(Rollout *r) {
    const Config *cfg = &r->cfg;
    Err e;
    check_config(r);
    // The service first: a missing one is reported before the slow model loading.
    RewardClientOptions ropt;
    reward_client_options_default(&ropt);
    ropt.request_timeout_s = cfg->reward.timeout_ms / 1000.0;
    ropt.max_failures = cfg->reward.max_failures;
    ropt.open_wait_s = cfg->reward.start_wait_s;
    r->reward = reward_client_open(cfg->reward.server, &ropt, &e);
    if (!r->reward) comm_abort("reward.server %s: %s", cfg->reward.server, e.msg);
    DataOptions dopt = prep_data_options(cfg);
    if (dataset_load(&r->ds, cfg->data.train, &dopt, &e)) comm_abort("data.train: %s", e.msg);
    if (schedule_total_steps(cfg, r->ds.n, &r->n_steps, &e)) comm_abort("%s", e.msg);
    order_init(&r->order, (uint64_t)cfg->train.seed, r->ds.n, cfg->data.shuffle);
    PrepOptions popt = prep_options_from_config(cfg);
    if (prep_options_set_model(&popt, cfg->model.path, &e)) comm_abort("model.path: %s", e.msg);
    if (prep_context_init(&r->prep, config_tokenizer_dir(cfg), &popt, &e)) comm_abort("model.tokenizer: %s", e.msg);
    load_models(r);
    // At the point of the job where the learner root's trainer_init makes the same call.
    weights_link_init(&r->wlink, &r->comm, cfg);
    if (r->wlink.transport != WEIGHTS_MPI) {
        free(r->weights);  // weights arrive in device memory: the host copy only serves the MPI path
        r->weights = NULL;
    }
    r->w = (RolloutWorker){.policy = &r->policy,
                           .ref = cfg->grpo.beta > 0 ? &r->ref : NULL,
                           .prep = &r->prep,
                           .reward = r->reward,
                           .reward_opt = rollout_reward_options(cfg),
                           .sampler = rollout_sampler_params(cfg, &r->prep),
                           .G = cfg->rollout.num_generations};
    char msg[256];
    if (sampler_check(&r->w.sampler, r->policy.cfg.vocab, msg, sizeof msg)) comm_abort("rollout: %s", msg);
    log_info("rollout %d of %d: %lld questions, %lld steps, G %d, %s reference model", r->comm.role_rank,
             r->comm.n_rollouts, (long long)r->ds.n, (long long)r->n_steps, r->w.G, r->w.ref ? "with" : "no");
}

// Weights version k into the policy: over NCCL into its device memory, or over MPI into the host
// copy, then uploaded; colocated, version k of the learner's weights acquired in place.
static void receive_weights(Rollout *r, int64_t k) {
    Err e;
    size_t n = r->policy.t.numel;
    if (weights_link_bcast(&r->wlink, &r->comm, r->weights, r->policy.params, n, k, backend_stream(r->ops), &e))
        comm_abort("weights version %lld: %s", (long long)k, e.msg);
    if (r->wlink.transport == WEIGHTS_MPI) r->ops->upload_act(r->ops, r->policy.params, r->weights, n);
}

// One step: the weights versions up to the step's (every version is broadcast in order; between steps,
// so never in the middle of a question), then this rank's groups of step k to their learners, generated
// rollout.batch_questions questions at a time.
// Returns 1 when the learners announced the stop instead of the next version.
static int run_step(Rollout *r, int64_t k, int64_t *questions, int64_t *slots) {
    const Comm *c = &r->comm;
    Err e;
    double t0 = log_elapsed();
    while (r->version < schedule_version(&r->vs, k)) {
        int64_t a = comm_next_step(c, 0);
        if (a == COMM_STOP) return 1;
        if (a != r->version + 1)
            comm_abort("the learner root announced weights version %lld, version %lld was due", (long long)a,
                       (long long)r->version + 1);
        receive_weights(r, ++r->version);
    }
    double t_sync = log_elapsed() - t0;
    r->w.sampler.seed = rollout_step_seed((uint64_t)r->cfg.train.seed, k);
    int64_t n = order_rank_questions(&r->order, k, r->cfg.train.questions_per_step, c->role_rank, c->n_rollouts,
                                     questions, slots);
    TrajTimes sum = {0};
    int failed = 0;
    const int B = r->cfg.rollout.batch_questions;
    const Question **qs = mallocCheck((size_t)B * sizeof(Question *));
    TrajGroup *gs = mallocCheck((size_t)B * sizeof(TrajGroup));
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        const int nb = n - i0 < B ? (int)(n - i0) : B;
        for (int j = 0; j < nb; j++) qs[j] = &r->ds.q[questions[i0 + j]];
        if (rollout_questions(&r->w, qs, slots + i0, nb, r->version, gs, &e))
            comm_abort("step %lld: %s", (long long)k, e.msg);
        for (int j = 0; j < nb; j++) {
            const Question *q = qs[j];
            TrajGroup *g = &gs[j];
            const long long slot = (long long)slots[i0 + j];
            // The learner reports and counts failed questions; here they only show in the debug log.
            if (g->failed) {
                failed++;
                log_debug("step %lld slot %lld: question %s failed: %s", (long long)k, slot, q->id, g->reason);
            }
            log_debug("step %lld slot %lld question %s: data %.3fs prefill %.3fs decode %.3fs reward %.3fs "
                      "reference %.3fs",
                      (long long)k, slot, q->id, g->time.data, g->time.prefill, g->time.decode, g->time.reward,
                      g->time.reference);
            sum.data += g->time.data;
            sum.prefill += g->time.prefill;
            sum.decode += g->time.decode;
            sum.reward += g->time.reward;
            sum.reference += g->time.reference;
            if (comm_send_group(c, g, &e)) comm_abort("step %lld slot %lld: %s", (long long)k, slot, e.msg);
            traj_group_free(g);
        }
    }
    free(qs);
    free(gs);
    // colocated: the learner may update the weights once this rank has finished reading them
    if (weights_link_release(&r->wlink, c, backend_stream(r->ops), &e)) comm_abort("step %lld: %s", (long long)k, e.msg);
    log_debug("step %lld: %lld groups (%d failed), weight sync %.3fs data %.3fs prefill %.3fs decode %.3fs "
              "reward %.3fs reference %.3fs, total %.3fs",
              (long long)k, (long long)n, failed, t_sync, sum.data, sum.prefill, sum.decode, sum.reward,
              sum.reference, log_elapsed() - t0);
    return 0;
}

static void teardown(Rollout *r) {
    weights_link_free(&r->wlink);
    reward_client_close(r->reward);
    if (r->w.ref) model_free(&r->ref);
    model_free(&r->policy);
    ops_destroy(r->ops);
    free(r->weights);
    prep_context_free(&r->prep);
    order_free(&r->order);
    dataset_free(&r->ds);
}

int main(int argc, char **argv) {
    static Rollout r;
    signals_install();  // SIGTERM is noted only: the learners checkpoint, then announce the stop
    r.comm = comm_init(&argc, &argv, ROLE_ROLLOUT);
    log_init("rollout", r.comm.role_rank);
    Err e;
    int rc = config_from_args(&r.cfg, &argc, argv, &e);
    if (rc == CONFIG_ARGS_HELP) {
        comm_finalize(&r.comm);
        return 0;
    }
    if (rc) comm_abort("%s", e.msg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") != 0)
            comm_abort("unknown argument \"%s\" (usage: rollout [--config F] [--set k=v]... [--resume] "
                       "[--help-config])",
                       argv[i]);
        r.cfg.train.resume = true;
    }
    log_set_level(r.cfg.log.level);
    setup(&r);
    int64_t per_rank = order_rank_count(r.cfg.train.questions_per_step, 0, r.comm.n_rollouts);
    int64_t *questions = mallocCheck(sizeof(int64_t) * (size_t)(per_rank + 1));
    int64_t *slots = mallocCheck(sizeof(int64_t) * (size_t)(per_rank + 1));
    r.start = comm_next_step(&r.comm, 0);
    if (r.start < 0 || r.start > r.n_steps)
        comm_abort("the learner root announced start step %lld of %lld", (long long)r.start, (long long)r.n_steps);
    r.vs = schedule_versions(&r.cfg, r.start, r.n_steps);
    r.version = r.start - 1;
    int64_t k = r.start;
    while (k < r.n_steps && run_step(&r, k, questions, slots) == 0) k++;
    log_info("rollout %d: done, steps %lld..%lld", r.comm.role_rank, (long long)r.start, (long long)k - 1);
    free(questions);
    free(slots);
    teardown(&r);
    comm_finalize(&r.comm);
    return 0;
}
