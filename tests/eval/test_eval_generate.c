// test_eval_generate: aqa-eval's generation mode end to end on CPU. A tiny random model (configs/
// model-tiny.json, f32) with the built Qwen2-Audio tokenizer answers synthetic MMAU-format questions
// (aqa-synth's test-mmau.json): generation_config.json parsing, input records of both formats, greedy
// and sampled determinism (also across batch sizes: the sampler is keyed by question), a missing audio
// file (audio_error, scored wrong and counted), and the aqa-eval CLI (--model and --sweep --data,
// --backend and its errors).
// argv[1]: the aqa-eval binary.
#include <sys/stat.h>
#include <unistd.h>

#include "data/synth.h"
#include "eval/eval_generate.h"
#include "eval/mmau_score.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/param_init.h"
#include "reward/reward.h"
#include "test.h"
#include "text/text_fixture.h"

// CHECK as an expression that also prints the error message on failure.
#define CHECK_OK(cond, e) (CHECK(cond) || (fprintf(stderr, "     %s\n", (e).msg), 0))

static const char *aqa_eval_exe;
static char model_dir[4096], tok_dir[4096], data_dir[4096], mmau_path[4200];
static Model model;
static PrepContext prep;
static Dataset ds;
enum { MAX_NEW = 5 };
static json_t *greedy_ref;  // greedy answers, batch 4 (test_generate); later cases compare with it

static int setup(void) {
    Err e;
    const char *tok = fixture_tokenizer_dir("evalgen_tok");
    if (!tok) return -1;
    snprintf(tok_dir, sizeof tok_dir, "%s", tok);
    snprintf(model_dir, sizeof model_dir, "%s", TMP_PATH("evalgen_model"));
    snprintf(data_dir, sizeof data_dir, "%s", TMP_PATH("evalgen_data"));
    snprintf(mmau_path, sizeof mmau_path, "%s/test-mmau.json", data_dir);
    ModelConfig c;
    ParamTable t;
    if (hf_config_load(SRC_PATH("configs/model-tiny.json"), &c, &e)) goto fail;
    param_table_build(&t, &c);
    float *p = mallocCheck(t.numel * sizeof *p);
    param_init_random(&c, &t, p, 11);
    int rc = model_save_dir(model_dir, &c, &t, p, SAVE_F32, (size_t)1 << 32, tok_dir, &e);
    free(p);
    param_table_free(&t);
    if (rc) goto fail;
    SynthOptions so = {.out_dir = data_dir, .n = 10, .seed = 5, .test_frac = 0.4};
    if (synth_generate(&so, NULL, &e)) goto fail;
    float *host;
    if (model_load_dir(model_dir, &c, &t, &host, &e)) goto fail;
    model_init(&model, &c, ops_cpu_create(), host);
    free(host);
    param_table_free(&t);
    PrepOptions po = {.mono = AUDIO_MONO_FIRST, .style = PROMPT_MMAU, .max_audio_s = 30};
    if (prep_context_init(&prep, model_dir, &po, &e)) goto fail;
    if (dataset_load(&ds, mmau_path, NULL, &e)) goto fail;
    return 0;
fail:
    fprintf(stderr, "FAIL: setup: %s\n", e.msg);
    return -1;
}

static int write_text(const char *path, const char *text) {
    Err e;
    return file_write_atomic(path, text, strlen(text), &e);
}

