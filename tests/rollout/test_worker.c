// Tests of rollout/worker: one synthetic question end to end in process, on a tiny random model
// (configs/model-tiny.json, param_init_random) with the real Qwen2-Audio tokenizer. Checks the group's
// shape and fields, that its completions and sampling log-probs are exactly what model_generate gives,
// the mask (up to and including the first EOS), rewards equal to reward_score on the decoded text (in
// process, and through a reward-server child on 127.0.0.1:0 with the totals weighted by the config),
// reference log-probs equal to a plain per-sequence model_forward, beta = 0 (no reference), a new seed per step, a
// question whose audio is missing becoming a failed group that names the file, and a batch of questions
// generated together giving each question's groups exactly.
// Usage: test_worker REWARD_SERVER_BINARY
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comm/traj.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "pipeline/pipeline_fixture.h"
#include "util/fileio.h"
#include "worker.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern char **environ;

enum { G = 4, MAX_NEW = 6 };

static Dataset ds;
static Config cfg;
static PrepContext prep;
static Ops *ops;
static Model model;  // policy and reference alike: the initial model
static const char *server_bin;

static RolloutWorker make_worker(void) {
    RolloutWorker w = {.policy = &model,
                       .ref = &model,
                       .prep = &prep,
                       .reward_opt = rollout_reward_options(&cfg),
                       .sampler = rollout_sampler_params(&cfg, &prep),
                       .G = G};
    w.sampler.seed = rollout_step_seed(42, 3);
    return w;
}

// The group's completions must be model_generate's own for the same prompt, sampler and key.
static void check_generation(const RolloutWorker *w, const Question *q, const TrajGroup *g) {
    PreparedQuestion p;
    Err e;
    CHECK(prep_question(&prep, q, &p, &e) == 0);
    GenResult r;
    gen_result_init(&r, G, w->sampler.max_new_tokens);
    GenPrompt gp = {.ids = p.prompt.ids, .n_ids = p.prompt.n, .features = p.features, .valid_frames = p.valid_frames,
                    .question = (uint32_t)q->index};
    CHECK(model_generate(&model, &gp, 1, G, &w->sampler, &r, &e) == 0);
    for (int i = 0; i < G; i++) {
        CHECK_INT(g->len[i], r.len[i]);
        for (int t = 0; t < g->len[i] && t < r.len[i]; t++) {
            CHECK_INT(g->ids[g->offset[i] + t], r.tokens[i * r.max_new + t]);
            CHECK(g->sample_lp[g->offset[i] + t] == r.lp[i * r.max_new + t]);
        }
    }
    gen_result_free(&r);
    prep_question_free(&p);
}

// Mask 1 up to and including the first EOS, 0 after; a sample without EOS ran to max_new tokens.
static void check_mask(const RolloutWorker *w, const TrajGroup *g) {
    for (int i = 0; i < G; i++) {
        int first_eos = -1;
        for (int t = 0; t < g->len[i] && first_eos < 0; t++)
            if (sampler_is_eos(&w->sampler, g->ids[g->offset[i] + t])) first_eos = t;
        if (first_eos < 0) CHECK_INT(g->len[i], w->sampler.max_new_tokens);
        for (int t = 0; t < g->len[i]; t++) CHECK_INT(g->mask[g->offset[i] + t], first_eos < 0 || t <= first_eos);
    }
}

static void check_rewards(const RewardOptions *opt, const TrajGroup *g, const Question *q) {
    char *sol = prompt_solution(q);
    for (int i = 0; i < G; i++) {
        char *text = tokenizer_decode(prep.tok, g->ids + g->offset[i], g->len[i], 1);
        RewardResult want;
        reward_score(opt, text, sol, &want);
        CHECK(g->func_rewards[i * 2] == (float)want.accuracy);
        CHECK(g->func_rewards[i * 2 + 1] == (float)want.format);
        CHECK(g->rewards[i] == (float)want.total);
        free(text);
    }
    free(sol);
}

// Reference log-probs against each completion scored alone as prompt + completion (audio included).
static void check_reference(const TrajGroup *g, const Question *q) {
    PreparedQuestion p;
    Err e;
    CHECK(prep_question(&prep, q, &p, &e) == 0);
    double worst = 0;
    for (int i = 0; i < G; i++) {
        int n = p.prompt.n + g->len[i];
        int *seq = mallocCheck(sizeof(int) * (size_t)n);
        memcpy(seq, p.prompt.ids, sizeof(int) * (size_t)p.prompt.n);
        memcpy(seq + p.prompt.n, g->ids + g->offset[i], sizeof(int) * (size_t)g->len[i]);
        ModelBatch b;
        mbatch_init(&b, &model.cfg);
        mbatch_add_seq(&b, seq, n, p.prompt.n);
        mbatch_add_audio(&b, p.features, p.valid_frames);
        ModelActs *a = model_acts_create(&model, n, 1, b.n_tgt, 0);
        float *lp = mallocCheck(sizeof(float) * (size_t)b.n_tgt);
        CHECK(model_forward(&model, &b, a, lp, &e) == 0);
        CHECK_INT(b.n_tgt, g->len[i]);
        for (int t = 0; t < g->len[i]; t++) {
            double d = fabs((double)lp[t] - g->ref_lp[g->offset[i] + t]);
            worst = d > worst ? d : worst;
            // The policy is the reference here: its sampling log-probs are the same numbers, bit for bit on
            // the CPU (the learner's mismatch metrics are exactly 0 in the synchronous schedule).
            CHECKF(g->sample_lp[g->offset[i] + t] == lp[t], "sample %d token %d: sampled with %.9g, forward %.9g", i,
                   t, g->sample_lp[g->offset[i] + t], lp[t]);
        }
        free(lp);
        model_acts_free(&model, a);
        mbatch_free(&b);
        free(seq);
    }
    CHECKF(worst < 1e-4, "reference log-probs differ from per-sequence forwards by up to %g", worst);
    prep_question_free(&p);
}

