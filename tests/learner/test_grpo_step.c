// test_grpo_step: a whole GRPO step on the learner (grpo_train_step) with hand-made trajectory groups
// on a small random model with the real tokenizer and synthetic audio: dynamic filtering, reward
// scaling, several updates per batch, failed and malformed groups, model.recompute (same gradient), the
// rollout/learner mismatch (0 exactly, then after a skipped weight update, with its corrections) and the
// settings the learner refuses. The step's gradient is read back from Trainer.grad (grad_clip 0,
// lr 0: the weights never move, so every step sees the same model). Runs under mpirun -np 1 (the trainer all-reduces).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grpo_step.h"
#include "model/checkpoint.h"
#include "model/param_init.h"
#include "pipeline/pipeline_fixture.h"
#include "test.h"
#ifdef AQA_CUDA
#include "model/cuda/ops_cuda.h"
#endif

static Comm comm;
static Config cfg;
static Trainer tr;
static int ready;

// A small Qwen2-Audio with the real vocabulary (the tokenizer's ids) and the real audio front end; two
// decoder layers, so recompute has a layer's activations to drop.
static const char *make_model(const char *tok_dir) {
    ModelConfig c = model_config_qwen2_audio_7b();
    c.a_dim = 32, c.a_layers = 1, c.a_heads = 2, c.a_ffn = 64;
    c.dim = 32, c.layers = 2, c.heads = 2, c.kv_heads = 1, c.head_dim = 16, c.ffn = 64, c.vocab = 151680;
    c.tie_embeddings = 1;
    ParamTable t;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof(float));
    param_init_random(&c, &t, p, 5);
    const char *dir = TMP_PATH("grpo_step_model");
    Err e;
    int rc = model_save_dir(dir, &c, &t, p, SAVE_F32, (size_t)1 << 30, tok_dir, &e);
    if (rc) fprintf(stderr, "FAIL: %s\n", e.msg);
    free(p);
    param_table_free(&t);
    return rc ? NULL : dir;
}

static void setup(void) {
    const char *tok = fixture_tokenizer_dir("grpo_step_tok");
    Dataset ds;
    const char *data = tok ? fixture_synth_dataset("grpo_step_data", 4, 11, &ds) : NULL;
    const char *model = data ? make_model(tok) : NULL;
    if (data) dataset_free(&ds);
    if (!CHECK(model != NULL)) return;
    config_defaults(&cfg);
    snprintf(cfg.model.path, sizeof cfg.model.path, "%s", model);
    path_join(cfg.data.train, sizeof cfg.data.train, data, "train.jsonl");
    cfg.rollout.num_generations = 2;
    cfg.rollout.max_new_tokens = 8;
    cfg.grpo.beta = 0;
    cfg.optim.lr = 0;
    cfg.optim.grad_clip = 0;
    cfg.train.questions_per_step = 2;
    cfg.train.grad_accum = 1;
    cfg.train.max_steps = 1;
    Err e;
    ready = trainer_init(&tr, &cfg, &comm, &e) == 0;
    if (!ready) fprintf(stderr, "FAIL: trainer_init: %s\n", e.msg);
    CHECK(ready);
}