static void test_sampler_config(void) {
    Err e;
    const int eos[2] = {151645, 151643};
    EvalGenOptions o = {.max_new_tokens = 9, .batch = 2, .seed = 3};
    SamplerParams sp;
    // aqa-init's generation_config.json: Qwen2-Audio-7B-Instruct's sampling settings.
    CHECKF(eval_sampler_load(model_dir, &o, eos, 2, &sp, &e) == 0, "%s", e.msg);
    CHECK(!sp.greedy);
    CHECK_NEAR(sp.temperature, 0.7, 1e-6);
    CHECK_INT(sp.top_k, 20);
    CHECK_NEAR(sp.top_p, 0.5, 1e-6);
    CHECK_NEAR(sp.repetition_penalty, 1.1, 1e-6);
    CHECK_INT(sp.max_new_tokens, 9);
    CHECK_INT(sp.n_eos, 2);
    CHECK(sp.seed == 3);
    o.greedy = 1;
    CHECK(eval_sampler_load(model_dir, &o, eos, 2, &sp, &e) == 0 && sp.greedy);
    // No file: transformers' GenerationConfig defaults (greedy) with the caller's stop ids.
    const char *dir = TMP_PATH("evalgen_gencfg");
    CHECK(dir_make(dir, &e) == 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    unlink(path);
    o.greedy = 0;
    CHECK(eval_sampler_load(dir, &o, eos, 2, &sp, &e) == 0);
    CHECK(sp.greedy && sp.top_k == 50 && sp.top_p == 1.0f && sp.temperature == 1.0f);
    CHECK(sp.n_eos == 2 && sp.eos[0] == 151645 && sp.eos[1] == 151643);
    // One eos id; keys left out keep the defaults.
    CHECK(write_text(path, "{\"do_sample\": true, \"eos_token_id\": 7}") == 0);
    CHECK(eval_sampler_load(dir, &o, eos, 2, &sp, &e) == 0);
    CHECK(!sp.greedy && sp.n_eos == 1 && sp.eos[0] == 7 && sp.top_k == 50);
    // Bad files name the file and the key.
    const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"do_sample\": 1}", "\"do_sample\""},
        {"{\"top_k\": \"20\"}", "\"top_k\""},
        {"{\"temperature\": [1]}", "\"temperature\""},
        {"{\"eos_token_id\": []}", "\"eos_token_id\""},
        {"{\"eos_token_id\": [1, \"x\"]}", "\"eos_token_id\"[1]"},
        {"[1]", "not a JSON object"},
        {"{", "not valid JSON"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        CHECK(write_text(path, bad[k].text) == 0);
        int rc = eval_sampler_load(dir, &o, eos, 2, &sp, &e);
        CHECKF(rc == -1 && strstr(e.msg, bad[k].want) && strstr(e.msg, "generation_config.json"), "%s -> %s",
               bad[k].text, e.msg);
    }
}

static void test_input_items(void) {
    Err e;
    json_t *items = eval_input_items(&ds, mmau_path, &e);
    if (!CHECK_OK(items != NULL, e)) return;
    CHECK_INT(json_array_size(items), ds.n);
    json_error_t je;
    json_t *raw = json_load_file(mmau_path, 0, &je);
    CHECK(json_equal(items, raw));  // MMAU items as they are
    json_decref(raw);
    json_decref(items);
    // R1-AQA lines get the MMAU keys; the index stays as answer_index.
    char path[4200];
    snprintf(path, sizeof path, "%s/test.jsonl", data_dir);
    Dataset d2;
    if (!CHECK_OK(dataset_load(&d2, path, NULL, &e) == 0, e)) return;
    items = eval_input_items(&d2, path, &e);
    if (CHECK_OK(items != NULL, e)) {
        for (int64_t i = 0; i < d2.n; i++) {
            const json_t *it = json_array_get(items, i);
            const Question *q = &d2.q[i];
            CHECK_STR(json_string_value(json_object_get(it, "answer")), q->answer_text);
            CHECK_INT(json_integer_value(json_object_get(it, "answer_index")), q->answer);
            CHECK_STR(json_string_value(json_object_get(it, "question")), q->question);
            CHECK_INT(json_array_size(json_object_get(it, "choices")), q->n_choices);
            CHECK_STR(json_string_value(json_object_get(it, "task")), "sound");
        }
        json_decref(items);
    }
    dataset_free(&d2);
    // A file that no longer holds the loaded questions is an error naming it.
    snprintf(path, sizeof path, "%s", TMP_PATH("evalgen_changed.json"));
    CHECK(write_text(path, "[]") == 0);
    CHECK(eval_input_items(&ds, path, &e) == NULL && strstr(e.msg, "evalgen_changed.json"));
}

// Runs eval_generate over ds; returns the items (caller decrefs).
static json_t *generate(const Dataset *d, const char *path, int greedy, int batch, EvalGenStats *st) {
    Err e;
    const int eos[2] = {prep.im_end_id, prep.endoftext_id};
    EvalGenOptions o = {.greedy = greedy, .max_new_tokens = MAX_NEW, .batch = batch, .seed = 42};
    SamplerParams sp;
    json_t *items = eval_input_items(d, path, &e);
    if (!CHECK_OK(items && eval_sampler_load(model_dir, &o, eos, 2, &sp, &e) == 0, e)) return items;
    CHECKF(eval_generate(&model, &prep, d, &sp, batch, items, st, &e) == 0, "%s", e.msg);
    return items;
}

