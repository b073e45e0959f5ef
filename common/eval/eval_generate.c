// eval_generate.c: see eval_generate.h.
#include "eval/eval_generate.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/cuda/model_load_device.h"
#include "model/generate.h"
#include "pipeline/backend.h"
#include "reward/reward.h"
#include "text/tokenizer.h"
#include "util/fileio.h"
#include "util/log.h"

// ---- the model on its backend ----

int eval_model_load(Model *m, const char *model_dir, CfgBackend backend, Err *e) {
    Ops *o = backend_create(backend, "model.backend", e);
    if (!o) return -1;
    // one loader for both: a bf16 checkpoint reaches the GPU as its bytes, the CPU through fp32
    if (model_load_device(m, model_dir, o, e)) {
        ops_destroy(o);
        return -1;
    }
    return 0;
}

void eval_model_free(Model *m) {
    Ops *o = m->ops;
    model_free(m);
    ops_destroy(o);
}

// ---- generation_config.json ----

// A number field of the generation config into *out when present (absent or null: unchanged).
static int gen_number(const json_t *root, const char *key, const char *path, double *out, Err *e) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return err_set(e, "%s: \"%s\" is not a number", path, key);
    *out = json_number_value(v);
    return 0;
}

static int gen_eos(const json_t *root, const char *path, SamplerParams *sp, Err *e) {
    const json_t *v = json_object_get(root, "eos_token_id");
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        sp->n_eos = 1;
        sp->eos[0] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > SAMPLER_MAX_EOS)
        return err_set(e, "%s: \"eos_token_id\" is not an id or a list of 1..%d ids", path, SAMPLER_MAX_EOS);
    sp->n_eos = (int)json_array_size(v);
    for (int i = 0; i < sp->n_eos; i++) {
        const json_t *id = json_array_get(v, i);
        if (!json_is_integer(id)) return err_set(e, "%s: \"eos_token_id\"[%d] is not an integer", path, i);
        sp->eos[i] = (int)json_integer_value(id);
    }
    return 0;
}

int eval_sampler_load(const char *model_dir, const EvalGenOptions *opt, const int *default_eos,
                      int n_default_eos, SamplerParams *sp, Err *e) {
    if (n_default_eos < 1 || n_default_eos > SAMPLER_MAX_EOS)
        return err_set(e, "eval: %d default stop ids (1..%d)", n_default_eos, SAMPLER_MAX_EOS);
    // transformers' GenerationConfig defaults: what generate() does for keys the file leaves out.
    *sp = sampler_defaults(default_eos[0], opt->max_new_tokens, opt->seed);
    sp->greedy = 1;
    sp->top_k = 50;
    sp->n_eos = n_default_eos;
    memcpy(sp->eos, default_eos, n_default_eos * sizeof *default_eos);
    char path[4096];
    path_join(path, sizeof path, model_dir, "generation_config.json");
    if (path_exists(path)) {
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        if (!root) return err_set(e, "%s:%d: not valid JSON: %s", path, je.line, je.text);
        int rc = 0;
        double temperature = sp->temperature, top_k = sp->top_k, top_p = sp->top_p,
               penalty = sp->repetition_penalty;
        const json_t *ds = json_object_get(root, "do_sample");
        if (!json_is_object(root))
            rc = err_set(e, "%s: not a JSON object", path);
        else if (ds && !json_is_null(ds) && !json_is_boolean(ds))
            rc = err_set(e, "%s: \"do_sample\" is not true or false", path);
        else if (gen_number(root, "temperature", path, &temperature, e) || gen_number(root, "top_k", path, &top_k, e) ||
                 gen_number(root, "top_p", path, &top_p, e) ||
                 gen_number(root, "repetition_penalty", path, &penalty, e) || gen_eos(root, path, sp, e))
            rc = -1;
        sp->greedy = !json_is_true(ds);
        sp->temperature = (float)temperature;
        sp->top_k = (int)top_k;
        sp->top_p = (float)top_p;
        sp->repetition_penalty = (float)penalty;
        json_decref(root);
        if (rc) return -1;
    } else {
        log_warn("%s: not found; sampling with transformers' defaults (greedy)", path);
    }
    if (opt->greedy) sp->greedy = 1;
    return 0;
}

// ---- input records ----

// R1-AQA line -> MMAU keys beside the line's own (its "answer" index becomes answer_index).
static json_t *r1aqa_as_mmau(json_t *line, const Question *q) {
    json_t *choices = json_array();
    for (int c = 0; c < q->n_choices; c++) json_array_append_new(choices, json_string(q->choices[c]));
    json_object_set(line, "answer_index", json_object_get(line, "answer"));
    json_object_set_new(line, "question", json_string(q->question));
    json_object_set_new(line, "choices", choices);
    json_object_set_new(line, "answer", json_string(q->answer_text));
    static const struct {
        const char *key;
        size_t off;
    } meta[] = {{"task", offsetof(Question, task)},
                {"difficulty", offsetof(Question, difficulty)},
                {"sub-category", offsetof(Question, sub_category)},
                {"category", offsetof(Question, category)}};
    for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) {
        const char *v = *(char *const *)((const char *)q + meta[i].off);
        if (v && !json_object_get(line, meta[i].key)) json_object_set_new(line, meta[i].key, json_string(v));
    }
    return line;
}

// The "id" of a record as the loader prints it (strings as they are, integers in decimal).
static int id_matches(const json_t *rec, const char *id) {
    const json_t *v = json_object_get(rec, "id");
    char buf[32];
    if (json_is_string(v)) return strcmp(json_string_value(v), id) == 0;
    if (!json_is_integer(v)) return 0;
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return strcmp(buf, id) == 0;
}