// Group of question q at slot `slot`: the learner's own prompt, 2 completions of len0 and len1 tokens
// ending with <|im_end|>, the given total rewards, reference log-probs -2 (when with_ref).
static void make_group2(TrajGroup *g, int64_t q, int64_t slot, float r0, float r1, int len0, int len1, int with_ref) {
    PreparedQuestion pq;
    Err e;
    if (prep_question(&tr.prep, &tr.data.q[q], &pq, &e)) fatal("prep: %s", e.msg);
    int lens[2] = {len0, len1};
    traj_group_alloc(g, 2, lens, pq.prompt.n, 2, with_ref);
    memcpy(g->prompt_ids, pq.prompt.ids, (size_t)pq.prompt.n * sizeof(int32_t));
    g->question = q, g->slot = slot, g->version = 0;
    g->audio_path = strdupCheck(tr.data.q[q].audio_path);
    g->audio_samples = pq.n_samples;
    g->func_names[0] = strdupCheck("accuracy");
    g->func_names[1] = strdupCheck("format");
    float r[2] = {r0, r1};
    for (int s = 0; s < 2; s++) {
        g->rewards[s] = r[s];
        g->func_rewards[s * 2] = r[s] > 0, g->func_rewards[s * 2 + 1] = r[s] - (r[s] > 0);
        for (int i = 0; i < lens[s]; i++) {
            int k = g->offset[s] + i;
            g->ids[k] = i == lens[s] - 1 ? tr.eos[0] : 1000 + 37 * s + i;
            g->mask[k] = 1;
            g->sample_lp[k] = -3;
            if (with_ref) g->ref_lp[k] = -2;
        }
    }
    prep_question_free(&pq);
}

static void make_group(TrajGroup *g, int64_t q, int64_t slot, float r0, float r1, int len, int with_ref) {
    make_group2(g, q, slot, r0, r1, len, len, with_ref);
}

// Runs a step on groups[n]; returns 0/-1, copies the gradient to grad (if non-NULL) and the stats to st.
static int step(TrajGroup *groups, int n, float *grad, StepStats *st, Err *e) {
    stats_clear(st);
    int rc = grpo_train_step(&tr, 0, groups, n, st, e);
    if (rc == 0 && grad) memcpy(grad, tr.grad, tr.model.t.numel * sizeof(float));
    return rc;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static void test_dynamic_filter(void) {
    if (!ready) return;
    size_t n = tr.model.t.numel;
    float *gA = mallocCheck(n * sizeof(float)), *gF = mallocCheck(n * sizeof(float)),
          *gN = mallocCheck(n * sizeof(float));
    TrajGroup g[2];
    make_group(&g[0], 0, 0, 1, 0, 3, 0);  // A: rewards differ
    make_group(&g[1], 1, 1, 1, 1, 3, 0);  // Z: zero std
    StepStats st;
    Err e;
    CHECK(step(g, 1, gA, &st, &e) == 0);  // A alone
    CHECK(max_abs(gA, n) > 0);
    cfg.grpo.dynamic_filter = true;
    CHECK(step(g, 2, gF, &st, &e) == 0);
    CHECK_INT(st.sum[ST_FILTERED], 1);
    CHECK_INT(st.sum[ST_ZERO_STD], 1);
    CHECK_INT(st.sum[ST_GROUPS], 2);
    CHECK_INT(st.sum[ST_LOSS_TOKENS], 6);  // only A's tokens are in the loss
    // Z left the batch: the step is A's alone, bit for bit.
    CHECK(memcmp(gF, gA, n * sizeof(float)) == 0);
    cfg.grpo.dynamic_filter = false;
    CHECK(step(g, 2, gN, &st, &e) == 0);
    CHECK_INT(st.sum[ST_FILTERED], 0);
    CHECK_INT(st.sum[ST_LOSS_TOKENS], 12);
    // Unfiltered, Z's zero advantages add nothing but its 2 sequences join the grpo normaliser
    // (mean over 4 sequences instead of 2): the gradient halves.
    double diff = 0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs(gN[i] - 0.5 * gA[i]));
    CHECKF(diff <= 1e-6 * max_abs(gA, n), "max |gN - gA/2| = %g", diff);
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
    free(gA);
    free(gF);
    free(gN);
}