static void test_generate(void) {
    EvalGenStats st;
    json_t *g1 = generate(&ds, mmau_path, 1, 4, &st);
    CHECK_INT(st.questions, ds.n);
    CHECK_INT(st.audio_errors, 0);
    CHECK(st.tokens > 0 && st.tokens <= ds.n * MAX_NEW);
    for (size_t i = 0; i < json_array_size(g1); i++) {
        const json_t *it = json_array_get(g1, i);
        const char *out = json_string_value(json_object_get(it, "model_output"));
        const char *pred = json_string_value(json_object_get(it, "model_prediction"));
        if (!CHECK(out && pred)) continue;
        char *want = reward_extract_answer(out);
        CHECK_STR(pred, want);
        free(want);
        CHECK(json_object_get(it, "audio_error") == NULL);
    }
    // Greedy is deterministic, and batching does not change any answer.
    json_t *g2 = generate(&ds, mmau_path, 1, 1, &st);
    CHECK(json_equal(g1, g2));
    // Sampling (the model's generation_config) is seeded per question: the same for any batch size.
    json_t *s1 = generate(&ds, mmau_path, 0, 4, &st), *s2 = generate(&ds, mmau_path, 0, 3, &st);
    CHECK(json_equal(s1, s2));
    CHECK(!json_equal(s1, g1));
    greedy_ref = json_incref(g1);
    MmauScore s;
    mmau_score_init(&s);
    Err e;
    CHECKF(mmau_score_items(&s, g1, "greedy", &e) == 0, "%s", e.msg);
    CHECK_INT(s.all.total, ds.n);
    CHECK_INT(s.audio_errors, 0);
    mmau_score_free(&s);
    json_decref(g1);
    json_decref(g2);
    json_decref(s1);
    json_decref(s2);
}

// One question's audio file is missing: it gets audio_error and empty outputs, is scored wrong and counted;
// the others are answered exactly as before.
static void test_audio_error(void) {
    Err e;
    json_error_t je;
    json_t *raw = json_load_file(mmau_path, 0, &je);
    json_object_set_new(json_array_get(raw, 1), "audio_id", json_string("./audio/missing.wav"));
    const char *path = TMP_PATH("evalgen_data/missing-audio.json");
    CHECK(json_dump_file(raw, path, 0) == 0);
    json_decref(raw);
    Dataset d;
    if (!CHECK_OK(dataset_load(&d, path, NULL, &e) == 0, e)) return;
    EvalGenStats st;
    json_t *got = generate(&d, path, 1, 4, &st), *want = greedy_ref;
    CHECK_INT(st.audio_errors, 1);
    const json_t *bad = json_array_get(got, 1);
    const char *msg = json_string_value(json_object_get(bad, "audio_error"));
    CHECKF(msg && strstr(msg, "missing.wav"), "%s", msg ? msg : "(none)");
    CHECK_STR(json_string_value(json_object_get(bad, "model_output")), "");
    for (size_t i = 0; i < json_array_size(got); i++)
        if (i != 1)
            CHECK(json_equal(json_object_get(json_array_get(got, i), "model_output"),
                             json_object_get(json_array_get(want, i), "model_output")));
    MmauScore s;
    mmau_score_init(&s);
    CHECKF(mmau_score_items(&s, got, path, &e) == 0, "%s", e.msg);
    CHECK_INT(s.audio_errors, 1);
    CHECK_INT(s.all.total, d.n);
    mmau_score_free(&s);
    json_decref(got);
    dataset_free(&d);
}

