// mmau_score.c: tallies of the official MMAU rule per task / difficulty / sub-category, the official
// printout, and the JSON form of a score (written atomically, read back by the sweep).
#include "eval/mmau_score.h"

#include <stdlib.h>
#include <string.h>

#include "config/jsonout.h"
#include "reward/reward.h"
#include "util/fileio.h"

const char *const mmau_task_names[MMAU_NUM_TASKS] = {"sound", "music", "speech"};
const char *const mmau_difficulty_names[MMAU_NUM_DIFFICULTIES] = {"easy", "hard", "medium"};

void mmau_score_init(MmauScore *s) { memset(s, 0, sizeof *s); }

void mmau_score_free(MmauScore *s) {
    for (int i = 0; i < s->n_sub; i++) free(s->sub_name[i]);
    free(s->sub_name);
    free(s->sub);
    mmau_score_init(s);
}

static int name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int mmau_task_index(const char *task) { return name_index(mmau_task_names, MMAU_NUM_TASKS, task); }

int mmau_difficulty_index(const char *difficulty) {
    return name_index(mmau_difficulty_names, MMAU_NUM_DIFFICULTIES, difficulty);
}

double mmau_accuracy(MmauTally t) { return t.total > 0 ? (double)t.correct / t.total * 100.0 : 0.0; }

// The tally of a sub-category, appended on first sight (the official script's dict order).
static MmauTally *sub_tally(MmauScore *s, const char *name) {
    for (int i = 0; i < s->n_sub; i++)
        if (strcmp(s->sub_name[i], name) == 0) return &s->sub[i];
    if (s->n_sub == s->cap_sub) {
        s->cap_sub = s->cap_sub ? 2 * s->cap_sub : 32;
        s->sub_name = reallocCheck(s->sub_name, s->cap_sub * sizeof *s->sub_name);
        s->sub = reallocCheck(s->sub, s->cap_sub * sizeof *s->sub);
    }
    s->sub_name[s->n_sub] = strdupCheck(name);
    s->sub[s->n_sub] = (MmauTally){0, 0};
    return &s->sub[s->n_sub++];
}

static void tally(MmauTally *t, int ok) {
    t->correct += ok;
    t->total++;
}

int mmau_score_add(MmauScore *s, const MmauItem *it, Err *e) {
    int task = mmau_task_index(it->task), diff = mmau_difficulty_index(it->difficulty);
    if (task < 0) return err_set(e, "task \"%s\" is not sound, music or speech", it->task);
    if (diff < 0) return err_set(e, "difficulty \"%s\" is not easy, medium or hard", it->difficulty);
    int ok = 0;
    if (it->audio_error)
        s->audio_errors++;
    else if (!it->prediction)
        s->no_prediction++;
    else
        ok = mmau_is_correct(it->prediction, it->answer, it->choices, it->n_choices);
    tally(&s->task[task], ok);
    tally(&s->difficulty[diff], ok);
    if (it->sub_category) tally(sub_tally(s, it->sub_category), ok);
    tally(&s->all, ok);
    return ok;
}

// ---- prediction files ----

// A string field: *out = the text, or NULL when the key is absent or null and !required.
static int item_string(const json_t *item, const char *key, int required, const char **out, Err *e) {
    const json_t *v = json_object_get(item, key);
    *out = NULL;
    if (!v || json_is_null(v)) return required ? err_set(e, "missing \"%s\"", key) : 0;
    if (!json_is_string(v)) return err_set(e, "\"%s\" is not a string", key);
    *out = json_string_value(v);
    return 0;
}

