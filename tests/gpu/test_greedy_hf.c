// test_greedy_hf: our greedy decoding against transformers' greedy generate. tests/reference/hf_greedy.py
// wrote tests/fixtures/model/hf_greedy.json on a GPU machine: per case (a config, seed and checkpoint
// dtype as aqa-init writes them; a prompt with audio) HF's 32 tokens in fp32 and in bf16 and, per step,
// its 4 best ids and logits. Here each checkpoint is rebuilt the way aqa-init builds it and, on the CPU
// backend (fp32) and, with a CUDA build and a GPU, the CUDA backend (bf16):
//   free running: model_generate greedy, 32 tokens; the first divergence from HF, if any, must be a
//     near tie in HF's logits at that step (printed); after it the sequences are not comparable.
//   teacher forced: one forward over the prompt + HF's tokens; at every step our argmax must be HF's
//     token or, printed, a near tie.
// A near tie: our token is among HF's 4 best and within tol * max|logit| of HF's best; tol 1e-3 when both
// sides are fp32, 3e-2 when either is bf16 (test_model_cuda's bound on whole-model bf16 logits). The
// small case (30 s of audio) runs only with a GPU: its CPU forward is slow on a build machine.
#include <jansson.h>

#include "gpu_testutil.h"
#include "model/checkpoint.h"
#include "model/cuda/model_load_device.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/param_init.h"

enum { N_NEW = 32, TOP = 4, FEAT_MELS = 128, FEAT_FRAMES = 3000 };
static const double TOL_F32 = 1e-3, TOL_BF16 = 3e-2;

typedef struct {
    int tokens[N_NEW], top_ids[N_NEW][TOP];
    float top_logits[N_NEW][TOP], scale[N_NEW];
} HfRun;

typedef struct {
    const char *name, *config, *dtype;  // strings of the fixture
    int seed, valid, n_ids, *ids;
    HfRun fp32, bf16;
} Case;

static json_t *fixture;
static float *features;  // [FEAT_MELS, FEAT_FRAMES], hf_greedy.py's formula
static int have_gpu;

// ---- fixture ----

static int json_ints(const json_t *a, int *out, int n) {
    if (!json_is_array(a) || (int)json_array_size(a) != n) return -1;
    for (int i = 0; i < n; i++) {
        if (!json_is_integer(json_array_get(a, i))) return -1;
        out[i] = (int)json_integer_value(json_array_get(a, i));
    }
    return 0;
}

static int json_floats(const json_t *a, float *out, int n) {
    if (!json_is_array(a) || (int)json_array_size(a) != n) return -1;
    for (int i = 0; i < n; i++) {
        if (!json_is_number(json_array_get(a, i))) return -1;
        out[i] = (float)json_number_value(json_array_get(a, i));
    }
    return 0;
}

static int hf_run_read(const json_t *r, HfRun *h) {
    if (!json_is_object(r) || json_ints(json_object_get(r, "tokens"), h->tokens, N_NEW) ||
        json_floats(json_object_get(r, "scale"), h->scale, N_NEW))
        return -1;
    const json_t *ids = json_object_get(r, "top_ids"), *lg = json_object_get(r, "top_logits");
    if (json_array_size(ids) != N_NEW || json_array_size(lg) != N_NEW) return -1;
    for (int s = 0; s < N_NEW; s++)
        if (json_ints(json_array_get(ids, s), h->top_ids[s], TOP) ||
            json_floats(json_array_get(lg, s), h->top_logits[s], TOP))
            return -1;
    return 0;
}

// Case k of the fixture into c (ids malloc'd); -1 after a failed CHECK naming what is malformed.
static int case_read(int k, Case *c) {
    const json_t *j = json_array_get(json_object_get(fixture, "cases"), k), *hf = json_object_get(j, "hf");
    memset(c, 0, sizeof *c);
    c->name = json_string_value(json_object_get(j, "name"));
    c->config = json_string_value(json_object_get(j, "config"));
    c->dtype = json_string_value(json_object_get(j, "dtype"));
    c->seed = (int)json_integer_value(json_object_get(j, "seed"));
    c->valid = (int)json_integer_value(json_object_get(j, "valid_frames"));
    const json_t *ids = json_object_get(j, "input_ids");
    c->n_ids = (int)json_array_size(ids);
    c->ids = mallocCheck((c->n_ids + N_NEW) * sizeof(int));  // room for the teacher-forced tokens
    int ok = c->name && c->config && c->dtype && c->valid > 0 && c->valid <= FEAT_FRAMES && c->n_ids > 0 &&
             json_ints(ids, c->ids, c->n_ids) == 0 && hf_run_read(json_object_get(hf, "fp32"), &c->fp32) == 0 &&
             hf_run_read(json_object_get(hf, "bf16"), &c->bf16) == 0;
    CHECKF(ok, "tests/fixtures/model/hf_greedy.json: case %d is malformed", k);
    return ok ? 0 : -1;
}

