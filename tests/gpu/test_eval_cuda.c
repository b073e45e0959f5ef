// test_eval_cuda: MMAU evaluation (eval_generate, the path aqa-eval takes) on the CUDA backend against
// the CPU backend. Random models (configs/model-tiny.json and configs/model-small.json, bf16 checkpoints
// with the built Qwen2-Audio tokenizer) answer synthetic MMAU items (aqa-synth's test-mmau.json, made
// here) greedily on both backends: same prompts, batches and scoring. Every question whose answer
// differs must trace back to a near tie: its batch is generated again on both backends (reproducing the
// answers), and at the first token where the completions part, the CPU's logits after the shared prefix
// (with the sampler's repetition penalty from generation_config.json, as the argmax saw them) put the
// GPU's token within bf16 noise (3e-2 of max|logit|, test_model_cuda's logits bound) of its own.
// Questions/s of both backends are printed. Last, the aqa-eval binary (argv[1]) with --backend cuda
// writes the same prediction file as the library. Exits 77 without a GPU or a CUDA build.

#include "gpu_testutil.h"
#include "data/synth.h"
#include "eval/eval_generate.h"
#include "eval/mmau_score.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "text/text_fixture.h"

#ifdef AQA_CUDA
enum { MAX_NEW = 32, BATCH = 8 };
static const double TOL_BF16 = 3e-2;
static const char *aqa_eval_exe;
static char tok_dir[4096], mmau_path[4200];
static PrepContext prep;
static Dataset ds;