static void test_scale_rewards(void) {
    if (!ready) return;
    TrajGroup g[2];
    make_group(&g[0], 0, 0, 1, 0, 3, 0);
    make_group(&g[1], 1, 1, 2, 0, 3, 0);
    StepStats st;
    Err e;
    double eps = cfg.grpo.std_eps;
    // group: each group divided by its own std (sqrt(0.5), sqrt(2)): advantages +-0.5/(0.7071 + eps)
    // and +-1/(1.4142 + eps).
    cfg.grpo.scale_rewards = CFG_SCALE_GROUP;
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    double a = 0.5 / (sqrt(0.5) + eps), b = 1 / (sqrt(2.0) + eps);
    CHECK_NEAR(st.sum[ST_ADV_SQ], 2 * a * a + 2 * b * b, 1e-5);
    CHECK_NEAR(st.sum[ST_ADV_SUM], 0, 1e-6);
    // batch: the std of all four rewards {1, 0, 2, 0} (mean 0.75): sqrt(2.75 / 3).
    cfg.grpo.scale_rewards = CFG_SCALE_BATCH;
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    double s = sqrt(2.75 / 3) + eps;
    CHECK_NEAR(st.sum[ST_ADV_SQ], 2 * (0.5 / s) * (0.5 / s) + 2 * (1 / s) * (1 / s), 1e-5);
    // none: reward minus the group mean.
    cfg.grpo.scale_rewards = CFG_SCALE_NONE;
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    CHECK_NEAR(st.sum[ST_ADV_SQ], 2 * 0.25 + 2 * 1.0, 1e-6);
    // The statistics: mean reward 0.75, mean group std (0.7071 + 1.4142) / 2, per-function means.
    CHECK_NEAR(st.sum[ST_REWARD_SUM] / st.sum[ST_SAMPLES], 0.75, 1e-12);
    CHECK_NEAR(st.sum[ST_GROUP_STD_SUM] / st.sum[ST_GROUPS], (sqrt(0.5) + sqrt(2.0)) / 2, 1e-6);
    CHECK(st.n_funcs == 2 && strcmp(st.func_names[0], "accuracy") == 0);
    CHECK_NEAR(st.sum[ST_FUNC_SUM + 0] / st.sum[ST_FUNC_CNT + 0], 0.5, 1e-12);
    CHECK_NEAR(st.sum[ST_FUNC_SUM + 1] / st.sum[ST_FUNC_CNT + 1], 0.25, 1e-12);
    CHECK_INT(st.sum[ST_TRUNC], 0);  // every completion ends with <|im_end|>
    CHECK_INT(st.max[SM_LEN], 3);
    cfg.grpo.scale_rewards = CFG_SCALE_GROUP;
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
}

// The four aggregations through a step of 2 micro-steps, by hand. beta 0 and one update per batch make
// every token's loss -A (ratio 1). A: rewards {1, 0}, lengths {4, 2}: advantages +-a, a = 0.5 / (sqrt(0.5)
// + eps), token sum -4a + 2a = -2a. B: rewards {0, 1}, lengths {2, 2}: token sum 0.
static void test_loss_types(void) {
    if (!ready) return;
    TrajGroup g[2];
    make_group2(&g[0], 0, 0, 1, 0, 4, 2, 0);
    make_group2(&g[1], 1, 1, 0, 1, 2, 2, 0);
    double a = 0.5 / (sqrt(0.5) + cfg.grpo.std_eps);
    struct {
        CfgLossType type;
        double loss;
    } cases[] = {
        {CFG_LOSS_GRPO, 0},                        // mean of per-sequence means: mean(-A) = 0
        {CFG_LOSS_BNPO, -2 * a / (6 * 2)},         // micro-step A: its 6 tokens, / 2 micro-steps
        {CFG_LOSS_DR_GRPO, -2 * a / (2 * 8 * 2)},  // 2 sequences x max_new_tokens 8, / 2 micro-steps
        {CFG_LOSS_DAPO, -2 * a / 10},              // all 10 tokens of the step
    };
    cfg.train.grad_accum = 2;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        StepStats st;
        Err e;
        cfg.grpo.loss_type = cases[i].type;
        CHECK(step(g, 2, NULL, &st, &e) == 0);
        CHECKF(fabs(st.sum[ST_LOSS] - cases[i].loss) <= 1e-7, "loss_type %d: %.9g, expected %.9g", (int)cases[i].type,
               st.sum[ST_LOSS], cases[i].loss);
    }
    cfg.grpo.loss_type = CFG_LOSS_GRPO;
    cfg.train.grad_accum = 1;
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
}