// Fills it from one JSON item; choices points into a malloc'd array the caller frees.
static int item_parse(const json_t *item, MmauItem *it, const char ***choices, Err *e) {
    *choices = NULL;
    if (!json_is_object(item)) return err_set(e, "not a JSON object");
    if (item_string(item, "answer", 1, &it->answer, e) || item_string(item, "task", 1, &it->task, e) ||
        item_string(item, "difficulty", 1, &it->difficulty, e) ||
        item_string(item, "sub-category", 0, &it->sub_category, e) ||
        item_string(item, "audio_error", 0, &it->audio_error, e))
        return -1;
    // The official key is model_prediction; R1-AQA's test script writes model_output instead.
    const char *key = json_object_get(item, "model_prediction") ? "model_prediction" : "model_output";
    if (item_string(item, key, 0, &it->prediction, e)) return -1;
    const json_t *ch = json_object_get(item, "choices");
    if (!ch) return err_set(e, "missing \"choices\"");
    if (!json_is_array(ch) || json_array_size(ch) == 0)
        return err_set(e, "\"choices\" is not a non-empty array");
    it->n_choices = (int)json_array_size(ch);
    *choices = mallocCheck(it->n_choices * sizeof **choices);
    for (int c = 0; c < it->n_choices; c++) {
        const json_t *v = json_array_get(ch, c);
        if (!json_is_string(v)) return err_set(e, "choice %d is not a string", c);
        (*choices)[c] = json_string_value(v);
    }
    it->choices = *choices;
    return 0;
}

int mmau_score_items(MmauScore *s, const json_t *items, const char *source, Err *e) {
    if (!json_is_array(items)) return err_set(e, "%s: not a JSON array of MMAU items", source);
    if (json_array_size(items) == 0) return err_set(e, "%s: no items", source);
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i);
        MmauItem it;
        const char **choices;
        int rc = item_parse(item, &it, &choices, e);
        if (rc == 0) rc = mmau_score_add(s, &it, e) < 0 ? -1 : 0;
        if (rc == 0) mmau_version_add(&s->version, json_string_value(json_object_get(item, "id")), it.answer);
        free(choices);
        if (rc < 0) {
            const char *id = json_string_value(json_object_get(item, "id"));
            if (id) return err_prefix(e, "%s: item %zu (id %s)", source, i, id);
            return err_prefix(e, "%s: item %zu", source, i);
        }
    }
    return 0;
}

int mmau_score_file(MmauScore *s, const char *path, Err *e) {
    size_t size;
    char *text = file_read_all(path, &size, e);
    if (!text) return -1;
    json_error_t je;
    json_t *root = json_loadb(text, size, 0, &je);
    free(text);
    if (!root) return err_set(e, "%s:%d:%d: not valid JSON: %s", path, je.line, je.column, je.text);
    int rc = mmau_score_items(s, root, path, e);
    json_decref(root);
    return rc;
}

// ---- printout ----

static void print_rule(FILE *f) { fprintf(f, "******************************\n"); }

static void print_tally(FILE *f, const char *name, MmauTally t) {
    fprintf(f, "%s : %.2f%% over %d samples\n", name, mmau_accuracy(t), t.total);
}

void mmau_score_print(const MmauScore *s, FILE *f) {
    print_rule(f);
    fprintf(f, "Task-wise Accuracy:\n");
    for (int i = 0; i < MMAU_NUM_TASKS; i++) print_tally(f, mmau_task_names[i], s->task[i]);
    print_rule(f);
    fprintf(f, "Difficulty-wise Accuracy:\n");
    for (int i = 0; i < MMAU_NUM_DIFFICULTIES; i++)
        print_tally(f, mmau_difficulty_names[i], s->difficulty[i]);
    print_rule(f);
    fprintf(f, "Sub-category-wise Accuracy:\n");
    for (int i = 0; i < s->n_sub; i++) print_tally(f, s->sub_name[i], s->sub[i]);
    print_rule(f);
    fprintf(f, "Total Accuracy: %.2f%% over %d samples\n", mmau_accuracy(s->all), s->all.total);
    print_rule(f);
    fprintf(f, "No prediction count: %d\n", s->no_prediction);
    if (s->audio_errors > 0)
        fprintf(f, "%d items had unreadable audio and were scored wrong\n", s->audio_errors);
}

// ---- JSON ----

static void json_tally(char **buf, size_t *len, size_t *cap, MmauTally t) {
    char num[64];
    jsonout_printf(buf, len, cap, "{\"correct\": %d, \"total\": %d, \"accuracy\": %s}", t.correct, t.total,
                   jsonout_double(num, sizeof num, mmau_accuracy(t)));
}

