// learner: the training role of the MPMD job
//   mpirun -np L learner [--config F] [--set k=v]... [--resume] : -np R rollout [same arguments]
// (train.mode = sft runs learners only: mpirun -np L learner ...). Step k (weights version k):
// GRPO: send the weights to the rollouts, receive this learner's groups, train on them (with
// grpo.max_staleness > 0 the groups of later steps sampled with older weights come in between:
// pipeline/schedule.h); SFT: train on
// this learner's questions of the step. Then log the step's metrics (root) and checkpoint every
// train.save_every steps and at the end. --resume (train.resume) continues from the newest complete
// checkpoint in train.run_dir. SIGTERM (SLURM's warning before a kill) stops the job at the next step
// boundary: the step finishes, a checkpoint is written, the rollouts are told to stop, and every rank
// exits 0; --resume continues from there. Any error ends the whole job through comm_abort, naming rank
// and reason.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "comm/comm.h"
#include "config/config.h"
#include "grpo_step.h"
#include "metrics/metrics.h"
#include "pipeline/schedule.h"
#include "samples.h"
#include "sft.h"
#include "stats.h"
#include "train.h"
#include "trainer_ckpt.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/procmem.h"
#include "util/signals.h"

#define LEARNER_USAGE                                                                                       \
    "usage: mpirun -np L learner [--config FILE] [--set section.key=value]... [--resume] [--help-config]\n" \
    "           [: -np R rollout SAME ARGUMENTS]   (train.mode=sft: learners only)\n"

// What config_from_args left: --resume, --help; anything else ends the job.
static void learner_args(Config *cfg, Comm *c, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") == 0) {
            cfg->train.resume = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (c->role_rank == 0) fputs(LEARNER_USAGE, stdout);
            comm_finalize(c);
            exit(0);
        } else {
            comm_abort("unknown argument \"%s\"\n" LEARNER_USAGE, argv[i]);
        }
    }
}

// The role layout the mode needs.
static void learner_check_world(const Config *cfg, const Comm *c) {
    Err e;
    if (config_check_world(cfg, c->n_learners, c->n_rollouts, &e)) comm_abort("%s", e.msg);
    if (cfg->train.mode == CFG_MODE_GRPO && c->n_rollouts < 1)
        comm_abort("train.mode=grpo needs rollout ranks (mpirun -np L learner ARGS : -np R rollout ARGS)");
    if (cfg->train.mode == CFG_MODE_SFT && c->n_rollouts > 0)
        comm_abort("train.mode=sft runs learners only (mpirun -np L learner ARGS), but rollout ranks started (%d)",
                   c->n_rollouts);
}

// A run that does not resume must not meet another run's checkpoints (it could never write its own).
static void learner_check_fresh(const Config *cfg) {
    if (cfg->train.resume) return;
    Err e;
    char path[CFG_PATH_CAP + 64];
    int64_t step;
    int found = ckpt_latest(cfg->train.run_dir, path, sizeof path, &step, &e);
    if (found < 0) comm_abort("train.run_dir: %s", e.msg);
    if (found)
        comm_abort(
            "train.run_dir %s already holds checkpoints (newest: step %lld): pass --resume to continue it, or "
            "use another run directory",
            cfg->train.run_dir, (long long)step);
}

// Root: the run directory, its effective config and the metric files.
static Metrics *learner_open_run(const Config *cfg, int64_t start) {
    Err e;
    char path[CFG_PATH_CAP + 16];
    if (dir_make(cfg->train.run_dir, &e)) comm_abort("train.run_dir: %s", e.msg);
    if (config_write(cfg, path_join(path, sizeof path, cfg->train.run_dir, "config.json"), &e)) comm_abort("%s", e.msg);
    Metrics *m =
        metrics_open(cfg->train.run_dir, cfg->log.jsonl, cfg->log.hdf5, start > 0 ? start - 1 : METRICS_FRESH, &e);
    if (!m) comm_abort("%s", e.msg);
    return m;
}

// One step: weights out (GRPO), gradients, updates. Fills st with this learner's part. GRPO: the rollouts
// take version k just before the first step sampled with it (pipeline/schedule.h), after sending the
// groups of the steps before; those are received first, so that no rollout is left blocked in a send
// while the broadcast waits for it. A version no step samples with is not sent.
static int learner_step(Trainer *t, GroupInbox *in, const VersionSchedule *vs, int64_t k, StepStats *st, Err *e) {
    if (t->cfg->train.mode == CFG_MODE_SFT) return sft_train_step(t, k, st, e);
    const Comm *c = t->comm;
    int n = (int)order_rank_count(t->cfg->train.questions_per_step, c->role_rank, c->role_size);
    int64_t first = schedule_first_step(vs, k);
    if (grpo_recv_ahead(t, in, vs, k, first - 1, n, st, e)) return -1;
    double t0 = log_elapsed();
    if (first < vs->n_steps) {
        comm_next_step(t->comm, k);  // the rollouts go on to version k (learner_stop announces the stop instead)
        if (trainer_sync_weights(t, k, e)) return -1;
    }
    st->t_weight_sync = log_elapsed() - t0;
    TrajGroup *groups = callocCheck((size_t)n + 1, sizeof *groups);
    int rc = grpo_recv_groups(t, in, vs, k, groups, n, st, e);
    if (rc == 0) {
        rc = grpo_train_step(t, k, groups, n, st, e);
        if (rc == 0 && t->cfg->log.samples) rc = samples_write(t, k, groups, n, e);
        for (int i = 0; i < n; i++) traj_group_free(&groups[i]);
    }
    free(groups);
    return rc;
}