static void test_num_iterations(void) {
    if (!ready) return;
    TrajGroup g[2];
    make_group(&g[0], 0, 0, 1, 0, 4, 1);
    make_group(&g[1], 1, 1, 0, 1, 2, 1);
    StepStats st1, st2;
    Err e;
    cfg.grpo.beta = 0.04;
    CHECK(step(g, 2, NULL, &st1, &e) == 0);
    CHECK(st1.sum[ST_KL_SUM] > 0 && st1.n_updates == 1);
    // mu = 2 with the weights unchanged (lr 0): the second pass's old log-probs are the first pass's, the
    // ratio is exactly 1, and both passes give the same loss.
    cfg.grpo.num_iterations = 2;
    CHECK(step(g, 2, NULL, &st2, &e) == 0);
    CHECK_INT(st2.n_updates, 2);
    CHECK_NEAR(st2.sum[ST_LOSS], 2 * st1.sum[ST_LOSS], 1e-7 * fabs(st1.sum[ST_LOSS]));
    CHECK_NEAR(st2.grad_norm_sum, 2 * st1.grad_norm_sum, 1e-6 * st1.grad_norm_sum);
    CHECK_INT(st2.sum[ST_CLIP_SUM], 0);
    cfg.grpo.num_iterations = 1;
    // With grad_accum 2 each micro-step carries half a batch and the gradient is the same.
    float *g1 = mallocCheck(tr.model.t.numel * sizeof(float)), *g2 = mallocCheck(tr.model.t.numel * sizeof(float));
    CHECK(step(g, 2, g1, &st1, &e) == 0);
    cfg.train.grad_accum = 2;
    CHECK(step(g, 2, g2, &st2, &e) == 0);
    cfg.train.grad_accum = 1;
    CHECK_NEAR(st2.sum[ST_LOSS], st1.sum[ST_LOSS], 1e-6 * fabs(st1.sum[ST_LOSS]));
    double diff = 0;
    for (size_t i = 0; i < tr.model.t.numel; i++) diff = fmax(diff, fabs(g1[i] - g2[i]));
    CHECKF(diff <= 1e-5 * max_abs(g1, tr.model.t.numel), "max |g1 - g2| = %g", diff);
    cfg.grpo.beta = 0;
    free(g1);
    free(g2);
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
}

static void test_bad_groups(void) {
    if (!ready) return;
    size_t n = tr.model.t.numel;
    float *gA = mallocCheck(n * sizeof(float)), *gB = mallocCheck(n * sizeof(float));
    TrajGroup g[2];
    StepStats st;
    Err e;
    make_group(&g[0], 0, 0, 1, 0, 3, 0);
    CHECK(step(g, 1, gA, &st, &e) == 0);
    // A failed group is counted and skipped; the step is the good group's.
    traj_group_init_failed(&g[1], 2, 1, "/nowhere.wav", "audio: cannot open /nowhere.wav");
    CHECK(step(g, 2, gB, &st, &e) == 0);
    CHECK_INT(st.sum[ST_BAD], 1);
    CHECK_INT(st.sum[ST_GROUPS], 1);
    CHECK(memcmp(gA, gB, n * sizeof(float)) == 0);
    traj_group_free(&g[1]);
    // A group size other than rollout.num_generations.
    cfg.rollout.num_generations = 3;
    CHECK(step(g, 1, NULL, &st, &e) == -1 && strstr(e.msg, "num_generations"));
    cfg.rollout.num_generations = 2;
    // beta > 0 needs the reference log-probs.
    cfg.grpo.beta = 0.04;
    CHECK(step(g, 1, NULL, &st, &e) == -1 && strstr(e.msg, "reference"));
    cfg.grpo.beta = 0;
    // A question index outside the data.
    g[0].question = tr.data.n;
    CHECK(step(g, 1, NULL, &st, &e) == -1 && strstr(e.msg, "not in the"));
    g[0].question = 0;
    // A prompt that is not the learner's (other data or tokenizer).
    g[0].prompt_ids[g[0].n_prompt - 1] += 1;
    CHECK(step(g, 1, NULL, &st, &e) == -1 && strstr(e.msg, "differs"));
    g[0].prompt_ids[g[0].n_prompt - 1] -= 1;
    // Groups that do not split into the micro-steps.
    cfg.train.grad_accum = 2;
    CHECK(step(g, 1, NULL, &st, &e) == -1 && strstr(e.msg, "micro-steps"));
    cfg.train.grad_accum = 1;
    traj_group_free(&g[0]);
    free(gA);
    free(gB);
}