// "key": {"name": tally, ...} for a group of tallies.
static void json_group(char **buf, size_t *len, size_t *cap, const char *key, const char *const *names,
                       const MmauTally *t, int n) {
    jsonout_printf(buf, len, cap, "  \"%s\": {", key);
    for (int i = 0; i < n; i++) {
        jsonout_printf(buf, len, cap, "%s\n    ", i ? "," : "");
        jsonout_string(buf, len, cap, names[i]);
        jsonout_printf(buf, len, cap, ": ");
        json_tally(buf, len, cap, t[i]);
    }
    jsonout_printf(buf, len, cap, "%s},\n", n ? "\n  " : "");
}

char *mmau_score_to_json(const MmauScore *s) {
    size_t len = 0, cap = 4096;
    char *buf = mallocCheck(cap);
    buf[0] = 0;
    jsonout_printf(&buf, &len, &cap, "{\n  \"total\": ");
    json_tally(&buf, &len, &cap, s->all);
    jsonout_printf(&buf, &len, &cap, ",\n");
    json_group(&buf, &len, &cap, "task", mmau_task_names, s->task, MMAU_NUM_TASKS);
    json_group(&buf, &len, &cap, "difficulty", mmau_difficulty_names, s->difficulty, MMAU_NUM_DIFFICULTIES);
    json_group(&buf, &len, &cap, "sub_category", (const char *const *)s->sub_name, s->sub, s->n_sub);
    jsonout_printf(&buf, &len, &cap, "  \"no_prediction\": %d,\n  \"audio_errors\": %d\n}\n",
                   s->no_prediction, s->audio_errors);
    return buf;
}

int mmau_score_write_json(const MmauScore *s, const char *path, Err *e) {
    char *text = mmau_score_to_json(s);
    int rc = file_write_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

// A non-negative integer member.
static int read_count(const json_t *obj, const char *key, int *out, Err *e) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
        return err_set(e, "\"%s\" is not a non-negative integer", key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int read_tally(const json_t *obj, const char *key, MmauTally *t, Err *e) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_object(v)) return err_set(e, "\"%s\" is not an object", key);
    if (read_count(v, "correct", &t->correct, e) || read_count(v, "total", &t->total, e))
        return err_prefix(e, "%s", key);
    if (t->correct > t->total) return err_set(e, "%s: correct %d > total %d", key, t->correct, t->total);
    return 0;
}

// A group object whose members are exactly `names` (fixed groups).
static int read_group(const json_t *root, const char *key, const char *const *names, MmauTally *t, int n,
                      Err *e) {
    const json_t *g = json_object_get(root, key);
    if (!json_is_object(g)) return err_set(e, "\"%s\" is not an object", key);
    if ((int)json_object_size(g) != n) return err_set(e, "\"%s\" must have %d members", key, n);
    for (int i = 0; i < n; i++)
        if (read_tally(g, names[i], &t[i], e)) return err_prefix(e, "%s", key);
    return 0;
}

static int read_score(const json_t *root, MmauScore *s, Err *e) {
    if (!json_is_object(root)) return err_set(e, "not a JSON object");
    if (read_tally(root, "total", &s->all, e) ||
        read_group(root, "task", mmau_task_names, s->task, MMAU_NUM_TASKS, e) ||
        read_group(root, "difficulty", mmau_difficulty_names, s->difficulty, MMAU_NUM_DIFFICULTIES, e) ||
        read_count(root, "no_prediction", &s->no_prediction, e) ||
        read_count(root, "audio_errors", &s->audio_errors, e))
        return -1;
    const json_t *subs = json_object_get(root, "sub_category");
    if (!json_is_object(subs)) return err_set(e, "\"sub_category\" is not an object");
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)subs, name, v) {
        if (read_tally(subs, name, sub_tally(s, name), e)) return err_prefix(e, "sub_category");
    }
    return 0;
}

int mmau_score_read_json(MmauScore *s, const char *path, Err *e) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return err_set(e, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = read_score(root, s, e);
    json_decref(root);
    return rc < 0 ? err_prefix(e, "%s", path) : 0;
}