static int setup(void) {
    Err e;
    const char *tok = fixture_tokenizer_dir("evalcuda_tok");
    if (!tok) return -1;
    snprintf(tok_dir, sizeof tok_dir, "%s", tok);
    const char *data_dir = TMP_PATH("evalcuda_data");
    snprintf(mmau_path, sizeof mmau_path, "%s/test-mmau.json", data_dir);
    SynthOptions so = {.out_dir = data_dir, .n = 40, .seed = 5, .test_frac = 0.4};
    PrepOptions po = {.mono = AUDIO_MONO_FIRST, .style = PROMPT_MMAU, .max_audio_s = 30};
    if (synth_generate(&so, NULL, &e) || prep_context_init(&prep, tok_dir, &po, &e) ||
        dataset_load(&ds, mmau_path, NULL, &e)) {
        fprintf(stderr, "FAIL: setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

// A bf16 checkpoint of `config` (random, seed 11) with the tokenizer, as aqa-init writes it.
static int model_dir_make(const char *config, const char *dir) {
    Err e;
    ModelConfig c;
    ParamTable t;
    if (hf_config_load(SRC_PATH(config), &c, &e)) {
        CHECKF(0, "%s", e.msg);
        return -1;
    }
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof *p);
    param_init_random(&c, &t, p, 11);
    int rc = model_save_dir(dir, &c, &t, p, SAVE_BF16, (size_t)1 << 32, tok_dir, &e);
    CHECKF(rc == 0, "%s", e.msg);
    free(p);
    param_table_free(&t);
    return rc;
}

// Questions [q0, q0 + n) generated again on one backend exactly as eval_generate batches them.
static int batch_generate(Model *m, PreparedQuestion *pq, int n, const SamplerParams *sp, GenResult *res) {
    GenPrompt gp[BATCH];
    for (int j = 0; j < n; j++) {
        gp[j] = (GenPrompt){.ids = pq[j].prompt.ids,
                            .n_ids = pq[j].prompt.n,
                            .features = pq[j].features,
                            .valid_frames = pq[j].valid_frames,
                            .question = (uint32_t)pq[j].index};
        gen_result_init(&res[j], 1, sp->max_new_tokens);
    }
    Err e;
    int rc = model_generate(m, gp, n, 1, sp, res, &e);
    CHECKF(rc == 0, "%s", e.msg);
    return rc;
}

// The CPU's logit gap between its token and the GPU's at the first step where they part (shared prefix).
static void explain_question(Model *mc, const SamplerParams *sp, const PreparedQuestion *pq, const GenResult *rc,
                             const GenResult *rg, const char *id) {
    int f = 0;
    while (f < rc->len[0] && f < rg->len[0] && rc->tokens[f] == rg->tokens[f]) f++;
    if (!CHECK(f < rc->len[0] && f < rg->len[0])) return;  // differing answers come from differing tokens
    const int T = pq->prompt.n + f, V = mc->cfg.vocab;
    int *seq = mallocCheck((size_t)T * sizeof(int));
    memcpy(seq, pq->prompt.ids, (size_t)pq->prompt.n * sizeof(int));
    memcpy(seq + pq->prompt.n, rg->tokens, (size_t)f * sizeof(int));
    ModelBatch b;
    mbatch_init(&b, &mc->cfg);
    mbatch_add_seq(&b, seq, T, T);
    mbatch_add_audio(&b, pq->features, pq->valid_frames);
    float *lg = mallocCheck((size_t)V * sizeof(float));
    const int last = T - 1;
    if (model_rows_logits(mc, &b, &last, 1, lg, NULL) == 0) {
        sampler_process(sp, lg, V, seq, T);  // greedy: the logits the argmax saw (repetition penalty)
        float mx = 0;
        for (int v = 0; v < V; v++) mx = fabsf(lg[v]) > mx ? fabsf(lg[v]) : mx;
        const double gap = lg[rc->tokens[f]] - lg[rg->tokens[f]];
        printf("    %s: answers part at token %d: CPU %d, GPU %d; CPU logit gap %.4g, bound %.4g: %s\n", id, f,
               rc->tokens[f], rg->tokens[f], gap, TOL_BF16 * mx, gap <= TOL_BF16 * mx ? "near tie" : "MISMATCH");
        CHECKF(gap <= TOL_BF16 * mx, "%s: CPU and GPU part at token %d without a near tie", id, f);
    }
    free(seq), free(lg);
    mbatch_free(&b);
}

// Regenerates every batch holding a question whose answers differ and explains each such question;
// the regenerated GPU completions must decode to the answers eval_generate wrote.
static void explain_differences(Model *mc, Model *mg, const SamplerParams *sp, const json_t *ic, const json_t *ig) {
    for (int64_t q0 = 0; q0 < ds.n; q0 += BATCH) {
        const int n = ds.n - q0 < BATCH ? (int)(ds.n - q0) : BATCH;
        int differ = 0;
        for (int j = 0; j < n; j++)
            differ |= !json_equal(json_array_get(ic, q0 + j), json_array_get(ig, q0 + j));
        if (!differ) continue;
        PreparedQuestion pq[BATCH];
        GenResult rc[BATCH], rg[BATCH];
        Err e;
        int ok = 1;
        for (int j = 0; j < n && ok; j++) {
            ok = prep_question(&prep, &ds.q[q0 + j], &pq[j], &e) == 0;
            CHECKF(ok, "%s", e.msg);
        }
        if (ok && batch_generate(mc, pq, n, sp, rc) == 0 && batch_generate(mg, pq, n, sp, rg) == 0) {
            for (int j = 0; j < n; j++) {
                const json_t *a = json_array_get(ic, q0 + j), *g = json_array_get(ig, q0 + j);
                char *text = tokenizer_decode(prep.tok, rg[j].tokens, rg[j].len[0], 1);
                CHECK_STR(text, json_string_value(json_object_get(g, "model_output")));
                free(text);
                if (!json_equal(a, g)) explain_question(mc, sp, &pq[j], &rc[j], &rg[j], ds.q[q0 + j].id);
            }
            for (int j = 0; j < n; j++) gen_result_free(&rc[j]), gen_result_free(&rg[j]);
        }
        for (int j = 0; j < n; j++) prep_question_free(&pq[j]);
    }
}

// Evaluates with one backend; the answered items (caller decrefs) and stats.
static json_t *evaluate(Model *m, const SamplerParams *sp, EvalGenStats *st) {
    Err e;
    json_t *items = eval_input_items(&ds, mmau_path, &e);
    if (!items || eval_generate(m, &prep, &ds, sp, BATCH, items, st, &e)) {
        CHECKF(0, "%s", e.msg);
        json_decref(items);
        return NULL;
    }
    return items;
}

static int score_correct(const json_t *items) {
    Err e;
    MmauScore s;
    mmau_score_init(&s);
    int rc = mmau_score_items(&s, items, "eval", &e);
    CHECKF(rc == 0, "%s", e.msg);
    int n = rc == 0 ? s.all.correct : -1;
    mmau_score_free(&s);
    return n;
}

// Both backends on the model of `config`; returns the GPU's items (caller decrefs) for the CLI check.
static json_t *compare_backends(const char *config, const char *dir) {
    Err e;
    Model mc, mg;
    if (model_dir_make(config, dir)) return NULL;
    if (eval_model_load(&mc, dir, CFG_BACKEND_CPU, &e)) {
        CHECKF(0, "%s", e.msg);
        return NULL;
    }
    if (eval_model_load(&mg, dir, CFG_BACKEND_CUDA, &e)) {
        CHECKF(0, "%s", e.msg);
        eval_model_free(&mc);
        return NULL;
    }
    int eos[2];
    prep_eos_ids(&prep, eos);
    EvalGenOptions go = {.greedy = 1, .max_new_tokens = MAX_NEW, .batch = BATCH, .seed = 1};
    SamplerParams sp;
    CHECKF(eval_sampler_load(dir, &go, eos, 2, &sp, &e) == 0, "%s", e.msg);
    EvalGenStats sc, sg;
    json_t *ic = evaluate(&mc, &sp, &sc), *ig = ic ? evaluate(&mg, &sp, &sg) : NULL;
    if (ic && ig) {
        int same = 0;
        for (int64_t i = 0; i < ds.n; i++) same += json_equal(json_array_get(ic, i), json_array_get(ig, i));
        const int cc = score_correct(ic), cg = score_correct(ig);
        printf("  %s: %lld questions (batch %d, greedy, up to %d tokens): %d answers identical; correct: CPU %d, "
               "GPU %d\n",
               config, (long long)ds.n, BATCH, MAX_NEW, same, cc, cg);
        printf("  %s: CPU %.2f questions/s (%.1f s, %lld tokens), GPU %.2f questions/s (%.1f s, %lld tokens)\n",
               config, sc.questions / sc.seconds, sc.seconds, (long long)sc.tokens, sg.questions / sg.seconds,
               sg.seconds, (long long)sg.tokens);
        CHECK_INT(sc.questions, ds.n);
        CHECK_INT(sg.questions, ds.n);
        if (same == ds.n) CHECK_INT(cc, cg);  // the same answers score the same
        explain_differences(&mc, &mg, &sp, ic, ig);
    }
    json_decref(ic);
    eval_model_free(&mc);
    eval_model_free(&mg);
    return ig;
}

static void test_tiny_and_cli(void) {
    const char *dir = TMP_PATH("evalcuda_tiny");
    json_t *ig = compare_backends("configs/model-tiny.json", dir);
    if (!ig) return;
    // aqa-eval --backend cuda: the library's GPU answers, scored and timed
    static char out[65536], cmd[16384];
    const char *pred = TMP_PATH("evalcuda_cli_pred.json");
    snprintf(cmd, sizeof cmd,
             "'%s' --model '%s' --data '%s' --greedy --batch %d --backend cuda --out '%s' "
             "--set rollout.max_new_tokens=%d --set train.seed=1 2>&1",
             aqa_eval_exe, dir, mmau_path, BATCH, pred, MAX_NEW);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 0);
    CHECKF(strstr(out, "cuda backend") && strstr(out, "questions/s") && strstr(out, "Total Accuracy: "), "%s", out);
    json_error_t je;
    json_t *got = json_load_file(pred, 0, &je);
    CHECKF(got && json_equal(got, ig), "%s: not the library's GPU answers", pred);
    json_decref(got);
    json_decref(ig);
}

static void test_small(void) {
    json_decref(compare_backends("configs/model-small.json", TMP_PATH("evalcuda_small")));
}
#endif

int main(int argc, char **argv) {
#ifdef AQA_CUDA
    if (argc < 2) {
        fprintf(stderr, "usage: test_eval_cuda PATH/TO/aqa-eval\n");
        return 2;
    }
    if (ops_cuda_device_count() < 1) {
        printf("test_eval_cuda: no CUDA device, skipped\n");
        return 77;
    }
    aqa_eval_exe = argv[1];
    if (setup()) return 1;
    RUN(test_tiny_and_cli);
    RUN(test_small);
    dataset_free(&ds);
    prep_context_free(&prep);
    return test_summary("test_eval_cuda");
#else
    (void)argc, (void)argv;
    printf("test_eval_cuda: built without CUDA, skipped\n");
    return 77;
#endif
}