// model.recompute: the learner's activations keep only layer inputs (smaller) and the step's gradient is
// the same bits.
static void test_recompute(void) {
    if (!ready) return;
    size_t n = tr.model.t.numel;
    float *gA = mallocCheck(n * sizeof(float)), *gB = mallocCheck(n * sizeof(float));
    TrajGroup g[2];
    StepStats st;
    Err e;
    make_group(&g[0], 0, 0, 1, 0, 4, 0);
    make_group(&g[1], 1, 1, 0, 1, 3, 0);
    CHECK(step(g, 2, gA, &st, &e) == 0);
    size_t stored = model_acts_bytes(tr.acts);
    model_acts_free(&tr.model, tr.acts);  // the next step sizes new activations in the new mode
    tr.acts = NULL;
    cfg.model.recompute = true;
    CHECK(step(g, 2, gB, &st, &e) == 0);
    size_t recomputed = model_acts_bytes(tr.acts);
    ActsSize want = model_acts_size(&tr.model.cfg, tr.ops->act_size, tr.acts_tokens, tr.acts_audio, tr.acts_tgt,
                                    ACTS_RECOMPUTE);
    printf("learner activations: %zu bytes stored, %zu with model.recompute\n", stored, recomputed);
    CHECK(recomputed == want.bytes && recomputed < stored);
    CHECK(memcmp(gA, gB, n * sizeof(float)) == 0);
    CHECK(max_abs(gA, n) > 0);
    model_acts_free(&tr.model, tr.acts);
    tr.acts = NULL;
    cfg.model.recompute = false;
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
    free(gA);
    free(gB);
}