// hf_greedy.py's features, computed in double and rounded once as numpy does; the fixture's sum says
// both sides computed the same inputs.
static int features_make(void) {
    features = mallocCheck((size_t)FEAT_MELS * FEAT_FRAMES * sizeof(float));
    double sum = 0;
    for (int c = 0; c < FEAT_MELS; c++)
        for (int t = 0; t < FEAT_FRAMES; t++) {
            float v = (float)(0.8 * sin(0.013 * t * (c + 1) + 0.1 * c) + 0.3 * cos(0.0007 * t * c + 0.5));
            features[(size_t)c * FEAT_FRAMES + t] = v;
            sum += v;
        }
    const double want = json_number_value(json_object_get(fixture, "feature_sum"));
    CHECKF(fabs(sum - want) <= 1e-6 * (1 + fabs(want)), "feature sum %.9g, the script's %.9g", sum, want);
    return fabs(sum - want) <= 1e-6 * (1 + fabs(want)) ? 0 : -1;
}

// The case's checkpoint in TMP, as `aqa-init --config C --seed S --dtype D` writes it.
static int case_model_dir(const Case *c, char *dir, size_t cap) {
    Err e;
    ModelConfig cfg;
    ParamTable t;
    snprintf(dir, cap, "%s", TMP_PATH(c->name));
    if (hf_config_load(SRC_PATH(c->config), &cfg, &e)) {
        CHECKF(0, "%s", e.msg);
        return -1;
    }
    param_table_build(&t, &cfg);
    float *p = mallocCheck(t.numel * sizeof(float));
    param_init_random(&cfg, &t, p, (uint64_t)c->seed);
    const SaveDtype dt = strcmp(c->dtype, "bf16") == 0 ? SAVE_BF16 : SAVE_F32;
    int rc = model_save_dir(dir, &cfg, &t, p, dt, (size_t)1 << 32, NULL, &e);
    CHECKF(rc == 0, "%s", e.msg);
    free(p);
    param_table_free(&t);
    return rc;
}

// ---- comparisons ----

// 1 when `ours` at step s is HF's token or a near tie in HF's logits (printed either way when not HF's).
static int explain(const char *what, const HfRun *h, int s, int ours, double tol) {
    if (ours == h->tokens[s]) return 1;
    int k = 0;
    while (k < TOP && h->top_ids[s][k] != ours) k++;
    const double gap = k < TOP ? h->top_logits[s][0] - h->top_logits[s][k] : INFINITY;
    const double bound = tol * h->scale[s];
    printf("    %s: step %d: ours %d, HF %d; %s HF's, logit gap %.4g, tie bound %.4g (max|logit| %.3g): %s\n", what,
           s, ours, h->tokens[s], k == 0 ? "the raw argmax of" : k == 1 ? "2nd of" : k == 2 ? "3rd of" : k == 3 ? "4th of" : "not in the top 4 of", gap,
           bound, h->scale[s], gap <= bound ? "near tie" : "MISMATCH");
    return gap <= bound;
}

static void check_free_run(const char *what, const HfRun *h, const int *ours, double tol) {
    int s = 0;
    while (s < N_NEW && ours[s] == h->tokens[s]) s++;
    printf("    %s: free running, %d of %d tokens identical before any divergence\n", what, s, N_NEW);
    if (s < N_NEW) CHECKF(explain(what, h, s, ours[s], tol), "%s: first divergence (step %d) is no near tie", what, s);
}