static void test_question(void) {
    RolloutWorker w = make_worker();
    const Question *q = &ds.q[1];
    TrajGroup g;
    Err e;
    if (rollout_question(&w, q, 13, 3, &g, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    CHECK(traj_group_check(&g, &e) == 0);
    CHECK(!g.failed && g.reason == NULL);
    CHECK_INT(g.G, G);
    CHECK_INT(g.question, q->index);
    CHECK_INT(g.slot, 13);
    CHECK_INT(g.version, 3);
    CHECK_STR(g.audio_path, q->audio_path);
    CHECK_INT(g.n_funcs, 2);
    CHECK_STR(g.func_names[0], "accuracy");
    CHECK_STR(g.func_names[1], "format");
    CHECK(g.ref_lp != NULL);
    CHECK(g.time.data > 0 && g.time.prefill > 0 && g.time.decode > 0 && g.time.reward >= 0 && g.time.reference > 0);
    PreparedQuestion p;
    CHECK(prep_question(&prep, q, &p, &e) == 0);
    CHECK_INT(g.n_prompt, p.prompt.n);
    CHECK(memcmp(g.prompt_ids, p.prompt.ids, sizeof(int32_t) * (size_t)p.prompt.n) == 0);
    CHECK_INT(g.audio_samples, p.n_samples);
    prep_question_free(&p);
    check_generation(&w, q, &g);
    check_mask(&w, &g);
    check_rewards(&w.reward_opt, &g, q);
    check_reference(&g, q);
    // Another step's seed gives other completions (the same seed the same ones: check_generation).
    TrajGroup other;
    w.sampler.seed = rollout_step_seed(42, 4);
    CHECK(rollout_step_seed(42, 4) != rollout_step_seed(42, 3) && rollout_step_seed(43, 3) != rollout_step_seed(42, 3));
    CHECK(rollout_question(&w, q, 13, 4, &other, &e) == 0);
    CHECK(other.n_tokens != g.n_tokens || memcmp(other.ids, g.ids, sizeof(int32_t) * (size_t)g.n_tokens) != 0);
    traj_group_free(&other);
    traj_group_free(&g);
}

// A token sample 0 draws at position 2 made an EOS: sample 0 now stops there (or at an earlier
// occurrence), its last token is that EOS, and the mask covers it.
static void test_eos(void) {
    RolloutWorker w = make_worker();
    const Question *q = &ds.q[0];
    TrajGroup g, cut;
    Err e;
    CHECK(rollout_question(&w, q, 0, 0, &g, &e) == 0);
    int32_t stop = g.ids[g.offset[0] + 2];
    w.sampler.eos[w.sampler.n_eos++] = stop;
    CHECK(rollout_question(&w, q, 0, 0, &cut, &e) == 0);
    CHECK(cut.len[0] <= 3);
    CHECK_INT(cut.ids[cut.offset[0] + cut.len[0] - 1], stop);
    CHECK(memcmp(cut.ids, g.ids, sizeof(int32_t) * (size_t)cut.len[0]) == 0);
    for (int t = 0; t < cut.len[0]; t++) CHECK_INT(cut.mask[t], 1);
    check_mask(&w, &cut);
    traj_group_free(&g);
    traj_group_free(&cut);
}

static void test_failed_question(void) {
    RolloutWorker w = make_worker();
    Question q = ds.q[0];
    const char *missing = TMP_PATH("rollout_missing.wav");
    q.audio_path = (char *)missing;
    TrajGroup g;
    Err e;
    CHECK(rollout_question(&w, &q, 9, 2, &g, &e) == 0);
    CHECK(g.failed == 1 && g.G == 0 && g.slot == 9 && g.version == 2 && g.question == q.index);
    CHECKF(g.reason && strstr(g.reason, missing) && strstr(g.reason, "question"), "%s", g.reason ? g.reason : "(null)");
    CHECK_STR(g.audio_path, missing);
    uint8_t *buf;
    size_t n;
    CHECK(msg_encode_group(&g, &buf, &n, &e) == 0);  // it can be sent
    free(buf);
    traj_group_free(&g);
}

// Three questions generated together (rollout.batch_questions), one of them failing to prepare: each
// good group equals the group of its question alone, bit for bit, and the bad one is a failed group.
static void test_batch(void) {
    RolloutWorker w = make_worker();
    Question bad = ds.q[2];
    bad.audio_path = (char *)TMP_PATH("rollout_batch_missing.wav");
    const Question *qs[3] = {&ds.q[1], &bad, &ds.q[3]};
    const int64_t slots[3] = {4, 5, 6};
    TrajGroup g[3];
    Err e;
    if (rollout_questions(&w, qs, slots, 3, 2, g, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    CHECK(g[1].failed && g[1].slot == 5 && g[1].G == 0);
    for (int i = 0; i < 3; i += 2) {
        TrajGroup one;
        CHECK(rollout_question(&w, qs[i], slots[i], 2, &one, &e) == 0);
        CHECK(traj_group_check(&g[i], &e) == 0);
        CHECK(!g[i].failed && g[i].slot == slots[i] && g[i].question == qs[i]->index);
        CHECK_INT(g[i].n_tokens, one.n_tokens);
        CHECK(memcmp(g[i].ids, one.ids, sizeof(int32_t) * (size_t)one.n_tokens) == 0);
        CHECK(memcmp(g[i].sample_lp, one.sample_lp, sizeof(float) * (size_t)one.n_tokens) == 0);
        CHECK(memcmp(g[i].ref_lp, one.ref_lp, sizeof(float) * (size_t)one.n_tokens) == 0);
        CHECK(memcmp(g[i].rewards, one.rewards, sizeof(float) * G) == 0);
        CHECK(g[i].time.prefill > 0 && g[i].time.decode > 0);
        traj_group_free(&one);
    }
    for (int i = 0; i < 3; i++) traj_group_free(&g[i]);
}

// reward-server on 127.0.0.1:0 (weights 1 and 1); the worker's totals use the config's 2 and 0.5. No
// reference model here (beta = 0): no ref_lp.
static void test_reward_service(void) {
    const char *port_file = TMP_PATH("rollout_reward.port");
    unlink(port_file);
    char *args[] = {(char *)server_bin, "--listen", "127.0.0.1:0", "--port-file", (char *)port_file, NULL};
    pid_t pid;
    if (posix_spawn(&pid, server_bin, NULL, NULL, args, environ) != 0) {
        CHECKF(0, "cannot start %s", server_bin);
        return;
    }
    Err e;
    char *port = NULL;
    for (int i = 0; i < 200 && !port; i++) {  // up to 10 s
        if (path_exists(port_file)) port = file_read_all(port_file, NULL, &e);
        if (!port) usleep(50000);
    }
    CHECKF(port != NULL, "reward-server wrote no port file");
    if (port) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", atoi(port));
        RewardClient *c = reward_client_open(addr, NULL, &e);
        CHECKF(c != NULL, "%s", e.msg);
        RolloutWorker w = make_worker();
        w.reward = c;
        w.ref = NULL;
        w.reward_opt.accuracy_weight = 2;
        w.reward_opt.format_weight = 0.5;
        TrajGroup g;
        CHECKF(c && rollout_question(&w, &ds.q[3], 3, 0, &g, &e) == 0, "%s", e.msg);
        if (c) {
            check_rewards(&w.reward_opt, &g, &ds.q[3]);
            CHECK(g.ref_lp == NULL && g.time.reference == 0);
            CHECK(traj_group_check(&g, &e) == 0);
            traj_group_free(&g);
            reward_client_close(c);
        }
        free(port);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_worker REWARD_SERVER_BINARY\n");
        return 1;
    }
#ifdef _OPENMP
    // Tests run side by side on small machines: OpenMP teams on busy cores spin and run slower.
    omp_set_num_threads(1);
#endif
    const char *tok_dir = fixture_tokenizer_dir("rollout_tok");
    if (!tok_dir || !fixture_synth_dataset("rollout_synth", 4, 5, &ds)) return 1;
    Err e;
    config_defaults(&cfg);
    cfg.rollout.num_generations = G;
    cfg.rollout.max_new_tokens = MAX_NEW;
    PrepOptions popt = prep_options_from_config(&cfg);
    ModelConfig mc;
    if (prep_context_init(&prep, tok_dir, &popt, &e) || hf_config_load(SRC_PATH("configs/model-tiny.json"), &mc, &e)) {
        fprintf(stderr, "FAIL: %s\n", e.msg);
        return 1;
    }
    ParamTable t;
    param_table_build(&t, &mc);
    float *params = mallocCheck(sizeof(float) * t.numel);
    param_init_random(&mc, &t, params, 7);
    ops = ops_cpu_create();
    model_init(&model, &mc, ops, params);
    free(params);
    param_table_free(&t);
    RUN(test_question);
    RUN(test_eos);
    RUN(test_failed_question);
    RUN(test_batch);
    server_bin = argv[1];
    RUN(test_reward_service);
    model_free(&model);
    ops_destroy(ops);
    prep_context_free(&prep);
    dataset_free(&ds);
    return test_summary("rollout_worker");
}