// The rollout/learner mismatch through a step. Groups whose sampling log-probs are the learner's own
// give exactly 0; after a weight update that the "rollout" never received (the groups still claim the
// current version, so the version lag stays 0) the metrics show it; then the corrections act on it.
static void test_mismatch(void) {
    if (!ready) return;
    TrajGroup g[2];
    make_group(&g[0], 0, 0, 1, 0, 4, 0);
    make_group(&g[1], 1, 1, 0, 1, 3, 0);
    StepStats st;
    Err e;
    // One micro-step: tr.lp holds the groups' tokens in order; make them the sampling log-probs.
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    CHECK_INT(st.sum[ST_MM_TOKENS], 14);
    for (int i = 0, at = 0; i < 2; i++)
        for (int t = 0; t < g[i].n_tokens; t++) g[i].sample_lp[t] = tr.lp[at++];
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    CHECK(st.sum[ST_MM_ABS_SUM] == 0 && st.sum[ST_MM_K3_SUM] == 0 && st.max[SM_MM_ABS] == 0);
    CHECK(st.sum[ST_MM_RATIO_SUM] == 14 && st.max[SM_RATIO] == 1 && st.max[SM_NEG_RATIO] == -1);
    CHECK(st.sum[ST_LAG_SUM] == 0 && st.max[SM_LAG] == 0);
    // One real update (lr 1e-2), which the groups' sampler never saw.
    size_t n = tr.model.t.numel;
    float *saved = mallocCheck(n * sizeof(float));
    memcpy(saved, tr.master, n * sizeof(float));
    tr.lr.lr = 1e-2;
    CHECK(step(g, 2, NULL, &st, &e) == 0);
    tr.lr.lr = 0;
    float *g0 = mallocCheck(n * sizeof(float)), *g1 = mallocCheck(n * sizeof(float));
    CHECK(step(g, 2, g0, &st, &e) == 0);
    double mean = st.sum[ST_MM_ABS_SUM] / st.sum[ST_MM_TOKENS];
    printf("mismatch after a skipped update (lr 1e-2): mean %.3g, max %.3g, k3 %.3g, ratio %.4f..%.4f\n", mean,
           st.max[SM_MM_ABS], st.sum[ST_MM_K3_SUM] / st.sum[ST_MM_TOKENS], -st.max[SM_NEG_RATIO], st.max[SM_RATIO]);
    // An Adam step of 1e-2 on every weight moves these log-probs by far more than float rounding (1e-6).
    CHECK(mean > 1e-3 && st.sum[ST_MM_K3_SUM] > 0 && st.max[SM_LAG] == 0);
    // Truncated importance sampling (weights min(r, 1.3), the ratios lie in about [1.1, 1.7]) changes the
    // gradient.
    cfg.grpo.tis_cap = 1.3;
    CHECK(step(g, 2, g1, &st, &e) == 0);
    CHECK(memcmp(g0, g1, n * sizeof(float)) != 0);
    cfg.grpo.tis_cap = 0;
    // Sequence masking with bounds tighter than every sequence's ratio drops them all: no loss tokens.
    cfg.grpo.mismatch_mask = true;
    cfg.grpo.mismatch_bound = 1 + 1e-9;
    CHECK(step(g, 2, g1, &st, &e) == 0);
    CHECK_INT(st.sum[ST_MM_SEQ_OUT], 4);
    CHECK_INT(st.sum[ST_LOSS_TOKENS], 0);
    CHECK(max_abs(g1, n) == 0);
    cfg.grpo.mismatch_mask = false;
    cfg.grpo.mismatch_bound = 2;
    memcpy(tr.master, saved, n * sizeof(float));
    tr.ops->upload_act(tr.ops, tr.model.params, tr.master, n);
    free(saved);
    free(g0);
    free(g1);
    traj_group_free(&g[0]);
    traj_group_free(&g[1]);
}

static void test_refused_config(void) {
    if (!ready) return;
    struct {
        const char *set, *key;
    } cases[] = {{"model.backend=cuda", "model.backend"},
                 {"model.path=", "model.path"},
                 {"rollout.num_generations=1", "rollout.num_generations"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
#ifdef AQA_CUDA
        if (i == 0 && ops_cuda_device_count() > 0) continue;  // a GPU here: model.backend=cuda is fine
#endif
        Config c = cfg;
        Trainer t;
        Err e;
        CHECK(config_set(&c, cases[i].set, &e) == 0);
        CHECKF(trainer_init(&t, &c, &comm, &e) == -1 && strstr(e.msg, cases[i].key), "%s: %s", cases[i].set, e.msg);
    }
}

int main(int argc, char **argv) {
    comm = comm_init(&argc, &argv, ROLE_LEARNER);
    log_init("test", comm.role_rank);
    log_set_level(LOG_WARN);
    RUN(setup);
    RUN(test_dynamic_filter);
    RUN(test_scale_rewards);
    RUN(test_loss_types);
    RUN(test_num_iterations);
    RUN(test_bad_groups);
    RUN(test_recompute);
    RUN(test_mismatch);
    RUN(test_refused_config);
    if (ready) trainer_free(&tr);
    int rc = test_summary("grpo_step");
    comm_finalize(&comm);
    return rc;
}