static void test_cli(void) {
    static char out[65536], cmd[16384];
    const char *pred = TMP_PATH("evalgen_cli_pred.json"), *res = TMP_PATH("evalgen_cli_score.json");
    unlink(pred);
    unlink(res);
    snprintf(cmd, sizeof cmd,
             "'%s' --model '%s' --data '%s' --greedy --batch 2 --out '%s' --out-json '%s' "
             "--set rollout.max_new_tokens=%d --set model.backend=cuda --backend cpu 2>&1",
             aqa_eval_exe, model_dir, mmau_path, pred, res, MAX_NEW);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 0);  // --backend cpu overrides model.backend
    CHECKF(strstr(out, "Total Accuracy: ") && strstr(out, "greedy, cpu backend") && strstr(out, "questions/s"), "%s",
           out);
    // The prediction file is what the library gives, and its score is the one written.
    json_error_t je;
    json_t *got = json_load_file(pred, 0, &je);
    CHECKF(got && json_equal(got, greedy_ref), "%s", pred);
    json_decref(got);
    Err e;
    MmauScore a, b;
    mmau_score_init(&a);
    mmau_score_init(&b);
    CHECKF(mmau_score_file(&a, pred, &e) == 0 && mmau_score_read_json(&b, res, &e) == 0, "%s", e.msg);
    CHECK(a.all.correct == b.all.correct && a.all.total == b.all.total && b.all.total == ds.n);
    mmau_score_free(&a);
    mmau_score_free(&b);

    // Sweep: the complete checkpoint without a result is evaluated; the incomplete one is not.
    const char *run = TMP_PATH("evalgen_run");
    char step[4200], marker[4300], model_link[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run);
    CHECK(system(cmd) == 0);
    for (int k = 1; k <= 2; k++) {
        snprintf(step, sizeof step, "%s/checkpoints/step-%08d", run, k);
        CHECK(dir_make(step, &e) == 0);
        snprintf(model_link, sizeof model_link, "%s/model", step);
        CHECK(symlink(model_dir, model_link) == 0);
        snprintf(marker, sizeof marker, "%s/.complete", step);
        if (k == 1) CHECK(write_text(marker, "") == 0);
    }
    snprintf(cmd, sizeof cmd, "'%s' --sweep '%s' --data '%s' --greedy --set rollout.max_new_tokens=%d 2>&1",
             aqa_eval_exe, run, mmau_path, MAX_NEW);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 0);
    CHECKF(strstr(out, "== step 1\n") && !strstr(out, "== step 2\n") && strstr(out, "1 evaluated"), "%s", out);
    snprintf(step, sizeof step, "%s/checkpoints/step-00000001/%s", run, MMAU_RESULT_NAME);
    mmau_score_init(&a);
    CHECKF(mmau_score_read_json(&a, step, &e) == 0 && a.all.total == ds.n, "%s", e.msg);
    mmau_score_free(&a);
    snprintf(step, sizeof step, "%s/checkpoints/step-00000001/eval-mmau-pred.json", run);
    CHECK(path_exists(step));
    // Bad use: exit 1 with a message.
    const struct {
        const char *args, *want;
    } bad[] = {
        {"--model m", "--model needs --data"},
        {"--score-only p --greedy", "--greedy, --batch and --backend go with --data"},
        {"--score-only p --backend cpu", "--backend go with --data"},
        {"--model m --data d --backend gpu", "--backend: expected cpu or cuda, got \"gpu\""},
        {"--score-only p --data d", "--data goes with --model or --sweep"},
        {"--model m --data d --batch 0", "--batch: expected"},
        {"--sweep r --out x", "--out goes with --model"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", aqa_eval_exe, bad[k].args);
        CHECK_INT(test_run_cmd(cmd, out, sizeof out), 1);
        CHECKF(strstr(out, bad[k].want) != NULL, "%s -> %s", bad[k].args, out);
    }
    snprintf(cmd, sizeof cmd, "'%s' --model /no/such/model --data '%s' 2>&1", aqa_eval_exe, mmau_path);
    CHECK_INT(test_run_cmd(cmd, out, sizeof out), 1);
    CHECKF(strstr(out, "/no/such/model") != NULL, "%s", out);
    // CUDA where the build or the machine has none: a clear error (with a GPU it runs: tests/gpu/test_eval_cuda)
    snprintf(cmd, sizeof cmd, "'%s' --model '%s' --data '%s' --greedy --backend cuda --out '%s' 2>&1", aqa_eval_exe,
             model_dir, mmau_path, pred);
    if (test_run_cmd(cmd, out, sizeof out) != 0) {
#ifdef AQA_CUDA
        CHECKF(strstr(out, "model.backend=cuda: no CUDA device on this machine") != NULL, "%s", out);
#else
        CHECKF(strstr(out, "model.backend=cuda: this build has no CUDA backend") != NULL, "%s", out);
#endif
    } else {
#ifndef AQA_CUDA
        CHECKF(0, "--backend cuda succeeded in a build without CUDA: %s", out);
#endif
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_eval_generate PATH/TO/aqa-eval\n");
        return 2;
    }
    aqa_eval_exe = argv[1];
    if (setup()) return 1;
    RUN(test_sampler_config);
    RUN(test_input_items);
    RUN(test_generate);
    RUN(test_audio_error);
    RUN(test_cli);
    json_decref(greedy_ref);
    dataset_free(&ds);
    prep_context_free(&prep);
    Ops *ops = model.ops;
    model_free(&model);
    ops_destroy(ops);
    return test_summary("test_eval_generate");
}