static json_t *mmau_records(const Dataset *ds, const char *path, json_t *root, Err *e) {
    json_t *out = json_array();
    size_t k = 0, n = json_array_size(root);
    for (int64_t i = 0; i < ds->n; i++) {
        while (k < n && !id_matches(json_array_get(root, k), ds->q[i].id)) k++;
        if (k == n) {
            json_decref(out);
            err_set(e, "%s: question %s (line %d) not found among the file's items", path, ds->q[i].id,
                    ds->q[i].line);
            return NULL;
        }
        json_array_append_new(out, json_deep_copy(json_array_get(root, k++)));
    }
    return out;
}

static json_t *r1aqa_records(const Dataset *ds, const char *path, char *text, Err *e) {
    // Line starts: the loader numbered lines from 1 and counted every '\n'.
    int n_lines = 1;
    for (char *p = text; *p; p++) n_lines += *p == '\n';
    char **line = mallocCheck((n_lines + 1) * sizeof *line);  // + the loop's final NULL
    line[0] = text;
    for (int l = 1; (line[l] = strchr(line[l - 1], '\n')); l++) *line[l]++ = 0;
    json_t *out = json_array();
    for (int64_t i = 0; i < ds->n && out; i++) {
        const Question *q = &ds->q[i];
        json_error_t je;
        json_t *rec = q->line >= 1 && q->line <= n_lines ? json_loads(line[q->line - 1], 0, &je) : NULL;
        if (!json_is_object(rec)) {
            json_decref(rec);
            json_decref(out);
            out = NULL;
            err_set(e, "%s:%d: the question's line changed since it was loaded", path, q->line);
        } else {
            json_array_append_new(out, r1aqa_as_mmau(rec, q));
        }
    }
    free(line);
    return out;
}

json_t *eval_input_items(const Dataset *ds, const char *path, Err *e) {
    size_t size;
    char *text = file_read_all(path, &size, e);
    if (!text) return NULL;
    json_t *out = NULL;
    if (ds->format == DATA_FORMAT_MMAU) {
        json_error_t je;
        json_t *root = json_loadb(text, size, 0, &je);
        if (!json_is_array(root))
            err_set(e, "%s:%d: not a JSON array: %s", path, je.line, root ? "other JSON" : je.text);
        else
            out = mmau_records(ds, path, root, e);
        json_decref(root);
    } else {
        out = r1aqa_records(ds, path, text, e);
    }
    free(text);
    return out;
}

// ---- generation ----

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void set_answer(json_t *item, const char *output, const char *audio_error) {
    char *pred = reward_extract_answer(output);
    json_object_set_new(item, "model_output", json_string(output));
    json_object_set_new(item, "model_prediction", json_string(pred));
    if (audio_error) json_object_set_new(item, "audio_error", json_string(audio_error));
    free(pred);
}

int eval_generate(Model *m, PrepContext *prep, const Dataset *ds, const SamplerParams *sp, int batch,
                  json_t *items, EvalGenStats *stats, Err *e) {
    if (batch < 1) return err_set(e, "eval: batch must be >= 1, got %d", batch);
    if ((int64_t)json_array_size(items) != ds->n)
        return err_set(e, "eval: %zu items for %lld questions", json_array_size(items), (long long)ds->n);
    memset(stats, 0, sizeof *stats);
    const double t0 = now_s();
    PreparedQuestion *pq = callocCheck(batch, sizeof *pq);
    GenPrompt *gp = mallocCheck(batch * sizeof *gp);
    GenResult *res = mallocCheck(batch * sizeof *res);
    int64_t *which = mallocCheck(batch * sizeof *which);  // question index of each prepared slot
    const Tokenizer *tok = prep->tok;
    int rc = 0;
    for (int64_t q0 = 0; q0 < ds->n && rc == 0; q0 += batch) {
        int n = 0;
        for (int64_t i = q0; i < ds->n && i < q0 + batch; i++) {
            Err qe;
            if (prep_question(prep, &ds->q[i], &pq[n], &qe)) {
                log_warn("eval: question %s: %s (scored wrong)", ds->q[i].id, qe.msg);
                set_answer(json_array_get(items, i), "", qe.msg);
                stats->audio_errors++;
                continue;
            }
            gp[n] = (GenPrompt){.ids = pq[n].prompt.ids,
                                .n_ids = pq[n].prompt.n,
                                .features = pq[n].features,
                                .valid_frames = pq[n].valid_frames,
                                .question = (uint32_t)ds->q[i].index};
            gen_result_init(&res[n], 1, sp->max_new_tokens);
            which[n++] = i;
        }
        if (n > 0 && model_generate(m, gp, n, 1, sp, res, e)) rc = err_prefix(e, "eval: questions %lld..", (long long)q0);
        for (int j = 0; j < n; j++) {
            if (rc == 0) {
                char *text = tokenizer_decode(tok, res[j].tokens, res[j].len[0], 1);
                set_answer(json_array_get(items, which[j]), text, NULL);
                stats->tokens += res[j].len[0];
                free(text);
            }
            gen_result_free(&res[j]);
            prep_question_free(&pq[j]);
        }
        stats->questions = q0 + batch < ds->n ? q0 + batch : ds->n;
        progress_update("eval", stats->questions, ds->n);
    }
    progress_end();
    stats->seconds = now_s() - t0;
    free(pq);
    free(gp);
    free(res);
    free(which);
    return rc;
}

int eval_write_items(const json_t *items, const char *path, Err *e) {
    char *text = json_dumps(items, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) fatal("json_dumps failed writing %s", path);
    size_t len = strlen(text);
    text = reallocCheck(text, len + 2);
    text[len++] = '\n';
    int rc = file_write_atomic(path, text, len, e);
    free(text);
    return rc;
}