// Our argmax at each step given HF's tokens before it.
static void check_forced(const char *what, Model *m, const Case *c, const HfRun *h, double tol) {
    const int T = c->n_ids + N_NEW - 1, V = m->cfg.vocab;
    memcpy(c->ids + c->n_ids, h->tokens, (N_NEW - 1) * sizeof(int));
    ModelBatch b;
    mbatch_init(&b, &m->cfg);
    mbatch_add_seq(&b, c->ids, T, T);
    mbatch_add_audio(&b, features, c->valid);
    int rows[N_NEW];
    for (int s = 0; s < N_NEW; s++) rows[s] = c->n_ids - 1 + s;
    float *lg = mallocCheck((size_t)N_NEW * V * sizeof(float));  // [N_NEW, V]
    if (model_rows_logits(m, &b, rows, N_NEW, lg, NULL) == 0) {
        int same = 0;
        for (int s = 0; s < N_NEW; s++) {
            const float *row = lg + (size_t)s * V;
            int best = 0;
            for (int v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
            same += best == h->tokens[s];
            CHECKF(explain(what, h, s, best, tol), "%s: teacher-forced step %d is no near tie", what, s);
        }
        printf("    %s: teacher forced, argmax = HF's token at %d of %d steps\n", what, same, N_NEW);
    }
    free(lg);
    mbatch_free(&b);
}

// Both comparisons of one backend's model against HF fp32 and HF bf16.
static void check_backend(const Case *c, const char *dir, Ops *o, int bf16) {
    Model m;
    Err e;
    if (model_load_device(&m, dir, o, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    GenPrompt p = {.ids = c->ids, .n_ids = c->n_ids, .features = features, .valid_frames = c->valid};
    SamplerParams sp = sampler_defaults(m.cfg.eos_id, N_NEW, 1);
    sp.greedy = 1, sp.n_eos = 0;  // 32 tokens, as min_new_tokens does for HF
    GenResult r;
    gen_result_init(&r, 1, N_NEW);
    char w32[96], w16[96];
    snprintf(w32, sizeof w32, "%s %s vs HF fp32", c->name, bf16 ? "GPU bf16" : "CPU fp32");
    snprintf(w16, sizeof w16, "%s %s vs HF bf16", c->name, bf16 ? "GPU bf16" : "CPU fp32");
    if (model_generate(&m, &p, 1, 1, &sp, &r, &e) == 0) {
        CHECK_INT(r.len[0], N_NEW);
        check_free_run(w32, &c->fp32, r.tokens, bf16 ? TOL_BF16 : TOL_F32);
        check_free_run(w16, &c->bf16, r.tokens, TOL_BF16);
    } else {
        CHECKF(0, "%s", e.msg);
    }
    check_forced(w32, &m, c, &c->fp32, bf16 ? TOL_BF16 : TOL_F32);
    check_forced(w16, &m, c, &c->bf16, TOL_BF16);
    gen_result_free(&r);
    model_free(&m);
}

static void test_cases(void) {
    const size_t n = json_array_size(json_object_get(fixture, "cases"));
    CHECK(n > 0);
    for (size_t k = 0; k < n; k++) {
        Case c;
        char dir[4096];
        const int ok = case_read((int)k, &c) == 0;
        if (ok && !have_gpu && strncmp(c.name, "small", 5) == 0) {
            printf("  %s: skipped without a GPU (its CPU forward is slow on a build machine)\n", c.name);
        } else if (ok && case_model_dir(&c, dir, sizeof dir) == 0) {
            printf("  %s (%s, seed %d, %s checkpoint; %d prompt ids, %d valid frames):\n", c.name, c.config, c.seed,
                   c.dtype, c.n_ids, c.valid);
            Ops *oc = ops_cpu_create();
            check_backend(&c, dir, oc, 0);
            ops_destroy(oc);
#ifdef AQA_CUDA
            if (have_gpu) {
                Ops *og = ops_cuda_create();
                check_backend(&c, dir, og, 1);
                ops_destroy(og);
            }
#endif
        }
        free(c.ids);
    }
}

int main(void) {
#ifdef AQA_CUDA
    have_gpu = ops_cuda_device_count() > 0;
#endif
    json_error_t je;
    const char *path = SRC_PATH("tests/fixtures/model/hf_greedy.json");
    fixture = json_load_file(path, 0, &je);
    if (!fixture) {
        fprintf(stderr, "FAIL: %s:%d: %s (regenerate it with tests/reference/hf_greedy.py)\n", path, je.line, je.text);
        return 1;
    }
    printf("fixture: transformers %s, torch %s, %s\n", json_string_value(json_object_get(fixture, "transformers")),
           json_string_value(json_object_get(fixture, "torch")), json_string_value(json_object_get(fixture, "device")));
    if (CHECK((int)json_integer_value(json_object_get(fixture, "new_tokens")) == N_NEW) && features_make() == 0)
        RUN(test_cases);
    free(features);
    json_decref(fixture);
    return test_summary("test_greedy_hf");
}
