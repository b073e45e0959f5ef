// rollout_job: the learner side of MPI tests of the `rollout` binary (driven by rollout_job.sh).
//   rollout_job setup DIR               writes the assets: DIR/tok (Qwen2-Audio tokenizer), DIR/model (tiny
//                                       random model), DIR/data/train.jsonl (synthetic questions plus one
//                                       whose audio file is missing)
//   rollout_job check --config F        plays the learners: each step k announces k, sends weights version k, checks
//                                       every group it receives (see check_group), then that each of its
//                                       slots came exactly once
//   rollout_job ahead --config F        sends version 1 where the rollouts expect 0 (they must abort)
//   rollout_job idle                    a learner that only waits (for rollouts that must refuse to start)
#include "comm/comm.h"
#include "config/config.h"
#include "data/order.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "pipeline/pipeline_fixture.h"
#include "pipeline/prepare.h"
#include "pipeline/schedule.h"
#include "util/fileio.h"

static int setup(const char *dir) {
    char path[4096], tok[4096], data[4096];
    Err e;
    path_join(tok, sizeof tok, dir, "tok");
    path_join(data, sizeof data, dir, "data");
    SynthOptions so = {.out_dir = data, .n = 6, .seed = 5, .test_frac = 0};
    if (tokenizer_build_qwen2_audio(fixture_qwen3_json(), tok, &e) || synth_generate(&so, NULL, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return 1;
    }
    path_join(path, sizeof path, data, "train.jsonl");
    FILE *f = fopenCheck(path, "a");
    fprintf(f, "{\"id\": 77, \"question_text\": \"What is heard?\", \"multi_choice\": [\"a\", \"b\"], \"answer\": 0, "
               "\"audio_path\": \"missing.wav\"}\n");
    fcloseCheck(f);
    ModelConfig mc;
    if (hf_config_load(SRC_PATH("configs/model-tiny.json"), &mc, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return 1;
    }
    ParamTable t;
    param_table_build(&t, &mc);
    float *params = mallocCheck(sizeof(float) * t.numel);
    param_init_random(&mc, &t, params, 1);
    path_join(path, sizeof path, dir, "model");
    int rc = model_save_dir(path, &mc, &t, params, SAVE_F32, (size_t)1 << 40, tok, &e);
    if (rc) fprintf(stderr, "setup: %s\n", e.msg);
    free(params);
    param_table_free(&t);
    return rc ? 1 : 0;
}

// One received group of step k against the order: the right step, learner and rollout, the slot's
// question, a full group (or a failed one for the question whose audio is missing).
static void check_group(const Comm *c, const Config *cfg, Order *o, const Dataset *ds, int64_t k, const TrajGroup *g,
                        int src, int *seen) {
    const int64_t B = cfg->train.questions_per_step;
    int64_t s = g->slot - k * B;
    CHECKF(s >= 0 && s < B, "step %lld: slot %lld is not one of the step's", (long long)k, (long long)g->slot);
    if (s < 0 || s >= B) return;
    seen[s]++;
    CHECK_INT(g->version, k);
    CHECK_INT(comm_learner_of(c, g->slot), c->role_rank);
    CHECK_INT(src, order_slot_rank(s, c->n_rollouts));
    CHECK_INT(g->question, order_question(o, g->slot, NULL));
    const Question *q = &ds->q[g->question];
    CHECK_STR(g->audio_path, q->audio_path);
    if (strstr(q->audio_path, "missing.wav")) {
        CHECK(g->failed == 1 && g->G == 0);
        CHECKF(strstr(g->reason, "question 77 (line 7)") && strstr(g->reason, "missing.wav"), "%s", g->reason);
        return;
    }
    CHECK(!g->failed);
    CHECK_INT(g->G, cfg->rollout.num_generations);
    CHECK_INT(g->n_funcs, 2);
    CHECK(g->ref_lp != NULL);
    CHECK(g->time.prefill > 0 && g->time.decode > 0 && g->time.reference > 0);
    for (int i = 0; i < g->G; i++) CHECK(g->len[i] >= 1 && g->len[i] <= cfg->rollout.max_new_tokens);
}

static int check(const Comm *c, const Config *cfg, int ahead) {
    Err e;
    Dataset ds;
    DataOptions dopt = prep_data_options(cfg);
    ModelConfig mc;
    ParamTable t;
    float *params;
    int64_t n_steps;
    if (dataset_load(&ds, cfg->data.train, &dopt, &e) || schedule_total_steps(cfg, ds.n, &n_steps, &e) ||
        model_load_dir(cfg->model.path, &mc, &t, &params, &e))
        comm_abort("%s", e.msg);
    Order o;
    order_init(&o, (uint64_t)cfg->train.seed, ds.n, cfg->data.shuffle);
    const int64_t B = cfg->train.questions_per_step;
    int *seen = mallocCheck(sizeof(int) * (size_t)B);
    int failed = 0;
    for (int64_t k = 0; k < n_steps; k++) {
        comm_next_step(c, k);
        if (comm_bcast_weights(c, params, t.numel, k + ahead, &e)) comm_abort("%s", e.msg);
        if (ahead) MPI_CHECK(MPI_Barrier(c->world));  // the rollouts abort the job before joining
        memset(seen, 0, sizeof(int) * (size_t)B);
        int64_t n = order_rank_count(B, c->role_rank, c->n_learners);
        for (int64_t i = 0; i < n; i++) {
            TrajGroup g;
            int src;
            if (comm_recv_group(c, &g, &src, &e)) comm_abort("%s", e.msg);
            check_group(c, cfg, &o, &ds, k, &g, src, seen);
            failed += g.failed;
            traj_group_free(&g);
        }
        for (int64_t s = 0; s < B; s++) CHECK_INT(seen[s], order_slot_rank(s, c->n_learners) == c->role_rank);
    }
    comm_next_step(c, COMM_STOP);
    // Every slot the question with the missing file fills came back failed, over all learners.
    double all = failed;
    comm_role_allreduce_sum_f64(c, &all, 1);
    int want = 0;
    for (int64_t slot = 0; slot < n_steps * B; slot++)
        want += strstr(ds.q[order_question(&o, slot, NULL)].audio_path, "missing.wav") != NULL;
    CHECK(want >= 1);
    CHECK_INT(all, want);
    free(seen);
    free(params);
    param_table_free(&t);
    order_free(&o);
    dataset_free(&ds);
    char name[64];
    snprintf(name, sizeof name, "rollout_job learner %d", c->role_rank);
    return test_summary(name);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "setup") == 0) return setup(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: rollout_job setup DIR | check --config F | ahead --config F | idle\n");
        return 1;
    }
    const char *mode = argv[1];
    Comm c = comm_init(&argc, &argv, ROLE_LEARNER);
    log_init("learner", c.role_rank);
    if (strcmp(mode, "idle") == 0) {
        MPI_CHECK(MPI_Barrier(c.world));  // never passes: the rollouts refuse to start and abort the job
        comm_finalize(&c);
        return 1;
    }
    Config cfg;
    Err e;
    if (config_from_args(&cfg, &argc, argv, &e)) comm_abort("%s", e.msg);
    int rc = check(&c, &cfg, strcmp(mode, "ahead") == 0);
    comm_finalize(&c);
    return rc;
}
