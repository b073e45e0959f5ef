// aqa_eval: MMAU test-mini evaluation.
//   aqa-eval --model DIR --data FILE [--audio-dir DIR] [--greedy] [--batch N] [--backend cpu|cuda]
//            [--out PRED.json] [--out-json OUT.json]
//     answers every question of FILE (MMAU .json, or R1-AQA .jsonl) with the model (eval_generate.h:
//     the MMAU prompt, the model's generation_config.json or --greedy, up to rollout.max_new_tokens
//     new tokens, seed train.seed) on model.backend (--backend overrides it; cuda: the first GPU, bf16,
//     sampling on the device), writes the prediction file atomically (default: FILE's name without
//     extension + "-pred.json", in the current directory), then scores it as --score-only.
//   aqa-eval --score-only PRED.json [--out-json OUT.json]
//     scores a prediction file (the MMAU items with "model_prediction", or "model_output") with the
//     official rule and prints the official evaluation.py layout; --out-json also writes the numbers
//     as JSON (atomically), e.g. RUN/checkpoints/step-000100/eval-mmau.json for the sweep.
//   aqa-eval --sweep RUN_DIR [--data FILE [--audio-dir DIR] [--greedy] [--batch N] [--backend B]]
//            [--plot OUT.png]
//     with --data, first evaluates every complete checkpoint that lacks eval-mmau.json (its model/,
//     predictions into eval-mmau-pred.json beside the result); then lists RUN_DIR/checkpoints/step-*,
//     prints step/sound/music/speech/total sorted by total, and plots accuracy by step (default
//     RUN_DIR/eval-mmau-sweep.png; skipped with a note when gnuplot is not installed).
// Like every binary it takes --config FILE and --set section.key=value (validated; --help-config);
// model.backend, model.tokenizer (default: the evaluated model directory), data.mono,
// data.max_bad_records, rollout.max_new_tokens and train.seed apply.
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "config/config.h"
#include "eval/eval_generate.h"
#include "eval/mmau_score.h"
#include "eval/sweep.h"
#include "util/fileio.h"
#include "util/log.h"

static const char *usage =
    "usage: aqa-eval [--config FILE] [--set k=v ...] --model DIR --data FILE [--audio-dir DIR] [--greedy]\n"
    "                [--batch N] [--backend cpu|cuda] [--out PRED.json] [--out-json OUT.json]\n"
    "       aqa-eval [--config FILE] [--set k=v ...] --score-only PRED.json [--out-json OUT.json]\n"
    "       aqa-eval [--config FILE] [--set k=v ...] --sweep RUN_DIR [--data FILE [--audio-dir DIR]\n"
    "                [--greedy] [--batch N] [--backend cpu|cuda]] [--plot OUT.png]\n";

// The name of a checkpoint's prediction file, beside MMAU_RESULT_NAME.
#define EVAL_PRED_NAME "eval-mmau-pred.json"

typedef struct {
    const char *score_file, *out_json, *sweep_dir, *plot;
    const char *model, *data, *audio_dir, *out, *batch_s, *backend_s;
    int greedy, batch;
    CfgBackend backend;
} Args;

