// Tests of common/pipeline/prepare and schedule: synthetic questions prepared with the real Qwen2-Audio
// tokenizer (features equal to a direct audio_load + mel_compute, prompt shape and audio-token count,
// solution ids, the audio cut, determinism), the config mappings, every bad-input path (missing and
// non-audio files, audio too short, a tokenizer without the Qwen2-Audio tokens, a bad cut), and the
// step schedule (epoch cut, resume from the newest complete checkpoint).
#include "pipeline/pipeline_fixture.h"
#include "pipeline/prepare.h"
#include "pipeline/schedule.h"
#include "util/fileio.h"

#include <unistd.h>

static Dataset ds;
static const char *tok_dir;

static int count_id(const TokenIds *t, int32_t id) {
    int n = 0;
    for (int i = 0; i < t->n; i++) n += t->ids[i] == id;
    return n;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static PrepOptions default_opts(void) {
    return (PrepOptions){.mono = AUDIO_MONO_FIRST, .style = PROMPT_R1AQA, .max_audio_s = 30};
}

static void test_context(void) {
    PrepContext ctx;
    Err e;
    PrepOptions o = default_opts();
    CHECKF(prep_context_init(&ctx, tok_dir, &o, &e) == 0, "%s", e.msg);
    CHECK_INT(ctx.im_end_id, 151645);
    CHECK_INT(ctx.endoftext_id, 151643);
    CHECK_INT(ctx.audio_id, 151646);
    CHECK_INT(ctx.max_samples, 480000);
    int eos[2];
    prep_eos_ids(&ctx, eos);
    CHECK(eos[0] == 151645 && eos[1] == 151643);
    prep_context_free(&ctx);
    CHECK(ctx.tok == NULL && ctx.mel == NULL);
}

// Every question: features as computed directly, N <|AUDIO|> ids in one run, the chat shape, solution ids.
static void test_questions(void) {
    PrepContext ctx;
    Err e;
    PrepOptions o = default_opts();
    if (prep_context_init(&ctx, tok_dir, &o, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    float *want = mallocCheck((size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float));
    int32_t mask[MEL_FRAMES];
    for (int64_t i = 0; i < ds.n; i++) {
        const Question *q = &ds.q[i];
        PreparedQuestion p;
        if (prep_question(&ctx, q, &p, &e)) {
            CHECKF(0, "question %lld: %s", (long long)i, e.msg);
            continue;
        }
        Audio a;
        CHECK(audio_load(q->audio_path, AUDIO_MONO_FIRST, &a, &e) == 0);
        int N = mel_compute(ctx.mel, a.samples, a.n, want, mask);
        CHECK_INT(p.index, q->index);
        CHECK_INT(p.n_samples, a.n);  // synthetic clips are at most 10 s: nothing cut
        CHECK_INT(p.n_audio_tokens, N);
        CHECK_INT(p.valid_frames, audio_valid_frames(a.n));
        CHECK(memcmp(p.features, want, (size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float)) == 0);
        audio_free(&a);
        CHECK_INT(count_id(&p.prompt, ctx.audio_id), N);
        char *text = tokenizer_decode(ctx.tok, p.prompt.ids, p.prompt.n, 0);
        char *ptext = prompt_for_question(q, PROMPT_R1AQA);
        const char *head = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
                           "<|audio_bos|><|AUDIO|>";
        CHECK(strncmp(text, head, strlen(head)) == 0);
        CHECK(strstr(text, ptext) != NULL);
        CHECK(ends_with(text, "<|im_end|>\n<|im_start|>assistant\n"));
        free(text);
        free(ptext);
        char *sol = prompt_solution(q);
        CHECK_STR(p.solution, sol);
        CHECK_INT(p.solution_ids.ids[p.solution_ids.n - 1], ctx.im_end_id);
        char *dec = tokenizer_decode(ctx.tok, p.solution_ids.ids, p.solution_ids.n - 1, 0);
        CHECK_STR(dec, sol);
        free(dec);
        free(sol);
        prep_question_free(&p);
        CHECK(p.features == NULL && p.prompt.ids == NULL);
    }
    free(want);
    prep_context_free(&ctx);
}

// The cut to max_audio_s, the think prompt, and repeat calls giving the same bytes.
static void test_options(void) {
    PrepContext ctx;
    Err e;
    PrepOptions o = {.mono = AUDIO_MONO_MEAN, .style = PROMPT_R1AQA_THINK, .max_audio_s = 0.5};
    if (prep_context_init(&ctx, tok_dir, &o, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    PreparedQuestion a, b;
    CHECK(prep_question(&ctx, &ds.q[0], &a, &e) == 0);
    CHECK(prep_question(&ctx, &ds.q[0], &b, &e) == 0);
    CHECK_INT(a.n_samples, 8000);
    CHECK_INT(a.valid_frames, 50);
    CHECK_INT(a.n_audio_tokens, audio_token_count(50));  // 12
    CHECK_INT(count_id(&a.prompt, ctx.audio_id), 12);
    CHECK(a.prompt.n == b.prompt.n && memcmp(a.prompt.ids, b.prompt.ids, sizeof(int32_t) * (size_t)a.prompt.n) == 0);
    CHECK(memcmp(a.features, b.features, (size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float)) == 0);
    char *text = tokenizer_decode(ctx.tok, a.prompt.ids, a.prompt.n, 1);
    CHECK(strstr(text, "Output the thinking process in <think> </think>") != NULL);
    free(text);
    prep_question_free(&a);
    prep_question_free(&b);
    prep_context_free(&ctx);
}

// A model with a shorter audio window (F = 2 x max_source_positions mel frames): the audio is cut to F
// frames and the features are the first F frames of each band of the full [128, 3000] features of the
// cut audio (row stride F); prep_options_set_model reads F from a model's config.json and refuses a
// window beyond 3000 frames; prep_context_init refuses an odd or too large window.
static void test_window(void) {
    enum { F = 100 };  // 1 s
    PrepContext ctx;
    Err e;
    PrepOptions o = default_opts();
    o.audio_frames = F;
    if (prep_context_init(&ctx, tok_dir, &o, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    CHECK_INT(ctx.max_samples, F * AUDIO_HOP);
    float *full = mallocCheck((size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float));  // [128, 3000]
    int32_t mask[MEL_FRAMES];
    for (int64_t i = 0; i < ds.n; i++) {
        PreparedQuestion p;
        if (prep_question(&ctx, &ds.q[i], &p, &e)) {
            CHECKF(0, "question %lld: %s", (long long)i, e.msg);
            continue;
        }
        Audio a;
        CHECK(audio_load(ds.q[i].audio_path, AUDIO_MONO_FIRST, &a, &e) == 0);
        int64_t n = a.n < F * AUDIO_HOP ? a.n : F * AUDIO_HOP;
        int N = mel_compute(ctx.mel, a.samples, n, full, mask);
        audio_free(&a);
        CHECK_INT(p.n_samples, n);
        CHECK_INT(p.valid_frames, audio_valid_frames(n));
        CHECK(p.valid_frames <= F);
        CHECK_INT(p.n_audio_tokens, N);
        CHECK_INT(count_id(&p.prompt, ctx.audio_id), N);
        int same = 1;
        for (int m = 0; m < MEL_N_MELS; m++)
            same &= memcmp(p.features + (size_t)m * F, full + (size_t)m * MEL_FRAMES, F * sizeof(float)) == 0;
        CHECK(same);
        prep_question_free(&p);
    }
    free(full);
    prep_context_free(&ctx);

    o.audio_frames = 101;
    CHECK(prep_context_init(&ctx, tok_dir, &o, &e) != 0 && strstr(e.msg, "101") != NULL);
    o.audio_frames = MEL_FRAMES + 2;
    CHECK(prep_context_init(&ctx, tok_dir, &o, &e) != 0 && strstr(e.msg, "3002") != NULL);

    const char *dir = TMP_PATH("prepare_window");
    char path[4200];
    CHECK(dir_make(dir, &e) == 0);
    const char *cfg = "{\"model_type\": \"qwen2_audio\", \"audio_config\": {\"num_mel_bins\": 128, "
                      "\"max_source_positions\": %d, \"d_model\": 64, \"encoder_layers\": 2, "
                      "\"encoder_attention_heads\": 4, \"encoder_ffn_dim\": 128}, \"text_config\": "
                      "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                      "\"num_key_value_heads\": 2, \"intermediate_size\": 128, \"vocab_size\": 151680}}";
    char text[1024];
    snprintf(text, sizeof text, cfg, 150);
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "config.json"), text, strlen(text), &e) == 0);
    PrepOptions w = default_opts();
    CHECKF(prep_options_set_model(&w, dir, &e) == 0, "%s", e.msg);
    CHECK_INT(w.audio_frames, 300);
    snprintf(text, sizeof text, cfg, 1502);
    CHECK(file_write_atomic(path, text, strlen(text), &e) == 0);
    CHECK(prep_options_set_model(&w, dir, &e) != 0 && strstr(e.msg, "3004") != NULL);
}

static void test_from_config(void) {
    Config cfg;
    config_defaults(&cfg);
    PrepOptions o = prep_options_from_config(&cfg);
    CHECK(o.mono == AUDIO_MONO_FIRST && o.style == PROMPT_R1AQA && o.max_audio_s == 30);
    cfg.data.format = CFG_FORMAT_MMAU;
    cfg.data.mono = CFG_MONO_MEAN;
    cfg.data.max_audio_s = 12.5;
    o = prep_options_from_config(&cfg);
    CHECK(o.mono == AUDIO_MONO_MEAN && o.style == PROMPT_MMAU && o.max_audio_s == 12.5);
    cfg.data.prompt_mode = CFG_PROMPT_THINK;
    CHECK(prep_options_from_config(&cfg).style == PROMPT_R1AQA_THINK);
    DataOptions d = prep_data_options(&cfg);
    CHECK(d.format == DATA_FORMAT_MMAU && d.audio_dir == NULL && d.max_bad == 100);
    snprintf(cfg.data.audio_dir, sizeof cfg.data.audio_dir, "/audio");
    cfg.data.max_bad_records = 3;
    cfg.data.format = CFG_FORMAT_R1AQA;
    d = prep_data_options(&cfg);
    CHECK(d.format == DATA_FORMAT_R1AQA && d.audio_dir && strcmp(d.audio_dir, "/audio") == 0 && d.max_bad == 3);
}

// A copy of question 0 pointing at another audio file.
static Question with_audio(const char *path) {
    Question q = ds.q[0];
    q.audio_path = (char *)path;
    return q;
}

static void test_bad_input(void) {
    PrepContext ctx;
    Err e;
    PrepOptions o = default_opts();
    // The npm Qwen3 tokenizer has the chat tokens but not <|AUDIO|>.
    CHECK(prep_context_init(&ctx, fixture_qwen3_json(), &o, &e) == -1);
    CHECKF(strstr(e.msg, "has no <|AUDIO|> token") && strstr(e.msg, "tokenizer-qwen3"), "%s", e.msg);
    CHECK(prep_context_init(&ctx, TMP_PATH("pipeline_no_such_tokenizer"), &o, &e) == -1);
    o.max_audio_s = 31;
    CHECK(prep_context_init(&ctx, tok_dir, &o, &e) == -1 && strstr(e.msg, "max_audio_s 31 not in (0, 30]"));
    o = default_opts();
    if (prep_context_init(&ctx, tok_dir, &o, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    PreparedQuestion p;
    const char *missing = TMP_PATH("pipeline_missing.wav");
    Question q = with_audio(missing);
    CHECK(prep_question(&ctx, &q, &p, &e) == -1);
    char want[256];
    snprintf(want, sizeof want, "question %s (line %d): ", q.id, q.line);
    CHECKF(strncmp(e.msg, want, strlen(want)) == 0 && strstr(e.msg, missing), "%s", e.msg);
    CHECK(p.features == NULL && p.prompt.ids == NULL);
    const char *text_file = TMP_PATH("pipeline_not_audio.wav");
    CHECK(file_write_atomic(text_file, "this is not audio\n", 18, &e) == 0);
    q = with_audio(text_file);
    CHECK(prep_question(&ctx, &q, &p, &e) == -1);
    CHECKF(strstr(e.msg, text_file) != NULL, "%s", e.msg);
    // 300 samples: 2 mel frames, no audio token.
    const char *tiny = TMP_PATH("pipeline_tiny.wav");
    float x[300] = {0.25f};
    CHECK(audio_write_wav(tiny, x, 300, 1, 16000, AUDIO_WAV_PCM16, &e) == 0);
    q = with_audio(tiny);
    CHECK(prep_question(&ctx, &q, &p, &e) == -1);
    CHECKF(strstr(e.msg, "pipeline_tiny.wav: 300 samples at 16 kHz are too short for one audio token"), "%s", e.msg);
    prep_context_free(&ctx);
}

static void test_schedule(void) {
    Config cfg;
    config_defaults(&cfg);
    Err e;
    int64_t n;
    cfg.train.questions_per_step = 4;
    cfg.train.max_steps = 100;
    cfg.train.epochs = 2;
    CHECK(schedule_total_steps(&cfg, 10, &n, &e) == 0 && n == 5);  // 20 slots / 4
    cfg.train.max_steps = 3;
    CHECK(schedule_total_steps(&cfg, 10, &n, &e) == 0 && n == 3);
    cfg.train.epochs = 1;
    CHECK(schedule_total_steps(&cfg, 3, &n, &e) == -1 &&
          strstr(e.msg, "3 questions x train.epochs 1 cannot fill one step"));

    int64_t start = -1;
    snprintf(cfg.train.run_dir, sizeof cfg.train.run_dir, "%s", TMP_PATH("pipeline_run"));
    char path[4200];
    const int steps[3] = {3, 7, 9};
    for (int i = 0; i < 3; i++) {  // what an earlier run of this test left
        snprintf(path, sizeof path, "%s/checkpoints/step-%08d/.complete", cfg.train.run_dir, steps[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/checkpoints/step-%08d", cfg.train.run_dir, steps[i]);
        rmdir(path);
    }
    CHECK(schedule_start_step(&cfg, &start, &e) == 0 && start == 0);  // no resume
    cfg.train.resume = true;
    CHECK(schedule_start_step(&cfg, &start, &e) == 0 && start == 0);  // nothing to resume from
    // Complete checkpoints 3 and 7, and 9 without its marker (a crash): resume at 7.
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/checkpoints/step-%08d", cfg.train.run_dir, steps[i]);
        CHECK(dir_make(path, &e) == 0);
        if (steps[i] == 9) continue;
        snprintf(path, sizeof path, "%s/checkpoints/step-%08d/.complete", cfg.train.run_dir, steps[i]);
        CHECK(file_write_atomic(path, "", 0, &e) == 0);
    }
    CHECK(schedule_start_step(&cfg, &start, &e) == 0 && start == 7);
}

// The asynchronous schedule: weights versions per step, the pipeline drained at checkpoint steps, the
// same versions after a resume, and the step before which each version's broadcast comes.
static void test_versions(void) {
    Config cfg;
    config_defaults(&cfg);
    cfg.train.save_every = 5;
    VersionSchedule s = schedule_versions(&cfg, 0, 12);
    for (int64_t j = 0; j < 12; j++) CHECK_INT(schedule_version(&s, j), j);  // k = 0: synchronous
    for (int64_t v = 0; v < 12; v++) CHECK_INT(schedule_first_step(&s, v), v);
    cfg.grpo.max_staleness = 2;
    s = schedule_versions(&cfg, 0, 12);
    // max(j - 2, last multiple of 5 <= j, 0).
    const int64_t want[12] = {0, 0, 0, 1, 2, 5, 5, 5, 6, 7, 10, 10};
    for (int64_t j = 0; j < 12; j++) {
        CHECK_INT(schedule_version(&s, j), want[j]);
        CHECK(j - schedule_version(&s, j) <= 2);
    }
    const int64_t first[12] = {0, 3, 4, 5, 5, 5, 8, 9, 10, 10, 10, 12};  // 12: no step samples with 11
    for (int64_t v = 0; v < 12; v++) CHECK_INT(schedule_first_step(&s, v), first[v]);
    // Resumed at the checkpoint of step 5: the same versions as the uninterrupted run.
    VersionSchedule r = schedule_versions(&cfg, 5, 12);
    for (int64_t j = 5; j < 12; j++) CHECK_INT(schedule_version(&r, j), want[j]);
    // Resumed off the checkpoint grid (save_every changed): never older than the resumed weights.
    r = schedule_versions(&cfg, 7, 12);
    CHECK_INT(schedule_version(&r, 7), 7);
    CHECK_INT(schedule_version(&r, 8), 7);
    CHECK_INT(schedule_version(&r, 9), 7);
    // save_every 0 (checkpoints at the end only): a plain lag of k.
    cfg.train.save_every = 0;
    s = schedule_versions(&cfg, 0, 12);
    CHECK_INT(schedule_version(&s, 11), 9);
    // SFT has no rollouts: synchronous whatever the key says.
    cfg.train.mode = CFG_MODE_SFT;
    s = schedule_versions(&cfg, 0, 12);
    CHECK_INT(schedule_version(&s, 11), 11);
}

int main(void) {
    tok_dir = fixture_tokenizer_dir("pipeline_tok");
    if (!tok_dir || !fixture_synth_dataset("pipeline_synth", 6, 11, &ds)) return 1;
    RUN(test_context);
    RUN(test_questions);
    RUN(test_options);
    RUN(test_window);
    RUN(test_from_config);
    RUN(test_bad_input);
    RUN(test_schedule);
    RUN(test_versions);
    dataset_free(&ds);
    return test_summary("prepare");
}