// Whether any learner has received a stop signal (collective over the learners, at a step boundary).
static int learner_stop_requested(const Comm *c) {
    int sig = signals_stop_requested();
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &sig, 1, MPI_INT, MPI_MAX, c->role_comm));
    return sig;
}

// After SIGTERM (all learners agreed, step t->step - 1 done): the groups the rollouts sample with the
// weights they already hold are received and dropped (a resume samples those steps again, from the
// checkpoint written next), so that no rollout stays blocked in a send; then the rollouts waiting for
// the next weights version are told to stop instead.
static int learner_stop(Trainer *t, GroupInbox *in, const VersionSchedule *vs, Err *e) {
    if (t->cfg->train.mode != CFG_MODE_GRPO) return 0;
    const Comm *c = t->comm;
    int n = (int)order_rank_count(t->cfg->train.questions_per_step, c->role_rank, c->role_size);
    int64_t next = schedule_first_step(vs, t->step);  // the first step that waits for version t->step
    StepStats st;
    stats_clear(&st);
    if (grpo_recv_ahead(t, in, vs, t->step, next - 1, n, &st, e)) return -1;
    group_inbox_free(in);
    if (next < vs->n_steps) comm_next_step(c, COMM_STOP);
    return 0;
}

int main(int argc, char **argv) {
    signals_install();
    Comm comm = comm_init(&argc, &argv, ROLE_LEARNER);
    log_init("learner", comm.role_rank);
    Config cfg;
    Err e;
    int rc = config_from_args(&cfg, &argc, argv, &e);
    if (rc == CONFIG_ARGS_HELP) {
        comm_finalize(&comm);
        return 0;
    }
    if (rc) comm_abort("%s", e.msg);
    learner_args(&cfg, &comm, argc, argv);
    log_set_level(cfg.log.level);
    learner_check_world(&cfg, &comm);

    Trainer t;
    if (trainer_init(&t, &cfg, &comm, &e)) comm_abort("%s", e.msg);
    int64_t start;
    if (schedule_start_step(&cfg, &start, &e)) comm_abort("%s", e.msg);
    learner_check_fresh(&cfg);
    if (tckpt_restore(&t, &start, &e)) comm_abort("%s", e.msg);
    // The rollouts start where the learners do: a resume may fall back past a damaged checkpoint.
    if (cfg.train.mode == CFG_MODE_GRPO) comm_next_step(&comm, start);
    int root = comm.role_rank == 0;
    Metrics *metrics = root ? learner_open_run(&cfg, start) : NULL;
    if (root)
        log_info(
            "%s: %d learners, %d rollouts, %zu parameters, %lld questions, steps %lld..%lld of %d questions, run "
            "dir %s",
            cfg.train.mode == CFG_MODE_SFT ? "sft" : "grpo", comm.n_learners, comm.n_rollouts, t.model.t.numel,
            (long long)t.data.n, (long long)start, (long long)t.n_steps - 1, cfg.train.questions_per_step,
            cfg.train.run_dir);

    VersionSchedule vs = schedule_versions(&cfg, start, t.n_steps);
    GroupInbox inbox = {0};
    for (int64_t k = start; k < t.n_steps; k++) {
        StepStats st;
        stats_clear(&st);
        double t0 = log_elapsed();
        if (learner_step(&t, &inbox, &vs, k, &st, &e)) comm_abort("step %lld: %s", (long long)k, e.msg);
        t.step = k + 1;
        st.t_step = log_elapsed() - t0;
        stats_reduce(&comm, &st);
        if (root && stats_log(&st, &cfg, comm.n_learners, comm.n_rollouts, k, t.n_steps, metrics, &e))
            comm_abort("metrics: %s", e.msg);
        int save_every = cfg.train.save_every;
        int save = (save_every > 0 && t.step % save_every == 0) || t.step == t.n_steps;
        int sig = t.step < t.n_steps ? learner_stop_requested(&comm) : 0;
        if (sig && learner_stop(&t, &inbox, &vs, &e)) comm_abort("stop after step %lld: %s", (long long)k, e.msg);
        // The schedule drains the pipeline at checkpoint steps: a group held here would be lost.
        if (save && inbox.n > 0)
            comm_abort("checkpoint of step %lld with %d groups in flight", (long long)t.step, inbox.n);
        if ((save || sig) && tckpt_save(&t, &e)) comm_abort("%s", e.msg);
        if (sig) {
            if (root) log_info("signal %d: stopped after step %lld of %lld, checkpointed; --resume continues", sig,
                               (long long)k, (long long)t.n_steps - 1);
            break;
        }
    }
    group_inbox_free(&inbox);
    if (root) {
        progress_end();
        log_info("done: %lld of %lld steps; metrics and checkpoints in %s; learner host memory peak (VmHWM) %.2f GiB",
                 (long long)t.step, (long long)t.n_steps, cfg.train.run_dir, procmem_peak_bytes() / 1073741824.0);
        metrics_close(metrics);
    }
    trainer_free(&t);
    comm_finalize(&comm);
    return 0;
}