static int parse_args(const Config *cfg, int argc, char **argv, Args *a, Err *e) {
    memset(a, 0, sizeof *a);
    a->batch = 32;  // R1-AQA's evaluation batch
    a->backend = cfg->model.backend;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--greedy")) {
            a->greedy = 1;
            continue;
        }
        const char **slot = !strcmp(argv[i], "--score-only") ? &a->score_file
                            : !strcmp(argv[i], "--out-json") ? &a->out_json
                            : !strcmp(argv[i], "--sweep")    ? &a->sweep_dir
                            : !strcmp(argv[i], "--plot")     ? &a->plot
                            : !strcmp(argv[i], "--model")    ? &a->model
                            : !strcmp(argv[i], "--data")     ? &a->data
                            : !strcmp(argv[i], "--audio-dir") ? &a->audio_dir
                            : !strcmp(argv[i], "--out")      ? &a->out
                            : !strcmp(argv[i], "--batch")    ? &a->batch_s
                            : !strcmp(argv[i], "--backend")  ? &a->backend_s
                                                             : NULL;
        if (!slot) return err_set(e, "unknown argument %s", argv[i]);
        if (i + 1 == argc) return err_set(e, "%s needs a value", argv[i]);
        if (*slot) return err_set(e, "%s given twice", argv[i]);
        *slot = argv[++i];
    }
    if (!!a->score_file + !!a->sweep_dir + !!a->model != 1)
        return err_set(e, "give exactly one of --model, --score-only and --sweep");
    if (a->model && !a->data) return err_set(e, "--model needs --data");
    if (a->score_file && a->data) return err_set(e, "--data goes with --model or --sweep");
    if (!a->data && (a->audio_dir || a->greedy || a->batch_s || a->backend_s))
        return err_set(e, "--audio-dir, --greedy, --batch and --backend go with --data");
    if (a->backend_s) {
        if (!strcmp(a->backend_s, "cpu"))
            a->backend = CFG_BACKEND_CPU;
        else if (!strcmp(a->backend_s, "cuda"))
            a->backend = CFG_BACKEND_CUDA;
        else
            return err_set(e, "--backend: expected cpu or cuda, got \"%s\"", a->backend_s);
    }
    if (a->out && !a->model) return err_set(e, "--out goes with --model");
    if (a->out_json && a->sweep_dir) return err_set(e, "--out-json goes with --model or --score-only");
    if (a->plot && !a->sweep_dir) return err_set(e, "--plot goes with --sweep");
    if (a->batch_s) {
        char *end;
        long b = strtol(a->batch_s, &end, 10);
        if (*end || end == a->batch_s || b < 1 || b > 4096)
            return err_set(e, "--batch: expected an integer in [1, 4096], got \"%s\"", a->batch_s);
        a->batch = (int)b;
    }
    return 0;
}

// Prints a score in the official layout, then which MMAU version was scored, and, when asked, writes it as JSON (every scoring mode ends here).
static int report(const MmauScore *s, const char *out_json, Err *e) {
    mmau_score_print(s, stdout);
    mmau_version_print(&s->version, stdout);
    return out_json ? mmau_score_write_json(s, out_json, e) : 0;
}

static int run_score(const Args *a, Err *e) {
    MmauScore s;
    mmau_score_init(&s);
    int rc = mmau_score_file(&s, a->score_file, e);
    if (rc == 0) rc = report(&s, a->out_json, e);
    mmau_score_free(&s);
    return rc;
}

// Answers the questions of ds with the model in model_dir, writes the predictions to pred_path and the
// score (printed; JSON to out_json when given).
static int evaluate(const Config *cfg, const Args *a, const Dataset *ds, const char *model_dir,
                    const char *pred_path, const char *out_json, Err *e) {
    Model m;
    if (eval_model_load(&m, model_dir, a->backend, e)) return -1;
    int rc = -1;
    json_t *items = NULL;
    const char *tok_dir = cfg->model.tokenizer[0] ? cfg->model.tokenizer : model_dir;
    PrepOptions po = prep_options_from_config(cfg);
    po.style = PROMPT_MMAU;  // R1-AQA's evaluation prompt, whatever the training data used
    PrepContext prep;
    int have_prep = prep_options_set_model(&po, model_dir, e) == 0 && prep_context_init(&prep, tok_dir, &po, e) == 0;
    int eos[2];
    SamplerParams sp;
    EvalGenOptions go = {.greedy = a->greedy,
                         .max_new_tokens = cfg->rollout.max_new_tokens,
                         .batch = a->batch,
                         .seed = (uint64_t)cfg->train.seed};
    EvalGenStats st;
    if (have_prep) prep_eos_ids(&prep, eos);
    if (have_prep && eval_sampler_load(model_dir, &go, eos, 2, &sp, e) == 0 &&
        (items = eval_input_items(ds, a->data, e)) &&
        eval_generate(&m, &prep, ds, &sp, go.batch, items, &st, e) == 0 &&
        eval_write_items(items, pred_path, e) == 0) {
        const double secs = st.seconds > 0 ? st.seconds : 1e-9;
        printf("%s: %lld questions, %lld with unreadable audio, %s, %s backend, %.1f s (%.2f questions/s, "
               "%.1f completion tokens/s)\n",
               model_dir, (long long)st.questions, (long long)st.audio_errors, sp.greedy ? "greedy" : "sampled",
               a->backend == CFG_BACKEND_CUDA ? "cuda" : "cpu", st.seconds, st.questions / secs,
               st.tokens / secs);
        printf("predictions: %s\n", pred_path);
        MmauScore s;
        mmau_score_init(&s);
        rc = mmau_score_items(&s, items, pred_path, e);
        if (rc == 0) rc = report(&s, out_json, e);
        mmau_score_free(&s);
    }
    json_decref(items);
    if (have_prep) prep_context_free(&prep);
    eval_model_free(&m);
    return rc;
}

static int load_data(const Config *cfg, const Args *a, Dataset *ds, Err *e) {
    DataOptions o = data_options_default();
    o.audio_dir = a->audio_dir ? a->audio_dir : cfg->data.audio_dir[0] ? cfg->data.audio_dir : NULL;
    o.max_bad = cfg->data.max_bad_records;
    if (dataset_load(ds, a->data, &o, e)) return -1;
    if (ds->n_bad > 0) log_warn("%s: %lld bad records skipped", a->data, (long long)ds->n_bad);
    return 0;
}

static int run_generate(const Config *cfg, const Args *a, Err *e) {
    Dataset ds;
    if (load_data(cfg, a, &ds, e)) return -1;
    char out[4096];
    const char *pred = a->out;
    if (!pred) {  // "<data stem>-pred.json" in the current directory
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", a->data);
        char *base = basename(copy), *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = 0;
        snprintf(out, sizeof out, "%s-pred.json", base);
        pred = out;
    }
    int rc = evaluate(cfg, a, &ds, a->model, pred, a->out_json, e);
    dataset_free(&ds);
    return rc;
}

// With --data: every complete checkpoint without a result gets one (model under its model/).
static int sweep_evaluate(const Config *cfg, const Args *a, Err *e) {
    Sweep sw;
    int rc = sweep_scan(&sw, a->sweep_dir, e);
    Dataset ds;
    int loaded = 0;
    for (int i = 0; rc == 0 && i < sw.n; i++) {
        const SweepEntry *en = &sw.entry[i];
        if (!en->complete || en->has_result) continue;
        if (!loaded && (rc = load_data(cfg, a, &ds, e)) == 0) loaded = 1;
        char model[4096], pred[4096], result[4096];
        ckpt_model_path(model, sizeof model, en->dir);
        path_join(pred, sizeof pred, en->dir, EVAL_PRED_NAME);
        path_join(result, sizeof result, en->dir, MMAU_RESULT_NAME);
        printf("== step %ld\n", en->step);
        if (rc == 0) rc = evaluate(cfg, a, &ds, model, pred, result, e);
    }
    if (loaded) dataset_free(&ds);
    sweep_free(&sw);
    return rc;
}

static int run_sweep(const Config *cfg, const Args *a, Err *e) {
    if (a->data && sweep_evaluate(cfg, a, e)) return -1;
    Sweep sw;
    if (sweep_scan(&sw, a->sweep_dir, e)) {
        sweep_free(&sw);
        return -1;
    }
    sweep_print(&sw, stdout);
    char png[4096];
    const char *plot = a->plot ? a->plot : path_join(png, sizeof png, a->sweep_dir, "eval-mmau-sweep.png");
    int rc = sweep_plot(&sw, plot, e);
    if (rc == 0)
        printf("plot: %s\n", plot);
    else if (rc == SWEEP_PLOT_SKIPPED)
        printf("plot skipped: %s\n", e->msg);
    sweep_free(&sw);
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    log_init("aqa-eval", -1);
    Config *cfg = mallocCheck(sizeof *cfg);
    Err e;
    Args a;
    int rc = config_from_args(cfg, &argc, argv, &e);
    if (rc == 0 && parse_args(cfg, argc, argv, &a, &e)) {
        fprintf(stderr, "aqa-eval: %s\n%s", e.msg, usage);
        rc = -1;
    } else if (rc == 0) {
        log_set_level(cfg->log.level);
        rc = a.score_file ? run_score(&a, &e) : a.model ? run_generate(cfg, &a, &e) : run_sweep(cfg, &a, &e);
        if (rc < 0) fprintf(stderr, "aqa-eval: %s\n", e.msg);
    } else if (rc < 0) {
        fprintf(stderr, "aqa-eval: %s\n", e.msg);
    }
    free(cfg);
    return rc < 0 ? 1 : 0;
}
